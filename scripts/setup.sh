# Sourced by scripts/demo.sh and scripts/test.sh: create or reuse .venv and install phasescope into it.
# torch is pinned to 2.13.0 and installed first, so that no other package pulls a newer CUDA build.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${PHASESCOPE_VENV:-$root/.venv}"
python="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
  echo "setup: creating virtual environment $venv" >&2
  "$python" -m venv "$venv"
fi
# shellcheck disable=SC1091
. "$venv/bin/activate"
export PIP_DISABLE_PIP_VERSION_CHECK=1
if ! python -c "import torch" >/dev/null 2>&1; then
  echo "setup: installing torch==2.13.0" >&2
  pip install --quiet "torch==2.13.0"
fi
extras="${PHASESCOPE_EXTRAS:-study}"  # study: both studies (the demo); test: also the test tools
stamp="$venv/.phasescope-installed${extras:+-$extras}"
if [ ! -f "$stamp" ] || [ "$root/pyproject.toml" -nt "$stamp" ]; then
  echo "setup: installing phasescope${extras:+[$extras]} and its dependencies" >&2
  pip install --quiet -e "$root${extras:+[$extras]}"
  if [[ ",$extras," == *",bench,"* ]]; then
    # curvlinops and backpack without their dependencies: backpack asks for torchvision, whose PyPI build is
    # for another torch and breaks transformers (pyproject.toml's bench extra lists what else they need)
    pip install --quiet --no-deps "curvlinops-for-pytorch>=3" "backpack-for-pytorch>=1.6"
  fi
  touch "$stamp"
fi
cd "$root"
