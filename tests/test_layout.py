"""The size check of ``make lint`` (scripts/check_sizes.py) flags what it should."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def load_checker() -> ModuleType:
    """scripts/check_sizes.py as a module (scripts/ is no package)."""
    spec = importlib.util.spec_from_file_location(
        "check_sizes", ROOT / "scripts" / "check_sizes.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def function(name: str, lines: int) -> str:
    """A function of exactly ``lines`` lines (def line included)."""
    return f"def {name}() -> None:\n" + "    pass\n" * (lines - 1)


def test_limits_are_inclusive_and_both_kinds_are_flagged(tmp_path: Path) -> None:
    check = load_checker()
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "ok.py").write_text(function("at_limit", 80) + "\n" * 10)
    (pkg / "long_function.py").write_text(function("too_long", 81))
    body = function("fine", 10)
    (pkg / "long_module.py").write_text(body + "\n" * (601 - len(body.splitlines())))
    (pkg / "at_module_limit.py").write_text("\n" * 600)
    found = check.offenders(tmp_path, ["pkg"])
    assert found == [
        "pkg/long_function.py::too_long: 81 lines (limit 80)",
        "pkg/long_module.py: 601 lines (limit 600)",
    ]


def test_methods_and_nested_functions_count_too(tmp_path: Path) -> None:
    check = load_checker()
    (tmp_path / "pkg").mkdir()
    nested = "class A:\n    def m(self) -> None:\n" + "        pass\n" * 81
    (tmp_path / "pkg" / "m.py").write_text(nested)
    assert check.offenders(tmp_path, ["pkg"]) == ["pkg/m.py::m: 82 lines (limit 80)"]


def test_the_repository_is_within_its_limits() -> None:
    check = load_checker()
    found = check.offenders(ROOT, check.PACKAGES)
    assert [o for o in found if check.excepted(o) is None] == []
