#!/usr/bin/env bash
# The main job: `phasescope demo`, both studies end to end on the built-in data, offline: the tiny
# multilingual LM with dense checkpoints and every study-B measure across them, the digits
# learning-rate sweep and the diagonal-network theory (study A), then the HTML report and the headline
# numbers. Arguments go to `phasescope demo` (--quick for the CI-sized variant, --out DIR).
# Run again, it resumes: training from its last checkpoint, measures from their missing shards.
# The full demo (no arguments) ends by checking the README's headline block against what it printed.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
phasescope demo "$@"
if [ "$#" -eq 0 ]; then
  python -m phasescope.report.readme_check README.md runs/demo || true  # says which lines are stale, if any
fi
