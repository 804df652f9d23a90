"""The usual shapes of an ISO 8601 timestamp read with numpy, with no per-value parser.

A producer writes its timestamps one way, e.g. ``2027-02-01T08:00:00.123456Z`` or
``2027-02-01T08:00:00+08:00``: for those shapes (``YYYY-MM-DDTHH:MM:SS``, an optional
fraction of 1 to 9 digits, then ``Z`` or ``±HH:MM``) the fields sit at fixed byte
positions once the values are grouped by length, and a batch of them is read by
array arithmetic (~0.03 µs per value, where polars' format parser takes ~0.35).
Anything else (blank, no offset, ``z``, ``+0800``, a space for ``T``, a 60th second,
a non-existent date) is left null here, for the caller's general reader.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import polars as pl

_ZERO: Final = ord("0")
_BASE: Final = 19  # len("YYYY-MM-DDTHH:MM:SS")
#: Fixed separators of the base: position -> byte.
_SEPARATORS: Final = {4: ord("-"), 7: ord("-"), 10: ord("T"), 13: ord(":"), 16: ord(":")}
_DIGITS: Final = (0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18)
_SHORTEST: Final = _BASE + 1  # ...SSZ
_LONGEST: Final = _BASE + 10 + 6  # ...SS.fffffffff+HH:MM


def _month_table() -> tuple[np.ndarray, np.ndarray]:
    """Per (year, month) of years 0000-9999, at ``year * 12 + month - 1``: the days from
    1970-01-01 to its first day, and its length in days (proleptic Gregorian)."""
    first = np.arange(np.datetime64("0000-01", "M"), np.datetime64("10000-01", "M"))
    days = first.astype("datetime64[D]").astype(np.int64)
    lengths = np.diff(np.append(days, days[-1] + 31))
    return days, lengths


_MONTH_START, _MONTH_DAYS = _month_table()


def _pair_table() -> np.ndarray:
    """Two bytes (as a little-endian uint16: the first byte low) to their value as two
    digits, 255 when not two digits."""
    table = np.full(1 << 16, 255, dtype=np.uint8)
    for x in range(100):
        table[(_ZERO + x % 10) << 8 | (_ZERO + x // 10)] = x
    return table


_PAIRS: Final = _pair_table()
#: Two-digit fields of the base: year's hundreds and rest, month, day, hour, minute, second.
_BASE_PAIRS: Final = (0, 2, 5, 8, 11, 14, 17)


def _pairs(a: np.ndarray, offsets: list[int]) -> list[np.ndarray]:
    """The two-digit values at each offset of every row (255 where not two digits)."""
    width = a.shape[1]
    names = [f"p{i}" for i in range(len(offsets))]
    view = np.dtype(
        {"names": names, "formats": ["<u2"] * len(offsets), "offsets": offsets, "itemsize": width}
    )
    records = a.reshape(-1).view(view)
    return [_PAIRS[records[name]] for name in names]


def _same_length(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(UTC microseconds, read) of values all ``a.shape[1]`` bytes long."""
    n, width = a.shape
    micros = np.zeros(n, dtype=np.int64)
    read = np.zeros(n, dtype=bool)
    base = np.ones(n, dtype=bool)
    for pos, byte in _SEPARATORS.items():
        base &= a[:, pos] == byte
    for zone in (1, 6):
        rest = width - _BASE - zone  # the fraction with its '.'
        digits = max(rest - 1, 0)
        if rest < 0 or rest == 1 or digits > 9:
            continue
        ok = base.copy()
        if rest:
            ok &= a[:, _BASE] == ord(".")
        if zone == 1:
            ok &= a[:, -1] == ord("Z")
        else:
            ok &= ((a[:, -6] == ord("+")) | (a[:, -6] == ord("-"))) & (a[:, -3] == ord(":"))
        if not ok.any():
            continue
        frac = list(range(_BASE + 1, _BASE + digits, 2))  # whole pairs of the fraction
        zones = [width - 5, width - 2] if zone == 6 else []
        fields = _pairs(a, list(_BASE_PAIRS) + frac + zones)
        ok &= np.maximum.reduce(fields) < 100
        if digits % 2:  # the fraction's last digit alone
            last = a[:, _BASE + digits] - np.uint8(_ZERO)
            ok &= last < 10
        if not ok.any():
            continue
        c, yy, mo, day, h, mi, s = (f.astype(np.int32) for f in fields[:7])
        month = np.minimum(c * 1200 + yy * 12 + mo - 1, len(_MONTH_START) - 1)
        ok &= (mo >= 1) & (mo <= 12) & (day >= 1) & (day <= _MONTH_DAYS[month])
        ok &= (h < 24) & (mi < 60) & (s < 60)
        days = _MONTH_START[month] + (day - 1)
        seconds = days * 86400 + (h * 3600 + mi * 60 + s)
        fraction = np.zeros(n, dtype=np.int64)
        for pair in fields[7 : 7 + len(frac)]:
            fraction = fraction * 100 + pair
        if digits % 2:
            fraction = fraction * 10 + last
        # To microseconds: more than 6 digits are cut, as the general reader does.
        fraction = fraction * 10 ** (6 - digits) if digits <= 6 else fraction // 10 ** (digits - 6)
        if zone == 6:
            oh, om = fields[-2].astype(np.int32), fields[-1].astype(np.int32)
            ok &= (oh < 24) & (om < 60)
            sign = np.where(a[:, -6] == ord("-"), -1, 1)
            seconds -= sign * (oh * 3600 + om * 60)
        micros = np.where(ok, seconds * 1_000_000 + fraction, micros)
        read |= ok
    return micros, read


def read_usual(text: pl.Series) -> pl.Series:
    """UTC timestamps (``Datetime("us", "UTC")``) of the usual shapes; null for any other text."""
    n = text.len()
    lengths = text.str.len_bytes()
    widths = lengths.unique().drop_nulls().to_list()
    if len(widths) == 1 and lengths.null_count() == 0:
        # One producer, one shape: the column as it is, no rows picked out.
        micros, read = _group(text, widths[0])
    else:
        micros = np.zeros(n, dtype=np.int64)
        read = np.zeros(n, dtype=bool)
        for width in widths:
            where = (lengths == width).fill_null(False).arg_true().to_numpy()
            micros[where], read[where] = _group(text.gather(where), width)
    values = pl.Series(text.name, micros).cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    return pl.select(pl.when(pl.Series(read)).then(values).alias(text.name)).to_series()


def _group(text: pl.Series, width: int) -> tuple[np.ndarray, np.ndarray]:
    """``_same_length`` of texts all ``width`` bytes long (none read when no usual width)."""
    if not _SHORTEST <= width <= _LONGEST:
        return np.zeros(text.len(), dtype=np.int64), np.zeros(text.len(), dtype=bool)
    joined = text.str.join("").item().encode()
    return _same_length(np.frombuffer(joined, dtype=np.uint8).reshape(text.len(), width))
