"""Study-B runs side by side (`phasescope compare`): each run's behaviours and onsets as its own report
computes them, a controlled-corpus run titled as the positive control, the PNG, and bad input."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pytest

from phasescope import PhasescopeError
from phasescope.analysis.behaviours import BEHAVIOURS, analyse_behaviour
from phasescope.report.compare import compared_run, comparison_figure, onset_rows, write_comparison
from phasescope.run import MetricStore, RunDir
from tests.helpers import phasescope_here
from tests.report_fixtures import write_study_b_metrics


def two_runs(tmp_path):
    control = write_study_b_metrics(tmp_path / "controlled", seed=0)
    (control.path / "config.yaml").write_text("kind: lm\ndata:\n  source: controlled\n", encoding="utf-8")
    real = write_study_b_metrics(tmp_path / "real", measures=("wlt", "lm_quality"), seed=1)
    (real.path / "config.yaml").write_text("kind: lm\ndata:\n  source: local\n  root: corpus\n", encoding="utf-8")
    return control, real


def test_each_run_gets_the_behaviours_and_onsets_its_own_metrics_give(tmp_path):
    control, real = two_runs(tmp_path)
    runs = [compared_run(control.path, "controlled corpus"), compared_run(real.path)]
    assert [run.control for run in runs] == [True, False] and runs[1].label == "real"
    for run, path in zip(runs, (control.path, real.path)):
        frame = MetricStore(RunDir.open(path)).read()
        for spec in BEHAVIOURS:
            expected = analyse_behaviour(frame, spec)  # the analysis on the raw store, a second path
            if expected is None:
                assert spec.key not in run.lines
                continue
            line = run.lines[spec.key]
            assert line.onset.step == expected.onset.step and line.onset.tokens == expected.onset.tokens
            assert line.points.value.tolist() == pytest.approx(expected.points.value.tolist())
    assert "minimal_pairs" in runs[0].lines and "minimal_pairs" not in runs[1].lines
    rows = dict(onset_rows(runs))
    minimal = next(spec.label for spec in BEHAVIOURS if spec.key == "minimal_pairs")
    assert rows[minimal][1] == "not measured" and rows[minimal][0].startswith("at ")
    figure = comparison_figure(runs)
    titles = [axis.get_title() for axis in figure.axes]
    assert titles == ["controlled corpus\n(positive control)", "real\n(natural text)"]
    assert [len(axis.get_lines()) > 0 for axis in figure.axes] == [True, True]
    plt.close(figure)


def test_the_figure_is_a_png_and_bad_input_is_one_line(tmp_path, monkeypatch, capsys):
    control, real = two_runs(tmp_path)
    out = tmp_path / "figures" / "side.png"
    code, _ = phasescope_here(monkeypatch, capsys, "compare", str(control.path), str(real.path), "-o", str(out),
                              "--label", "control", "--label", "real text")
    assert code == 0 and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plt.imread(out).shape[1] > 1.8 * plt.imread(out).shape[0]  # two panels side by side
    with pytest.raises(PhasescopeError, match="1 labels for 2 runs"):
        write_comparison([control.path, real.path], tmp_path / "x.png", ["one"])
    with pytest.raises(PhasescopeError, match="name the file"):
        write_comparison([control.path], tmp_path / "x.pdf")
    empty = RunDir.create(tmp_path / "empty", "kind: lm\n")
    code, stderr = phasescope_here(monkeypatch, capsys, "compare", str(empty.path), "-o", str(tmp_path / "e.png"))
    assert code != 0 and "no WLT or minimal-pair metrics" in stderr and len(stderr.strip().splitlines()) == 1
    assert not (tmp_path / "e.png").exists()
