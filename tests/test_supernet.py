"""The supernet core: operators against independent references (aihwkit's own conversion),
conversion of every zoo model, forward modes, extraction round trips, mapping validation and
the cost model computed from a mapping and from the extracted model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from aihwkit.nn.conversion import convert_to_analog

from mps.config import SpaceConfig
from mps.cost_model import default_hardware_profile, mapping_costs
from mps.models import MODELS, build_model
from mps.supernet import (MappingError, MappingFile, OPERATORS, convert_to_supernet, extract, load_deployed,
                          load_supernet, save_deployed, save_supernet)
from mps.analog.chip import analog_from_digital, rpu_config_from_profile
from mps.analog.tiles import drift_analog, program_analog, reset_programming, set_training_noise, training_noise
from mps.supernet.extract import describe_deployed
from mps.supernet.operators import BuildContext, Skip, operator_class

PROFILE = default_hardware_profile()
SPACE = SpaceConfig(last_layer=["analog", "int8", "fp16"])


def _supernet(name="resnet8", shape=(1, 28, 28), space=SPACE):
    torch.manual_seed(0)
    model = build_model(name, in_channels=shape[0], num_classes=10, image_size=shape[1])
    meta = {"model_name": name, "model_id": f"{name}@test", "num_classes": 10}
    return convert_to_supernet(model, space, PROFILE, shape, meta)


# --------------------------------------------------------------------------- conversion
@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_every_conv_and_linear_becomes_a_choice_layer(name, shape):
    torch.manual_seed(0)
    model = build_model(name, in_channels=shape[0], num_classes=10, image_size=shape[1])
    expected = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    supernet = convert_to_supernet(model, SPACE, PROFILE, shape, {"model_id": name})
    assert list(supernet.infos) == expected
    leftover = [n for n, m in supernet.model.named_modules()
                if isinstance(m, (nn.Conv2d, nn.Linear)) and ".ops." not in n]
    assert leftover == []
    for name_, info in supernet.infos.items():
        assert info.macs > 0 and info.params > 0
    out = supernet(torch.randn(2, *shape))
    assert out.shape == (2, 10)


def test_depthwise_convs_are_digital_only_with_a_reason():
    supernet = _supernet("mobilenetv2", (3, 32, 32))
    depthwise = [n for n, info in supernet.infos.items() if info.groups > 1]
    assert depthwise
    for n in depthwise:
        assert "analog" not in supernet.allowed[n]
    assert "grouped" in operator_class("analog").unsupported_reason(nn.Conv2d(8, 8, 3, groups=8), supernet.infos[depthwise[0]])


def test_traced_macs_match_hand_computation():
    supernet = _supernet()
    conv1 = supernet.infos["conv1"]          # 1 -> 16 channels, 3x3, 28x28 output
    assert conv1.macs == 28 * 28 * 16 * 1 * 9
    fc = supernet.infos["fc"]                # 64 -> 10
    assert fc.macs == 64 * 10 and fc.out_positions == 1


def test_space_rules_restrict_operators_and_unknown_operator_is_an_error():
    space = SpaceConfig(first_layer=["int8"], last_layer=["fp16"], overrides={"layer2.*": ["analog", "int8"]})
    supernet = _supernet(space=space)
    assert supernet.allowed["conv1"] == ["int8"] and supernet.allowed["fc"] == ["fp16"]
    assert supernet.allowed["layer2.0.conv1"] == ["analog", "int8"]
    with pytest.raises(Exception, match="unknown operator"):
        _supernet(space=SpaceConfig(operators=["analog", "int3"]))


# --------------------------------------------------------------------------- analog operator vs aihwkit
def test_analog_operator_equals_aihwkit_conversion_with_noise_off():
    torch.manual_seed(3)
    conv = nn.Conv2d(4, 8, 3, padding=1)
    cfg = rpu_config_from_profile(PROFILE.analog)
    cfg.forward.out_noise = 0.0
    cfg.modifier.std_dev = 0.0
    ours = analog_from_digital(conv, cfg).eval()
    theirs = convert_to_analog(nn.Sequential(conv), cfg).eval()
    x = torch.randn(5, 4, 9, 9)
    assert torch.equal(ours(x), theirs(x))


def test_analog_operator_matches_aihwkit_statistics_with_noise_on():
    torch.manual_seed(3)
    lin = nn.Linear(64, 32)
    cfg = rpu_config_from_profile(PROFILE.analog)
    x = torch.randn(256, 64)
    ours, theirs = analog_from_digital(lin, cfg).eval(), convert_to_analog(nn.Sequential(lin), cfg).eval()
    exact = lin(x).detach()
    torch.manual_seed(7)
    err_ours = (ours(x) - exact).detach()
    torch.manual_seed(8)
    err_theirs = (theirs(x) - exact).detach()
    assert err_ours.std() > 0
    assert abs(err_ours.std() / err_theirs.std() - 1) < 0.1
    assert abs(err_ours.mean() - err_theirs.mean()) < 0.05 * err_theirs.std() + 1e-3


def test_programming_and_drift_follow_aihwkit_with_the_same_seed():
    torch.manual_seed(0)
    lin = nn.Linear(32, 16)
    cfg = rpu_config_from_profile(PROFILE.analog)
    ours, theirs = analog_from_digital(lin, cfg), convert_to_analog(nn.Sequential(lin), cfg)
    torch.manual_seed(11)
    program_analog(ours)
    drift_analog(ours, 86400.0)
    torch.manual_seed(11)
    theirs.eval()
    theirs.program_analog_weights()
    theirs.drift_analog_weights(86400.0)
    w_ours = next(ours.analog_tiles()).tile.get_weights()
    w_theirs = next(theirs.analog_tiles()).tile.get_weights()
    assert torch.allclose(w_ours, w_theirs)


def test_reset_programming_restores_the_trained_tile_exactly():
    """After program + drift + reset, the tile behaves as before programming: trained weights
    back and no leftover drift-compensation scale on eval outputs."""
    torch.manual_seed(0)
    layer = analog_from_digital(nn.Linear(32, 16), rpu_config_from_profile(PROFILE.analog)).eval()
    tile = next(layer.analog_tiles())
    trained = tile.tile.get_weights().clone()
    program_analog(layer)
    drift_analog(layer, 3.15e7)
    assert not torch.equal(tile.tile.get_weights(), trained)
    assert float(torch.as_tensor(tile.alpha).reshape(-1)[0]) != 1.0
    reset_programming(layer)
    assert torch.equal(tile.tile.get_weights(), trained)
    assert torch.equal(torch.as_tensor(tile.alpha), torch.ones(1))  # aihwkit's own shape, (1,)
    assert tile.drift_baseline is None and tile.programmed_weights is None
    # a state dict saved after an evaluation loads into a freshly built layer
    fresh = analog_from_digital(nn.Linear(32, 16), rpu_config_from_profile(PROFILE.analog))
    fresh.load_state_dict(layer.state_dict())


def test_training_noise_ramp_really_changes_the_forward_noise():
    torch.manual_seed(0)
    layer = analog_from_digital(nn.Linear(64, 64), rpu_config_from_profile(PROFILE.analog)).train()
    for tile in layer.analog_tiles():  # static ranges: initialised already (else each forward updates them)
        tile.input_range_update_idx.data.fill_(float(tile.rpu_config.pre_post.input_range.init_from_data))
    x = torch.randn(512, 64)

    def spread():
        torch.manual_seed(1)
        a = layer(x).detach()
        torch.manual_seed(2)
        return (a - layer(x).detach()).std().item()

    full = spread()
    set_training_noise(layer, 0.0, 0.0)
    assert training_noise(layer) == (0.0, 0.0)
    assert spread() == 0.0
    set_training_noise(layer, PROFILE.analog.out_noise / 4, PROFILE.analog.hwa_weight_noise / 4)
    quarter = spread()
    assert 0.0 < quarter < full


# --------------------------------------------------------------------------- forward modes
def test_forward_modes_fixed_mixture_gumbel():
    supernet = _supernet()
    x = torch.randn(4, 1, 28, 28)
    supernet.eval()
    mapping = supernet.uniform_mapping("fp16")
    supernet.set_mapping(mapping)
    fixed = supernet(x)
    for layer in supernet.choice_layers().values():     # a mixture that puts all weight on fp16
        layer.alphas.data[:] = -1e4
        layer.alphas.data[layer.op_names.index("fp16")] = 0.0
    supernet.set_mode("mixture")
    # Same fp16 network, not the same kernels: in the mixture the analog op's channels-last output
    # makes the sum channels-last, so the next layer's fp32 conv runs another kernel with another
    # accumulation order, and a last-bit fp32 difference can round an fp16 output to the
    # neighbouring fp16 value (measured: 3.05e-5 on outputs of ~0.3, AVX2 EPYC).  So: agreement to
    # two fp16 steps (eps 2^-10) of the output's magnitude; a wrong mixture weight (say 0.99)
    # would miss by 1 %.
    fp16_tol = 2 * torch.finfo(torch.float16).eps * float(fixed.abs().max())
    assert torch.allclose(supernet(x), fixed, rtol=0, atol=fp16_tol)
    supernet.set_mode("gumbel", tau=1.0, hard=True)
    supernet.train()
    out = supernet(x)
    out.sum().backward()
    assert all(l.alphas.grad is not None for l in supernet.choice_layers().values())


def test_sampling_and_scores():
    supernet = _supernet()
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert supernet.sample_mapping(g1) == supernet.sample_mapping(g2)
    for layer in supernet.choice_layers().values():
        layer.alphas.data[layer.op_names.index("int8")] = 3.0
    assert set(supernet.argmax_mapping().values()) == {"int8"}
    assert supernet.score(supernet.uniform_mapping("int8")) > supernet.score(supernet.uniform_mapping("fp16"))


# --------------------------------------------------------------------------- skip
def test_skip_is_identity_or_parameter_free_shape_match():
    same = Skip.from_layer(nn.Conv2d(8, 8, 3, padding=1), None)
    x = torch.randn(2, 8, 6, 6)
    assert torch.equal(same(x), x)
    down = Skip.from_layer(nn.Conv2d(8, 16, 3, stride=2, padding=1), None)
    y = down(x)
    assert y.shape == (2, 16, 3, 3) and torch.equal(y[:, :8], x[:, :, ::2, ::2]) and y[:, 8:].abs().sum() == 0
    assert sum(p.numel() for p in down.parameters()) == 0


# --------------------------------------------------------------------------- extraction
def test_extract_matches_the_supernet_path_and_round_trips(tmp_path):
    supernet = _supernet()
    g = torch.Generator().manual_seed(1)
    mapping = supernet.sample_mapping(g)
    mapping = {n: ("fp16" if op == "analog" else op) for n, op in mapping.items()}  # deterministic ops
    x = torch.randn(3, 1, 28, 28)
    supernet.eval()
    supernet.set_mapping(mapping)
    expected = supernet(x)
    model = extract(supernet, mapping)
    assert torch.allclose(model(x), expected)
    assert not any(type(m).__name__ == "ChoiceLayer" for m in model.modules())

    mf = MappingFile(supernet.meta["model_id"], "t", "test", mapping)
    path = save_deployed(tmp_path / "deployed.pt", model, mf, {**supernet.meta, "input_shape": [1, 28, 28]},
                         PROFILE, {})
    reloaded, mf2 = load_deployed(path)
    assert mf2.layers == mapping
    assert torch.equal(reloaded(x), model(x))


def test_analog_extraction_round_trip_keeps_tile_weights(tmp_path):
    supernet = _supernet()
    mapping = supernet.uniform_mapping("analog")
    model = extract(supernet, mapping)
    mf = MappingFile(supernet.meta["model_id"], "a", "test", mapping)
    path = save_deployed(tmp_path / "a.pt", model, mf, {**supernet.meta, "input_shape": [1, 28, 28]}, PROFILE, {})
    reloaded, _ = load_deployed(path)
    for (n1, t1), (n2, t2) in zip(model.named_modules(), reloaded.named_modules()):
        if hasattr(t1, "get_weights") and hasattr(t1, "analog_tile_count"):
            w1, w2 = t1.get_weights()[0], t2.get_weights()[0]
            assert torch.equal(w1, w2), n1


def test_supernet_save_load_round_trip(tmp_path):
    supernet = _supernet()
    supernet.choice_layers()["conv1"].alphas.data[:] = torch.tensor([0.1, 0.2, 0.3, 0.4])
    save_supernet(tmp_path / "s.pt", supernet, SPACE, PROFILE, {})
    again, _ = load_supernet(tmp_path / "s.pt")
    assert again.allowed == supernet.allowed
    assert torch.equal(again.choice_layers()["conv1"].alphas, supernet.choice_layers()["conv1"].alphas)
    mapping = supernet.uniform_mapping("int8")
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(extract(again, mapping)(x), extract(supernet, mapping)(x))


def test_mapping_mismatch_names_missing_and_extra_layers():
    supernet = _supernet()
    mapping = supernet.uniform_mapping("int8")
    mapping.pop("layer1.0.conv1")
    mapping["layer9.conv"] = "int8"
    with pytest.raises(MappingError) as err:
        supernet.set_mapping(mapping)
    assert "layer1.0.conv1" in str(err.value) and "layer9.conv" in str(err.value)


# --------------------------------------------------------------------------- costs
@pytest.mark.parametrize("op", ["analog", "int8", "fp16", "mixed"])
def test_cost_model_same_from_mapping_and_from_extracted_model(op):
    supernet = _supernet()
    if op == "mixed":
        mapping = supernet.sample_mapping(torch.Generator().manual_seed(4))
    else:
        mapping = supernet.uniform_mapping(op)
    from_mapping = mapping_costs(list(supernet.infos.values()), mapping, PROFILE)
    infos, read_back = describe_deployed(extract(supernet, mapping), (1, 28, 28))
    assert read_back == mapping
    assert mapping_costs(list(infos.values()), read_back, PROFILE) == from_mapping


def test_registry_has_the_four_operators_and_int4_is_one_class():
    assert {"analog", "int8", "fp16", "skip"} <= set(OPERATORS)
    from mps.supernet.operators import Int4

    layer = nn.Conv2d(3, 4, 3)
    op = Int4.from_layer(layer, BuildContext(None, PROFILE))
    levels = op.layer.quantized_weight()[0].unique().numel()
    assert levels <= 16
