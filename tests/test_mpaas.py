"""MPAAS adapted candidates: widths from the tiles, no extra tile / MVM energy / latency, the
adapted pair starting as the plain one, tied mappings, and the stages on the tiny profile."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from torch import nn

from conftest import tiny_params
from mps.config import SpaceConfig
from mps.cost_model import default_hardware_profile, layer_cost
from mps.layer_info import LayerInfo
from mps.models import build_model
from mps.models.resnet import BasicBlock
from mps.stages.adapt import fair_paths
from mps.supernet import MappingError, convert_to_supernet, extract, load_deployed, save_deployed
from mps.supernet.adapted import WIDE, WidthAdaptiveBatchNorm, check_ties, wide_width, widen_layer
from mps.supernet.extract import describe_deployed
from mps.supernet.mapping import MappingFile

PROFILE = default_hardware_profile()
MPAAS = SpaceConfig(search_space="mpaas", last_layer=["analog", "int8", "fp16"])


def _supernet(name: str = "resnet8", space: SpaceConfig = MPAAS):
    torch.manual_seed(0)
    model = build_model(name, in_channels=1, num_classes=10, image_size=28)
    return convert_to_supernet(model, space, PROFILE, (1, 28, 28), {"model_id": name, "model_name": name,
                                                                    "num_classes": 10})


def _wide(supernet) -> dict[str, str]:
    mapping = supernet.uniform_mapping("analog")
    for p in supernet.pairs:
        mapping[p["producer"]] = mapping[p["consumer"]] = WIDE
    return mapping


def test_wide_width_fills_the_tiles_by_hand():
    """512 x 512 tiles. conv 16 -> 16 (3x3): the consumer's columns 16*9 = 144 fit 512 -> 56
    channels (56*9 = 504); 64 channels: 576 columns need 2 tiles = 1024 -> 113 channels."""
    conv = lambda c_in, c_out: LayerInfo("x", "conv", c_in, c_out, (3, 3), out_positions=1)  # noqa: E731
    assert wide_width(conv(16, 16), conv(16, 16), 512, 512) == 56
    assert wide_width(conv(32, 32), conv(32, 32), 512, 512) == 56
    assert wide_width(conv(64, 64), conv(64, 64), 512, 512) == 113
    lin = lambda i, o: LayerInfo("y", "linear", i, o)  # noqa: E731
    assert wide_width(lin(64, 128), lin(128, 64), 512, 512) == 512
    assert wide_width(lin(64, 512), lin(512, 64), 512, 512) == 512  # full already: no candidate
    # attention, 4 heads of 16: qkv's 192 outputs are 12 head-blocks; 12 * 42 = 504 <= 512 rows
    assert wide_width(lin(64, 192), lin(64, 64), 512, 512, blocks=(12, 4)) == 42


@pytest.mark.parametrize("name", ["resnet8", "resnet20", "vit_tiny"])
def test_adapted_candidates_cost_no_tile_no_mvm_energy_no_latency(name):
    """Per layer: the same tiles, MVM energy and latency as the plain analog candidate; the
    only extra energy is the wider activation traffic, exactly as the profile prices it."""
    supernet = _supernet(name)
    assert supernet.pairs
    a = PROFILE.analog
    widened = {info.name: info for info in supernet.layer_infos(_wide(supernet))}
    for p in supernet.pairs:
        assert widened[p["producer"]].out_features == p["producer_width"]
        assert widened[p["consumer"]].in_features == p["width"]
        for layer, wide in ((p["producer"], widened[p["producer"]]), (p["consumer"], widened[p["consumer"]])):
            plain, adapted = layer_cost(supernet.infos[layer], "analog", PROFILE), layer_cost(wide, WIDE, PROFILE)
            assert adapted.tiles == plain.tiles
            assert adapted.compute_energy_uj == plain.compute_energy_uj
            assert adapted.latency_ms == plain.latency_ms
            assert adapted.tile_util_percent > plain.tile_util_percent
            extra_bytes = ((wide.in_features - supernet.infos[layer].in_features) * a.input_bytes
                           + (wide.out_features - supernet.infos[layer].out_features) * a.output_bytes) \
                * wide.out_positions
            assert adapted.energy_uj - plain.energy_uj == pytest.approx(
                extra_bytes * PROFILE.memory.activation_pj_per_byte.value * 1e-6)
    plain_costs, wide_costs = supernet.costs(supernet.uniform_mapping("analog"), PROFILE), supernet.costs(_wide(supernet), PROFILE)
    assert wide_costs.analog_tiles == plain_costs.analog_tiles
    assert wide_costs.latency_ms_per_sample == pytest.approx(plain_costs.latency_ms_per_sample)
    assert wide_costs.analog_tile_util_percent > plain_costs.analog_tile_util_percent


def test_widened_block_starts_exactly_as_the_plain_block():
    torch.manual_seed(0)
    block = BasicBlock(16, 16, 1).eval()
    with torch.no_grad():
        block.bn1.running_mean.uniform_(-0.5, 0.5)
        block.bn1.running_var.uniform_(0.5, 2.0)
    x = torch.randn(4, 16, 8, 8)
    ref = block(x)
    c1, c2 = block.conv1, block.conv2
    wide1 = LayerInfo("conv1", "conv", 16, 56, (3, 3), out_positions=64)
    wide2 = LayerInfo("conv2", "conv", 56, 16, (3, 3), out_positions=64)
    block.conv1 = widen_layer(c1, wide1, torch.Generator().manual_seed(1))
    block.conv2 = widen_layer(c2, wide2)
    block.bn1 = WidthAdaptiveBatchNorm.from_norm(block.bn1, 56).eval()
    assert block.conv1.weight.shape == (56, 16, 3, 3) and block.conv2.weight.shape == (16, 56, 3, 3)
    assert block.conv1.weight[16:].abs().sum() > 0      # new channels carry signal ...
    assert block.conv2.weight[:, 16:].abs().sum() == 0  # ... that the consumer ignores at first
    # same function, other kernels: the widened convs reduce over 56 x 3 x 3 terms (zeros added)
    # in another blocking, so fp32 rounding may differ by up to n * eps of the output's magnitude
    tol = 56 * 9 * torch.finfo(torch.float32).eps * float(ref.abs().max())
    assert torch.allclose(block(x), ref, rtol=0, atol=tol)


def test_widened_attention_keeps_every_head_and_starts_close_to_the_plain_block():
    """Head widths grow from 16 to 42 inside qkv's and proj's tiles: each head's original
    q/k/v rows and proj columns are copied to the start of its wider block; the new proj
    columns are zero, so only the (small) new q.k terms move the output at first."""
    from mps.models.vit import Attention

    torch.manual_seed(0)
    attn = Attention(64, 4).eval()
    x = torch.randn(2, 17, 64)
    ref = attn(x)
    qkv, proj = attn.qkv, attn.proj
    attn.qkv = widen_layer(qkv, LayerInfo("qkv", "linear", 64, 504), torch.Generator().manual_seed(1), blocks=(12, 1))
    attn.proj = widen_layer(proj, LayerInfo("proj", "linear", 168, 64), blocks=(1, 4))
    for block in range(12):  # every head-block of q, k and v kept its trained rows
        assert torch.equal(attn.qkv.weight[block * 42:block * 42 + 16], qkv.weight[block * 16:(block + 1) * 16])
    for head in range(4):
        assert torch.equal(attn.proj.weight[:, head * 42:head * 42 + 16], proj.weight[:, head * 16:(head + 1) * 16])
        assert attn.proj.weight[:, head * 42 + 16:(head + 1) * 42].abs().sum() == 0
    out = attn(x)
    assert out.shape == ref.shape
    assert (out - ref).abs().max() < 0.05 * ref.abs().max()


def test_width_adaptive_norm_serves_both_widths_and_trains_only_what_it_sees():
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(4)
    wide = WidthAdaptiveBatchNorm.from_norm(bn, 6).train()
    x = torch.randn(8, 4, 3, 3)
    # per-channel batch statistics over 8 x 3 x 3 values; 4 or 6 channels may take other vector
    # paths: fp32 rounding of O(1) normalised values, far below 1e-6 + 1e-5 relative
    assert torch.allclose(wide(x), bn.train()(x), atol=1e-6)
    assert torch.allclose(wide.running_mean[:4], bn.running_mean)
    assert torch.equal(wide.running_mean[4:], torch.zeros(2))  # untouched by a plain path
    assert wide(torch.randn(8, 6, 3, 3)).shape == (8, 6, 3, 3)
    assert wide.to_plain(4).num_features == 4 and wide.to_plain(6).num_features == 6
    with pytest.raises(ValueError):
        wide(torch.randn(2, 7, 3, 3))


def test_mpaas_supernet_offers_wide_only_on_pairs_and_refuses_split_pairs():
    supernet = _supernet()
    wide_layers = {n for n, ops in supernet.allowed.items() if WIDE in ops}
    assert wide_layers == {p[k] for p in supernet.pairs for k in ("producer", "consumer")}
    assert WIDE not in supernet.allowed["conv1"] and WIDE not in supernet.allowed["fc"]
    split = {**supernet.uniform_mapping("analog"), supernet.pairs[0]["producer"]: WIDE}
    with pytest.raises(MappingError, match="together"):
        supernet.set_mapping(split)
    assert not check_ties(supernet.tie(split), supernet.ties)
    gen = torch.Generator().manual_seed(0)
    for _ in range(50):
        assert not check_ties(supernet.sample_mapping(gen), supernet.ties)
    plain = _supernet(space=SpaceConfig(last_layer=["analog", "int8", "fp16"]))
    assert not plain.pairs and all(WIDE not in ops for ops in plain.allowed.values())


def test_fair_paths_with_ties_are_valid_and_cover_every_operator():
    supernet = _supernet()
    for seed in range(20):
        for skip_contexts in (True, False):  # skip is trained in no path by default (it has no weights)
            paths, counts = fair_paths(supernet.allowed, torch.Generator().manual_seed(seed), supernet.ties,
                                       skip_contexts=skip_contexts)
            for path in paths:
                assert not check_ties(path, supernet.ties)
            for p in supernet.pairs:
                for layer in (p["producer"], p["consumer"]):
                    expected = {op for op in supernet.allowed[layer] if skip_contexts or op != "skip"}
                    assert {path[layer] for path in paths} == expected
                    assert sum(counts[layer].values()) == len(paths)


def test_excluding_hides_the_adapted_operator_and_restores_the_alphas():
    supernet = _supernet()
    with torch.no_grad():
        for layer in supernet.choice_layers().values():
            layer.alphas[layer.op_names.index(WIDE) if WIDE in layer.op_names else 0] = 5.0
    before = [a.detach().clone() for a in supernet.alpha_parameters()]
    gen = torch.Generator().manual_seed(0)
    with supernet.excluding({WIDE}):
        assert all(WIDE not in ops for ops in supernet.allowed.values())
        assert WIDE not in supernet.argmax_mapping().values()
        from mps.search.mps_search import sample_from_alphas

        assert all(WIDE not in sample_from_alphas(supernet, gen).values() for _ in range(20))
    assert all(torch.equal(a, b) for a, b in zip(supernet.alpha_parameters(), before))
    assert WIDE in supernet.argmax_mapping().values()


def test_wide_extraction_costs_and_deployed_round_trip(tmp_path):
    supernet = _supernet()
    mapping = _wide(supernet)
    model = extract(supernet, mapping)
    assert isinstance(model.layer1[0].bn1, nn.BatchNorm2d) and not isinstance(model.layer1[0].bn1,
                                                                                WidthAdaptiveBatchNorm)
    assert model.layer1[0].bn1.num_features == supernet.pairs[0]["width"]
    infos, read_back = describe_deployed(model, (1, 28, 28))
    assert read_back == mapping
    from mps.cost_model import mapping_costs

    assert mapping_costs(list(infos.values()), read_back, PROFILE) == supernet.costs(mapping, PROFILE)
    meta = {"model_name": "resnet8", "num_classes": 10, "input_shape": [1, 28, 28]}
    path = save_deployed(tmp_path / "m.pt", model, MappingFile("resnet8", "w", "mpaas", mapping), meta, PROFILE, {})
    loaded, _ = load_deployed(path)
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        if torch.is_tensor(a[k]) and not k.endswith("analog_ctx"):
            assert torch.equal(a[k], b[k]), k
    # a plain mapping of the same supernet extracts to the plain widths
    assert extract(supernet, supernet.uniform_mapping("fp16")).layer1[0].bn1.num_features == 16


def test_mixture_mode_mixes_operators_of_different_widths():
    supernet = _supernet("vit_tiny")
    supernet.set_mode("mixture")
    supernet.eval()
    assert supernet(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_mixture_of_the_plain_space_is_the_plain_network():
    """An excluded operator (alpha -1e4) leaves the mixture: with every operator but fp16
    excluded, the mixture is the fp16 path, attention blocks included (a zero-padded wide
    width would scramble the heads of ``qkv``)."""
    supernet = _supernet("vit_tiny")
    supernet.eval()
    x = torch.randn(2, 1, 28, 28)
    with supernet.excluding({WIDE, "analog", "int8", "skip"}), torch.no_grad():
        supernet.set_mapping(supernet.uniform_mapping("fp16"))
        fixed = supernet(x)
        supernet.set_mode("mixture")
        assert torch.allclose(supernet(x), fixed, atol=1e-5)


def test_mpaas_runs_through_adapt_search_and_evaluate(tiny_data, tiny_pretrained, tmp_path):
    """The tiny profile with search_space: mpaas: the adapted supernet has pairs, the search
    writes both an ``mps`` (plain operators) and an ``mpaas`` Pareto set, evaluate tables them
    and the report shows both methods."""
    from mps.stages import adapt, calibrate, evaluate, report, search
    from mps.tracking import NullTracker

    params = tiny_params(**{"space.search_space": "mpaas", "adapt.evidence_examples": 50,
                            "calibrate.repeats": 1, "calibrate.drift_times": [86400.0],
                            "search.budget": 4, "search.val_examples": 50, "search.alpha_steps": 5,
                            "search.baselines": ["fp32", "greedy", "random"], "search.pareto_size": 2,
                            "evaluate.repeats": 1, "evaluate.drift_times": [86400.0],
                            "evaluate.reference_time": 86400.0, "evaluate.max_test_examples": 50})
    adapt.run(params, tiny_data, tiny_pretrained, tmp_path / "adapt", tmp_path / "aw", NullTracker())
    supernet_path = tmp_path / "adapt" / "supernet.pt"
    calibrate.run(params, tiny_data, supernet_path, tmp_path / "calibrate", NullTracker())
    summary = search.run(params, tiny_data, supernet_path, tiny_pretrained, tmp_path / "calibrate" / "sensitivity.csv",
                         tmp_path / "search", tmp_path / "sw", NullTracker())
    assert {"mps", "mpaas", "fp32", "greedy", "random"} <= set(summary["methods"])
    files = [json.loads(p.read_text()) for p in (tmp_path / "search" / "mappings").glob("*.json")]
    assert all(WIDE not in f["layers"].values() for f in files if f["method"] != "mpaas")
    evaluate.run(params, tiny_data, supernet_path, tiny_pretrained, tmp_path / "search" / "mappings",
                 tmp_path / "evaluate", tmp_path / "ew", NullTracker())
    results = pd.read_csv(tmp_path / "evaluate" / "results.csv")
    assert "mpaas" in set(results["Method"])
    report.run(params, tmp_path / "evaluate", tmp_path / "search", tmp_path / "calibrate", tmp_path / "report",
               NullTracker())
    assert "mpaas" in (tmp_path / "report" / "report.md").read_text()
