"""Model zoo: shapes, sizes, layer types the supernet converter relies on, user models."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from mps.config import BUILTIN_MODELS, ConfigError
from mps.models import MODELS, build_model
from mps.models.vit import VisionTransformer

SHAPES = [(1, 28), (3, 32)]  # Fashion-MNIST, CIFAR-10


def _build(name: str, in_channels: int, image_size: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(name, in_channels=in_channels, num_classes=10, image_size=image_size)


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_registry_matches_config_names():
    assert set(MODELS) == set(BUILTIN_MODELS)


@pytest.mark.parametrize("in_channels,image_size", SHAPES)
@pytest.mark.parametrize("name", sorted(MODELS))
def test_forward_eval_and_train(name, in_channels, image_size):
    model = _build(name, in_channels, image_size)
    x = torch.randn(4, in_channels, image_size, image_size)
    model.eval()
    with torch.no_grad():
        y_eval = model(x)
    assert y_eval.shape == (4, 10) and torch.isfinite(y_eval).all()
    model.train()
    y = model(x)
    assert y.shape == (4, 10)
    y.square().mean().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_grad == [], f"parameters without gradient: {no_grad}"


@pytest.mark.parametrize("name", sorted(MODELS))
def test_image_size_not_divisible_by_patch_or_stride(name):
    model = _build(name, 3, 30).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 30, 30)).shape == (2, 10)


@pytest.mark.parametrize(
    "name,low,high",
    [("resnet8", 75_000, 81_000), ("resnet20", 265_000, 280_000),
     ("mobilenetv2", 150_000, 500_000), ("vit_tiny", 100_000, 200_000)],
)
def test_parameter_counts(name, low, high):
    assert low <= _n_params(_build(name, 3, 32)) <= high


@pytest.mark.parametrize("name", sorted(MODELS))
def test_weights_live_only_in_plain_conv_linear_and_norms(name):
    """The converter swaps exactly nn.Conv2d / nn.Linear: no other module may own weights."""
    model = _build(name, 3, 32)
    allowed = (nn.Conv2d, nn.Linear, nn.BatchNorm2d, nn.LayerNorm)
    for mod_name, module in model.named_modules():
        own = [n for n, _ in module.named_parameters(recurse=False)]
        if not own:
            continue
        if isinstance(module, VisionTransformer):
            assert sorted(own) == ["cls_token", "pos_embed"]
            continue
        assert type(module) in allowed, f"{mod_name} is {type(module).__name__} with parameters {own}"
    weight_layers = [m for m in model.modules() if type(m) in (nn.Conv2d, nn.Linear)]
    assert len(weight_layers) >= 8
    assert not any(isinstance(m, nn.MultiheadAttention) for m in model.modules())


def test_cnns_have_batchnorm_after_every_conv():
    for name in ("resnet8", "resnet20", "mobilenetv2"):
        model = _build(name, 3, 32)
        n_conv = sum(isinstance(m, nn.Conv2d) for m in model.modules())
        n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
        assert n_conv == n_bn, name
        assert all(m.bias is None for m in model.modules() if isinstance(m, nn.Conv2d)), name


def test_resnet_shortcuts_are_conv_bn_only_where_shape_changes():
    model = _build("resnet20", 3, 32)
    shortcuts = [n for n, m in model.named_modules() if n.endswith("shortcut") and isinstance(m, nn.Sequential)]
    assert shortcuts == ["layer2.0.shortcut", "layer3.0.shortcut"]
    assert [len(getattr(model, f"layer{i}")) for i in (1, 2, 3)] == [3, 3, 3]
    assert [len(getattr(_build("resnet8", 3, 32), f"layer{i}")) for i in (1, 2, 3)] == [1, 1, 1]


def test_mobilenetv2_has_depthwise_convs():
    model = _build("mobilenetv2", 3, 32)
    depthwise = [m for m in model.modules()
                 if isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels == m.out_channels]
    assert len(depthwise) == 10  # one per inverted residual block
    stem = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert stem.stride == (1, 1) and stem.in_channels == 3


def test_vit_attention_and_mlp_are_linear():
    model = _build("vit_tiny", 1, 28)
    blocks = list(model.blocks)
    assert len(blocks) == 4
    for block in blocks:
        assert type(block.attn.qkv) is nn.Linear and block.attn.qkv.out_features == 3 * 64
        assert type(block.attn.proj) is nn.Linear
        assert type(block.mlp.fc1) is nn.Linear and block.mlp.fc1.out_features == 128
        assert type(block.mlp.fc2) is nn.Linear
    assert type(model.patch_embed.proj) is nn.Conv2d and model.patch_embed.proj.kernel_size == (4, 4)
    assert model.pos_embed.shape == (1, 7 * 7 + 1, 64)
    assert _build("vit_tiny", 3, 30).pos_embed.shape == (1, 8 * 8 + 1, 64)  # padded to 32


def test_vit_refuses_other_input_size():
    model = _build("vit_tiny", 3, 32)
    with pytest.raises(ValueError, match="image_size"):
        model(torch.randn(1, 3, 28, 28))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_same_seed_same_model_other_seed_other_model(name):
    a, b, c = _build(name, 3, 32, seed=1), _build(name, 3, 32, seed=1), _build(name, 3, 32, seed=2)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa if sa[k].is_floating_point())


def test_unknown_name_lists_known_models():
    with pytest.raises(ConfigError) as info:
        build_model("resnet9", 3, 10, 32)
    msg = str(info.value)
    assert "\n" not in msg and "resnet9" in msg
    assert all(n in msg for n in MODELS)


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_bad_shape_arguments(bad):
    with pytest.raises(ConfigError, match="in_channels"):
        build_model("resnet8", bad, 10, 32)


@pytest.fixture
def user_models_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))


def test_user_model_is_imported_and_called(user_models_on_path):
    torch.manual_seed(0)
    model = build_model("user_models:tiny_net", in_channels=1, num_classes=10, image_size=28)
    assert model[0].in_channels == 1 and model[-1].in_features == 4 * 28 * 28
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize(
    "name,fragment",
    [
        ("no_such_pkg_xyz.models:net", "cannot import"),
        ("user_models:missing", "has no 'missing'"),
        ("user_models:NOT_CALLABLE", "not callable"),
        ("user_models:not_a_module", "not a torch.nn.Module"),
        ("user_models:wrong_signature", "does not accept"),
        ("user_models:raises", "factory raised RuntimeError"),
        ("user_models:", "not 'package.module:factory'"),
        (":tiny_net", "not 'package.module:factory'"),
    ],
)
def test_bad_user_models_raise_config_error(user_models_on_path, name, fragment):
    with pytest.raises(ConfigError) as info:
        build_model(name, 3, 10, 32)
    msg = str(info.value)
    assert fragment in msg and "fix:" in msg and "\n" not in msg
