"""``phasescope report RUN``: the HTML page of a run, whatever its kind.

- a learning-rate sweep (``kind: sweep``): study A's figures (PNG and PDF in ``report/``) and the page;
- a grid of sweeps (``kind: sweep_grid``, ``phasescope sweep --grid``): eta_c, final sharpness and l1
  against eta per combination, then each combination's sweep;
- an LM run or a Hub series (``kind: lm`` / ``series``): study B from its metric shards;
- a record of the user's own training (``kind: recorded``): its inline measures, and study B from
  the shards ``phasescope measure`` added;
- a demo directory (``kind: demo``, written by ``phasescope demo``): one page with both studies,
  from the sub-runs its config names.

The page is ``<run>/report/index.html``, self-contained (figures embedded).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pandas as pd
from pydantic import Field

from phasescope.analysis.edge_of_stability import REGIMES
from phasescope.analysis.grid import grid_table
from phasescope.errors import PhasescopeError
from phasescope.report.html import Section, render_page, write_page
from phasescope.report.readme_check import HEADLINE_FILE
from phasescope.report.recorded import STUDY_B_MEASURES, recorded_section
from phasescope.report.study_a import SweepReport, sweep_section
from phasescope.report.study_b import StudyBResult, describe_onset, study_b_section
from phasescope.run import MetricStore, RunDir, StrictModel, atomic_write_text, validate_config
from phasescope.train.grid import combination_name, grid_members

REPORT_KINDS = ("sweep", "sweep_grid", "lm", "series", "recorded", "demo")


class DemoConfig(StrictModel):
    """The ``config.yaml`` of a demo directory: which sub-runs hold each study."""

    kind: Literal["demo"] = "demo"
    quick: bool = False  # the CI-sized variant
    study_b: str | None = "lm"  # sub-directory of the LM run whose checkpoints were measured (None: not run)
    study_a: list[str] = Field(default_factory=list)  # sub-directories of the sweeps, in page order


@dataclass
class ReportResult:
    """The page written and the numbers behind it."""

    path: Path
    headline: list[str] = field(default_factory=list)
    sweeps: dict[str, SweepReport] = field(default_factory=dict)
    study_b: StudyBResult | None = None


def write_report(run_path: Path | str) -> ReportResult:
    """Write ``<run>/report/index.html`` (and a sweep's figure files) and return what it found."""
    run = RunDir.open(run_path)
    raw = run.read_config_dict()
    kind = raw.get("kind")
    if kind not in REPORT_KINDS:
        raise PhasescopeError(f"{run.path} is a {kind!r} run; the report covers runs of kind "
                              f"{', '.join(REPORT_KINDS)} (a sweep or a grid of sweeps, an LM run or series with "
                              "metrics, a record of your own training, a demo)")
    result = ReportResult(run.report_dir / "index.html")
    sections: list[Section] = []
    if kind == "sweep":
        section, sweep = sweep_section(run)
        sections.append(section)
        result.sweeps[run.name] = sweep
        result.headline = section.findings
        title = f"phasescope report: sweep {run.name}"
    elif kind == "sweep_grid":
        sections.append(grid_section(run))
        for values, sub in grid_members(run.path):
            section, sweep = sweep_section(sub, title=f"Study A: sweep at {combination_name(values)}")
            sections.append(section)
            result.sweeps[sub.name] = sweep
        result.headline = sections[0].findings
        title = f"phasescope report: grid {run.name}"
    elif kind == "recorded":
        sections.append(recorded_section(run))
        if {path.parent.name for path in MetricStore(run).shard_paths()} & set(STUDY_B_MEASURES):
            result.study_b = study_b_section(run)
            sections.append(result.study_b.section)
            result.headline = result.study_b.section.findings
        title = f"phasescope report: {run.name}"
    elif kind in ("lm", "series"):
        result.study_b = study_b_section(run)
        sections.append(result.study_b.section)
        result.headline = result.study_b.section.findings
        title = f"phasescope report: {run.name}"
    else:
        config = validate_config(raw, DemoConfig, source=str(run.config_path))
        if config.study_b is not None:
            result.study_b = study_b_section(RunDir.open(run.path / config.study_b),
                                             title="Study B: copy first, translate later (tiny multilingual LM on "
                                                   "the controlled corpus: a positive control)")
            sections.append(result.study_b.section)
        for name in config.study_a:
            section, sweep = sweep_section(RunDir.open(run.path / name), title=f"Study A: learning-rate sweep {name}")
            sections.append(section)
            result.sweeps[name] = sweep
        result.headline = demo_headline(result)
        title = "phasescope demo" + (" (quick)" if config.quick else "")
    subtitle = {"sweep": "study A: norm versus sharpness at the edge of stability",
                "sweep_grid": "study A: learning-rate sweeps across the paper's axes",
                "demo": "study B on a tiny multilingual LM and study A on digits and a diagonal network",
                "recorded": "a training run recorded by phasescope" + (
                    ", with study B's measures" if result.study_b is not None else ""),
                }.get(kind, "study B: translation dynamics across checkpoints")
    write_page(result.path, render_page(title, sections, subtitle=subtitle,
                                        headline=result.headline if kind == "demo" else None))
    if kind == "demo":  # what the README's headline block is checked against (report/readme_check.py)
        atomic_write_text(result.path.parent / HEADLINE_FILE, "".join(f"{line}\n" for line in result.headline))
    return result


def grid_section(run: RunDir) -> Section:
    """A grid's overview: the figure across combinations, eta_c and regime counts per combination."""
    from phasescope.report.html import FigureBlock
    from phasescope.report.sweep_figures import draw_grid_figure

    members, flows = grid_table(run.path)
    png = next(path for path in draw_grid_figure(members, flows, run.report_dir) if path.suffix == ".png")
    section = Section(f"Study A: grid {run.name}",
                      intro="One learning-rate sweep per combination of the axes, each from its own theta_0 and "
                            "with its own gradient flow; regimes measured from each member's trajectory.")
    summary = []
    for name, rows in members.groupby("combination", sort=False):
        counts = rows.regime.value_counts()
        eta_c = flows[flows.combination == name].eta_c
        summary.append({"combination": name, "eta_c": ", ".join(f"{value:.4g}" for value in eta_c),
                        **{regime.replace("_", " "): int(counts.get(regime, 0)) for regime in REGIMES},
                        "agrees with eta >= eta_c": f"{int(rows.agrees.sum())}/{len(rows)}"})
        section.findings.append(f"{name}: eta_c = {', '.join(f'{value:.4g}' for value in eta_c)}; measured "
                                + ", ".join(f"{int(counts.get(r, 0))} {r.replace('_', ' ')}" for r in REGIMES))
    low, high = flows.eta_c.min(), flows.eta_c.max()
    caption = (f"(a) final sharpness and (b) l1 norm where GD reached epsilon, against eta, one line per "
               f"combination; (c) eta_c of each, from {low:.3g} to {high:.3g} across the grid.")
    section.blocks.append(FigureBlock("Across the grid", png.read_bytes(), caption))
    section.table("Per combination", pd.DataFrame(summary))
    return section


def demo_headline(result: ReportResult) -> list[str]:
    """The demo's findings with their numbers: study B's onsets and lead, study A's eta_c and best eta."""
    lines = []
    study_b = result.study_b
    if study_b is not None:
        use_tokens = True
        for key, text in (("wlt_no_overlap", "translation without shared first tokens"),
                          ("copying", "copying the source word"),
                          ("wlt_overlap", "translation with shared first tokens")):
            onset = study_b.onset(key)
            if onset is not None:
                found = onset.index is not None
                lines.append(f"{text}{' first succeeds' if found else ':'} {describe_onset(onset, use_tokens)}")
        lines += [line for line in study_b.section.findings if " leads " in line or " lags " in line]
    for name, sweep in result.sweeps.items():
        eta_c = ", ".join(f"{value:.4g}" for value in sweep.flow["eta_c"])
        counts = sweep.table.regime.value_counts()
        regimes = ", ".join(f"{counts.get(r, 0)} {r.replace('_', ' ')}" for r in REGIMES
                            if counts.get(r, 0) or r != "unresolved")
        agree = int(sweep.table.agrees.sum())
        lines.append(f"{name}: eta_c = {eta_c}; best eta for test loss {sweep.best['lr']:.4g} "
                     f"(test loss {sweep.best['test_loss']:.4g}); measured {regimes} (eta >= eta_c agrees at "
                     f"{agree} of {len(sweep.table)})")
        if sweep.theory is not None:
            lines.append(f"{name}: {sweep.theory.caption()}")
    return lines
