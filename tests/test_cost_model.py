"""Tests of the hardware profile and the cost model, against numbers worked out by hand."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import yaml

from mps.config import ConfigError
from mps.cost_model import (
    DEFAULT_PROFILE_PATH,
    HardwareProfile,
    analog_tiles,
    layer_cost,
    layer_costs,
    layer_costs_table,
    load_hardware_profile,
    mapping_costs,
    operator_kind,
    parse_hardware_profile,
    profile_constants_table,
    profile_variants,
    with_energy_model,
)
from mps.layer_info import LayerInfo

REPO = Path(__file__).resolve().parents[1]


def c(value: float, source: str = "test figure") -> dict:
    return {"value": value, "source": source}


def toy_raw(tile_rows: int = 64, tile_cols: int = 64) -> dict:
    """A profile with round numbers so that costs can be worked out by hand."""
    return {
        "name": "toy",
        "analog": {
            "tile_rows": tile_rows, "tile_cols": tile_cols, "dac_bits": 8, "adc_bits": 8,
            "out_noise": 0.04, "hwa_weight_noise": 0.02, "weight_clip_sigma": 2.5, "g_max": 25.0,
            "prog_noise_scale": 1.0, "read_noise_scale": 1.0, "drift_scale": 1.0,
            "drift_compensation": True,
            "mvm_latency_ns": c(100.0), "mvm_energy_nj": c(2.0),
        },
        "digital": {
            "int8": {"bytes_per_weight": c(1), "bytes_per_activation": c(1),
                     "mac_energy_pj": c(0.5), "macs_per_ns": c(10)},
            "fp16": {"bytes_per_weight": c(2), "bytes_per_activation": c(2),
                     "mac_energy_pj": c(2.0), "macs_per_ns": c(5)},
        },
        "memory": {"weight_read_pj_per_byte": c(10.0), "activation_pj_per_byte": c(1.0)},
    }


@pytest.fixture()
def toy() -> HardwareProfile:
    return parse_hardware_profile(toy_raw(), "toy.yaml")


@pytest.fixture()
def default() -> HardwareProfile:
    return load_hardware_profile(REPO / "hardware" / "pcm_default.yaml")


def conv(name, cin, cout, k=3, groups=1, pos=1, bias=False) -> LayerInfo:
    macs = pos * cout * (cin // groups) * k * k
    return LayerInfo(name, "conv", cin, cout, (k, k), groups, bias, macs, pos)


def linear(name, fin, fout, bias=False, tokens=1) -> LayerInfo:
    return LayerInfo(name, "linear", fin, fout, (1, 1), 1, bias, tokens * fin * fout, tokens)


# --------------------------------------------------------------------------- tiles
def test_1000x1000_linear_uses_4_tiles_at_95_37_percent(default):
    layer = linear("fc", 1000, 1000)
    cost = layer_cost(layer, "analog", default)
    assert cost.tiles == 4
    assert cost.tile_util_percent == pytest.approx(100 * 1_000_000 / (4 * 512 * 512))
    assert round(cost.tile_util_percent, 2) == 95.37


def test_16x144_conv_fits_one_tile(default):
    layer = conv("c", 16, 16, k=3)  # matrix 16 x (16*3*3 = 144)
    cost = layer_cost(layer, "analog", default)
    assert cost.tiles == 1
    assert cost.tile_util_percent == pytest.approx(100 * 16 * 144 / 512**2)


def test_conv_with_1024_wide_input_is_split_over_two_tiles(default):
    layer = conv("c", 1024, 64, k=1)  # matrix 64 x 1024: the 1024 inputs need two tile column blocks
    cost = layer_cost(layer, "analog", default)
    assert cost.tiles == 2
    assert cost.tile_util_percent == pytest.approx(12.5)


def test_outputs_map_to_tile_rows_and_inputs_to_tile_cols():
    prof = parse_hardware_profile(toy_raw(tile_rows=256, tile_cols=512))
    wide_input = conv("c", 1024, 64, k=1)   # 64 rows (outputs), 1024 cols (inputs)
    assert analog_tiles(wide_input, prof) == 1 * 2
    tall_output = linear("fc", 100, 600)     # 600 rows over 256 -> 3, 100 cols over 512 -> 1
    assert analog_tiles(tall_output, prof) == 3


def test_depthwise_conv_takes_one_tile_per_group(default):
    dw = conv("dw", 32, 32, k=3, groups=32, pos=16)  # each group: 1 x 9
    cost = layer_cost(dw, "analog", default)
    assert cost.tiles == 32
    assert cost.tile_util_percent == pytest.approx(100 * 32 * 9 / (32 * 512 * 512))
    # all 32 tiles fire for each of the 16 output positions
    assert cost.compute_energy_uj == pytest.approx(16 * 32 * 53.7e-3)
    assert cost.latency_ms == pytest.approx(16 * 133e-6)


def test_grouped_conv_splits_each_group(default):
    g = conv("g", 2048, 1024, k=1, groups=2)  # per group 512 x 1024 -> 1 x 2 tiles; 2 groups
    cost = layer_cost(g, "analog", default)
    assert cost.tiles == 4
    assert cost.tile_util_percent == pytest.approx(100.0)


# --------------------------------------------------------------------------- toy network, by hand
# L1 conv 3->8, 3x3, 4x4 outputs:  macs 16*8*27 = 3456, params 216, matrix 8x27 -> 1 tile
# L2 conv 8->16, 3x3 (+bias), 2x2: macs 4*16*72 = 4608, params 1152+16 = 1168, 16x72 -> 2 tiles
# L3 linear 64->10 (+bias):        macs 640, params 650, 10x64 -> 1 tile
TOY = [
    conv("l1", 3, 8, pos=16),
    conv("l2", 8, 16, pos=4, bias=True),
    linear("l3", 64, 10, bias=True),
]


def test_toy_layers_are_what_the_comments_say():
    assert [la.macs for la in TOY] == [3456, 4608, 640]
    assert [la.params for la in TOY] == [216, 1168, 650]


def test_all_analog_by_hand(toy):
    m = mapping_costs(TOY, {"l1": "analog", "l2": "analog", "l3": "analog"}, toy)
    # energy pJ: MVMs * tiles * 2000 pJ + (inputs + outputs) bytes * 1 pJ
    e1 = 16 * 1 * 2000 + (3 * 16 + 8 * 16)
    e2 = 4 * 2 * 2000 + (8 * 4 + 16 * 4)
    e3 = 1 * 1 * 2000 + (64 + 10)
    assert (e1, e2, e3) == (32176, 16096, 2074)
    assert m.energy_uj_per_sample == pytest.approx(50346e-6)
    assert m.latency_ms_per_sample == pytest.approx((16 + 4 + 1) * 100e-6)  # 2100 ns
    assert m.analog_tiles == 4
    assert m.analog_tile_util_percent == pytest.approx(100 * (216 + 1152 + 640) / (4 * 64 * 64))  # 12.26 %
    assert m.analog_mac_ratio_percent == pytest.approx(100.0)
    assert m.params_m == pytest.approx(2034e-6)
    assert m.digital_size_mb == 0.0


def test_all_int8_by_hand(toy):
    m = mapping_costs(TOY, {"l1": "int8", "l2": "int8", "l3": "int8"}, toy)
    # energy pJ: macs*0.5 + params*1 B*10 pJ + activations*1 B*1 pJ
    e1 = 3456 * 0.5 + 216 * 10 + 176
    e2 = 4608 * 0.5 + 1168 * 10 + 96
    e3 = 640 * 0.5 + 650 * 10 + 74
    assert (e1, e2, e3) == (4064, 14080, 6894)
    assert m.energy_uj_per_sample == pytest.approx(25038e-6)
    assert m.latency_ms_per_sample == pytest.approx((3456 + 4608 + 640) / 10 * 1e-6)  # 870.4 ns
    assert m.analog_tiles == 0 and m.analog_tile_util_percent == 0.0
    assert m.analog_mac_ratio_percent == 0.0
    assert m.digital_size_mb == pytest.approx(2034e-6)
    assert m.params_m == pytest.approx(2034e-6)


def test_mixed_fp16_analog_skip_by_hand(toy):
    mapping = {"l1": "fp16", "l2": "analog", "l3": "skip"}
    m = mapping_costs(TOY, mapping, toy)
    e1 = 3456 * 2.0 + 216 * 2 * 10 + (48 + 128) * 2  # 11584 pJ
    e2 = 16096                                       # as in the all-analog case
    assert m.energy_uj_per_sample == pytest.approx((e1 + e2) * 1e-6)
    assert m.latency_ms_per_sample == pytest.approx((3456 / 5 + 400) * 1e-6)  # 1091.2 ns
    assert m.analog_tiles == 2
    assert m.analog_tile_util_percent == pytest.approx(100 * 1152 / (2 * 4096))  # 14.0625 %
    # skipped l3 stays in the denominator: 4608 / (3456 + 4608 + 640)
    assert m.analog_mac_ratio_percent == pytest.approx(100 * 4608 / 8704)
    assert m.params_m == pytest.approx((216 + 1168) * 1e-6)
    assert m.digital_size_mb == pytest.approx(216 * 2 * 1e-6)

    row = m.as_row()
    assert list(row) == [
        "Analog_Tile_Util_percent", "Analog_MAC_Ratio_percent", "Params_M", "Digital_Size_MB",
        "Analog_Tiles", "Latency_ms", "Energy_uJ_per_sample",
    ]
    assert row["Analog_Tiles"] == 2

    table = layer_costs_table(TOY, mapping, toy)
    assert list(table["name"]) == ["l1", "l2", "l3"]
    assert list(table["operator"]) == ["fp16", "analog", "skip"]
    assert list(table["tiles"]) == [0, 2, 0]
    assert table["energy_uj"].sum() == pytest.approx(m.energy_uj_per_sample)
    assert table["latency_ms"].sum() == pytest.approx(m.latency_ms_per_sample)
    assert table.loc[2, ["macs", "params", "energy_uj", "latency_ms"]].tolist() == [0, 0, 0.0, 0.0]


def test_skip_costs_nothing(toy):
    cost = layer_cost(TOY[1], "skip", toy)
    assert (cost.macs, cost.params, cost.tiles, cost.energy_uj, cost.latency_ms) == (0, 0, 0, 0.0, 0.0)


def test_analog_mac_ratio_with_skipped_layers(toy):
    all_skip_but_l3 = mapping_costs(TOY, {"l1": "skip", "l2": "skip", "l3": "analog"}, toy)
    assert all_skip_but_l3.analog_mac_ratio_percent == pytest.approx(100 * 640 / 8704)
    everything_skipped = mapping_costs(TOY, {"l1": "skip", "l2": "skip", "l3": "skip"}, toy)
    assert everything_skipped.analog_mac_ratio_percent == 0.0
    assert everything_skipped.energy_uj_per_sample == 0.0 and everything_skipped.params_m == 0.0


def test_analog_variants_cost_like_analog(toy):
    assert operator_kind("analog_resized", toy) == "analog"
    assert layer_cost(TOY[1], "analog_resized", toy).energy_uj == layer_cost(TOY[1], "analog", toy).energy_uj


def test_int4_is_one_more_profile_entry():
    raw = toy_raw()
    raw["digital"]["int4"] = {"bytes_per_weight": c(0.5), "bytes_per_activation": c(1),
                              "mac_energy_pj": c(0.1), "macs_per_ns": c(20)}
    prof = parse_hardware_profile(raw)
    m = mapping_costs(TOY, {"l1": "int4", "l2": "int4", "l3": "int4"}, prof)
    assert m.digital_size_mb == pytest.approx(2034 * 0.5e-6)


# --------------------------------------------------------------------------- mapping errors
def test_unknown_operator_is_a_config_error(toy):
    with pytest.raises(ConfigError, match=r"layer l2: unknown operator 'int3'.*fix:"):
        mapping_costs(TOY, {"l1": "int8", "l2": "int3", "l3": "skip"}, toy)


def test_mapping_missing_or_extra_layers_are_named(toy):
    with pytest.raises(ConfigError) as exc:
        mapping_costs(TOY, {"l1": "int8", "l3": "int8", "conv99": "analog"}, toy)
    msg = str(exc.value)
    assert "missing layers l2" in msg and "unknown layers conv99" in msg and "fix:" in msg
    assert "\n" not in msg


# --------------------------------------------------------------------------- profile validation
def _write(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "x.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_tile_rows_zero_is_rejected_with_key_and_fix(tmp_path):
    raw = toy_raw()
    raw["analog"]["tile_rows"] = 0
    path = _write(tmp_path, raw)
    with pytest.raises(ConfigError) as exc:
        load_hardware_profile(path)
    msg = str(exc.value)
    assert msg.startswith(f"{path}: analog.tile_rows: ")
    assert "greater than 0" in msg and "(got 0)" in msg and "fix: use a larger value" in msg
    assert "\n" not in msg


def test_unknown_key_is_rejected(tmp_path):
    raw = toy_raw()
    raw["analog"]["tile_rowz"] = 512
    with pytest.raises(ConfigError, match=r"analog\.tile_rowz: .*fix: remove it or fix its spelling"):
        load_hardware_profile(_write(tmp_path, raw))


def test_missing_file_is_reported(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.yaml: hardware profile not found; fix: "):
        load_hardware_profile(tmp_path / "nope.yaml")


def test_invalid_yaml_is_reported(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("analog: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not valid YAML"):
        load_hardware_profile(path)


def test_constant_without_source_is_rejected():
    raw = toy_raw()
    raw["analog"]["mvm_energy_nj"] = 53.7
    with pytest.raises(ConfigError, match=r"analog\.mvm_energy_nj: a cost constant needs its source"):
        parse_hardware_profile(raw, "x.yaml")
    raw["analog"]["mvm_energy_nj"] = {"value": 53.7, "source": "  "}
    with pytest.raises(ConfigError, match=r"analog\.mvm_energy_nj\.source: source is empty"):
        parse_hardware_profile(raw, "x.yaml")


def test_zero_throughput_and_bad_precision_names_are_rejected():
    raw = toy_raw()
    raw["digital"]["int8"]["macs_per_ns"] = c(0)
    with pytest.raises(ConfigError, match=r"digital\.int8\.macs_per_ns: 0 MAC/ns is outside the physical range"):
        parse_hardware_profile(raw)
    raw = toy_raw()
    raw["digital"]["skip"] = copy.deepcopy(raw["digital"]["int8"])
    with pytest.raises(ConfigError, match=r"digital: .*precision name 'skip' is not allowed"):
        parse_hardware_profile(raw)


# --------------------------------------------------------------------------- shipped profiles
SHIPPED = sorted((REPO / "hardware").glob("*.yaml"))
AIHWKIT_KNOBS = ("dac_bits", "adc_bits", "out_noise", "hwa_weight_noise", "weight_clip_sigma", "g_max",
                 "prog_noise_scale", "read_noise_scale", "drift_scale", "drift_compensation")


def test_the_default_is_paper_yaml_and_params_use_it():
    assert DEFAULT_PROFILE_PATH == REPO / "hardware" / "paper.yaml"
    assert {p.name for p in SHIPPED} >= {"paper.yaml", "hermes-14nm.yaml", "projected.yaml", "pcm_default.yaml"}
    for params in (REPO / "params.yaml", REPO / "config" / "params-tiny.yaml", REPO / "config" / "params-paper.yaml"):
        assert yaml.safe_load(params.read_text())["hardware_profile"] == "hardware/paper.yaml", params


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_profile_loads_and_every_constant_has_a_source(path):
    prof = load_hardware_profile(path)
    assert {"int8", "fp16", "fp32"} <= set(prof.digital)
    consts = prof.constants()
    assert "analog.mvm_energy_nj" in consts and "memory.activation_pj_per_byte" in consts
    assert {f"analog.mvm_energy_split.{k}" for k in ("adc", "dac", "array", "fixed")} <= set(consts)
    assert all(k.source.strip() for k in consts.values())
    assert all(math.isfinite(k.value) and k.value >= 0 for k in consts.values())
    table = profile_constants_table(prof)
    assert len(table) == len(consts) and table["source"].str.len().min() > 0
    # the aihwkit knobs are pcm_default's, unchanged (only the tile size may follow the chip)
    pcm = load_hardware_profile(REPO / "hardware" / "pcm_default.yaml")
    assert {k: getattr(prof.analog, k) for k in AIHWKIT_KNOBS} == {k: getattr(pcm.analog, k) for k in AIHWKIT_KNOBS}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_profile_every_cost_constant_has_a_comment_too(path):
    text = path.read_text()
    for key in ("mvm_latency_ns", "mvm_energy_nj", "weight_read_pj_per_byte", "activation_pj_per_byte"):
        before = text.split(f"  {key}:")[0].rstrip().splitlines()[-1]
        assert before.strip().startswith("#"), key


def test_costs_are_deterministic(default):
    mapping = {"l1": "analog", "l2": "int8", "l3": "fp32"}
    assert mapping_costs(TOY, mapping, default) == mapping_costs(TOY, mapping, default)
    assert default.digest() == load_hardware_profile(REPO / "hardware" / "pcm_default.yaml").digest()
    assert default.digest() != load_hardware_profile(DEFAULT_PROFILE_PATH).digest()


# --------------------------------------------------------------------------- per_active analog energy
SPLIT = {"adc": c(0.5), "dac": c(0.2), "array": c(0.2), "fixed": c(0.1)}


def active_toy(**analog) -> HardwareProfile:
    raw = toy_raw()
    raw["analog"].update({"mvm_energy_split": SPLIT, "energy_model": "per_active", **analog})
    return parse_hardware_profile(raw, "toy.yaml")


def test_per_active_by_hand():
    prof = active_toy()
    # l2: 16 outputs x 72 inputs on 64x64 tiles -> 1 row block x 2 column blocks
    # dac 0.2 * (1 * 72 / 64) + adc 0.5 * (2 * 16 / 64) + array 0.2 * 1152 / 4096 + fixed 0.1 * 2
    share = 0.2 * 72 / 64 + 0.5 * 32 / 64 + 0.2 * 1152 / 4096 + 0.1 * 2
    cost = layer_cost(TOY[1], "analog", prof)
    assert cost.tiles == 2
    assert cost.compute_energy_uj == pytest.approx(4 * share * 2.0e-3)  # 4 MVMs x share x 2 nJ
    assert cost.latency_ms == layer_cost(TOY[1], "analog", parse_hardware_profile(toy_raw())).latency_ms


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_per_active_never_costs_more_than_per_tile(path):
    per_tile = with_energy_model(load_hardware_profile(path), "per_tile")
    per_active = with_energy_model(per_tile, "per_active")
    a = per_tile.analog
    shapes = [conv("c", 3, 16), conv("c", 16, 16), conv("c", 64, 64), conv("c", 1024, 64, k=1),
              conv("g", 2048, 1024, k=1, groups=2), conv("dw", 32, 32, groups=32), linear("fc", 1000, 1000),
              linear("full", a.tile_cols, a.tile_rows), linear("tall", 10, 3 * a.tile_rows + 1)]
    for layer in shapes:
        t, p = layer_cost(layer, "analog", per_tile), layer_cost(layer, "analog", per_active)
        assert p.compute_energy_uj <= t.compute_energy_uj * (1 + 1e-12), layer
        assert (p.tiles, p.latency_ms) == (t.tiles, t.latency_ms)
    full = linear("full", a.tile_cols, a.tile_rows)  # a tile filled exactly costs the same either way
    assert layer_cost(full, "analog", per_active).compute_energy_uj == pytest.approx(
        layer_cost(full, "analog", per_tile).compute_energy_uj)


def test_profile_variants_add_the_per_active_one():
    prof = load_hardware_profile(DEFAULT_PROFILE_PATH)
    variants = profile_variants(prof)
    assert list(variants) == ["paper", "paper/per_active"]
    assert variants["paper/per_active"].analog.energy_model == "per_active"
    assert profile_variants(parse_hardware_profile(toy_raw())) .keys() == {"toy"}  # no split: no variant


# --------------------------------------------------------------------------- weight SRAM and DRAM
def test_digital_weights_beyond_the_sram_come_from_dram():
    raw = toy_raw()
    raw["memory"].update({"weight_sram_bytes": c(1000), "dram_pj_per_byte": c(100.0)})
    prof = parse_hardware_profile(raw)
    mapping = {"l1": "int8", "l2": "int8", "l3": "analog"}
    costs = layer_costs(TOY, mapping, prof)
    # l1 216 B fit (784 left); l2 1168 B: 784 fit, 384 from DRAM; l3 analog takes no SRAM
    assert [c_.dram_bytes for c_ in costs] == [0.0, 384.0, 0.0]
    assert costs[1].dram_energy_uj == pytest.approx(384 * 100e-6)
    plain = mapping_costs(TOY, mapping, parse_hardware_profile(toy_raw()))
    assert mapping_costs(TOY, mapping, prof).energy_uj_per_sample == pytest.approx(
        plain.energy_uj_per_sample + 384 * 100e-6)
    all_int8 = layer_costs(TOY, {"l1": "int8", "l2": "int8", "l3": "int8"}, prof)
    assert sum(c_.dram_bytes for c_ in all_int8) == 216 + 1168 + 650 - 1000


# --------------------------------------------------------------------------- validation of the numbers
@pytest.mark.parametrize("where, value, message", [
    (("analog", "mvm_energy_nj"), {"value": -1.0, "source": "x"},
     r"analog\.mvm_energy_nj\.value: .*greater than or equal to 0"),
    (("analog", "mvm_energy_nj"), {"value": float("nan"), "source": "x"}, r"analog\.mvm_energy_nj\.value: .*finite"),
    (("analog", "mvm_latency_ns"), {"value": float("inf"), "source": "x"},
     r"analog\.mvm_latency_ns\.value: .*finite"),
    (("analog", "mvm_energy_nj"), {"value": 5e7, "source": "J, not nJ"},
     r"analog\.mvm_energy_nj: 5e\+07 nJ is outside the physical range \[0, 100000\] nJ; fix:"),
    (("digital", "int8", "bytes_per_weight"), {"value": 16, "source": "x"},
     r"digital\.int8\.bytes_per_weight: 16 bytes is outside"),
    (("analog", "energy_model"), "per_active", r"analog: .*mvm_energy_split: energy_model per_active needs it"),
    (("analog", "mvm_energy_split"), {**SPLIT, "fixed": c(0.3)},
     r"analog\.mvm_energy_split: adc \+ dac \+ array \+ fixed = 1\.2, not 1"),
    (("memory", "weight_sram_bytes"), {"value": 1024, "source": "x"},
     r"memory: .*dram_pj_per_byte: needed when weight_sram_bytes"),
    (("memory", "dram_pj_per_byte"), 160.0, r"memory\.dram_pj_per_byte: a cost constant needs its source"),
])
def test_bad_numbers_are_rejected_naming_the_key(where, value, message):
    raw = toy_raw()
    node = raw
    for key in where[:-1]:
        node = node[key]
    node[where[-1]] = value
    with pytest.raises(ConfigError, match=message) as exc:
        parse_hardware_profile(raw, "x.yaml")
    assert "\n" not in str(exc.value) and "fix:" in str(exc.value)
