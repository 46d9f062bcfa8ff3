"""Training: full-batch gradient descent (one rate, or a vectorized learning-rate sweep), gradient flow, and
causal language-model pretraining with fine-grained checkpoints."""

from phasescope.train.flow import FlowResult, GradientFlowConfig, gradient_flow
from phasescope.train.gd import (
    GDConfig,
    GDOutcome,
    GDRunConfig,
    initial_model,
    load_data,
    load_gd_model,
    open_gd_run,
    train_gd,
)
from phasescope.train.lm import LMOutcome, LMRunConfig, LMTrainConfig, train_lm
from phasescope.train.lm_checkpoint import read_lm_checkpoint
from phasescope.train.schedules import WSDSchedule, checkpoint_steps, wsd_learning_rate
from phasescope.train.sweep import LearningRateGrid, MemberOutcome, SweepConfig, SweepTrainConfig, run_sweep

__all__ = ["FlowResult", "GDConfig", "GDOutcome", "GDRunConfig", "GradientFlowConfig", "LearningRateGrid",
           "MemberOutcome", "SweepConfig", "SweepTrainConfig", "gradient_flow", "initial_model", "load_data",
           "load_gd_model", "open_gd_run", "run_sweep", "train_gd", "LMOutcome", "LMRunConfig", "LMTrainConfig",
           "WSDSchedule", "checkpoint_steps", "read_lm_checkpoint", "train_lm", "wsd_learning_rate"]
