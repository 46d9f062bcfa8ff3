#!/usr/bin/env bash
# Fetch, on a machine with PyPI, the wheels that the GPU machine lacks into .whl/ (ignored by git):
# phasescope's own dependencies missing from that image and the benchmark peers, for CPython 3.12 on
# x86-64 Linux, without their dependencies (the image holds torch, transformers and the rest).
#   bash benchmarks/gpu/wheels.sh          # then the device call carries .whl and runs run.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
mkdir -p .whl
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 \
         manylinux1_x86_64 any; do platforms+=(--platform "$p"); done
binary=(pydantic==2.14.4 pydantic-core annotated-types typing-inspection duckdb ruptures emoji babel
        nnsight==0.8.1 greenlet websocket-client zstandard
        curvlinops-for-pytorch==3.0.1 backpack-for-pytorch einconv unfoldNd)
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${platforms[@]}" -d .whl "${binary[@]}"
# PyHessian is published as a source distribution only: build its (pure-Python) wheel here
python3 -m pip wheel --quiet --no-deps -w .whl pyhessian==0.1
du -sh .whl
