"""The command line end to end on a tiny digits run: values against a dense float64 Hessian, and
one-line errors for bad input."""


import subprocess
import sys

import pytest
import torch

from phasescope.run import MetricStore, RunDir
from phasescope.train import load_gd_model, open_gd_run
from tests.cases import dense_hessian
from tests.helpers import HANG_GUARD_SECONDS, phasescope, phasescope_here

TINY = """\
kind: gd
seed: 1
device: cpu
data: {name: digits, train_size: 150}
model: {arch: mlp, depth: 1, width: 8, activation: tanh}
loss: mse
train: {lr: 0.3, max_steps: 20, checkpoint_every: 10}
"""


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    (root / "tiny.yaml").write_text(TINY)
    result = phasescope("train", str(root / "tiny.yaml"), "--out", str(root / "run"))
    assert result.returncode == 0, result.stderr
    return root / "run"


def test_sharpness_command_matches_dense_hessian(trained_run):
    result = phasescope("sharpness", str(trained_run), "--k", "2", "--tol", "1e-6")
    assert result.returncode == 0, result.stderr
    frame = MetricStore(RunDir.open(trained_run)).read("sharpness")
    assert sorted(frame.step.unique()) == [0, 10, 20]
    _, config, data, loss_fn = open_gd_run(trained_run)
    for checkpoint in RunDir.open(trained_run).list_checkpoints():
        model = load_gd_model(checkpoint).double()
        hessian = dense_hessian(model, loss_fn, data.train_inputs.double(), data.train_targets.double())
        expected = torch.linalg.eigvalsh(hessian).flip(0)[:2]
        at_step = frame[frame.step == checkpoint.step].set_index("metric").value
        assert at_step["sharpness"] == pytest.approx(float(expected[0]), rel=1e-4)
        assert at_step["eigenvalue_2"] == pytest.approx(float(expected[1]), rel=1e-4)
        assert at_step["gd_threshold"] == pytest.approx(2 / config.train.lr)
    # rerunning skips the shards that exist
    before = sorted(p.stat().st_mtime_ns for p in MetricStore(RunDir.open(trained_run)).shard_paths("sharpness"))
    assert phasescope("sharpness", str(trained_run), "--k", "2", "--tol", "1e-6").returncode == 0
    after = sorted(p.stat().st_mtime_ns for p in MetricStore(RunDir.open(trained_run)).shard_paths("sharpness"))
    assert before == after


def test_runs_show_lists_config_checkpoints_and_metrics(trained_run):
    result = phasescope("runs", "show", str(trained_run))
    assert result.returncode == 0, result.stderr
    assert "lr: 0.3" in result.stdout
    assert "3 checkpoints" in result.stdout
    summary = {line.split("│")[2].strip(): line for line in result.stdout.splitlines() if line.count("│") > 5}
    assert {"train_loss", "test_accuracy", "l1", "l2", "sharpness"} <= set(summary)


@pytest.mark.parametrize("args, message", [
    (["sharpness", "/nonexistent/run"], "run directory /nonexistent/run does not exist"),
    (["runs", "show", "/nonexistent/run"], "run directory /nonexistent/run does not exist"),
    (["train", "/nonexistent.yaml"], "config file not found"),
    (["sharpness", "RUN", "--step", "999"], "no checkpoint at step 999"),
    (["sharpness", "RUN", "--k", "100000"], "k must be between 1 and the number of parameters"),
    (["sharpness", "RUN", "--k", "0"], "options: k: Input should be greater than or equal to 1"),
    (["sharpness", "RUN", "--params", "nope"], "no trainable parameter matches 'nope'"),
    (["sharpness", "RUN", "--bogus"], "No such option: --bogus"),
])
def test_bad_input_is_one_line_and_non_zero(trained_run, args, message):
    result = phasescope(*[str(trained_run) if a == "RUN" else a for a in args])
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr


def test_bad_config_names_the_field_before_any_work(tmp_path):
    (tmp_path / "bad.yaml").write_text(TINY.replace("tanh", "gelu").replace("lr: 0.3", "lr: 0.3, lrr: 1"))
    result = phasescope("train", str(tmp_path / "bad.yaml"), "--out", str(tmp_path / "run"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "model.mlp.activation" in result.stderr or "model.activation" in result.stderr
    assert "'relu' or 'tanh'" in result.stderr and "train.lrr: unknown field" in result.stderr
    assert not (tmp_path / "run").exists()


def test_the_command_line_starts_without_torch_and_measure_help_lists_the_measures():
    # `phasescope --help` paid 4 s of torch and transformers imports: what is loaded is checked, not a clock
    probe = subprocess.run([sys.executable, "-c", "import sys, phasescope, phasescope.cli; "
                            "print(sorted({'torch', 'transformers', 'pandas'} & set(sys.modules)))"],
                           capture_output=True, text=True, timeout=HANG_GUARD_SECONDS)
    assert probe.stdout.strip() == "[]", probe.stderr
    assert phasescope("--help").returncode == 0
    listed = " ".join(phasescope("measure", "--help").stdout.split())
    for name in ("wlt", "logit_lens", "layer_swap", "path_attribution", "lm_sharpness", "minimal_pairs"):
        assert f"{name}: " in listed, name


def test_the_sharpness_command_is_the_sharpness_measure_of_gd_runs(trained_run, tmp_path):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("metrics"))
    assert phasescope("sharpness", str(run), "--k", "2", "--tol", "1e-6").returncode == 0
    # the same measure and config through `measure`: every shard is there already; an LM measure does not apply
    result = phasescope("measure", str(run), "-m", "sharpness,test_text_logprob", "--import", "tests.measure_fixtures",
                        "--set", "sharpness.k=2", "--set", "sharpness.tol=1e-6")
    assert result.returncode == 0, result.stderr
    counts = {line.split("│")[1].strip(): [cell.strip() for cell in line.split("│")[2:6]]
              for line in result.stdout.splitlines() if line.count("│") >= 5}
    assert counts["sharpness"] == ["0", "3", "0", "0"]  # computed, already there, failed, not applicable
    assert counts["test_text_logprob"] == ["0", "0", "0", "3"]


@pytest.mark.parametrize("command", [
    ["train", "configs/digits-sharpness.yaml", "--out", "{file}/run"],
    ["sweep", "configs/digits-mlp-mse.yaml", "--out", "{file}/run"],
    ["compare", "runs/a", "runs/b", "--out", "{file}/compare.png"],
    ["demo", "--quick", "--out", "{file}/demo"],
    ["measure", "EleutherAI/pythia-14m", "--measures", "wlt", "--out", "{file}/run"],
    ["lexicon", "build", "--out", "{file}/lexicon.parquet"],
    ["corpus", "build", "--from", "debian-docs", "--out", "{file}/corpus"],
    ["corpus", "build", "--from", "debian-docs", "--out", "{file}"],
    ["lexicon", "build", "--out", "{folder}"],
])
def test_an_output_path_that_cannot_be_written_is_one_line_before_any_work(command, tmp_path, monkeypatch, capsys):
    (tmp_path / "file").write_text("a regular file")
    (tmp_path / "folder").mkdir()
    before = sorted(tmp_path.rglob("*"))
    arguments = [part.format(file=tmp_path / "file", folder=tmp_path / "folder") for part in command]
    code, stderr = phasescope_here(monkeypatch, capsys, *arguments)
    assert code == 2, stderr
    [line] = stderr.strip().splitlines()
    assert "is a file, not a folder" in line or "is there, where the output goes" in line
    assert sorted(tmp_path.rglob("*")) == before  # nothing written


def test_a_missing_config_file_answers_at_once_before_anything_is_imported(tmp_path):
    """`train` and `sweep` check the file before importing torch and the trainers (a mistyped path answers
    in the time of starting Python, not of importing the package)."""
    probe = ("import sys; from phasescope.cli import main; sys.argv = ['phasescope', sys.argv[1], sys.argv[2]]\n"
             "try:\n    main()\nexcept SystemExit as exit:\n    print(exit.code, 'torch' in sys.modules)")
    for command in ("train", "sweep"):
        result = subprocess.run([sys.executable, "-c", probe, command, str(tmp_path / "missing.yaml")],
                                capture_output=True, text=True, timeout=HANG_GUARD_SECONDS)
        assert result.stdout.split() == ["2", "False"], result.stderr
        missing = tmp_path / "missing.yaml"
        assert result.stderr.strip() == f"error: {missing}: config file not found (expected a YAML file)"


@pytest.mark.parametrize("command, message", [
    (["sweep", "configs/multilingual-tiny.yaml"], "a language-model config (kind: lm), not a learning-rate sweep; "
                                                  "train it with: phasescope train configs/multilingual-tiny.yaml"),
    (["corpus", "build", "--from", "debian-docs", "--out", "{tmp}/c", "--root", "{tmp}/nowhere"],
     "--root {tmp}/nowhere: no such folder"),
    (["corpus", "build", "--from", "debian-docs", "--out", "{tmp}/c", "--languages", ""],
     "--languages '': no language code given"),
    (["lexicon", "build", "--out", "{tmp}/l.parquet", "--languages", " , "], "--languages ' , ': no language code"),
    (["lexicon", "build", "--from-gettext", "/usr/share/locale", "--corpus", "{tmp}/nowhere", "--out",
      "{tmp}/l.parquet"], "--corpus {tmp}/nowhere: no such corpus folder"),
])
def test_misleading_inputs_get_the_one_line_that_names_them(command, message, tmp_path, monkeypatch, capsys):
    code, stderr = phasescope_here(monkeypatch, capsys, *[part.format(tmp=tmp_path) for part in command])
    assert code == 2, stderr
    [line] = stderr.strip().splitlines()
    assert message.format(tmp=tmp_path) in line
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_a_missing_wlt_lexicon_is_refused_once_when_the_measures_are_planned(tmp_path, monkeypatch, capsys):
    code, stderr = phasescope_here(monkeypatch, capsys, "measure", str(tmp_path / "no-run"), "-m", "wlt,logit_lens",
                                   "--set", f"wlt.lexicon={tmp_path / 'nope.parquet'}")
    assert code == 2
    [line] = stderr.strip().splitlines()
    assert f"measure wlt: lexicon: Value error, no lexicon file '{tmp_path / 'nope.parquet'}'" in line


def test_an_interrupted_corpus_build_says_nothing_was_written_and_how_to_rerun(tmp_path, monkeypatch, capsys):
    import phasescope.data.debian_docs as debian_docs

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(debian_docs, "build_debian_docs", interrupted)
    code, stderr = phasescope_here(monkeypatch, capsys, "corpus", "build", "--from", "debian-docs", "--out",
                                   str(tmp_path / "corpus"))
    assert code == 130
    [line] = stderr.strip().splitlines()
    assert line.startswith("interrupted (") and f"nothing was written to {tmp_path / 'corpus'}" in line
    assert "rerun: phasescope corpus build --from debian-docs --out" in line


def test_sources_debian_has_in_no_chosen_language_are_one_line_before_any_scan(tmp_path, monkeypatch, capsys):
    code, stderr = phasescope_here(monkeypatch, capsys, "corpus", "build", "--from", "debian-docs", "--out",
                                   str(tmp_path / "c"), "--languages", "ar", "--sources", "debian-reference")
    assert code == 2
    assert stderr.strip().splitlines() == ["error: Debian has no debian-reference in ar (nothing to install would "
                                           "help); choose other sources (--sources) or languages (--languages)"]
