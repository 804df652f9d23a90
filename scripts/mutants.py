"""`make mutants`: mutation testing of the engine, each module against its own test file.

Each module runs in its own scratch copy under ``var/mutants/<name>`` (mutmut keeps its
state in ``./mutants`` and reads its settings from ``./pyproject.toml``, so separate
copies let every module have its own test selection and keep results between runs).
``forkserver`` isolation: polars' thread pool hangs in a plain fork of a process that
has already used it. The fork server must not warm up by collecting the tests
(mutmut's default, ``forkserver_warmup = "collect"``): collecting imports ``kpi``,
whose import-time polars work starts the thread pool (``polars-0``, ``polars-1``,
tokio workers) in the fork server, and every mutant forked from it then waits for
ever on pool threads that do not exist in the child (idle workers, no CPU, so
mutmut's CPU limit never fires; only the wall-clock bound, 15x the tests' time, ends
each one). So the fork server preloads the engine through ``mutants_preload.py``,
which keeps the pool from starting during that import, and each mutant's process
starts its own pool. ``timeout_constant`` gives a mutant's process the seconds it
needs to start on a loaded machine (mutmut's default of 1 s timed them out).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: module -> the test file that owns it
PAIRS: dict[str, str] = {
    "kpi/lifecycle.py": "tests/kpi/test_lifecycle.py",
    "kpi/standards.py": "tests/kpi/test_standards.py",
    "kpi/kpis/functions.py": "tests/kpi/test_functions.py",
    "kpi/kpis/increments.py": "tests/kpi/test_increments.py",
}
COPY = ("kpi", "exporters", "tests", "pyproject.toml", "uv.lock")
#: imported once by the fork server; none of these starts polars' thread pool
PRELOAD = (
    *("pytest", "hypothesis", "numpy", "polars", "polars.testing"),
    # the pytest plugins each run loads (schemathesis alone is ~0.5 s of CPU per mutant)
    *("pytest_timeout", "anyio.pytest_plugin", "schemathesis.pytest.plugin", "xdist.plugin"),
    "tests._mutants_preload",
)


def _settings(module: str, test_file: str) -> str:
    return f"""
[tool.mutmut]
source_paths = ["kpi", "exporters"]
only_mutate = ["{module}"]
pytest_add_cli_args_test_selection = ["{test_file}"]
pytest_add_cli_args = ["-p", "no:xdist", "-p", "no:cacheprovider", "--timeout=300"]
process_isolation = "forkserver"
forkserver_warmup = "import"
preload_modules_file = "preload.txt"
timeout_constant = 10.0
use_git_change_detection = false
"""


def _prepare(work: Path, module: str, test_file: str) -> None:
    work.mkdir(parents=True, exist_ok=True)
    for name in COPY:
        src, dst = ROOT / name, work / name
        if src.is_dir():
            shutil.copytree(
                src, dst, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__")
            )
        else:
            shutil.copy2(src, dst)
    shutil.copy2(ROOT / "scripts" / "mutants_preload.py", work / "tests" / "_mutants_preload.py")
    (work / "preload.txt").write_text("\n".join(PRELOAD) + "\n")
    pyproject = work / "pyproject.toml"
    pyproject.write_text(pyproject.read_text() + _settings(module, test_file))


def run(module: str, test_file: str, children: int) -> dict[str, int]:
    """Run mutmut on one module and return its counts by status."""
    work = ROOT / "var" / "mutants" / module.replace("/", "_").removesuffix(".py")
    _prepare(work, module, test_file)
    mutmut = str(Path(sys.executable).with_name("mutmut"))
    with (work / "run.log").open("w") as log:  # mutmut's progress, to follow a long run
        subprocess.run(
            [mutmut, "run", "--max-children", str(children)],
            cwd=work,
            check=False,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    subprocess.run([mutmut, "export-cicd-stats"], cwd=work, check=True, stdout=subprocess.DEVNULL)
    stats: dict[str, int] = json.loads((work / "mutants" / "mutmut-cicd-stats.json").read_text())
    out = subprocess.run([mutmut, "results"], cwd=work, check=True, capture_output=True, text=True)
    (work / "survivors.txt").write_text(out.stdout)
    return stats


def score(stats: dict[str, int]) -> float:
    """mutmut's own score: (killed + timeout) / (total - skipped)."""
    tested = stats.get("total", 0) - stats.get("skipped", 0)
    return 100.0 * (stats.get("killed", 0) + stats.get("timeout", 0)) / tested if tested else 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "modules", nargs="*", default=list(PAIRS), help="engine modules (default: all)"
    )
    parser.add_argument("--children", type=int, default=2)
    args = parser.parse_args()
    rows = []
    for module in args.modules:
        stats = run(module, PAIRS[module], args.children)
        rows.append((module, PAIRS[module], stats))
        print(
            f"{module}: {score(stats):.1f} % ({stats.get('killed', 0)} killed, "
            f"{stats.get('survived', 0)} survived, {stats.get('no_tests', 0)} reached by no test, "
            f"{stats.get('timeout', 0)} timeout) against {PAIRS[module]}",
            flush=True,
        )
    print("survivors: var/mutants/<module>/survivors.txt; `cd` there and `mutmut show NAME`")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
