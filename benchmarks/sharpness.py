"""Benchmark: the top Hessian eigenvalue (sharpness) by phasescope against two peers, on one checkpoint
and along a training trajectory, every method held to the same accuracy.

Peers, run in this process on the same model, loss and data:
  * PyHessian (Yao et al., "PyHessian: Neural Networks Through the Lens of the Hessian", 2020):
    power iteration on a gradient graph built once in ``hessian.__init__`` (timed with it);
    its ``tol`` bounds the relative change of the eigenvalue between iterations.
  * eigsh over double backward, as in the edge-of-stability code (Cohen et al., "Gradient Descent on
    Neural Networks Typically Occurs at the Edge of Stability", ICLR 2021; locuslab/edge-of-stability,
    ``src/utilities.py``: ``compute_hvp`` + ``lanczos``): a float32 HVP per call, numpy in between.
  * curvlinops (Dangel et al., ``curvlinops-for-pytorch``): its ``HessianLinearOperator`` handed to
    scipy's ``eigsh`` through ``to_scipy()``, the route its documentation shows for the top
    eigenvalue; built per checkpoint (timed with it), without its determinism check (two extra
    gradient passes at construction that phasescope does not make either).
phasescope's ``sharpness`` (``criterion="eigenvalue"``: it stops on the eigenvalue's error bound)
runs cold, where its random start is certified against a hidden larger eigenvalue, and warm-started
from the previous checkpoint's result, which is trusted (its defaults); also warm with
``certify=True`` (a random start mixed in and certified: robust to eigenvalue crossings), and cold
with ``certify=False``: the error bound alone, the guarantee the peers give.

Each method gets one tolerance, the loosest on a ladder that keeps the relative error of the top
eigenvalue within 1e-4 of a float64 reference on every checkpoint. Two "oracle" rows run phasescope
from the same start vectors and stop at the fewest steps that meet the target against the reference:
not methods, but the most that any stopping rule could achieve from those starts.

    python benchmarks/sharpness.py            # 20 checkpoints, about 5 minutes on 2 idle cores
    python benchmarks/sharpness.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import copy
import importlib
import math
import os
import platform
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.metadata import version
from typing import Any

import numpy as np
import torch
from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh
from threadpoolctl import threadpool_limits  # comes with scikit-learn
from timing import median_seconds  # benchmarks/timing.py, beside this script
from torch import Tensor, nn
from torch.nn.utils import parameters_to_vector

import phasescope
from phasescope.curvature import HessianOperator
from phasescope.data import DigitsConfig, load_digits_data
from phasescope.models import MLP
from phasescope.models.losses import mean_squared_error

TARGET_RELATIVE_ERROR = 1e-4
# Loosest first: each method keeps the first rung that meets the target on every checkpoint.
TOLERANCE_LADDER = (1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5, 1e-5, 3e-6, 1e-6, 3e-7, 1e-7, 3e-8, 1e-8, 1e-9)
REFERENCE_TOLERANCE = 1e-12  # eigsh in float64; cross-checked by phasescope in float64 at 1e-10


# --- problem: model, data, trajectory ---------------------------------------------------------------

@dataclass
class Checkpoint:
    step: int
    state: dict[str, Tensor]  # an in-memory copy of the model's state_dict
    loss: float


def train_checkpoints(model: nn.Module, inputs: Tensor, targets: Tensor, lr: float, num_checkpoints: int,
                      spacing: int) -> list[Checkpoint]:
    """Full-batch gradient descent, keeping the weights every ``spacing`` steps from step 0."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    checkpoints = []
    for step in range((num_checkpoints - 1) * spacing + 1):
        loss = mean_squared_error(model(inputs), targets)
        if step % spacing == 0:
            state = {name: t.detach().clone() for name, t in model.state_dict().items()}
            checkpoints.append(Checkpoint(step, state, loss.item()))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    model.zero_grad(set_to_none=True)
    if not all(np.isfinite(c.loss) for c in checkpoints) or checkpoints[-1].loss >= checkpoints[0].loss:
        raise RuntimeError(f"training did not reduce the loss (losses {[c.loss for c in checkpoints]}): "
                           f"lower --lr")
    return checkpoints


# --- peer 1: eigsh over double backward, in the style of the edge-of-stability code ------------------

def eos_compute_hvp(network: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor],
                    dataset: tuple[Tensor, Tensor], vector: Tensor, physical_batch_size: int) -> Tensor:
    """Hessian-vector product by double backward over physical batches (Cohen et al. 2021).

    The reference divides a summed loss by n; ``loss_fn`` here is a batch mean, so each batch is
    weighted by its share of the rows instead. Batches are tensor slices (the reference uses a
    DataLoader, whose per-example collation would only slow the peer down).
    """
    inputs, targets = dataset
    p = len(parameters_to_vector(network.parameters()))
    n = len(inputs)
    hvp = torch.zeros(p, dtype=vector.dtype)
    for start in range(0, n, physical_batch_size):
        X, y = inputs[start:start + physical_batch_size], targets[start:start + physical_batch_size]
        loss = loss_fn(network(X), y) * len(X) / n
        grads = torch.autograd.grad(loss, inputs=network.parameters(), create_graph=True)
        dot = parameters_to_vector(grads).mul(vector).sum()
        grads = [g.contiguous() for g in torch.autograd.grad(dot, network.parameters(), retain_graph=True)]
        hvp += parameters_to_vector(grads)
    return hvp


def eos_top_eigenvalue(network: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor],
                       dataset: tuple[Tensor, Tensor], tol: float, seed: int,
                       physical_batch_size: int) -> tuple[float, int]:
    """The reference's ``lanczos``: scipy ``eigsh`` (ARPACK) on a LinearOperator whose matvec converts
    numpy -> torch, runs ``eos_compute_hvp`` in the parameters' dtype, and converts back.

    Differences from the reference, all per the benchmark's setup: ``which="LA"`` and ``tol`` are
    passed, the operator is declared float64 (the reference lets scipy infer float32 from one extra
    product), and ``v0`` is seeded so that runs repeat. Returns (eigenvalue, HVPs used).
    """
    dtype = next(network.parameters()).dtype
    dim = len(parameters_to_vector(network.parameters()))
    calls = 0

    def mv(vec: np.ndarray) -> np.ndarray:
        nonlocal calls
        calls += 1
        vector = torch.tensor(vec.reshape(-1), dtype=dtype)
        hvp = eos_compute_hvp(network, loss_fn, dataset, vector, physical_batch_size).detach()
        return hvp.numpy().astype(np.float64)

    operator = LinearOperator((dim, dim), matvec=mv, dtype=np.float64)
    v0 = np.random.default_rng(seed).standard_normal(dim)
    evals = eigsh(operator, k=1, which="LA", tol=tol, v0=v0, return_eigenvectors=False)
    return float(evals[-1]), calls


# --- peer 2: PyHessian ---------------------------------------------------------------------------

@contextmanager
def counting_pyhessian_hvps() -> Iterator[list[int]]:
    """Count calls of PyHessian's ``hessian_vector_product`` (one per power iteration)."""
    pyhessian_module = importlib.import_module("pyhessian.hessian")  # the module; the package re-exports a class
    original = pyhessian_module.hessian_vector_product
    counter = [0]

    def counted(*args, **kwargs):
        counter[0] += 1
        return original(*args, **kwargs)

    pyhessian_module.hessian_vector_product = counted
    try:
        yield counter
    finally:
        pyhessian_module.hessian_vector_product = original


def pyhessian_top_eigenvalue(model: nn.Module, inputs: Tensor, targets: Tensor, tol: float,
                             max_iter: int, seed: int, loss: Callable[[Tensor, Tensor], Tensor] | None = None,
                             cuda: bool = False) -> tuple[float, int, bool]:
    """PyHessian's power iteration, the gradient graph built in ``hessian.__init__`` included (the loss
    defaults to this benchmark's mean squared error).

    Returns (eigenvalue, HVPs, converged); converged is False when it ran all ``max_iter`` iterations.
    """
    import pyhessian

    model.zero_grad(set_to_none=True)  # __init__ accumulates into .grad
    torch.manual_seed(seed)  # its start vector comes from the global generator
    with counting_pyhessian_hvps() as counter, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # backward(create_graph=True) warns of a reference cycle
        hessian = pyhessian.hessian(model, loss or mean_squared_error, data=(inputs, targets), cuda=cuda)
        eigenvalues, _ = hessian.eigenvalues(top_n=1, maxIter=max_iter, tol=tol)
    model.zero_grad(set_to_none=True)  # drop the graph held by .grad
    return float(eigenvalues[0]), counter[0], counter[0] < max_iter


# --- peer 3: curvlinops' Hessian linear operator, with scipy's eigsh --------------------------------

def curvlinops_top_eigenvalue(model: nn.Module, inputs: Tensor, targets: Tensor, tol: float,
                              seed: int) -> tuple[float, int, bool]:
    """curvlinops' ``HessianLinearOperator`` of this benchmark's loss, top eigenvalue by ``eigsh``.

    curvlinops takes a loss module with a ``reduction``; phasescope's ``mean_squared_error`` is
    ``0.5 / N`` times ``MSELoss(reduction="sum")``, so the operator is built on the sum and its
    eigenvalue scaled by ``0.5 / N``. Returns (eigenvalue, HVPs, converged).
    """
    from curvlinops import HessianLinearOperator

    params = [p for p in model.parameters() if p.requires_grad]
    operator = HessianLinearOperator(model, nn.MSELoss(reduction="sum"), params, [(inputs, targets)],
                                     check_deterministic=False).to_scipy()
    calls = [0]

    def matvec(vector: np.ndarray) -> np.ndarray:
        calls[0] += 1
        return operator @ vector

    counted = LinearOperator(operator.shape, matvec=matvec, dtype=operator.dtype)
    v0 = np.random.default_rng(seed).standard_normal(operator.shape[0]).astype(operator.dtype)
    try:
        value = eigsh(counted, k=1, which="LA", tol=tol, v0=v0, return_eigenvectors=False)[0]
        converged = True
    except ArpackNoConvergence as error:
        value, converged = (error.eigenvalues[0] if len(error.eigenvalues) else math.nan), False
    return 0.5 / len(inputs) * float(value), calls[0], converged


# --- the methods under test, one interface --------------------------------------------------------

@dataclass
class Solve:
    """One top-eigenvalue solve at one checkpoint."""

    eigenvalue: float
    num_hvps: int
    converged: bool
    seconds: float
    warm_start: Any = None  # what the next checkpoint needs to warm-start (phasescope's result)


@dataclass
class Method:
    """A way to get the top eigenvalue: ``solve(model, inputs, targets, tol, previous, index)`` at the
    checkpoint of that index, ``previous`` being the last checkpoint's Solve (warm methods) or None."""

    name: str
    solve: Callable[[nn.Module, Tensor, Tensor, float, Any, int], Solve]
    warm: bool = False  # whether ``previous`` is passed on
    warm_from: str | None = None  # whose chain ``previous`` comes from (default: the method's own)
    oracle: bool = False  # a bound, not a method: it stops where the reference says; no tolerance ladder


def timed(function: Callable[[], tuple[float, int, bool, Any]]) -> Solve:
    start = time.perf_counter()
    eigenvalue, num_hvps, converged, warm_start = function()
    return Solve(eigenvalue, num_hvps, converged, time.perf_counter() - start, warm_start)


PYHESSIAN, EOS = "PyHessian (power iteration)", "eigsh + double backward (EoS code)"
CURVLINOPS = "curvlinops HessianLinearOperator + eigsh"
# phasescope stops on the eigenvalue's own error bound, tol being the relative error (the gap theorem);
# random starts are certified against a hidden larger eigenvalue, warm starts are trusted (its default).
CRITERION = "eigenvalue"


def phasescope_name(hvp_method: str, warm: bool) -> str:
    return f"phasescope {hvp_method}, {'warm' if warm else 'cold'}"


def certified_warm_name(hvp_method: str) -> str:
    return f"phasescope {hvp_method}, warm, certify=True"


def uncertified_cold_name(hvp_method: str) -> str:
    return f"phasescope {hvp_method}, cold, certify=False"


def oracle_name(hvp_method: str, warm: bool) -> str:
    return f"oracle stop: phasescope {hvp_method}, {'warm' if warm else 'cold'}"


def phasescope_top(model: nn.Module, inputs: Tensor, targets: Tensor, **options: Any):
    return phasescope.sharpness(model, mean_squared_error, (inputs, targets), criterion=CRITERION, **options)


def oracle_steps(model: nn.Module, inputs: Tensor, targets: Tensor, v0: Any, reference: float) -> int:
    """The fewest Lanczos steps from phasescope's start vector (``v0``: None for its seeded random start,
    or the previous result) whose top Ritz value is within the target of the reference: what any
    stopping rule could at best achieve from that start. Ritz values only grow with the Krylov space,
    so the error falls monotonically and a doubling search followed by a bisection finds it.
    """
    def meets_target(steps: int) -> bool:
        result = phasescope_top(model, inputs, targets, tol=1e-15, v0=v0, max_iter=steps, certify=False)
        return relative_error(result.top, reference) <= TARGET_RELATIVE_ERROR

    high = 2
    while not meets_target(high):
        high *= 2
        if high > 256:
            raise RuntimeError("the oracle found no Krylov size within 256 steps that meets the target")
    low = high // 2  # fails (or is 1)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if meets_target(middle) else (middle, high)
    return 1 if low == 1 and meets_target(1) else high


def build_methods(seed: int, pyhessian_max_iter: int, references: list[float], default_method: str
                  ) -> list[Method]:
    def pyhessian_solve(model, inputs, targets, tol, previous, index):
        return timed(lambda: (*pyhessian_top_eigenvalue(model, inputs, targets, tol, pyhessian_max_iter, seed),
                              None))

    def eos_solve(model, inputs, targets, tol, previous, index):
        return timed(lambda: (*eos_top_eigenvalue(model, mean_squared_error, (inputs, targets), tol, seed,
                                                  physical_batch_size=len(inputs)), True, None))

    def phasescope_solve(hvp_method: str, certify: bool | None = None):
        def solve(model, inputs, targets, tol, previous, index):
            v0 = None if previous is None else previous.warm_start

            def run():
                result = phasescope_top(model, inputs, targets, tol=tol, v0=v0, method=hvp_method, certify=certify)
                return result.top, result.num_hvps, result.converged, result
            return timed(run)
        return solve

    def oracle_solve(hvp_method: str):
        steps: dict[int, int] = {}  # per checkpoint, found once (untimed) and reused by every timed repeat

        def solve(model, inputs, targets, tol, previous, index):
            v0 = None if previous is None else previous.warm_start
            if index not in steps:
                steps[index] = oracle_steps(model, inputs, targets, v0, references[index])

            def run():
                result = phasescope_top(model, inputs, targets, tol=1e-15, v0=v0, max_iter=steps[index],
                                        method=hvp_method, certify=False)
                return result.top, result.num_hvps, True, result
            return timed(run)
        return solve

    def curvlinops_solve(model, inputs, targets, tol, previous, index):
        return timed(lambda: (*curvlinops_top_eigenvalue(model, inputs, targets, tol, seed), None))

    methods = [Method(PYHESSIAN, pyhessian_solve), Method(EOS, eos_solve), Method(CURVLINOPS, curvlinops_solve)]
    for hvp_method in ("graph", "func", "double_backward"):  # "auto" is one of these, decided per operator
        methods.append(Method(phasescope_name(hvp_method, warm=False), phasescope_solve(hvp_method)))
        methods.append(Method(phasescope_name(hvp_method, warm=True), phasescope_solve(hvp_method), warm=True))
    methods.append(Method(certified_warm_name(default_method), phasescope_solve(default_method, certify=True),
                          warm=True))
    # A random start without the certificate: the guarantee eigsh and PyHessian give (none beyond the tolerance).
    methods.append(Method(uncertified_cold_name(default_method), phasescope_solve(default_method, certify=False)))
    methods.append(Method(oracle_name(default_method, warm=False), oracle_solve(default_method), oracle=True))
    methods.append(Method(oracle_name(default_method, warm=True), oracle_solve(default_method), warm=True,
                          warm_from=phasescope_name(default_method, warm=True), oracle=True))
    return methods


# --- reference, tolerance selection, timing -------------------------------------------------------

def reference_eigenvalues(model: nn.Module, checkpoints: list[Checkpoint], inputs: Tensor, targets: Tensor,
                          seed: int) -> tuple[list[float], float]:
    """Top eigenvalue per checkpoint in float64 by eigsh at ``REFERENCE_TOLERANCE`` over the
    EoS-style HVP (independent of phasescope), cross-checked by phasescope in float64 at 1e-10 on the
    first, middle and last checkpoints.

    Returns the eigenvalues and the largest relative disagreement of the two solvers.
    """
    model64 = copy.deepcopy(model).double()
    inputs64, targets64 = inputs.double(), targets.double()
    cross_checked = {0, len(checkpoints) // 2, len(checkpoints) - 1}
    values, disagreement = [], 0.0
    for i, checkpoint in enumerate(checkpoints):
        model64.load_state_dict(checkpoint.state)  # copies into the float64 parameters
        try:
            value, _ = eos_top_eigenvalue(model64, mean_squared_error, (inputs64, targets64),
                                          REFERENCE_TOLERANCE, seed, physical_batch_size=len(inputs64))
        except ArpackNoConvergence as error:
            raise RuntimeError(f"the float64 reference did not converge at step {checkpoint.step}") from error
        if i in cross_checked:
            check = phasescope.sharpness(model64, mean_squared_error, (inputs64, targets64), tol=1e-10)
            assert check.converged, f"float64 phasescope cross-check did not converge at step {checkpoint.step}"
            disagreement = max(disagreement, abs(check.top - value) / abs(value))
        values.append(value)
    return values, disagreement


def relative_error(value: float, reference: float) -> float:
    return abs(value - reference) / abs(reference)


@dataclass
class Selection:
    """The tolerance kept for a method, with the rungs it missed as (tol, step, relative error)."""

    tol: float
    met_target: bool
    missed: list[tuple[float, int, float]] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.tol:.0e}" if self.met_target else f"{self.tol:.0e} (target missed)"


def select_tolerance(method: Method, model: nn.Module, checkpoints: list[Checkpoint], inputs: Tensor,
                     targets: Tensor, references: list[float]) -> Selection:
    """The loosest tolerance on the ladder meeting the target on every checkpoint (the tightest if none).

    A rung's pass over the trajectory stops at the first checkpoint that misses the target.
    """
    missed = []
    for tol in TOLERANCE_LADDER:
        solves: list[Solve] = []
        for index, (checkpoint, reference) in enumerate(zip(checkpoints, references, strict=True)):
            model.load_state_dict(checkpoint.state)
            previous = solves[-1] if (method.warm and solves) else None
            solves.append(method.solve(model, inputs, targets, tol, previous, index))
            error = relative_error(solves[-1].eigenvalue, reference)
            if error > TARGET_RELATIVE_ERROR:
                missed.append((tol, checkpoint.step, error))
                break
        else:
            return Selection(tol, True, missed)
    return Selection(TOLERANCE_LADDER[-1], False, missed)


@dataclass
class Timing:
    """A method at one checkpoint over repeated runs."""

    solve: Solve  # the run of median time
    fastest: float  # the least seconds of the runs


def time_trajectories(methods: list[Method], tolerances: dict[str, float], model: nn.Module,
                      checkpoints: list[Checkpoint], inputs: Tensor, targets: Tensor,
                      repeats: int) -> dict[str, list[Timing]]:
    """Every method at every checkpoint ``repeats`` times, keeping the median-time run.

    The methods are interleaved round by round, so that load from other processes on a shared
    machine falls on all of them alike. Warm methods start from their previous checkpoint's result
    (the warm oracle from the default warm method's, so that both start from the same vectors).
    """
    timings: dict[str, list[Timing]] = {method.name: [] for method in methods}
    for index, checkpoint in enumerate(checkpoints):
        model.load_state_dict(checkpoint.state)
        runs: dict[str, list[Solve]] = {method.name: [] for method in methods}
        for _ in range(repeats):
            for method in methods:
                chain = timings[method.warm_from or method.name]
                previous = chain[-1].solve if (method.warm and chain) else None
                runs[method.name].append(method.solve(model, inputs, targets, tolerances.get(method.name, math.nan),
                                                      previous, index))
        for name, solves in runs.items():
            ordered = sorted(solves, key=lambda solve: solve.seconds)
            timings[name].append(Timing(ordered[(len(ordered) - 1) // 2], ordered[0].seconds))
    return timings


GRADIENT = "gradient, torch.autograd (forward + backward)"


def hvp_label(hvp_method: str) -> str:
    return f"phasescope HVP, {hvp_method} (float64 in and out, as in Lanczos)"


def hvp_and_gradient_seconds(model: nn.Module, inputs: Tensor, targets: Tensor, repeats: int
                             ) -> dict[str, float]:
    """Seconds of one full-batch HVP by each implementation and of one full-batch gradient (median of
    ``repeats`` calls after two untimed ones)."""
    import pyhessian
    from pyhessian.utils import hessian_vector_product

    seconds = {}
    parameters = list(model.parameters())
    vector64 = torch.randn(sum(p.numel() for p in parameters), dtype=torch.float64,
                           generator=torch.Generator().manual_seed(0))
    vector32 = vector64.float()
    for hvp_method in ("graph", "func", "double_backward"):
        operator = HessianOperator(model, mean_squared_error, (inputs, targets), method=hvp_method)
        seconds[hvp_label(hvp_method)] = median_seconds(
            lambda operator=operator: operator.matvec(vector64), repeats, warmup=2)
    seconds["EoS-code HVP (forward + double backward)"] = median_seconds(
        lambda: eos_compute_hvp(model, mean_squared_error, (inputs, targets), vector32, len(inputs)), repeats, warmup=2)
    model.zero_grad(set_to_none=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hessian = pyhessian.hessian(model, mean_squared_error, data=(inputs, targets), cuda=False)
    tangent = [piece.view_as(p) for piece, p in
               zip(torch.split(vector32, [p.numel() for p in parameters]), parameters, strict=True)]
    seconds["PyHessian HVP (backward through the gradient graph kept from __init__)"] = median_seconds(
        lambda: hessian_vector_product(hessian.gradsH, hessian.params, tangent), repeats, warmup=2)
    model.zero_grad(set_to_none=True)  # drop the graph held by .grad
    seconds[GRADIENT] = median_seconds(lambda: torch.autograd.grad(mean_squared_error(model(inputs), targets),
                                                                   parameters), repeats, warmup=2)
    operator = HessianOperator(model, mean_squared_error, (inputs, targets))
    seconds["gradient, phasescope HessianOperator.gradient (torch.func)"] = median_seconds(
        operator.gradient, repeats, warmup=2)
    return seconds


# --- printing ---------------------------------------------------------------------------------------

def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def hvp_cell(solve: Solve) -> str:
    return str(solve.num_hvps) + ("" if solve.converged else " (not converged)")


def load_average() -> str:
    return "/".join(f"{load:.1f}" for load in os.getloadavg())


@dataclass
class Run:
    """What every table of the report needs: the trajectory, the references and the timings."""

    args: argparse.Namespace
    model: nn.Module
    inputs: Tensor
    targets: Tensor
    checkpoints: list[Checkpoint]
    references: list[float]
    auto_choice: str  # the HVP method phasescope's method="auto" takes here
    repeats: int
    methods: list[Method] = field(default_factory=list)
    selections: dict[str, Selection] = field(default_factory=dict)
    timings: dict[str, list[Timing]] = field(default_factory=dict)

    @property
    def default_cold(self) -> str:
        return phasescope_name(self.auto_choice, warm=False)

    @property
    def default_warm(self) -> str:
        return phasescope_name(self.auto_choice, warm=True)

    def tolerance_label(self, method: Method) -> str:
        return "(stops at the reference)" if method.oracle else self.selections[method.name].label

    def single_seconds(self, name: str) -> float:
        """Seconds of method ``name`` on the last checkpoint."""
        return self.timings[name][-1].solve.seconds

    def trajectory_seconds(self, name: str) -> float:
        """Seconds of method ``name`` summed over the trajectory."""
        return sum(timing.solve.seconds for timing in self.timings[name])


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", type=int, default=None, help="checkpoints on the trajectory (20; 3 quick)")
    parser.add_argument("--spacing", type=int, default=20, help="GD steps between checkpoints")
    parser.add_argument("--lr", type=float, default=0.1, help="GD learning rate (2/lr is the stability edge)")
    parser.add_argument("--seed", type=int, default=0, help="model initialization, the peers' start vectors")
    parser.add_argument("--pyhessian-max-iter", type=int, default=2000, help="cap on PyHessian's power iterations")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per method and checkpoint (3; 1 quick)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (1 is steadier on a shared machine)")
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    args = parser.parse_args()
    args.checkpoints = args.checkpoints or (3 if args.quick else 20)
    args.repeats = args.repeats or (1 if args.quick else 3)
    if args.checkpoints < 2:
        parser.error(f"--checkpoints must be at least 2 (a warm start needs a previous one), got {args.checkpoints}")
    return args


def set_up(args: argparse.Namespace) -> Run:
    """The model, the GD trajectory and its float64 references, with the set-up printed."""
    torch.set_num_threads(args.threads)
    # scipy's OpenBLAS pool would otherwise spin beside torch's two threads after every ARPACK call and
    # slow the eigsh peer's HVPs down several times on a 2-core machine; one BLAS thread is its best setting.
    threadpool_limits(1, user_api="blas")
    data = load_digits_data(DigitsConfig(), "mse")
    inputs, targets = data.train_inputs, data.train_targets  # (1438, 64), (1438, 10) one-hot
    torch.manual_seed(args.seed)
    model = MLP(input_shape=(64,), num_outputs=10, depth=2, width=200, activation="tanh")
    num_parameters = sum(p.numel() for p in model.parameters())

    print("# Sharpness benchmark\n")
    print(f"- machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"{platform.platform()}; load average at start {load_average()}")
    print(f"- software: python {platform.python_version()}, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), scipy {version('scipy')} (OpenBLAS limited to 1 thread), "
          f"pyhessian {version('pyhessian')}, curvlinops-for-pytorch {version('curvlinops-for-pytorch')}")
    print(f"- problem: MLP 64-200-200-10 tanh ({num_parameters} parameters), digits train set "
          f"{tuple(inputs.shape)}, mean squared error, seed {args.seed}")

    checkpoints = train_checkpoints(model, inputs, targets, args.lr, args.checkpoints, args.spacing)
    references, disagreement = reference_eigenvalues(model, checkpoints, inputs, targets, args.seed)
    print(f"- trajectory: full-batch GD at lr {args.lr} (2/lr = {2 / args.lr:g}), {args.checkpoints} "
          f"checkpoints every {args.spacing} steps (steps 0..{checkpoints[-1].step}); loss "
          f"{checkpoints[0].loss:.4f} -> {checkpoints[-1].loss:.4f}; sharpness {references[0]:.4f} -> "
          f"{references[-1]:.4f} (max {max(references):.4f})")
    print(f"- reference: eigsh over a float64 HVP at tol {REFERENCE_TOLERANCE:g}; phasescope in float64 at "
          f"tol 1e-10 agrees to {disagreement:.1e} relative")
    if max(references) >= 2 / args.lr:
        print(f"- note: the sharpness reached 2/lr = {2 / args.lr:g}: the trajectory is at the edge of stability")
    model.load_state_dict(checkpoints[0].state)
    auto_choice = phasescope.sharpness(model, mean_squared_error, (inputs, targets), max_iter=1).method
    print(f"- phasescope's default method='auto' takes {auto_choice} on this model; ratios are against it. "
          f"phasescope runs with criterion={CRITERION!r} (stop on the eigenvalue's error bound; the default, "
          "'residual', bounds the eigenvector's residual); cold: a seeded random start, certified against a hidden "
          "larger eigenvalue (failure probability 1e-3); warm: the previous result, trusted")
    return Run(args, model, inputs, targets, checkpoints, references, auto_choice, args.repeats)


def print_tolerances(run: Run) -> None:
    print("\n## Tolerance per method\n")
    print(f"The loosest of {', '.join(f'{t:.0e}' for t in TOLERANCE_LADDER)} whose top eigenvalue is within "
          f"{TARGET_RELATIVE_ERROR:g} relative of the reference on every checkpoint (PyHessian: relative "
          f"change of the eigenvalue, at most {run.args.pyhessian_max_iter} iterations; eigsh (EoS code and "
          f"curvlinops): ARPACK's tol; "
          f"phasescope: the relative error bound of the eigenvalue, criterion={CRITERION!r}). A rung's pass "
          "stops at the first checkpoint it misses. The oracle rows are not methods: they run phasescope "
          "from the same start vectors and stop at the fewest steps whose top Ritz value is within the target "
          "of the reference, the best any stopping rule could do from those starts.\n")
    print(markdown_table(
        ["method", "tolerance", "rungs missed (tol: first step missed, its relative error)"],
        [[name, selection.label, "; ".join(f"{t:.0e}: step {s}, {e:.1e}" for t, s, e in selection.missed) or "-"]
         for name, selection in run.selections.items()]))


def print_single_checkpoint(run: Run) -> None:
    """(a): every method cold on the last checkpoint, and phasescope warm from the one before."""
    last, baseline = run.checkpoints[-1], run.single_seconds(run.default_cold)
    print(f"\n## (a) One checkpoint (step {last.step}, sharpness {run.references[-1]:.4f})\n")
    print(f"Cold starts (and phasescope warm from the previous checkpoint); median of {run.repeats} timed "
          "runs after one untimed run, methods interleaved; PyHessian's seconds include the gradient graph its "
          f"__init__ builds; ratio = seconds / phasescope {run.auto_choice} cold seconds.\n")
    rows = []
    shown = (run.default_warm, oracle_name(run.auto_choice, True))
    for method in [m for m in run.methods if not m.warm or m.name in shown]:
        timing = run.timings[method.name][-1]
        name = method.name + (" from the previous checkpoint" if method.warm else "")
        rows.append([name, hvp_cell(timing.solve), f"{timing.solve.seconds:.3f}", f"{timing.fastest:.3f}",
                     f"{relative_error(timing.solve.eigenvalue, run.references[-1]):.1e}", run.tolerance_label(method),
                     f"{timing.solve.seconds / baseline:.2f}"])
    print(markdown_table(["method", "HVPs", "seconds", "fastest run", "relative error", "tolerance", "ratio"], rows))


def print_trajectory(run: Run) -> None:
    """(b): every method along the trajectory, then the HVPs of each checkpoint."""
    warm_total = run.trajectory_seconds(run.default_warm)
    print(f"\n## (b) Trajectory of {len(run.checkpoints)} checkpoints\n")
    print("Peers start cold at every checkpoint, as the EoS code does; phasescope cold, and warm from the "
          "previous checkpoint's result (the first checkpoint cold). Seconds: sum over checkpoints of the median "
          f"of {run.repeats} runs (fastest runs: sum of the least); ratio = seconds / phasescope {run.auto_choice} "
          "warm seconds.\n")
    rows = []
    for method in run.methods:
        method_timings = run.timings[method.name]
        seconds = run.trajectory_seconds(method.name)
        errors = [relative_error(timing.solve.eigenvalue, reference)
                  for timing, reference in zip(method_timings, run.references, strict=True)]
        rows.append([method.name, str(sum(timing.solve.num_hvps for timing in method_timings)), f"{seconds:.2f}",
                     f"{sum(timing.fastest for timing in method_timings):.2f}", f"{max(errors):.1e}",
                     run.tolerance_label(method), f"{seconds / warm_total:.2f}",
                     str(sum(not timing.solve.converged for timing in method_timings))])
    print(markdown_table(["method", "total HVPs", "total seconds", "fastest runs", "max relative error",
                          "tolerance", "ratio", "solves not converged"], rows))

    print("\nHVPs per checkpoint:\n")
    short_names = [method.name.replace("phasescope ", "ps ").replace("oracle stop: ", "oracle ").split(" (")[0]
                   for method in run.methods]
    print(markdown_table(
        ["step", "loss", "sharpness", *short_names],
        [[str(checkpoint.step), f"{checkpoint.loss:.4f}", f"{reference:.4f}",
          *[str(run.timings[method.name][i].solve.num_hvps) for method in run.methods]]
         for i, (checkpoint, reference) in enumerate(zip(run.checkpoints, run.references, strict=True))]))


def print_hvp_costs(run: Run) -> dict[str, float]:
    """(c): one HVP of each method against one gradient, at the last checkpoint; returns the seconds."""
    hvp_repeats = 5 if run.args.quick else 20
    run.model.load_state_dict(run.checkpoints[-1].state)
    costs = hvp_and_gradient_seconds(run.model, run.inputs, run.targets, hvp_repeats)
    print(f"\n## (c) One HVP against one gradient (full batch of {len(run.inputs)}, median of {hvp_repeats} "
          "calls)\n")
    print(markdown_table(["operation", "milliseconds", "/ gradient"],
                         [[name, f"{1e3 * seconds:.2f}", f"{seconds / costs[GRADIENT]:.2f}"]
                          for name, seconds in costs.items()]))
    return costs


def verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def print_targets(run: Run, costs: dict[str, float]) -> None:
    """The targets, reported rather than asserted."""
    peers = (PYHESSIAN, EOS, CURVLINOPS)
    fastest_peer_single = min(run.single_seconds(peer) for peer in peers)
    fastest_peer_trajectory = min(run.trajectory_seconds(peer) for peer in peers)
    single_speedup = fastest_peer_single / run.single_seconds(run.default_cold)
    trajectory_speedup = fastest_peer_trajectory / run.trajectory_seconds(run.default_warm)
    default_hvp = costs[hvp_label(run.auto_choice)]
    fastest_hvp = min(costs[hvp_label(hvp_method)] for hvp_method in ("graph", "func", "double_backward"))
    auto = run.auto_choice
    print("\n## Targets (reported, not asserted)\n")
    print(f"- one checkpoint, phasescope (cold, certified) >= 3x faster than the fastest peer: "
          f"{single_speedup:.2f}x, {verdict(single_speedup >= 3)}")
    print(f"  - uncertified (certify=False: a random start and the error bound alone, as eigsh and PyHessian stop): "
          f"{fastest_peer_single / run.single_seconds(uncertified_cold_name(auto)):.2f}x")
    print(f"- trajectory, phasescope (warm, trusted) >= 10x faster than the fastest peer: "
          f"{trajectory_speedup:.2f}x, {verdict(trajectory_speedup >= 10)}")
    print(f"  - with certified warm starts (certify=True, robust to eigenvalue crossings): "
          f"{fastest_peer_trajectory / run.trajectory_seconds(certified_warm_name(auto)):.2f}x")
    print(f"  - the oracle stop, the most any stopping rule reaches from phasescope's start vectors: one checkpoint "
          f"{fastest_peer_single / run.single_seconds(oracle_name(auto, False)):.2f}x, trajectory "
          f"{fastest_peer_trajectory / run.trajectory_seconds(oracle_name(auto, True)):.2f}x")
    print(f"- one HVP <= 3x one gradient: the default ({auto}) {default_hvp / costs[GRADIENT]:.2f}x, "
          f"{verdict(default_hvp <= 3 * costs[GRADIENT])}; the fastest phasescope HVP "
          f"{fastest_hvp / costs[GRADIENT]:.2f}x, {verdict(fastest_hvp <= 3 * costs[GRADIENT])}")


def main() -> None:
    start = time.perf_counter()
    run = set_up(parse_arguments())
    run.methods = build_methods(run.args.seed, run.args.pyhessian_max_iter, run.references, run.auto_choice)
    run.selections = {method.name: select_tolerance(method, run.model, run.checkpoints, run.inputs, run.targets,
                                                    run.references)
                      for method in run.methods if not method.oracle}
    print_tolerances(run)
    # One timed measurement serves (a) and (b): the tolerance ladder's last pass was the untimed warm-up.
    tolerances = {name: selection.tol for name, selection in run.selections.items()}
    run.timings = time_trajectories(run.methods, tolerances, run.model, run.checkpoints, run.inputs, run.targets,
                                    run.repeats)
    print_single_checkpoint(run)
    print_trajectory(run)
    print_targets(run, print_hvp_costs(run))
    print(f"\ntotal wall time {time.perf_counter() - start:.0f} s, load average at the end {load_average()}")


if __name__ == "__main__":
    main()
