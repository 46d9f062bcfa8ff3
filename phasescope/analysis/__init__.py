"""Analyses across checkpoints and learning rates, and the diagonal-network theory of study A."""

from phasescope.analysis.diagonal_theory import (
    MinSharpnessSolution,
    expected_test_loss,
    flattest_parameters,
    gauss_newton_sharpness,
    generalization_error,
    generalization_optimal_interpolator,
    interpolator_sharpness,
    interpolators,
    min_l1_interpolator,
    min_sharpness_interpolator,
    one_point_interpolators,
    sharpness_lower_bound,
    solve_min_sharpness,
    theory_rows,
)

__all__ = ["MinSharpnessSolution", "expected_test_loss", "flattest_parameters", "gauss_newton_sharpness",
           "generalization_error", "generalization_optimal_interpolator", "interpolator_sharpness", "interpolators",
           "min_l1_interpolator", "min_sharpness_interpolator", "one_point_interpolators", "sharpness_lower_bound",
           "solve_min_sharpness", "theory_rows"]
