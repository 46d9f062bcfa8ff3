#!/usr/bin/env bash
# The GPU check in one command: the device-path tests on CUDA, then each benchmark step of
# benchmarks/gpu/suite.py under its own time limit (a failing or overlong step does not stop the
# rest), then OUT/results.md and OUT/results.json. About 8 minutes on an H200.
#   bash benchmarks/gpu/run.sh OUT             # on the GPU machine (wheels from .whl/, see wheels.sh)
#   bash benchmarks/gpu/run.sh OUT --dry-run   # here, on the CPU at tiny sizes: the plumbing only
set -uo pipefail
out="${1:?usage: run.sh OUT [--dry-run]}"
dry="${2:-}"
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
mkdir -p "$out"
if [ -d .whl ] && [ -z "$dry" ]; then  # the packages that the GPU machine's image lacks
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "run.sh: could not install the wheels in .whl" >&2; exit 1; }
  export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
python=python3
[ -n "$dry" ] && [ -x .venv/bin/python ] && python=.venv/bin/python
device=cuda; [ -n "$dry" ] && device=cpu
"$python" - <<PY >&2
import torch
print("run.sh:", torch.__version__, "CUDA" if torch.cuda.is_available() else "no CUDA",
      torch.cuda.get_device_name() if torch.cuda.is_available() else "")
PY

# 1. the tests whose code paths differ on a GPU, with the device set to cuda (limit 80 s)
start=$(date +%s)
PHASESCOPE_TEST_DEVICE=$device timeout $(( ${dry:+4*}80 )) "$python" -m pytest -q -p no:cacheprovider tests/test_device_paths.py \
  --junitxml="$out/tests.xml" 2>&1 | tee "$out/tests.log" | tail -15
"$python" - "$out" "$(( $(date +%s) - start ))" "$dry" <<'PY'
import json, sys, xml.etree.ElementTree as ET
from pathlib import Path
out, seconds, dry = Path(sys.argv[1]), float(sys.argv[2]), bool(sys.argv[3])
try:
    suite = ET.parse(out / "tests.xml").getroot()
    suite = suite.find("testsuite") if suite.tag == "testsuites" else suite
    cases = [(c.get("name"), "failed" if c.find("failure") is not None or c.find("error") is not None
              else "skipped" if c.find("skipped") is not None else "passed") for c in suite.iter("testcase")]
    status = "ok" if cases and all(state == "passed" for _, state in cases) else "failed"
    rows = [{"test": name, "outcome": state} for name, state in cases]
except (OSError, ET.ParseError) as error:
    status, rows = "failed", [{"test": "(no report)", "outcome": str(error)}]
record = {"step": "tests", "status": status, "seconds": seconds, "dry_run": dry, "rows": rows,
          "notes": ["tests/test_device_paths.py with PHASESCOPE_TEST_DEVICE set; the log is tests.log"]}
(out / "tests.json").write_text(json.dumps(record, indent=1))
PY

# 2-5. the benchmarks, each with its own limit (seconds): the sum stays under 8 minutes with the tests
for pair in lm_train:150 study_b:170 curvature:45 sweep:25; do
  name=${pair%%:*}; limit=${pair##*:}
  [ -n "$dry" ] && limit=$(( limit * 4 ))  # two CPU cores instead of an H200
  timeout "$limit" "$python" benchmarks/gpu/suite.py "$name" "$out" $dry 2>&1 | tail -5
  [ -f "$out/$name.json" ] || printf '{"step": "%s", "status": "failed", "error": "stopped at its %s s limit"}\n' \
    "$name" "$limit" > "$out/$name.json"
done
"$python" benchmarks/gpu/suite.py collect "$out"
