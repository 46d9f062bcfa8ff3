"""``phasescope demo --quick`` end to end in a fresh process, and the demo's configs equal the shipped ones."""

from __future__ import annotations

import subprocess
import sys

import pytest

from phasescope.demo import DIAGONAL_SWEEP, DIGITS_SWEEP, LM_CONFIG, SIZES, demo_configs
from phasescope.run import MetricStore, RunDir, load_config
from phasescope.train.lm import LMRunConfig
from phasescope.train.sweep import SweepConfig
from tests.helpers import HANG_GUARD_SECONDS, REPO_ROOT
from tests.measure_fixtures import builtin_measures


@pytest.mark.parametrize(("name", "config", "kind"), [
    ("multilingual-tiny.yaml", LM_CONFIG, LMRunConfig),
    ("digits-mlp-mse.yaml", DIGITS_SWEEP, SweepConfig),
    ("sparse-regression-diagonal.yaml", DIAGONAL_SWEEP, SweepConfig),
])
def test_the_full_demo_runs_the_shipped_configs(name, config, kind):
    shipped = load_config(REPO_ROOT / "configs" / name, kind)
    assert kind.model_validate(config) == shipped
    lm, digits, diagonal = demo_configs(SIZES["full"])
    assert {"multilingual-tiny.yaml": lm, "digits-mlp-mse.yaml": digits,
            "sparse-regression-diagonal.yaml": diagonal}[name] == shipped


def test_every_registered_study_b_measure_is_in_both_demo_sizes():
    for size in SIZES.values():
        planned = {name for stage in size.stages for name in stage.measures}
        assert planned == builtin_measures(), size.name


def test_quick_demo_end_to_end_then_a_rerun_keeps_everything(tmp_path):
    out = tmp_path / "demo"
    result = subprocess.run([sys.executable, "-m", "phasescope.cli", "demo", "--quick", "--out", str(out)],
                            capture_output=True, text=True, timeout=HANG_GUARD_SECONDS, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    stdout = " ".join(result.stdout.split())  # rich wraps long lines
    assert f"report: {out / 'report' / 'index.html'}" in stdout
    assert "digits-mlp-mse: eta_c =" in stdout and "best eta for test loss" in stdout
    assert "translation without shared first tokens" in stdout

    lm = RunDir.open(out / "lm")
    steps = [c.step for c in lm.list_checkpoints()]
    assert steps == [0, 1, 2, 4, 8, 10, 16, 20, 30, 40, 50, 60]
    assert (out / "lm" / "data" / "lexicon.parquet").is_file()
    assert (out / "lm" / "data" / "heldout_concepts.json").is_file()
    store = MetricStore(lm)
    for name in builtin_measures():  # every study-B measure wrote rows
        assert not store.read(name).empty, name
    wlt = store.read("wlt")
    assert sorted(wlt.step.unique()) == steps  # translation at every checkpoint
    assert set(wlt.subset) >= {"overlap", "no_overlap", "all"}
    for sweep in ("digits-mlp-mse", "sparse-regression-diagonal"):
        rows = MetricStore(RunDir.open(out / sweep)).read("sweep")
        assert len(rows[rows.metric == "steps"]) == 8  # every rate of the quick sweep trained
    page = (out / "report" / "index.html").read_text(encoding="utf-8")
    assert page.count("<img") >= 8
    # the README's headline check, against what this demo printed (report/headline.txt)
    from phasescope.report.readme_check import MARKER
    from phasescope.report.readme_check import main as check_readme

    printed = (out / "report" / "headline.txt").read_text(encoding="utf-8").splitlines()
    assert len(printed) >= 5 and all(" ".join(line.split()) in stdout for line in printed)
    readme = tmp_path / "README.md"
    readme.write_text(f"{MARKER} with their numbers:\n\n```\n" + "".join(f"- {line}\n" for line in printed)
                      + "```\n", encoding="utf-8")
    assert check_readme([str(readme), str(out)]) == 0
    stale = readme.read_text(encoding="utf-8").replace("eta_c = ", "eta_c = 9", 1)
    readme.write_text(stale, encoding="utf-8")
    assert check_readme([str(readme), str(out)]) == 1

    shards = sorted(p.relative_to(out) for p in (out / "lm" / "metrics").rglob("*.parquet"))
    again = subprocess.run([sys.executable, "-m", "phasescope.cli", "demo", "--quick", "--out", str(out)],
                           capture_output=True, text=True, timeout=HANG_GUARD_SECONDS, cwd=REPO_ROOT)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "is complete, kept" in " ".join((again.stdout + again.stderr).split())  # the log is on stderr
    assert sorted(p.relative_to(out) for p in (out / "lm" / "metrics").rglob("*.parquet")) == shards
