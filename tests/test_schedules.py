"""Learning-rate (WSD) and checkpoint schedules against values computed by hand."""

import math

import pytest

from phasescope.errors import PhasescopeError
from phasescope.run import validate_config
from phasescope.train.schedules import (
    EverySteps,
    EveryTokens,
    ExplicitSteps,
    LogLinear,
    WSDSchedule,
    check_wsd_fits,
    checkpoint_steps,
    wsd_learning_rate,
)


def test_wsd_linear_values_at_known_steps():
    schedule = WSDSchedule(warmup_steps=10, decay_fraction=0.2, min_lr_ratio=0.1)
    lr = [wsd_learning_rate(step, 1e-3, 100, schedule) for step in range(100)]
    assert lr[0] == pytest.approx(1e-4)  # (0 + 1) / 10 of the peak: the first update is not at lr 0
    assert lr[4] == pytest.approx(5e-4)
    assert lr[9] == pytest.approx(1e-3)  # warmup ends at the peak
    assert lr[10:80] == [1e-3] * 70  # stable
    # decay over the last 20 updates from the peak to the floor 1e-4: step 80 is 1/20 of the way
    assert lr[80] == pytest.approx(1e-4 + 9e-4 * (1 - 1 / 20))
    assert lr[89] == pytest.approx(1e-4 + 9e-4 * 0.5)
    assert lr[99] == pytest.approx(1e-4)  # the last update runs at the floor
    assert all(a >= b for a, b in zip(lr[9:], lr[10:]))


def test_wsd_cosine_and_sqrt_decay_shapes():
    for shape, remaining in (("cosine", lambda p: 0.5 * (1 + math.cos(math.pi * p))),
                             ("one_minus_sqrt", lambda p: 1 - math.sqrt(p))):
        schedule = WSDSchedule(warmup_steps=0, decay_fraction=0.5, decay_shape=shape)
        assert wsd_learning_rate(0, 2.0, 8, schedule) == 2.0
        for step in range(4, 8):
            assert wsd_learning_rate(step, 2.0, 8, schedule) == pytest.approx(2.0 * remaining((step - 3) / 4))
    assert wsd_learning_rate(7, 2.0, 8, WSDSchedule(warmup_steps=0, decay_fraction=0.5,
                                                    decay_shape="cosine")) == pytest.approx(0.0)


def test_wsd_without_decay_and_out_of_range_steps():
    schedule = WSDSchedule(warmup_steps=2, decay_fraction=0.0)
    assert [wsd_learning_rate(s, 1.0, 5, schedule) for s in range(5)] == [0.5, 1.0, 1.0, 1.0, 1.0]
    with pytest.raises(PhasescopeError, match="expected 0 <= step < max_steps"):
        wsd_learning_rate(5, 1.0, 5, schedule)
    with pytest.raises(PhasescopeError, match=r"warmup_steps \(50\) \+ decay steps \(60"):
        check_wsd_fits(WSDSchedule(warmup_steps=50, decay_fraction=0.6), 100)


def test_pythia_log_linear_schedule():
    steps = checkpoint_steps(LogLinear(), max_steps=143000, tokens_per_step=2_097_152)
    assert steps[:11] == [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512]
    assert steps[11:14] == [1000, 2000, 3000]
    assert steps[-1] == 143000
    assert len(steps) == 11 + 143  # Pythia's 154 checkpoints
    assert checkpoint_steps(LogLinear(log_until=8, every=10), 25, 1) == [0, 1, 2, 4, 8, 10, 20, 25]  # + the end


def test_token_schedule_rounds_up_to_the_step_that_reaches_each_multiple():
    # 1000 tokens per step, a checkpoint every 2500 tokens: reached at steps 3 (3000), 5 (5000), 8, 10
    assert checkpoint_steps(EveryTokens(tokens=2500), 10, 1000) == [0, 3, 5, 8, 10]
    assert checkpoint_steps(EveryTokens(tokens=2500, include_initial=False), 11, 1000) == [3, 5, 8, 10, 11]
    # the reference: ~37B tokens, 200 uniform checkpoints, ~185M tokens apart
    tokens_per_step = 1024 * 2048
    max_steps = -(-37_000_000_000 // tokens_per_step)
    steps = checkpoint_steps(EveryTokens(tokens=185_000_000), max_steps, tokens_per_step)
    assert len(steps) == 1 + 200  # step 0 and the 200 checkpoints; the last one is the final step
    assert steps[1] == math.ceil(185_000_000 / tokens_per_step) == 89
    assert steps[-1] == max_steps


def test_every_steps_and_explicit_lists():
    assert checkpoint_steps(EverySteps(every=4), 10, 7) == [0, 4, 8, 10]
    assert checkpoint_steps(ExplicitSteps(steps=[7, 3, 3]), 10, 7) == [3, 7, 10]


@pytest.mark.parametrize("schedule, message", [
    (ExplicitSteps(steps=[5, 50]), r"checkpoints.steps: step 50 is beyond the step budget \(max_steps 20\)"),
    (EveryTokens(tokens=10_000), r"checkpoints.tokens: one checkpoint every 10,000 tokens is beyond the token budget"),
    (EverySteps(every=21), r"checkpoints.every: one checkpoint every 21 steps is beyond the step budget"),
    (LogLinear(log_until=32, every=5), r"checkpoints.log_until: 32 is beyond the step budget"),
])
def test_schedule_beyond_the_budget_is_an_error(schedule, message):
    with pytest.raises(PhasescopeError, match=message):
        checkpoint_steps(schedule, 20, 100)


def test_log_until_must_be_a_power_of_two():
    with pytest.raises(PhasescopeError, match="log_until must be a power of two, got 500"):
        validate_config({"log_until": 500}, LogLinear)


def test_a_shrunk_budget_reports_every_schedule_problem_at_once():
    from phasescope.run import validate_config
    from phasescope.train.lm import LMRunConfig
    from tests.helpers import tiny_config

    config = tiny_config(train={"max_steps": 10, "lr_schedule": {"warmup_steps": 9, "decay_fraction": 0.5}},
                         checkpoints={"schedule": "log_linear", "log_until": 16, "every": 20})
    with pytest.raises(PhasescopeError) as error:
        validate_config(config, LMRunConfig)
    message = str(error.value)
    for problem in ("lr_schedule: warmup_steps (9) + decay steps (5", "checkpoints.log_until: 16 is beyond",
                    "checkpoints.every: 20 is beyond"):
        assert problem in message
    assert "\n" not in message
