"""Phases of metric trajectories across checkpoints: onsets, change points, lead and lag.

- **Onset**: the first checkpoint where a metric leaves its initial band (and stays out), with a
  percentile-bootstrap interval over the items the metric averages (translation directions,
  prompts): "WLT without shared first tokens first succeeds at 11B tokens (90% CI 9B-13B)".
- **Change points** of a trajectory with ``ruptures`` (Truong, Oudre and Vayatis, "Selective review
  of offline change point detection methods", Signal Processing 2020): PELT (Killick et al. 2012)
  with a BIC-type penalty scaled by a robust noise estimate, capped by an exact dynamic program.
- **Lead and lag** between a mechanism measure (layer-swap benefit, the middle layers' share of
  path attribution) and the behaviour it serves: the difference of their onsets with a bootstrap
  interval, and the shift along the token axis that best aligns their normalized curves.

Trajectories are 1-D arrays over checkpoints in step order; items x checkpoints matrices hold the
per-item values whose mean is the trajectory (NaN where an item was not measured).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from phasescope.errors import PhasescopeError

Direction = Literal["up", "down", "either"]
_MAD_TO_SIGMA = 1.4826  # MAD of a normal sample times this estimates its standard deviation


@dataclass(frozen=True)
class Band:
    """The initial band of a trajectory: values within [low, high] have not left the start."""

    center: float
    low: float
    high: float


@dataclass(frozen=True)
class Onset:
    """The first checkpoint where a trajectory leaves its initial band.

    Attributes:
        index: position in the trajectory (None: it never leaves the band).
        step, tokens: of that checkpoint (tokens None when unknown).
        interval_steps, interval_tokens: the bootstrap interval (None without items, or when fewer
            than half of the resamples found an onset).
        detected_fraction: share of bootstrap resamples with an onset (1.0 without items if found).
        band: the initial band of the full-sample trajectory.
        confidence: of the interval.
    """

    index: int | None
    step: int | None
    tokens: int | None
    band: Band
    interval_steps: tuple[int, int] | None = None
    interval_tokens: tuple[int, int] | None = None
    detected_fraction: float = 0.0
    confidence: float = 0.9
    bootstrap_indices: np.ndarray | None = None  # (n_bootstrap,) onset index of each resample, -1 for none


@dataclass(frozen=True)
class ChangePoint:
    """A checkpoint where a new segment of the trajectory starts."""

    index: int  # first checkpoint of the new segment
    step: int
    tokens: int | None
    before: float  # mean of the segment that ends here
    after: float  # mean of the segment that starts here


@dataclass(frozen=True)
class LeadLag:
    """How far a mechanism's trajectory runs ahead of a behaviour's (positive: the mechanism leads).

    Attributes:
        mechanism, behaviour: their onsets.
        onset_lag_tokens: behaviour onset minus mechanism onset, in tokens (steps if tokens unknown).
        onset_lag_interval: bootstrap interval of that difference (when both have items).
        shift: the shift along ``axis`` that best aligns the behaviour's normalized curve with the
            mechanism's: behaviour(x + shift) ~ mechanism(x). On the ``log_tokens`` axis a shift of
            0.3 means the behaviour reaches each level after 10**0.3 = 2x the tokens.
        axis: ``log_tokens`` (log10 tokens) or ``index`` (checkpoints, when tokens are unknown).
        alignment_error: mean squared difference of the aligned curves (0 = same shape).
    """

    mechanism: Onset
    behaviour: Onset
    onset_lag_tokens: float | None
    onset_lag_interval: tuple[float, float] | None
    shift: float
    axis: str
    alignment_error: float


# --- onsets ------------------------------------------------------------------------------------
def noise_scale(values: np.ndarray, order: int = 1) -> float:
    """Robust standard deviation of a trajectory's noise, from its ``order``-th differences.

    Differences cancel the slow trend (level for order 1, slope for order 2); the median absolute
    deviation ignores the few large differences at jumps. The ``order``-th difference of white
    noise of variance s^2 has variance C(2 order, order) s^2, which is divided out.
    """
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if len(values) <= order + 1:
        return 0.0
    differences = np.diff(values, n=order)
    mad = np.median(np.abs(differences - np.median(differences)))
    return float(_MAD_TO_SIGMA * mad / np.sqrt({1: 2.0, 2: 6.0}.get(order, 2.0)))


def initial_band(values: np.ndarray, baseline: int = 3, n_sigma: float = 3.0, min_fraction: float = 0.1,
                 min_change: float = 0.0) -> Band:
    """The band around the mean of the first ``baseline`` checkpoints.

    Half-width: the larger of ``n_sigma`` standard deviations of a new point's distance from the
    baseline mean (noise from :func:`noise_scale` over the whole trajectory, times
    sqrt(1 + 1/baseline)), ``min_fraction`` of the trajectory's range and ``min_change`` (in the
    metric's units), so that leaving the band means a move above the noise, a sizeable share of the
    total change and, for a metric on a known scale such as an accuracy, a change that matters.
    """
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    if len(finite) == 0:
        raise PhasescopeError("initial band: the trajectory has no finite value")
    start = values[:baseline][np.isfinite(values[:baseline])]
    center = float(start.mean()) if len(start) else float(finite[0])
    spread = np.sqrt(1 + 1 / max(len(start), 1))  # a new point vs the mean of the baseline points
    half = max(n_sigma * spread * noise_scale(finite), min_fraction * float(finite.max() - finite.min()), min_change)
    return Band(center, center - half, center + half)


def _outside(values: np.ndarray, band: Band, direction: Direction) -> np.ndarray:
    above, below = values > band.high, values < band.low
    return {"up": above, "down": below, "either": above | below}[direction]


def first_exit(values: np.ndarray, band: Band, direction: Direction = "either", sustain: int = 2,
               start: int = 0) -> int | None:
    """Index of the first checkpoint at or after ``start`` outside the band that stays out for
    ``sustain`` checkpoints (or until the end of the trajectory); None if there is none."""
    out = _outside(np.asarray(values, dtype=np.float64), band, direction)
    for index in range(start, len(out)):
        if out[index:index + sustain].all():
            return index
    return None


def onset_index(values: np.ndarray, direction: Direction = "either", baseline: int = 3, n_sigma: float = 3.0,
                min_fraction: float = 0.1, sustain: int = 2, min_change: float = 0.0) -> tuple[int | None, Band]:
    """(onset index or None, initial band) of one trajectory: the first checkpoint after the
    baseline that is outside :func:`initial_band` for ``sustain`` checkpoints.

    The baseline checkpoints themselves cannot be the onset: they define the start.
    """
    band = initial_band(values, baseline, n_sigma, min_fraction, min_change)
    return first_exit(values, band, direction, sustain, start=min(baseline, len(values))), band


def detect_onset(values: np.ndarray | None, steps, tokens=None, *, items: np.ndarray | None = None,
                 direction: Direction = "either", baseline: int = 3, n_sigma: float = 3.0, min_fraction: float = 0.1,
                 sustain: int = 2, n_bootstrap: int = 1000, confidence: float = 0.9, seed: int = 0,
                 min_change: float = 0.0) -> Onset:
    """The onset of a trajectory (:func:`onset_index`), with a bootstrap interval over items.

    Args:
        values: (T,) the trajectory (None: the mean of ``items``). With items, the onset is
            read from ``values`` (e.g. a pooled aggregate) and the interval from item resamples.
        steps, tokens: (T,) of the checkpoints (tokens may be None).
        items: (n_items, T) per-item values (NaN where missing); resampled with replacement
            ``n_bootstrap`` times, the onset recomputed on each resample's mean trajectory (band
            included), and the interval read from the percentiles of those onsets.
        direction: ``up`` (rises out of the band), ``down`` or ``either``.
        baseline, n_sigma, min_fraction, min_change, sustain: see :func:`initial_band` and
            :func:`first_exit`.

    Returns:
        An :class:`Onset`. The interval is None when fewer than half the resamples left the band.
    """
    steps = np.asarray(steps)
    tokens_array = None if tokens is None else np.asarray(tokens)
    if items is not None:
        items = np.asarray(items, dtype=np.float64)
        if items.ndim != 2 or items.shape[1] != len(steps):
            raise PhasescopeError(f"onset: items must be (n_items, {len(steps)} checkpoints), got {items.shape}")
        if values is None:
            values = _nanmean(items, axis=0)
    values = np.asarray(values, dtype=np.float64)
    if values.shape != steps.shape:
        raise PhasescopeError(f"onset: {len(values)} values for {len(steps)} checkpoints")
    index, band = onset_index(values, direction, baseline, n_sigma, min_fraction, sustain, min_change)

    def at(i):
        return (int(steps[i]), None if tokens_array is None else _int_or_none(tokens_array[i]))

    step, token = at(index) if index is not None else (None, None)
    if items is None or len(items) < 2:
        return Onset(index, step, token, band, detected_fraction=float(index is not None), confidence=confidence)
    rng = np.random.default_rng(seed)
    # resampling items with replacement = weighting each by how often it was drawn
    weights = rng.multinomial(len(items), np.full(len(items), 1 / len(items)), size=n_bootstrap)  # (B, items)
    finite = np.isfinite(items)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = (weights @ np.where(finite, items, 0.0)) / (weights @ finite)  # (B, T), NaN where no item
    found = onset_indices(means, direction, baseline, n_sigma, min_fraction, sustain, min_change)
    detected = found >= 0
    interval_steps = interval_tokens = None
    if detected.mean() >= 0.5:
        tail = (1 - confidence) / 2
        # resamples without an onset count as "after the last checkpoint" (they bound it from above)
        ranked = np.where(detected, found, len(values))
        low = int(np.quantile(ranked, tail, method="lower"))
        high = int(np.quantile(ranked, 1 - tail, method="higher"))
        high = min(high, len(values) - 1)
        interval_steps = (int(steps[low]), int(steps[high]))
        if tokens_array is not None and at(low)[1] is not None and at(high)[1] is not None:
            interval_tokens = (at(low)[1], at(high)[1])
    return Onset(index, step, token, band, interval_steps, interval_tokens, float(detected.mean()), confidence,
                 found)


def onset_indices(trajectories: np.ndarray, direction: Direction = "either", baseline: int = 3,
                  n_sigma: float = 3.0, min_fraction: float = 0.1, sustain: int = 2,
                  min_change: float = 0.0) -> np.ndarray:
    """:func:`onset_index` of each row of a (B, T) array at once (-1 where there is no onset).

    Rows without NaN are done in a few array operations (the bootstrap's thousand resamples);
    rows with NaN go through :func:`onset_index` one by one.
    """
    trajectories = np.asarray(trajectories, dtype=np.float64)
    count, length = trajectories.shape
    found = np.full(count, -1, dtype=np.int64)
    complete = np.isfinite(trajectories).all(axis=1)
    for row in np.flatnonzero(~complete):
        if np.isfinite(trajectories[row]).any():
            index, _ = onset_index(trajectories[row], direction, baseline, n_sigma, min_fraction, sustain, min_change)
            found[row] = -1 if index is None else index
    rows = trajectories[complete]  # (R, T)
    if len(rows) == 0:
        return found
    if length > 2:  # noise_scale with order 1, row by row
        differences = np.diff(rows, axis=1)
        mad = np.median(np.abs(differences - np.median(differences, axis=1, keepdims=True)), axis=1)
        sigma = _MAD_TO_SIGMA * mad / np.sqrt(2.0)
    else:
        sigma = np.zeros(len(rows))
    spread = np.sqrt(1 + 1 / min(baseline, length))  # a new point vs the mean of the baseline ones
    half = np.maximum(np.maximum(n_sigma * spread * sigma, min_fraction * (rows.max(axis=1) - rows.min(axis=1))),
                      min_change)
    center = rows[:, :baseline].mean(axis=1)
    above, below = rows > (center + half)[:, None], rows < (center - half)[:, None]
    out = {"up": above, "down": below, "either": above | below}[direction]
    sustained = out.copy()
    for offset in range(1, sustain):  # out at i, i+1, ..., i+sustain-1 (or until the end)
        sustained[:, :length - offset] &= out[:, offset:]
    sustained[:, :min(baseline, length)] = False
    first = np.argmax(sustained, axis=1)
    found[complete] = np.where(sustained.any(axis=1), first, -1)
    return found


def _nanmean(array: np.ndarray, axis: int) -> np.ndarray:
    counts = np.isfinite(array).sum(axis=axis)
    sums = np.where(np.isfinite(array), array, 0.0).sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def _int_or_none(value) -> int | None:
    return None if value is None or pd.isna(value) else int(value)


# --- change points -----------------------------------------------------------------------------
def detect_change_points(values: np.ndarray, steps, tokens=None, *, model: Literal["l2", "linear"] = "l2",
                         penalty: float | None = None, penalty_scale: float = 4.0, min_size: int = 3,
                         max_change_points: int | None = 4) -> list[ChangePoint]:
    """Change points of a trajectory (``ruptures``).

    Args:
        values: (T,) the trajectory in checkpoint order (NaNs are dropped).
        steps, tokens: (T,) of the checkpoints.
        model: ``l2`` finds shifts of the mean level (least-squares piecewise-constant fit);
            ``linear`` finds where the slope changes (least-squares piecewise-linear fit against
            the checkpoint index: where a rise starts or stops).
        penalty: PELT's cost per change point; default ``penalty_scale * sigma^2 * log(T)``
            (BIC-type), sigma the trajectory's noise from its first (``l2``) or second
            (``linear``) differences, at least 2% of the trajectory's range so that a noise-free
            smooth curve is not cut at every checkpoint.
        min_size: fewest checkpoints in a segment.
        max_change_points: keep at most this many (the best ones, by an exact dynamic program over
            that number) when PELT finds more; None for no cap.

    Returns:
        The change points in order; each names the first checkpoint of its new segment.
    """
    import ruptures

    values = np.asarray(values, dtype=np.float64)
    steps = np.asarray(steps)
    keep = np.isfinite(values)
    signal, kept_steps = values[keep], steps[keep]
    kept_tokens = None if tokens is None else np.asarray(tokens)[keep]
    if model not in ("l2", "linear"):
        raise PhasescopeError(f"change points: model must be 'l2' or 'linear', got {model!r}")
    if len(signal) < 2 * min_size + 1 or np.ptp(signal) == 0:
        return []
    if penalty is None:
        sigma = max(noise_scale(signal, order=1 if model == "l2" else 2), 0.02 * float(np.ptp(signal)))
        penalty = penalty_scale * sigma ** 2 * np.log(len(signal))
    # ruptures' linear cost regresses the first column on the others: here the index and a constant
    fitted = signal if model == "l2" else np.column_stack([signal, np.arange(len(signal)), np.ones(len(signal))])
    ends = ruptures.Pelt(model=model, min_size=min_size, jump=1).fit(fitted).predict(pen=penalty)[:-1]
    if max_change_points is not None and len(ends) > max_change_points:
        ends = ruptures.Dynp(model=model, min_size=min_size, jump=1).fit(fitted).predict(
            n_bkps=max_change_points)[:-1]
    bounds = [0, *ends, len(signal)]
    points = []
    for k, index in enumerate(ends, start=1):
        before = float(signal[bounds[k - 1]:index].mean())
        after = float(signal[index:bounds[k + 1]].mean())
        token = None if kept_tokens is None else _int_or_none(kept_tokens[index])
        points.append(ChangePoint(int(np.flatnonzero(keep)[index]), int(kept_steps[index]), token, before, after))
    return points


# --- lead and lag ------------------------------------------------------------------------------
def alignment_shift(x: np.ndarray, leader: np.ndarray, follower: np.ndarray, max_shift: float | None = None,
                    grid_size: int = 200) -> tuple[float, float]:
    """The shift s along ``x`` with follower(x + s) closest to leader(x), both normalized to [0, 1].

    Each curve is min-max normalized (so a curve that falls is flipped to rise: compare shapes,
    not units), both are interpolated onto a uniform grid of ``grid_size`` points over ``x``, and
    every shift within ``max_shift`` (default: half the range of ``x``) is scored by the mean
    squared difference over the overlap.

    Returns:
        (shift, mean squared difference at that shift); a positive shift: the leader leads.
    """
    x = np.asarray(x, dtype=np.float64)
    grid = np.linspace(x.min(), x.max(), grid_size)
    a = np.interp(grid, x, _progress(leader))
    b = np.interp(grid, x, _progress(follower))
    spacing = grid[1] - grid[0]
    max_lag = int((max_shift if max_shift is not None else (x.max() - x.min()) / 2) / spacing)
    best = (0.0, np.inf)
    for lag in range(-max_lag, max_lag + 1):
        # follower shifted left by lag grid points: compare a[i] with b[i + lag]
        left, right = (a[:len(a) - lag], b[lag:]) if lag >= 0 else (a[-lag:], b[:len(b) + lag])
        error = float(np.mean((left - right) ** 2))
        if error < best[1] - 1e-12:
            best = (lag * spacing, error)
    return best


def _progress(values: np.ndarray) -> np.ndarray:
    """A trajectory rescaled to [0, 1] from its first level to its last (falling curves flipped)."""
    values = np.asarray(values, dtype=np.float64)
    values = np.interp(np.arange(len(values)), np.flatnonzero(np.isfinite(values)), values[np.isfinite(values)])
    low, high = values.min(), values.max()
    if high == low:
        return np.zeros_like(values)
    scaled = (values - low) / (high - low)
    return scaled if values[-1] >= values[0] else 1 - scaled


def lead_lag(mechanism: np.ndarray | None, behaviour: np.ndarray | None, steps, tokens=None, *,
             mechanism_items: np.ndarray | None = None, behaviour_items: np.ndarray | None = None,
             direction: Direction = "up", mechanism_direction: Direction | None = None,
             behaviour_onset: Onset | None = None, n_bootstrap: int = 1000, confidence: float = 0.9, seed: int = 0,
             **onset_options) -> LeadLag:
    """Lead and lag of a mechanism's trajectory over a behaviour's.

    Args:
        mechanism, behaviour: (T,) trajectories over the same checkpoints (NaN where missing);
            None: the mean of their items.
        steps, tokens: (T,) of the checkpoints.
        mechanism_items, behaviour_items: optional (n_items, T) per-item values for bootstrap
            intervals of the onsets and of their difference (resampled independently).
        direction: the direction the behaviour leaves its initial band (default up).
        mechanism_direction: the mechanism's (default: ``direction``); a layer-swap benefit of the
            final model's layers falls as the checkpoint acquires what they do.
        behaviour_onset: the behaviour's onset as found on all of its own checkpoints (often more
            than the mechanism's), used as it is: one onset per behaviour, the same in every table. The
            lag's interval is then the behaviour's interval minus the mechanism's onset, unless the
            mechanism has items too.
        onset_options: ``baseline``, ``n_sigma``, ``min_fraction``, ``sustain`` of :func:`onset`.

    Returns:
        A :class:`LeadLag`; the alignment shift is measured on log10 tokens (checkpoints with
        tokens > 0) when tokens are known, else on the checkpoint index.
    """
    steps = np.asarray(steps)
    common = dict(n_bootstrap=n_bootstrap, confidence=confidence, seed=seed, **onset_options)
    first = detect_onset(mechanism, steps, tokens, items=mechanism_items, direction=mechanism_direction or direction,
                         **common)
    second = behaviour_onset or detect_onset(behaviour, steps, tokens, items=behaviour_items, direction=direction,
                                             **common)
    position = np.asarray(tokens, dtype=np.float64) if tokens is not None else steps.astype(np.float64)
    lag = interval = None
    if first.index is not None and second.index is not None and behaviour_onset is not None:
        at = float(position[first.index])
        lag = float(second.tokens if tokens is not None else second.step) - at
        bounds = second.interval_tokens if tokens is not None else second.interval_steps
        if bounds is not None and first.bootstrap_indices is None:
            interval = (float(bounds[0]) - at, float(bounds[1]) - at)
    elif first.index is not None and second.index is not None:
        lag = float(position[second.index] - position[first.index])
        if first.bootstrap_indices is not None and second.bootstrap_indices is not None:
            both = (first.bootstrap_indices >= 0) & (second.bootstrap_indices >= 0)
            if both.mean() >= 0.5:
                differences = position[second.bootstrap_indices[both]] - position[first.bootstrap_indices[both]]
                tail = (1 - confidence) / 2
                interval = (float(np.quantile(differences, tail)), float(np.quantile(differences, 1 - tail)))
    if mechanism is None:
        mechanism = _nanmean(np.asarray(mechanism_items, dtype=np.float64), axis=0)
    if behaviour is None:
        behaviour = _nanmean(np.asarray(behaviour_items, dtype=np.float64), axis=0)
    mechanism, behaviour = np.asarray(mechanism, dtype=np.float64), np.asarray(behaviour, dtype=np.float64)
    usable = np.isfinite(mechanism) & np.isfinite(behaviour)
    if tokens is not None:
        usable &= position > 0  # the log axis leaves out the initialization (0 tokens)
        axis, x = "log_tokens", np.log10(np.where(position > 0, position, np.nan))
    else:
        axis, x = "index", np.arange(len(steps), dtype=np.float64)
    if usable.sum() < 3:
        raise PhasescopeError("lead/lag: the two trajectories share fewer than 3 checkpoints")
    shift, error = alignment_shift(x[usable], mechanism[usable], behaviour[usable])
    return LeadLag(first, second, lag, interval, shift, axis, error)


# --- from the metric store ---------------------------------------------------------------------
def trajectory(frame: pd.DataFrame, **where) -> pd.DataFrame:
    """One metric's trajectory: columns step, tokens, value (mean over rows at a step), in step order.

    ``where`` filters columns by value (``metric="top1_accuracy", subset="no_overlap"``); a value of
    None selects rows where that column is null (the aggregate rows leave ``src``/``tgt`` null).
    """
    rows = select_rows(frame, **where)
    grouped = rows.groupby("step", sort=True).agg(tokens=("tokens", "first"), value=("value", "mean"))
    return grouped.reset_index()


def item_matrix(frame: pd.DataFrame, item_columns: tuple[str, ...], **where) -> tuple[np.ndarray, pd.DataFrame,
                                                                                           list[tuple]]:
    """Per-item values as an (n_items, T) matrix over the steps where the rows are present.

    Args:
        frame: metric rows.
        item_columns: the columns naming an item, e.g. ("src", "tgt") for translation directions.
        where: filters as in :func:`trajectory`; rows whose item columns are null are dropped.

    Returns:
        (matrix with NaN where an item lacks a step, the checkpoints (step, tokens), item labels).
    """
    rows = select_rows(frame, **where).dropna(subset=list(item_columns))
    checkpoints = rows.groupby("step", sort=True)["tokens"].first().reset_index()
    table = rows.pivot_table(index=list(item_columns), columns="step", values="value", aggfunc="mean")
    table = table.reindex(columns=checkpoints["step"])
    return table.to_numpy(dtype=np.float64), checkpoints, [i if isinstance(i, tuple) else (i,) for i in table.index]


def select_rows(frame: pd.DataFrame, **where) -> pd.DataFrame:
    """The rows whose columns equal the given values; a value of None selects rows where that column is null."""
    mask = np.ones(len(frame), dtype=bool)
    for column, value in where.items():
        mask &= frame[column].isna().to_numpy() if value is None else (frame[column] == value).to_numpy()
    return frame[mask]
