"""Runs ``python -m MODULE ARGS`` with ENOSPC injected into writes under ``ENOSPC_DIR``.

The fallback of the full-disk test where no tmpfs can be mounted (not root): while the
file ``ENOSPC_FLAG`` exists, creating, writing or syncing anything in the state folder
fails as a full disk does (polars' and numpy's writers included).
"""

from __future__ import annotations

import errno
import os
import runpy
import sys
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

FLAG = Path(os.environ["ENOSPC_FLAG"])
ROOT = os.environ["ENOSPC_DIR"]


def _full(path: object = None) -> bool:
    return FLAG.exists() and (path is None or str(path).startswith(ROOT))


def _raise(path: object = "") -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def _wrap(module: Any, name: str, by_path: bool) -> None:
    real = getattr(module, name)

    def fake(*args: Any, **kwargs: Any) -> Any:
        target = args[0] if args else None
        if (by_path and _full(target)) or (not by_path and _full()):
            _raise(target)
        return real(*args, **kwargs)

    setattr(module, name, fake)


def main() -> None:
    _wrap(os, "mkdir", by_path=True)
    _wrap(os, "pwrite", by_path=False)
    _wrap(os, "fsync", by_path=False)
    _wrap(np, "save", by_path=True)
    real_parquet = pl.DataFrame.write_parquet

    def write_parquet(self: pl.DataFrame, file: Any, *args: Any, **kwargs: Any) -> Any:
        if _full(file):
            _raise(file)
        return real_parquet(self, file, *args, **kwargs)

    pl.DataFrame.write_parquet = write_parquet  # type: ignore[method-assign]
    args = sys.argv[1:]
    if args[0] != "-m":  # the interpreter path ExporterProcess puts first
        args = args[1:]
    sys.argv = [args[1], *args[2:]]
    runpy.run_module(args[1], run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
