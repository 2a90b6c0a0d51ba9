"""The hardware cost model: the one place where a mapping's hardware cost is computed.

A *mapping* assigns each weight layer (Conv2d / Linear, described by a static
:class:`~mps.layer_info.LayerInfo`) an operator: ``analog`` (a PCM crossbar tile; any name
starting with ``analog`` - e.g. the MPAAS adapted candidates, which reuse the free room of
the same tiles - costs the same), one of the digital precisions listed in the hardware
profile (``int8``, ``fp16``, ``fp32``, ... ; adding ``int4`` is one more profile entry), or
``skip``.  Costs are pure functions of the layers, the mapping and the profile: no model,
no torch, so search and report can score thousands of mappings cheaply and identically.

The hardware profile (YAML, e.g. ``hardware/pcm_default.yaml``) holds every constant; each
cost constant is written ``{value: x, source: "..."}`` so its citation travels with it and
can be printed (:func:`profile_constants_table`).  The ``analog`` section also feeds the
aihwkit ``InferenceRPUConfig`` built elsewhere; its field names are that contract.

Model, per sample (one input image / sequence):

* **Tile mapping.**  A layer's crossbar matrix is, per group, ``rows x cols`` with
  ``rows = out_features / groups`` (one per output channel, as in aihwkit's ``[out, in]``
  weight layout and :attr:`LayerInfo.weight_rows`) and
  ``cols = in_features / groups * kh * kw`` (the unrolled inputs).  Matrix rows are split
  over ``analog.tile_rows``, columns over ``analog.tile_cols``; each group gets its own
  tiles: ``tiles = groups * ceil(rows / tile_rows) * ceil(cols / tile_cols)``.
  (For aihwkit this means ``tile_rows`` ~ ``mapping.max_output_size`` and ``tile_cols``
  ~ ``mapping.max_input_size``.)  Utilization = stored weights / (tiles * tile_rows *
  tile_cols); biases are not stored on tiles (added in the periphery) and do not count.
  Depthwise/grouped convolutions thus use one tile per group (no block-diagonal packing).
* **Analog layer.**  One MVM per output position; all tiles of the layer work in parallel
  on it: ``energy = out_positions * tiles * mvm_energy``,
  ``latency = out_positions * mvm_latency``.  ``mvm_energy`` includes DAC/ADC.  The chip is
  assumed to have enough tiles for the whole mapping (no tile re-programming).
* **Digital layer.**  ``energy = macs * mac_energy + params * bytes_per_weight *
  weight_read_pj_per_byte`` (weights read once per sample), ``latency = macs / macs_per_ns``.
* **Activation traffic** (every non-skip layer): ``(inputs * in_bytes + outputs * out_bytes)
  * activation_pj_per_byte``.  ``outputs = out_features * out_positions``;
  ``inputs ~ in_features * out_positions`` (= ``macs / (out_features/groups * kh * kw)``
  when ``macs`` is consistent) - exact for linear layers and stride-1 'same' convolutions,
  an under-estimate by ``stride**2`` for strided convolutions (LayerInfo does not record the
  input size).  Bytes per activation: analog inputs ``ceil(dac_bits/8)``, outputs
  ``ceil(adc_bits/8)``; digital ``bytes_per_activation`` of the precision.  Traffic costs
  energy only; its latency is assumed hidden behind compute.
* **Skip.**  0 MACs, 0 weights, 0 energy, 0 latency: the supernet realises skip as identity
  or a parameter-free shape-matching path (stride subsampling + channel zero-padding /
  truncation) whose data movement is neglected.
* **Network.**  Energies and latencies add up over layers (layers run one after another).
  ``analog_mac_ratio_percent`` divides analog MACs by the MACs of the *original* network:
  skipped layers stay in the denominator, so skipping a layer never raises the analog share.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mps.config import ConfigError, _format_validation_error
from mps.layer_info import LayerInfo

DEFAULT_PROFILE_PATH = Path(__file__).resolve().parents[1] / "hardware" / "pcm_default.yaml"
SKIP = "skip"
ANALOG_PREFIX = "analog"

OperatorKind = Literal["analog", "digital", "skip"]

_PJ_TO_UJ = 1e-6
_NJ_TO_UJ = 1e-3
_NS_TO_MS = 1e-6


# --------------------------------------------------------------------------- profile schema
class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CostConstant(_Section):
    """A number the cost model uses, with where it comes from (paper, datasheet, 'assumption')."""

    value: float = Field(ge=0)
    source: str

    @model_validator(mode="before")
    @classmethod
    def _needs_source(cls, data: Any) -> Any:
        if isinstance(data, (int, float)) and not isinstance(data, bool):
            raise ValueError(
                'a cost constant needs its source: write it as {value: <number>, source: "<citation or assumption>"}'
            )
        return data

    @field_validator("source")
    @classmethod
    def _nonblank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("source is empty; cite where the figure comes from, or write 'assumption: ...'")
        return v.strip()


class PositiveConstant(CostConstant):
    """A cost constant that must be > 0 (it divides, or a zero would be meaningless)."""

    value: float = Field(gt=0)


class AnalogConfig(_Section):
    """PCM tiles: geometry and aihwkit knobs (plain numbers) plus MVM cost (cited constants)."""

    tile_rows: int = Field(gt=0, description="crossbar rows per tile; layer output channels map here")
    tile_cols: int = Field(gt=0, description="crossbar columns per tile; unrolled layer inputs map here")
    dac_bits: int = Field(ge=1, le=24)
    adc_bits: int = Field(ge=1, le=24)
    out_noise: float = Field(ge=0, description="aihwkit forward.out_noise")
    hwa_weight_noise: float = Field(ge=0, description="relative std of additive weight noise in HWA training")
    weight_clip_sigma: float = Field(gt=0)
    g_max: float = Field(gt=0, description="µS, PCMLikeNoiseModel g_max")
    prog_noise_scale: float = Field(ge=0)
    read_noise_scale: float = Field(ge=0)
    drift_scale: float = Field(ge=0)
    drift_compensation: bool
    mvm_latency_ns: PositiveConstant
    mvm_energy_nj: CostConstant

    @property
    def tile_size(self) -> int:
        return self.tile_rows * self.tile_cols

    @property
    def input_bytes(self) -> int:
        return math.ceil(self.dac_bits / 8)

    @property
    def output_bytes(self) -> int:
        return math.ceil(self.adc_bits / 8)


class DigitalPrecision(_Section):
    """One digital precision the chip's digital unit runs (a row of the ``digital`` table)."""

    bytes_per_weight: PositiveConstant
    bytes_per_activation: PositiveConstant
    mac_energy_pj: CostConstant
    macs_per_ns: PositiveConstant


class MemoryConfig(_Section):
    """On-chip SRAM traffic energies."""

    weight_read_pj_per_byte: CostConstant
    activation_pj_per_byte: CostConstant


_PRECISION_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class HardwareProfile(_Section):
    """A heterogeneous chip: analog PCM tiles + digital units + on-chip memory."""

    name: str = "unnamed"
    description: str = ""
    analog: AnalogConfig
    digital: dict[str, DigitalPrecision] = Field(min_length=1)
    memory: MemoryConfig

    @field_validator("digital")
    @classmethod
    def _precision_names(cls, v: dict[str, DigitalPrecision]) -> dict[str, DigitalPrecision]:
        for key in v:
            if key == SKIP or key.startswith(ANALOG_PREFIX) or not _PRECISION_NAME.match(key):
                raise ValueError(
                    f"precision name {key!r} is not allowed; use a lower-case name such as int8 or fp16 "
                    f"(not '{SKIP}', not starting with '{ANALOG_PREFIX}')"
                )
        return v

    def operators(self) -> list[str]:
        """Operator names this profile can cost (``analog*`` variants are accepted too)."""
        return [ANALOG_PREFIX, *self.digital, SKIP]

    def constants(self) -> dict[str, CostConstant]:
        """Every cited cost constant by dotted key, e.g. ``digital.int8.mac_energy_pj``."""
        out: dict[str, CostConstant] = {}

        def walk(prefix: str, node: BaseModel | dict) -> None:
            items = node.items() if isinstance(node, dict) else ((k, getattr(node, k)) for k in type(node).model_fields)
            for key, val in items:
                dotted = f"{prefix}.{key}" if prefix else str(key)
                if isinstance(val, CostConstant):
                    out[dotted] = val
                elif isinstance(val, (BaseModel, dict)):
                    walk(dotted, val)

        walk("", self)
        return out

    def digest(self) -> str:
        """Stable hash of the validated profile, for provenance records."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def parse_hardware_profile(raw: Any, source: str = "hardware profile") -> HardwareProfile:
    """Validate an already-parsed profile mapping; errors become one-line ConfigErrors."""
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{source}: top level must be a mapping with analog, digital and memory sections; "
            "fix: start from hardware/pcm_default.yaml"
        )
    try:
        return HardwareProfile.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(source, err)) from None


def load_hardware_profile(path: str | Path) -> HardwareProfile:
    """Read and validate a hardware profile YAML file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"{path}: hardware profile not found; fix: set hardware_profile in params.yaml to an existing "
            "file (the shipped default is hardware/pcm_default.yaml)"
        )
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}; fix: correct the syntax") from None
    return parse_hardware_profile(raw, str(path))


def default_hardware_profile() -> HardwareProfile:
    """The shipped PCM profile (``hardware/pcm_default.yaml`` of the repository)."""
    return load_hardware_profile(DEFAULT_PROFILE_PATH)


def profile_constants_table(profile: HardwareProfile) -> pd.DataFrame:
    """Every cost constant with its value and source, one row each (for reports and logs)."""
    rows = [{"key": k, "value": c.value, "source": c.source} for k, c in profile.constants().items()]
    return pd.DataFrame(rows, columns=["key", "value", "source"])


# --------------------------------------------------------------------------- operators
def operator_kind(operator: str, profile: HardwareProfile) -> OperatorKind:
    """Which cost rule an operator name falls under; unknown names are a ConfigError."""
    if operator == SKIP:
        return "skip"
    if operator.startswith(ANALOG_PREFIX):
        return "analog"
    if operator in profile.digital:
        return "digital"
    raise ConfigError(
        f"unknown operator {operator!r}; fix: use one of {', '.join(profile.operators())} "
        "or add the precision to the hardware profile's digital table"
    )


# --------------------------------------------------------------------------- per layer
def analog_tiles(layer: LayerInfo, profile: HardwareProfile) -> int:
    """Tiles needed to store the layer: per group, rows over tile_rows and columns over tile_cols."""
    a = profile.analog
    return layer.groups * math.ceil(layer.weight_rows / a.tile_rows) * math.ceil(layer.weight_cols / a.tile_cols)


def stored_weights(layer: LayerInfo) -> int:
    """Weights held on crossbars (bias excluded: it is added in the tile periphery)."""
    return layer.groups * layer.weight_rows * layer.weight_cols


def activation_counts(layer: LayerInfo) -> tuple[int, int]:
    """(input, output) activations per sample; inputs approximated as ``in_features * out_positions``.

    Exact for linear layers and stride-1 'same' convolutions; strided convolutions read about
    ``stride**2`` times more inputs, which LayerInfo cannot tell (see module docstring).
    """
    return layer.in_features * layer.out_positions, layer.out_features * layer.out_positions


@dataclass(frozen=True)
class LayerCost:
    """Costs of one layer under one operator, per sample."""

    name: str
    operator: str
    kind: OperatorKind
    macs: int
    params: int
    tiles: int
    tile_util_percent: float
    digital_bytes: float
    compute_energy_uj: float
    weight_read_energy_uj: float
    activation_energy_uj: float
    energy_uj: float
    latency_ms: float


def layer_cost(layer: LayerInfo, operator: str, profile: HardwareProfile) -> LayerCost:
    """Cost of running ``layer`` with ``operator`` on ``profile`` (see the module docstring)."""
    kind = operator_kind(operator, profile)
    if kind == "skip":
        return LayerCost(layer.name, operator, kind, 0, 0, 0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)

    n_in, n_out = activation_counts(layer)
    act_pj = profile.memory.activation_pj_per_byte.value
    if kind == "analog":
        a = profile.analog
        tiles = analog_tiles(layer, profile)
        util = 100.0 * stored_weights(layer) / (tiles * a.tile_size)
        compute_uj = layer.out_positions * tiles * a.mvm_energy_nj.value * _NJ_TO_UJ
        weight_uj = 0.0  # weights stay in the tiles
        act_bytes = n_in * a.input_bytes + n_out * a.output_bytes
        latency_ms = layer.out_positions * a.mvm_latency_ns.value * _NS_TO_MS
        digital_bytes = 0.0
    else:
        p = profile.digital[operator]
        tiles, util = 0, 0.0
        digital_bytes = layer.params * p.bytes_per_weight.value
        compute_uj = layer.macs * p.mac_energy_pj.value * _PJ_TO_UJ
        weight_uj = digital_bytes * profile.memory.weight_read_pj_per_byte.value * _PJ_TO_UJ
        act_bytes = (n_in + n_out) * p.bytes_per_activation.value
        latency_ms = layer.macs / p.macs_per_ns.value * _NS_TO_MS
    act_uj = act_bytes * act_pj * _PJ_TO_UJ
    return LayerCost(
        name=layer.name,
        operator=operator,
        kind=kind,
        macs=layer.macs,
        params=layer.params,
        tiles=tiles,
        tile_util_percent=util,
        digital_bytes=digital_bytes,
        compute_energy_uj=compute_uj,
        weight_read_energy_uj=weight_uj,
        activation_energy_uj=act_uj,
        energy_uj=compute_uj + weight_uj + act_uj,
        latency_ms=latency_ms,
    )


# --------------------------------------------------------------------------- per mapping
@dataclass(frozen=True)
class MappingCosts:
    """Hardware objectives of one mapping, per sample (the paper's table columns)."""

    analog_tiles: int
    analog_tile_util_percent: float
    analog_mac_ratio_percent: float
    params_m: float
    digital_size_mb: float
    energy_uj_per_sample: float
    latency_ms_per_sample: float

    def as_row(self) -> dict[str, float]:
        return {
            "Analog_Tile_Util_percent": self.analog_tile_util_percent,
            "Analog_MAC_Ratio_percent": self.analog_mac_ratio_percent,
            "Params_M": self.params_m,
            "Digital_Size_MB": self.digital_size_mb,
            "Analog_Tiles": self.analog_tiles,
            "Latency_ms": self.latency_ms_per_sample,
            "Energy_uJ_per_sample": self.energy_uj_per_sample,
        }

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def _names_list(names: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def check_mapping(layers: Sequence[LayerInfo], mapping: Mapping[str, str]) -> None:
    """The mapping must name every layer exactly once, and nothing else."""
    names = [layer.name for layer in layers]
    seen: set[str] = set()
    dupes = [n for n in names if n in seen or seen.add(n)]
    if dupes:
        raise ConfigError(f"layer list names {_names_list(dupes)} twice; fix: give each layer a unique name")
    missing = [n for n in names if n not in mapping]
    extra = [n for n in mapping if n not in seen]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing layers {_names_list(missing)}")
        if extra:
            parts.append(f"unknown layers {_names_list(extra)}")
        raise ConfigError(
            f"mapping does not match the model: {'; '.join(parts)}; "
            "fix: map every layer of this model exactly once (was the mapping made for another model?)"
        )


def layer_costs(
    layers: Sequence[LayerInfo], mapping: Mapping[str, str], profile: HardwareProfile
) -> list[LayerCost]:
    """Per-layer costs of a mapping, in layer order (validated against the layers)."""
    check_mapping(layers, mapping)
    out = []
    for layer in layers:
        try:
            out.append(layer_cost(layer, mapping[layer.name], profile))
        except ConfigError as err:
            raise ConfigError(f"layer {layer.name}: {err}") from None
    return out


def mapping_costs(layers: Sequence[LayerInfo], mapping: Mapping[str, str], profile: HardwareProfile) -> MappingCosts:
    """Network-level objectives of a mapping (see the module docstring for the model)."""
    costs = layer_costs(layers, mapping, profile)
    analog = [(layer, c) for layer, c in zip(layers, costs) if c.kind == "analog"]
    tiles = sum(c.tiles for _, c in analog)
    stored = sum(stored_weights(layer) for layer, _ in analog)
    total_macs = sum(layer.macs for layer in layers)  # original network: skipped layers included
    analog_macs = sum(c.macs for _, c in analog)
    return MappingCosts(
        analog_tiles=tiles,
        analog_tile_util_percent=100.0 * stored / (tiles * profile.analog.tile_size) if tiles else 0.0,
        analog_mac_ratio_percent=100.0 * analog_macs / total_macs if total_macs else 0.0,
        params_m=sum(c.params for c in costs) / 1e6,
        digital_size_mb=sum(c.digital_bytes for c in costs) / 1e6,
        energy_uj_per_sample=sum(c.energy_uj for c in costs),
        latency_ms_per_sample=sum(c.latency_ms for c in costs),
    )


def layer_costs_table(
    layers: Sequence[LayerInfo], mapping: Mapping[str, str], profile: HardwareProfile
) -> pd.DataFrame:
    """One row per layer: name, operator, kind, macs, params, tiles, utilization, energy, latency."""
    rows = [asdict(c) for c in layer_costs(layers, mapping, profile)]
    return pd.DataFrame(rows, columns=list(LayerCost.__dataclass_fields__))


__all__ = [
    "AnalogConfig",
    "CostConstant",
    "DEFAULT_PROFILE_PATH",
    "DigitalPrecision",
    "HardwareProfile",
    "LayerCost",
    "MappingCosts",
    "MemoryConfig",
    "activation_counts",
    "analog_tiles",
    "check_mapping",
    "default_hardware_profile",
    "layer_cost",
    "layer_costs",
    "layer_costs_table",
    "load_hardware_profile",
    "mapping_costs",
    "operator_kind",
    "parse_hardware_profile",
    "profile_constants_table",
    "stored_weights",
]
