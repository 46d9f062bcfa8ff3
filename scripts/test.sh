#!/usr/bin/env bash
# The whole test suite: sets up .venv (torch==2.13.0 first), lints with ruff, runs pytest.
set -euo pipefail
PHASESCOPE_EXTRAS=test
. "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
ruff check phasescope tests benchmarks
python -m pytest -q "$@"
