"""Curvature engine: matrix-free Hessians, their extreme eigenvalues and traces."""

from phasescope.curvature.hessian import HessianOperator, select_parameters, split_batches
from phasescope.curvature.lanczos import EigenResult, lanczos, power_iteration
from phasescope.curvature.operator import (
    CallableOperator,
    DenseOperator,
    LinearOperator,
    ScaledOperator,
    as_operator,
)
from phasescope.curvature.preconditioned import (
    adam_preconditioner,
    adam_preconditioner_from_state,
    adam_stability_threshold,
    gd_stability_threshold,
)
from phasescope.curvature.sharpness import (
    PreconditionedSharpness,
    SharpnessResult,
    hessian_trace,
    most_negative_eigenvalue,
    preconditioned_sharpness,
    sharpness,
)
from phasescope.curvature.stopping import (
    log_hidden_component_bound,
    random_start_threshold,
    ritz_value_error_bounds,
)
from phasescope.curvature.trace import TraceEstimate, hutchinson_trace, hutchpp_trace

__all__ = [
    "CallableOperator", "DenseOperator", "EigenResult", "HessianOperator", "LinearOperator",
    "PreconditionedSharpness", "ScaledOperator", "SharpnessResult", "TraceEstimate", "adam_preconditioner",
    "adam_preconditioner_from_state", "adam_stability_threshold", "as_operator", "gd_stability_threshold",
    "hessian_trace", "hutchinson_trace", "hutchpp_trace", "lanczos", "log_hidden_component_bound",
    "most_negative_eigenvalue", "power_iteration", "preconditioned_sharpness", "random_start_threshold",
    "ritz_value_error_bounds", "select_parameters", "sharpness", "split_batches",
]
