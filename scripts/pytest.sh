#!/usr/bin/env bash
# Runs the whole suite; a run that collects no test is a failure, not a silent pass.
set -uo pipefail
cd "$(dirname "$0")/.."
.venv/bin/pytest -n 2 --dist loadfile --durations=15 "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
	echo "pytest collected no tests: failing" >&2
	exit 1
fi
exit "$rc"
