"""Tiny PromQL text helpers, so rules, alerts and dashboards build selectors one way."""

from __future__ import annotations

import re
from typing import Final

#: ``rate(``/``increase(``/``irate(`` calls: the ones a dashboard must give ``$__rate_interval``.
RATE_CALL_RE: Final = re.compile(r"\b(rate|increase|irate)\s*\(")

_STRING_RE: Final = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS_RE: Final = re.compile(r"\{[^}]*\}")
_RANGE_RE: Final = re.compile(r"\[[^\]]*\]")
_LABEL_LIST_RE: Final = re.compile(
    r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", re.IGNORECASE
)
_IDENT_RE: Final = re.compile(r"(?<![\w.$:])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w:]|\s*\()")
_KEYWORDS: Final = frozenset(
    [
        "and",
        "or",
        "unless",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "offset",
        "bool",
        "inf",
        "nan",
        "atan2",
        "start",
        "end",
    ]
)


def sel(metric: str, *matchers: str) -> str:
    """A vector selector: ``sel("up", 'job="x"')`` -> ``up{job="x"}``; empty matchers dropped."""
    parts = [m for m in matchers if m]
    return f"{metric}{{{', '.join(parts)}}}" if parts else metric


def eq(label: str, value: str) -> str:
    """An equality matcher with the value quoted for PromQL."""
    return f'{label}="{_quote(value)}"'


def ne(label: str, value: str) -> str:
    """A negative equality matcher."""
    return f'{label}!="{_quote(value)}"'


def by(*labels: str) -> str:
    """A ``by (...)`` clause."""
    return f"by ({', '.join(labels)})"


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (a lexical scan, enough for our own exprs)."""
    text = _STRING_RE.sub('""', expr)
    text = _MATCHERS_RE.sub(" ", text)
    text = _RANGE_RE.sub(" ", text)
    text = _LABEL_LIST_RE.sub(" ", text)
    # Numbers such as 1e6 or durations after "offset" are not identifiers of interest.
    text = re.sub(r"\boffset\s+\w+", " ", text)
    return {
        m.group(1)
        for m in _IDENT_RE.finditer(text)
        if m.group(1).lower() not in _KEYWORDS and not re.fullmatch(r"\d.*", m.group(1))
    }


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')
