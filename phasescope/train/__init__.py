"""Training: full-batch gradient descent (study A)."""

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

__all__ = ["GDConfig", "GDOutcome", "GDRunConfig", "initial_model", "load_data", "load_gd_model", "open_gd_run",
           "train_gd"]
