"""Training: full-batch gradient descent (one rate, or a vectorized learning-rate sweep) and gradient flow."""

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
from phasescope.train.sweep import LearningRateGrid, MemberOutcome, SweepConfig, SweepTrainConfig, run_sweep

__all__ = ["FlowResult", "GDConfig", "GDOutcome", "GDRunConfig", "GradientFlowConfig", "LearningRateGrid",
           "MemberOutcome", "SweepConfig", "SweepTrainConfig", "gradient_flow", "initial_model", "load_data",
           "load_gd_model", "open_gd_run", "run_sweep", "train_gd"]
