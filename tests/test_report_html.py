"""The HTML report: study B from a metric store whose rises are placed on purpose (the marked
onsets land where they were put), graceful notes for missing measures, and the page of a demo
directory loaded in headless Chromium: every figure loads, no console error, no request leaves it."""

import dataclasses
import html
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from phasescope.analysis.phases import detect_onset, item_matrix, trajectory
from phasescope.errors import PhasescopeError
from phasescope.report.browser import check_page, find_chromium
from phasescope.report.index import DemoConfig, write_report
from phasescope.report.study_b import findings
from phasescope.report.trajectory_plots import format_tokens
from phasescope.run import MetricStore, RunDir, dump_config
from tests.helpers import HANG_GUARD_SECONDS
from tests.report_fixtures import CENTERS, write_study_b_metrics, write_tiny_diagonal_sweep

ROOT = Path(__file__).resolve().parents[1]
STUDY_B_FIGURES = ["Translation, copying and linguistic ability against training tokens",
                   "Translation per direction (pairs without shared first tokens)", "Logit lens: layer by checkpoint",
                   "Layer swap and path attribution", "Mechanism against behaviour",
                   "Loss, curvature and surface similarity"]


@pytest.fixture(scope="module")
def study_b_run(tmp_path_factory):
    return write_study_b_metrics(tmp_path_factory.mktemp("report") / "lm")


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory, study_b_run):
    root = tmp_path_factory.mktemp("demo") / "demo"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread is fastest, and does not stall on a busy machine
    try:
        write_tiny_diagonal_sweep(root / "diagonal")
    finally:
        torch.set_num_threads(threads)
    os.symlink(study_b_run.path, root / "lm")
    RunDir.create(root, dump_config(DemoConfig(study_a=["diagonal"])), exist_ok=True)
    return root


def test_study_b_onsets_land_where_the_rises_were_placed(study_b_run):
    result = write_report(study_b_run.path)
    study_b = result.study_b
    decades = {key: np.log10(study_b.onset(key).tokens) for key in ("copying", "wlt_overlap", "wlt_no_overlap")}
    # an onset is where a rise leaves its initial band (10% of its range): a little before its centre
    for key, center in (("copying", CENTERS["copying"]), ("wlt_overlap", CENTERS["overlap"]),
                        ("wlt_no_overlap", CENTERS["no_overlap"])):
        assert center - 0.4 <= decades[key] <= center, (key, decades[key])
    # the marked onset is the analysis of the plotted rows: pooled line, interval over directions
    store = MetricStore(study_b_run).read("wlt")
    rows = store[(store.metric == "top1_accuracy") & (store.subset == "no_overlap")]
    pooled = trajectory(rows, src=None)
    matrix, checkpoints, labels = item_matrix(rows, ("src", "tgt"))
    expected = detect_onset(pooled.value.to_numpy(), pooled.step.to_numpy(), pooled.tokens.to_numpy(),
                            items=matrix, direction="up")
    marked = study_b.onset("wlt_no_overlap")
    assert (marked.step, marked.interval_tokens) == (expected.step, expected.interval_tokens) and len(labels) == 12
    # the swap benefit was placed half a decade before translation without shared tokens; its lag is taken
    # against translation's own onset, the one in the findings (one onset per behaviour)
    lag = study_b.lead_lags["layer_swap_middle"]
    assert lag.onset_lag_tokens > 0 and lag.shift > 0.2, lag
    assert lag.behaviour == marked
    assert lag.onset_lag_tokens == marked.tokens - lag.mechanism.tokens
    # the attribution share is drawn as points, with no onset or lead/lag read from its 8 noisy intervals
    assert "attribution_middle" not in study_b.lead_lags
    page = result.path.read_text(encoding="utf-8")
    for title in STUDY_B_FIGURES:
        assert f'alt="{title}"' in page
    finding = next(line for line in study_b.section.findings if line.startswith("translation, no shared"))
    assert "onset at" in finding and "tokens" in finding and html.escape(finding) in page
    # the verb carries the sign of the lag, the distance is positive
    lag = study_b.lead_lags["layer_swap_middle"]
    label = study_b.trajectories["layer_swap_middle"].label
    distance = format_tokens(lag.onset_lag_tokens)
    assert any(line.startswith(f"{label} leads translation without shared tokens by {distance} tokens")
               for line in study_b.section.findings), study_b.section.findings
    study_b.lead_lags = {"layer_swap_middle": dataclasses.replace(lag, onset_lag_tokens=-lag.onset_lag_tokens)}
    line = next(line for line in findings(study_b, use_tokens=True) if line.startswith(label))
    assert line.startswith(f"{label} lags translation without shared tokens by {distance} tokens"), line


def test_missing_measures_leave_notes_and_the_rest(tmp_path):
    run = write_study_b_metrics(tmp_path / "lm", measures=("wlt",))
    result = write_report(run.path)
    page = result.path.read_text(encoding="utf-8")
    assert 'alt="Translation, copying and linguistic ability against training tokens"' in page
    assert 'alt="Logit lens: layer by checkpoint"' not in page
    notes = re.findall(r'<p class="note">(.*?)</p>', page)
    for measure in ("minimal_pairs", "logit_lens", "layer_swap"):
        assert any(measure in note for note in notes), (measure, notes)
    empty = RunDir.create(tmp_path / "empty", "kind: lm\n")
    assert "has no metrics yet" in write_report(empty.path).path.read_text(encoding="utf-8")
    gd = RunDir.create(tmp_path / "gd", "kind: gd\n")
    with pytest.raises(PhasescopeError, match="covers runs of kind sweep, sweep_grid, lm, series, recorded, demo"):
        write_report(gd.path)


@pytest.mark.slow
def test_demo_page_loads_every_figure_in_chromium_without_console_errors(demo_dir):
    result = subprocess.run([sys.executable, "-m", "phasescope.cli", "report", str(demo_dir)], capture_output=True,
                            text=True, timeout=HANG_GUARD_SECONDS, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    page_path = demo_dir / "report" / "index.html"
    assert f"report: {page_path}" in result.stdout.replace("\n", "")
    assert "eta_c = 2/s_GF" in result.stdout and "translation, no shared first token" in result.stdout
    page = page_path.read_text(encoding="utf-8")
    images = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,', page)
    assert len(images) == page.count("<img ") and len(images) >= 12
    assert "Diagonal linear network: norm versus sharpness of interpolators" in images
    assert "Final sharpness against the learning rate" in images
    assert not re.search(r'(src|href)="(https?:|//)', page)  # nothing from the network
    chromium = find_chromium()
    if chromium is None:
        if os.environ.get("PHASESCOPE_REQUIRE_CHROMIUM"):
            pytest.fail("chromium is required (PHASESCOPE_REQUIRE_CHROMIUM) but not installed")
        pytest.skip("no chromium on this machine (scripts/test.sh installs Debian's)")
    check = check_page(page_path, chromium)
    assert check.title == "phasescope demo"
    assert sorted(image["alt"] for image in check.images) == sorted(images)
    assert check.broken_images == []
    assert all(image["width"] > 100 and image["height"] > 100 for image in check.images)
    assert check.errors == [] and check.exceptions == []
    assert {url.split(":", 1)[0] for url in check.requests} <= {"file", "data"}
    assert sum(url.startswith("file:") for url in check.requests) == 1  # the page itself, nothing else


def test_chromium_check_sees_a_broken_image_and_a_console_error(tmp_path):
    """The browser check itself against a page that is broken on purpose."""
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("no chromium on this machine")
    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><html><head><title>broken</title></head><body>'
                    '<img alt="missing" src="missing.png"><script>console.error("boom")</script></body></html>')
    check = check_page(page, chromium)
    assert check.broken_images == ["missing"]
    assert "boom" in check.errors
