#!/usr/bin/env bash
# The main job: study A's smallest learning-rate sweep on digits (16 rates trained as one vectorized
# computation, plus gradient flow for eta_c), then its figures and the headline numbers.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
run="${1:-runs/digits-mlp-mse}"
if [ -e "$run" ]; then
  echo "demo: $run exists, drawing its report again (delete it to train again)" >&2
else
  phasescope sweep configs/digits-mlp-mse.yaml --out "$run"
fi
phasescope report "$run"
