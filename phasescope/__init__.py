"""phasescope: the science of training dynamics, measured densely across checkpoints and learning rates."""

from phasescope.curvature import (
    hessian_trace,
    most_negative_eigenvalue,
    preconditioned_sharpness,
    sharpness,
)
from phasescope.errors import PhasescopeError
from phasescope.measures.translation import wlt_scores

__version__ = "0.1.0"
__all__ = ["PhasescopeError", "hessian_trace", "most_negative_eigenvalue", "preconditioned_sharpness",
           "sharpness", "wlt_scores", "__version__"]
