"""Modules sized to read: none over 600 lines, no function over 80, in the shipped packages.

``make lint`` runs it; exit 1 lists the offenders. Tests, benchmarks and generated files
(none are Python today) are outside the packages checked. A function counts from its
``def`` line to its last line (docstring and comments included, decorators not).
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parents[1]
PACKAGES: Final = ("kpi", "exporters", "kpi_cli")
MAX_MODULE_LINES: Final = 600
MAX_FUNCTION_LINES: Final = 80

#: Temporary exceptions: "path" (the module and every function in it) or "path::function",
#: each with why and who removes it. An entry that is no longer needed is reported.
EXCEPTIONS: Final[dict[str, str]] = {
    # Issue 14 rewrites the dashboards on grafana-foundation-sdk (helper i14).
    "exporters/mixin/dashboards.py": "997 lines, five panel builders of 100-176 lines",
}


def offenders(root: Path, packages: Iterable[str]) -> list[str]:
    """``path: what`` for every module or function over its limit, exceptions left out."""
    found: list[str] = []
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            text = path.read_text(encoding="utf-8")
            n_lines = len(text.splitlines())
            if n_lines > MAX_MODULE_LINES:
                found.append(f"{rel}: {n_lines} lines (limit {MAX_MODULE_LINES})")
            for node in ast.walk(ast.parse(text, rel)):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    length = (node.end_lineno or node.lineno) - node.lineno + 1
                    if length > MAX_FUNCTION_LINES:
                        found.append(
                            f"{rel}::{node.name}: {length} lines (limit {MAX_FUNCTION_LINES})"
                        )
    return found


def excepted(offence: str) -> str | None:
    """The exception entry that covers an offence, if any."""
    where = offence.split(": ", 1)[0]
    for key in EXCEPTIONS:
        if where == key or where.startswith(key + "::"):
            return key
    return None


def main() -> int:
    """Print the offenders not covered by an exception; 1 when there are any."""
    found = offenders(ROOT, PACKAGES)
    failing = [o for o in found if excepted(o) is None]
    used = {excepted(o) for o in found}
    for key in sorted(set(EXCEPTIONS) - used):
        print(f"note: size exception {key!r} is no longer needed; remove it", file=sys.stderr)
    for offence in failing:
        print(offence, file=sys.stderr)
    if failing:
        print(
            "split the module along its responsibilities or the function along its steps",
            file=sys.stderr,
        )
        return 1
    print(
        f"sizes ok: no module over {MAX_MODULE_LINES} lines, no function over "
        f"{MAX_FUNCTION_LINES} ({len(found) - len(failing)} excepted, see EXCEPTIONS)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
