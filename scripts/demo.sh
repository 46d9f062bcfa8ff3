#!/usr/bin/env bash
# The main job: full-batch GD on digits with checkpoints, then the Hessian's top eigenvalues at every
# checkpoint (warm-started Lanczos) beside 2/eta, then a summary of the run.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
run="${1:-runs/digits-sharpness}"
phasescope train configs/digits-sharpness.yaml --out "$run"
phasescope sharpness "$run" --k 2
phasescope runs show "$run"
