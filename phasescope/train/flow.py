"""Gradient flow d theta / dt = -grad L(theta), integrated with an adaptive Runge-Kutta method.

Gradient flow is the eta -> 0 limit of gradient descent. Along it, phasescope records the loss and
the sharpness; s_GF, the largest sharpness reached before the loss falls below epsilon, sets the
critical learning rate eta_c = 2 / s_GF of study A ("Conflicting Biases at the Edge of Stability",
arXiv 2505.21423).

The integrator is Dormand & Prince's embedded 5(4) pair (J. Comput. Appl. Math. 6, 1980), with
first-same-as-last and the usual step-size control (Hairer, Norsett & Wanner, Solving ODEs I, II.4).
It works in float64 on the model's device.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from pydantic import Field
from torch import Tensor, nn
from torch.func import functional_call, grad_and_value

from phasescope.curvature import SharpnessResult, sharpness
from phasescope.errors import PhasescopeError
from phasescope.run import StrictModel

# Dormand-Prince 5(4) tableau.
_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
_A = ((), (1 / 5,), (3 / 40, 9 / 40), (44 / 45, -56 / 15, 32 / 9),
      (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
      (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
      (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84))
_B5 = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0)
_B4 = (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40)
_ERROR = tuple(b5 - b4 for b5, b4 in zip(_B5, _B4))


class GradientFlowConfig(StrictModel):
    """How to integrate gradient flow and how often to measure its sharpness."""

    enabled: bool = True
    rtol: float = Field(1e-6, gt=0)  # relative local error per step
    atol: float = Field(1e-9, gt=0)  # absolute local error per step
    max_time: float = Field(1e5, gt=0)  # flow time budget (GD at rate eta covers eta per step)
    max_steps: int = Field(100_000, ge=1)  # accepted Runge-Kutta steps
    sharpness_every: int = Field(1, ge=1)  # accepted steps between sharpness measurements (1: s_GF over every step)
    sharpness_tol: float = Field(1e-4, gt=0)  # Lanczos residual tolerance
    # integrate once more at rtol/10 and atol/10 and record how much that raises s_GF (refinement_change)
    refinement_check: bool = True


@dataclass
class FlowResult:
    """The gradient-flow trajectory until the loss fell below epsilon (or the budget ended).

    Attributes:
        times, losses: at every accepted step, float64.
        sharpness_steps, sharpness_values: at which accepted steps the sharpness was measured.
        max_sharpness: s_GF, the largest sharpness measured along the flow.
        refined_max_sharpness: s_GF of a second integration at a tenth of the tolerances (NaN when
            ``refinement_check`` is off); ``refinement_change`` is its relative raise over s_GF.
        reached_threshold: whether the loss fell below epsilon.
        final_params: the flat float64 parameter vector at the end.
        num_gradients: gradient evaluations used.
    """

    times: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    sharpness_steps: list[int] = field(default_factory=list)
    sharpness_values: list[float] = field(default_factory=list)
    max_sharpness: float = float("nan")
    final_sharpness: float = float("nan")
    refined_max_sharpness: float = float("nan")
    reached_threshold: bool = False
    final_params: Tensor | None = None
    num_gradients: int = 0

    @property
    def critical_learning_rate(self) -> float:
        """eta_c = 2 / s_GF."""
        return 2.0 / self.max_sharpness

    @property
    def refinement_change(self) -> float:
        """How much refining the tolerances raised s_GF, relative (negative: it fell; NaN: not checked)."""
        return self.refined_max_sharpness / self.max_sharpness - 1.0


def gradient_flow(model: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor], inputs: Tensor, targets: Tensor,
                  loss_threshold: float, config: GradientFlowConfig = GradientFlowConfig(),
                  on_step: Callable[[float, float], None] | None = None) -> FlowResult:
    """Integrate gradient flow from ``model``'s parameters until the loss is below ``loss_threshold``.

    The model is copied to float64; ``model`` itself is left unchanged. The sharpness is measured
    after every ``config.sharpness_every``-th accepted step (default every one, Lanczos warm-started
    from the previous eigenvector), so s_GF is the maximum over the whole discrete trajectory; with
    ``config.refinement_check`` the flow is integrated again at a tenth of both tolerances (finer
    steps, more samples) and ``FlowResult.refinement_change`` says how much that raised s_GF.

    Args:
        on_step: called as ``on_step(time, loss)`` after each accepted step (progress bars).
    """
    if loss_threshold <= 0:
        raise PhasescopeError(f"gradient flow needs a positive loss threshold epsilon, got {loss_threshold}")
    flow_model = _float64_copy(model)
    names = [name for name, _ in flow_model.named_parameters()]
    shapes = [p.shape for _, p in flow_model.named_parameters()]
    sizes = [p.numel() for _, p in flow_model.named_parameters()]
    inputs, targets = inputs.to(torch.float64) if inputs.is_floating_point() else inputs, _float64(targets)
    device = next(flow_model.parameters()).device
    inputs, targets = inputs.to(device), targets.to(device)

    def unflatten(theta: Tensor) -> dict[str, Tensor]:
        return {n: piece.view(s) for n, piece, s in zip(names, torch.split(theta, sizes), shapes)}

    def loss_of(params: dict[str, Tensor]) -> Tensor:
        return loss_fn(functional_call(flow_model, params, (inputs,)), targets)

    loss_and_grad = grad_and_value(loss_of)
    result = FlowResult()

    def velocity(theta: Tensor) -> tuple[Tensor, float]:
        grads, loss = loss_and_grad(unflatten(theta))
        result.num_gradients += 1
        return -torch.cat([g.reshape(-1) for g in grads.values()]), float(loss)

    def measure_sharpness(theta: Tensor, step: int, previous: SharpnessResult | None) -> SharpnessResult:
        with torch.no_grad():
            for p, value in zip(flow_model.parameters(), unflatten(theta).values()):
                p.copy_(value)
        measured = sharpness(flow_model, loss_fn, (inputs, targets), tol=config.sharpness_tol, v0=previous)
        result.sharpness_steps.append(step)
        result.sharpness_values.append(measured.top)
        return measured

    theta = torch.cat([p.detach().reshape(-1) for p in flow_model.parameters()])
    k1, loss = velocity(theta)
    if not torch.isfinite(k1).all() or loss != loss:
        raise PhasescopeError("the loss or its gradient is not finite at the initialization")
    time, dt = 0.0, _initial_step(theta, k1, config)
    result.times.append(time)
    result.losses.append(loss)
    steps = 0
    eigen = measure_sharpness(theta, steps, None)
    while loss >= loss_threshold and time < config.max_time and steps < config.max_steps:
        dt = min(dt, config.max_time - time)
        stages = [k1]
        for i in range(1, 7):
            stage_theta = theta + dt * sum(a * k for a, k in zip(_A[i], stages) if a != 0.0)
            k, stage_loss = velocity(stage_theta)
            stages.append(k)
        new_theta, new_loss = stage_theta, stage_loss  # the 7th stage is the 5th-order solution (FSAL)
        error = dt * sum(e * k for e, k in zip(_ERROR, stages) if e != 0.0)
        scale = config.atol + config.rtol * torch.maximum(theta.abs(), new_theta.abs())
        error_norm = float((error / scale).pow(2).mean().sqrt())
        if error_norm <= 1.0 and new_loss == new_loss:
            theta, k1, loss, time, steps = new_theta, stages[6], new_loss, time + dt, steps + 1
            result.times.append(time)
            result.losses.append(loss)
            if on_step is not None:
                on_step(time, loss)
            if steps % config.sharpness_every == 0 and loss >= loss_threshold:
                eigen = measure_sharpness(theta, steps, eigen)
        factor = 0.9 * max(error_norm, 1e-10) ** -0.2
        dt *= min(5.0, max(0.2, factor))
    eigen = measure_sharpness(theta, steps, eigen)
    result.final_sharpness = eigen.top
    result.max_sharpness = max(result.sharpness_values)
    result.reached_threshold = loss < loss_threshold
    result.final_params = theta
    if config.refinement_check:
        finer = config.model_copy(update={"rtol": config.rtol / 10, "atol": config.atol / 10,
                                          "refinement_check": False})
        result.refined_max_sharpness = gradient_flow(model, loss_fn, inputs, targets, loss_threshold, finer,
                                                     on_step).max_sharpness
    return result


def _initial_step(theta: Tensor, velocity: Tensor, config: GradientFlowConfig) -> float:
    """Hairer's starting step: small enough that the first step's change is ~1% of the parameters."""
    scale = config.atol + config.rtol * theta.abs()
    d0 = float((theta / scale).pow(2).mean().sqrt())
    d1 = float((velocity / scale).pow(2).mean().sqrt())
    return 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1


def _float64(tensor: Tensor) -> Tensor:
    return tensor.to(torch.float64) if tensor.is_floating_point() else tensor


def _float64_copy(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model).to(torch.float64)
