"""Every config shipped in configs/ validates."""

from pathlib import Path

import pytest
import yaml

from phasescope.run import load_config
from phasescope.train import GDRunConfig, SweepConfig
from phasescope.train.lm import LMRunConfig

CONFIGS = sorted((Path(__file__).resolve().parent.parent / "configs").rglob("*.yaml"))
KINDS = {"gd": GDRunConfig, "sweep": SweepConfig, "lm": LMRunConfig}


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_config_validates(path):
    kind = yaml.safe_load(path.read_text())["kind"]
    config = load_config(path, KINDS[kind])
    assert config.kind == kind


def test_the_paper_scale_configs_are_all_there():
    names = {p.name for p in CONFIGS}
    for dataset in ("mnist", "cifar10"):
        for arch in ("fcn", "cnn", "resnet", "vit"):
            assert f"{dataset}-5k-{arch}-mse.yaml" in names
    assert {"digits-mlp-mse.yaml", "digits-mlp-ce.yaml", "sparse-regression-diagonal.yaml"} <= names
