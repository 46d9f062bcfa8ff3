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
        "PHASESCOPE_EXTRAS=hf bash scripts/setup.sh)"]
