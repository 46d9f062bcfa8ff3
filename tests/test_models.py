"""Models: shapes, torch.func compatibility (jvp of grad, vmap over stacked copies), muP, errors, configs."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn
from torch.func import functional_call, grad, jvp, stack_module_state, vmap
from torch.testing import assert_close

from phasescope.errors import PhasescopeError
from phasescope.models import (
    CNNConfig,
    MLPConfig,
    ResNetConfig,
    ViTConfig,
    build_model,
    model_checkpoint_config,
    model_from_checkpoint_config,
)
from phasescope.models.losses import mean_squared_error
from phasescope.models.mlp import MLP
from phasescope.models.parameterization import attention_scale, forward_multipliers
from phasescope.models.resnet import ResNet
from phasescope.run import validate_config

# Tiny instances of every image-capable architecture; muP ones at twice their base width, so that
# every multiplier differs from 1.
TINY = {
    "mlp": MLPConfig(depth=2, width=6),
    "cnn": CNNConfig(channels=(3, 4)),
    "resnet": ResNetConfig(stages=(3, 4), num_blocks=1),
    "vit-mean": ViTConfig(width=8, depth=1, num_heads=2, mlp_ratio=2),
    "vit-cls": ViTConfig(width=8, depth=1, num_heads=2, mlp_ratio=2, pooling="cls", activation="tanh"),
}


def width_of(config) -> int:
    """The width that muP compares with ``base_width``."""
    return config.channels[0] if config.arch == "cnn" else config.stages[0] if config.arch == "resnet" else config.width


def tiny(name: str, parameterization: str = "standard"):
    config = TINY[name]
    if parameterization == "mup":
        config = config.model_copy(update={"parameterization": "mup", "base_width": width_of(config) // 2})
    return config


def seeded_model(config, input_shape=(1, 8, 8), num_outputs=3, seed=0, dtype=torch.float64) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(config, input_shape, num_outputs).to(dtype)


def regression_batch(n=5, input_shape=(1, 8, 8), num_outputs=3, seed=0, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(n, *input_shape, generator=generator).to(dtype),
            torch.randn(n, num_outputs, generator=generator).to(dtype))


def detached_parameters(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("input_shape", [(1, 8, 8), (3, 8, 8), (64,)])
@pytest.mark.parametrize("name", list(TINY))
def test_output_shape(name, input_shape):
    for parameterization in ("standard", "mup"):
        model = seeded_model(tiny(name, parameterization), input_shape, num_outputs=3)
        inputs, _ = regression_batch(4, input_shape)
        assert model(inputs).shape == (4, 3)


@pytest.mark.parametrize("parameterization", ["standard", "mup"])
@pytest.mark.parametrize("name", list(TINY))
def test_forward_over_reverse_hvp_matches_double_backward(name, parameterization):
    model = seeded_model(tiny(name, parameterization), (3, 8, 8))
    inputs, targets = regression_batch(4, (3, 8, 8))
    params = detached_parameters(model)
    generator = torch.Generator().manual_seed(1)
    tangent = {k: torch.randn(p.shape, generator=generator, dtype=torch.float64) for k, p in params.items()}

    def loss_of(current):
        return mean_squared_error(functional_call(model, current, (inputs,)), targets)

    _, forward_over_reverse = jvp(grad(loss_of), (params,), (tangent,))
    leaves = {k: p.clone().requires_grad_(True) for k, p in params.items()}
    gradients = torch.autograd.grad(loss_of(leaves), list(leaves.values()), create_graph=True)
    inner = sum((g * tangent[k]).sum() for k, g in zip(leaves, gradients))
    double_backward = dict(zip(leaves, torch.autograd.grad(inner, list(leaves.values()))))
    for k in params:
        assert_close(forward_over_reverse[k], double_backward[k], rtol=1e-9, atol=1e-11)
    assert any(v.abs().max() > 1e-6 for v in double_backward.values())  # not trivially zero


@pytest.mark.parametrize("name", list(TINY))
def test_vmap_over_stacked_copies_matches_each_model(name):
    models = [seeded_model(tiny(name, "mup"), (3, 8, 8), seed=seed, dtype=torch.float32) for seed in range(3)]
    inputs, targets = regression_batch(4, (3, 8, 8), dtype=torch.float32)
    params, buffers = stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")

    def outputs_of(p, b):
        return functional_call(base, (p, b), (inputs,))

    def loss_of(p, b):
        return mean_squared_error(outputs_of(p, b), targets)

    stacked_outputs = vmap(outputs_of)(params, buffers)
    stacked_grads = vmap(grad(loss_of))(params, buffers)  # a learning-rate grid's step, vectorized
    for i, model in enumerate(models):
        assert_close(stacked_outputs[i], model(inputs), rtol=1e-5, atol=1e-6)
        own = grad(lambda p, m=model: mean_squared_error(functional_call(m, p, (inputs,)), targets))(
            detached_parameters(model))
        for k in own:
            assert_close(stacked_grads[k][i], own[k], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", list(TINY))
def test_mup_equals_standard_at_base_width(name):
    standard = TINY[name]
    mup = standard.model_copy(update={"parameterization": "mup", "base_width": width_of(standard)})
    inputs, _ = regression_batch(4, (3, 8, 8), dtype=torch.float32)
    a = seeded_model(standard, (3, 8, 8), dtype=torch.float32)
    b = seeded_model(mup, (3, 8, 8), dtype=torch.float32)
    for (name_a, p), (name_b, q) in zip(a.named_parameters(), b.named_parameters()):
        assert name_a == name_b and torch.equal(p, q)
    assert torch.equal(a(inputs), b(inputs))


def test_standard_mlp_is_unchanged_pytorch():
    """SP is PyTorch's own layers and initialization: same seed, same parameters and outputs."""
    torch.manual_seed(7)
    model = MLP((5,), 2, depth=2, width=4, activation="relu")
    torch.manual_seed(7)
    reference = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    assert list(model.state_dict()) == [f"layers.{k}" for k in reference.state_dict()]
    for p, q in zip(model.parameters(), reference.parameters()):
        assert torch.equal(p, q)
    inputs = torch.randn(3, 5)
    assert torch.equal(model(inputs), reference(inputs))


def effective_parameters(model: nn.Module) -> dict[str, torch.Tensor]:
    """What each parameter contributes to the forward pass: stored value times its multiplier."""
    multipliers = forward_multipliers(model)
    return {name: p.detach() * multipliers[name] for name, p in model.named_parameters()}


def test_mup_gd_is_tp5_table3_per_layer_sgd():
    """One GD step with a global rate on the muP MLP equals, on its effective weights, SGD with the
    per-layer rates of Tensor Programs V Table 3 (input weights and biases eta*m, hidden eta, output
    weights eta/m, read-out bias eta), on a plain PyTorch MLP; the effective initialization has Table 3's
    variances (1/fan_in, and 1/(fan_in m) for the read-out, relative to PyTorch's uniform init)."""
    m, base, lr = 4, 16, 0.1
    torch.manual_seed(0)
    model = MLP((5,), 3, depth=2, width=m * base, activation="tanh", parameterization="mup",
                base_width=base).double()
    inputs, targets = regression_batch(8, (5,))
    effective = effective_parameters(model)
    fan_in = {"layers.0": 5, "layers.2": m * base, "layers.4": m * base}
    for layer, fan in fan_in.items():  # uniform(-b, b) has std b / sqrt(3)
        expected_std = 1 / math.sqrt(3 * fan) / (math.sqrt(m) if layer == "layers.4" else 1)
        assert effective[f"{layer}.weight"].std().item() == pytest.approx(expected_std, rel=0.1)
    assert effective["layers.2.bias"].abs().max() > 1 / math.sqrt(m * base)  # biases do not shrink with width

    plain = nn.Sequential(nn.Linear(5, m * base), nn.Tanh(), nn.Linear(m * base, m * base), nn.Tanh(),
                          nn.Linear(m * base, 3)).double()
    plain.load_state_dict({name.removeprefix("layers."): value for name, value in effective.items()})
    rates = {"layers.0.weight": lr * m, "layers.0.bias": lr * m, "layers.2.weight": lr, "layers.2.bias": lr * m,
             "layers.4.weight": lr / m, "layers.4.bias": lr}
    mean_squared_error(plain(inputs), targets).backward()
    mean_squared_error(model(inputs), targets).backward()
    with torch.no_grad():
        for (name, p), q in zip(model.named_parameters(), plain.parameters()):
            p -= lr * p.grad
            q -= rates[f"layers.{name.split('.', 1)[1]}"] * q.grad
    stepped = effective_parameters(model)
    for name, q in plain.state_dict().items():
        assert_close(stepped[f"layers.{name}"], q, rtol=1e-12, atol=1e-14)


def one_step_changes(model: nn.Module, inputs, targets, lr: float, features: nn.Module | None = None):
    """RMS per coordinate of the change of the outputs (and of ``features(inputs)``) after one GD step."""
    params = detached_parameters(model)
    gradients = grad(lambda p: mean_squared_error(functional_call(model, p, (inputs,)), targets))(params)
    with torch.no_grad():
        before = model(inputs), features(inputs) if features is not None else None
        for name, p in model.named_parameters():
            p -= lr * gradients[name]
        after = model(inputs), features(inputs) if features is not None else None
    output_change = (after[0] - before[0]).pow(2).mean().sqrt().item()
    feature_change = (after[1] - before[1]).pow(2).mean().sqrt().item() if features is not None else None
    return output_change, feature_change


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_mup_updates_are_width_independent_and_standard_ones_grow(activation):
    """The defining property of muP (TP5): at a fixed learning rate, one GD step changes the output and
    every hidden pre-activation by Theta(1) per coordinate as width grows; under SP the output change grows
    like width."""
    inputs, targets = regression_batch(32, (16,), num_outputs=4, dtype=torch.float32)
    changes = {}
    for parameterization in ("standard", "mup"):
        for width in (64, 256, 1024):
            torch.manual_seed(0)
            model = MLP((16,), 4, depth=2, width=width, activation=activation, parameterization=parameterization,
                        base_width=64)
            second_preactivation = model.layers[:3]  # Linear, act, Linear: the second hidden layer's input to act
            changes[parameterization, width] = one_step_changes(model, inputs, targets, 0.1,
                                                                second_preactivation.forward)
    for index in (0, 1):  # output, hidden pre-activation
        mup = [changes["mup", width][index] for width in (64, 256, 1024)]
        assert max(mup) / min(mup) < 2, mup
    standard_output = [changes["standard", width][0] for width in (64, 256, 1024)]
    assert standard_output[0] < standard_output[1] < standard_output[2]
    assert standard_output[2] / standard_output[0] > 6, standard_output  # ~16 = 1024/64 in the limit


@pytest.mark.parametrize("config", [
    CNNConfig(channels=(16, 16), base_width=16),
    ResNetConfig(stages=(16,), num_blocks=1, base_width=16),
    ViTConfig(width=16, depth=1, num_heads=2, mlp_ratio=2, base_width=16),
], ids=["cnn", "resnet", "vit"])
def test_mup_output_updates_are_width_independent_for_image_models(config):
    """As for the MLP, averaged over 4 initializations (at width 16 one initialization is noisy)."""
    inputs, targets = regression_batch(16, (1, 8, 8), num_outputs=4, dtype=torch.float32)
    widths = (16, 64, 256)
    mean_change = {}
    for parameterization in ("standard", "mup"):
        for width in widths:
            field = "channels" if config.arch == "cnn" else "stages" if config.arch == "resnet" else "width"
            value = (width, width) if config.arch == "cnn" else (width,) if config.arch == "resnet" else width
            changes = []
            for seed in range(4):
                model = seeded_model(config.model_copy(update={field: value, "parameterization": parameterization}),
                                     (1, 8, 8), num_outputs=4, seed=seed, dtype=torch.float32)
                changes.append(one_step_changes(model, inputs, targets, 0.01)[0])
            mean_change[parameterization, width] = sum(changes) / len(changes)
    mup = [mean_change["mup", width] for width in widths]
    standard = [mean_change["standard", width] for width in widths]
    assert max(mup) / min(mup) < 2, mup
    assert standard[2] / standard[0] > 3, standard  # ~16 = 256/16 in the limit


def test_attention_scale():
    assert attention_scale(16, 16, "standard") == pytest.approx(1 / 4)
    assert attention_scale(16, 16, "mup") == pytest.approx(1 / 4)  # muP = SP at the base width
    assert attention_scale(64, 16, "mup") == pytest.approx(4 / 64)  # 1/d_head beyond it
    assert attention_scale(64, 16, "standard") == pytest.approx(1 / 8)


@pytest.mark.parametrize("name", list(TINY))
@pytest.mark.parametrize("parameterization", ["standard", "mup"])
def test_init_scale_multiplies_the_initialization(name, parameterization):
    config = tiny(name, parameterization)
    default = seeded_model(config, dtype=torch.float32)
    scaled = seeded_model(config.model_copy(update={"init_scale": 2.5}), dtype=torch.float32)
    for p, q in zip(default.parameters(), scaled.parameters()):
        assert_close(q, 2.5 * p, rtol=1e-6, atol=0)


def test_residual_scaling_keeps_deep_resnets_stable_at_initialization():
    """With branches scaled by 1/sqrt(blocks), the features' scale at init barely moves from 1 to 16 blocks;
    with unscaled branches (scale 1) it grows geometrically once the initialization is larger (init_scale 2)."""
    inputs, _ = regression_batch(16, (1, 8, 8))

    def feature_std(num_blocks, residual_scale=None):
        torch.manual_seed(0)
        model = ResNet((1, 8, 8), 2, stages=(8,), num_blocks=num_blocks, residual_scale=residual_scale,
                       init_scale=2.0).double()
        with torch.no_grad():
            stem = model.stem(inputs)
            return (model.blocks(stem).std() / stem.std()).item()

    shallow = feature_std(1)
    assert 0.5 < feature_std(16) / shallow < 2
    assert feature_std(16, residual_scale=1.0) / shallow > 10


@pytest.mark.parametrize("config", [CNNConfig(), ResNetConfig(), ViTConfig()], ids=["cnn", "resnet", "vit"])
@pytest.mark.parametrize("input_shape", [(10,), (3, 8)])
def test_image_models_reject_non_image_inputs(config, input_shape):
    model_name = {"cnn": "a CNN", "resnet": "a ResNet", "vit": "a ViT"}[config.arch]
    with pytest.raises(PhasescopeError, match=rf"{model_name} needs image inputs \(C, H, W\).*got shape "
                                              + re_tuple(input_shape)):
        build_model(config, input_shape, 3)


def re_tuple(shape: tuple[int, ...]) -> str:
    return str(tuple(shape)).replace("(", r"\(").replace(")", r"\)")


def test_vit_patch_size_must_divide_the_image():
    with pytest.raises(PhasescopeError, match=r"patch_size 3 needs image height and width divisible by 3, "
                                              r"got image shape \(1, 8, 8\)"):
        build_model(ViTConfig(patch_size=3), (64,), 10)


def test_bad_model_configs_are_reported_by_field():
    with pytest.raises(PhasescopeError, match=r"width \(10\) must be a multiple of num_heads \(4\)"):
        validate_config({"arch": "vit", "width": 10, "num_heads": 4}, ViTConfig)
    with pytest.raises(PhasescopeError, match="parameterization"):
        validate_config({"arch": "mlp", "parameterization": "ntk"}, MLPConfig)
    with pytest.raises(PhasescopeError, match="stages"):
        validate_config({"arch": "resnet", "stages": []}, ResNetConfig)


@pytest.mark.parametrize("name", list(TINY))
def test_checkpoint_config_rebuilds_the_model(name):
    config = tiny(name, "mup")
    model = seeded_model(config, (64,), num_outputs=10, dtype=torch.float32)
    saved = model_checkpoint_config(config, (64,), 10)
    rebuilt = model_from_checkpoint_config(saved)
    rebuilt.load_state_dict(model.state_dict())
    inputs, _ = regression_batch(3, (64,), dtype=torch.float32)
    assert torch.equal(rebuilt(inputs), model(inputs))  # the muP multipliers come back from the config


def test_checkpoint_configs_from_before_parameterization_still_load():
    model = model_from_checkpoint_config({"arch": "mlp", "depth": 1, "width": 4, "activation": "tanh",
                                          "init_scale": 1.0, "input_shape": [3], "num_outputs": 2})
    assert model.layers[0].weight_multiplier == 1.0 and model.layers[2].weight_multiplier == 1.0
