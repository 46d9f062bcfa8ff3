"""What the project's set-up installs keeps the environment working: the benchmarks' peers (the ``bench``
extra) leave torch 2.13.0 in place and transformers importable (PyPI's torchvision, which backpack asks
for, is built for another torch and breaks transformers' Llama)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.helpers import REPO_ROOT

pytestmark = pytest.mark.slow


def test_the_bench_extra_keeps_torch_and_transformers_llama(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    # a fresh venv that sees this one's packages (torch and phasescope's dependencies) and installs the rest
    site = venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    (site / "project.pth").write_text("\n".join(path for path in sys.path if path.endswith("site-packages")) + "\n")
    environment = {**os.environ, "PHASESCOPE_VENV": str(venv), "PHASESCOPE_EXTRAS": "bench"}
    environment.pop("VIRTUAL_ENV", None)
    result = subprocess.run(["bash", "scripts/setup.sh"], cwd=REPO_ROOT, env=environment, capture_output=True,
                            text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    check = subprocess.run([str(venv / "bin" / "python"), "-c", (
        "import importlib.util, torch, curvlinops, pyhessian, nnsight\n"
        "from transformers import LlamaConfig, LlamaForCausalLM\n"
        "LlamaForCausalLM(LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,"
        " num_attention_heads=2, vocab_size=64))\n"
        "print(torch.__version__, importlib.util.find_spec('torchvision') is None)")],
        capture_output=True, text=True, timeout=300)
    assert check.returncode == 0, check.stderr[-3000:]
    assert check.stdout.split() == [torch_version(), "True"]


def torch_version() -> str:
    import torch

    return torch.__version__


def test_the_trainer_example_without_the_hf_extra_says_what_to_install_in_one_line():
    blocked = ("import sys, runpy; sys.modules['accelerate'] = None; "
               "runpy.run_path('examples/trainer_example.py', run_name='__main__')")
    result = subprocess.run([sys.executable, "-c", blocked], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "error: the Hugging Face Trainer needs accelerate: pip install 'phasescope[hf]' (in this repository: "
        "PHASESCOPE_EXTRAS=study,hf bash scripts/setup.sh)"]


EXTRA_PACKAGES = ("transformers", "tokenizers", "huggingface_hub", "emoji", "babel", "ruptures", "py3langid", "cvxpy")
BLOCK = f"import sys\nfor name in {EXTRA_PACKAGES!r}:\n    sys.modules[name] = None\n"


def test_the_core_runs_curvature_gd_sweeps_and_the_run_store_without_the_studies_extras(tmp_path):
    """With every package of the lm and theory extras absent: the sharpness of a model, a GD sweep into a run
    directory and its metrics, and the one-line error that names the extra a study-B command needs."""
    script = BLOCK + f"""
import torch
from torch import nn
import phasescope
from phasescope.curvature import sharpness
from phasescope.run import MetricStore, RunDir, validate_config
from phasescope.train import SweepConfig, run_sweep

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1))
x, y = torch.randn(32, 3), torch.randn(32, 1)
top = sharpness(model, nn.functional.mse_loss, (x, y)).eigenvalues[0]
config = validate_config({{"kind": "sweep", "seeds": [0], "data": {{"name": "digits", "train_size": 60}},
                          "model": {{"arch": "mlp", "depth": 2, "width": 8, "activation": "tanh"}}, "loss": "mse",
                          "lrs": {{"min": 0.05, "max": 0.1, "num": 2, "spacing": "log"}},
                          "train": {{"max_steps": 20, "record_every": 10, "sharpness_every": 20}},
                          "flow": {{"enabled": False}}}}, SweepConfig)
run_sweep(config, {str(tmp_path / 'sweep')!r})
rows = MetricStore(RunDir.open({str(tmp_path / 'sweep')!r})).read("sweep")
print(float(top) > 0, len(rows) > 0)
from phasescope.cli import main
sys.argv = ["phasescope", "lexicon", "build", "--out", {str(tmp_path / 'lexicon.parquet')!r}]
main()
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=600)
    assert result.stdout.split() == ["True", "True"], result.stderr[-3000:]
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and "needs phasescope's 'lm' extra: pip install 'phasescope[lm]'" in line
