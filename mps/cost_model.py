"""The hardware cost model: the one place where a mapping's hardware cost is computed.

A *mapping* assigns each weight layer (Conv2d / Linear, described by a static
:class:`~mps.layer_info.LayerInfo`) an operator: ``analog`` (a PCM crossbar tile; any name
starting with ``analog`` - e.g. the MPAAS adapted candidates, which reuse the free room of
the same tiles - costs the same), one of the digital precisions listed in the hardware
profile (``int8``, ``fp16``, ``fp32``, ... ; adding ``int4`` is one more profile entry), or
``skip``.  Costs are pure functions of the layers, the mapping and the profile: no model,
no torch, so search and report can score thousands of mappings cheaply and identically.

The hardware profiles (YAML under ``hardware/``; ``params.yaml``'s ``hardware_profile`` names
the one a run uses) hold every constant; each cost constant is written ``{value: x, source:
"..."}`` so its citation travels with it and can be printed (:func:`profile_constants_table`),
and each must lie in its physical range (finite, non-negative, e.g. a MAC under 10 nJ, a share
between 0 and 1): a slip of unit stops the load with the key named.  The ``analog`` section also
feeds the aihwkit ``InferenceRPUConfig`` built elsewhere; its field names are that contract.

Shipped profiles and the analog energy model each uses:

* ``paper.yaml`` (default) - the setting the paper's tables imply: IBM's 3D-CiM simulator tile
  (512x512, 10 nJ and 100 ns per MVM), digital FP32 calibrated on the paper's FP32 row;
  ``per_tile``.
* ``hermes-14nm.yaml`` - measured silicon: HERMES PCM cores (256x256, 13.4 nJ, ~133 ns per
  MVM) with DIANA's 22 nm digital core and a 256 kB weight SRAM in front of DRAM; ``per_tile``.
* ``projected.yaml`` - the same chip with a projected 512x512 tile (100 TOPS/W, 40 ns);
  ``per_tile``.
* ``pcm_default.yaml`` - the earlier default (HERMES analog scaled to 512x512 with 45 nm
  digital figures), kept for comparison; ``per_tile``.

Every shipped profile also carries the ``per_active`` split, so the report can show both.

Model, per sample (one input image / sequence):

* **Tile mapping.**  A layer's crossbar matrix is, per group, ``rows x cols`` with
  ``rows = out_features / groups`` (one per output channel, as in aihwkit's ``[out, in]``
  weight layout and :attr:`LayerInfo.weight_rows`) and
  ``cols = in_features / groups * kh * kw`` (the unrolled inputs).  Matrix rows are split
  over ``analog.tile_rows``, columns over ``analog.tile_cols``; each group gets its own
  tiles: ``tiles = groups * ceil(rows / tile_rows) * ceil(cols / tile_cols)``.
  (For aihwkit this means ``tile_rows`` = ``mapping.max_output_size`` and ``tile_cols``
  = ``mapping.max_input_size``: its ``TileModuleArray`` makes exactly this grid.)  Utilization
  = stored weights / (tiles * tile_rows * tile_cols); biases are not stored on tiles (added in
  the periphery) and do not count.  Depthwise/grouped convolutions thus use one tile per group
  (no block-diagonal packing).
* **Analog layer.**  One MVM per output position; all tiles of the layer work in parallel
  on it.  ``energy_model: per_tile`` (the paper's assumption, which is what makes MPAAS's
  free tile room free): ``energy = out_positions * tiles * mvm_energy``.  ``per_active``:
  each tile is charged only for what the layer uses of it, by ``mvm_energy_split`` (DAC per
  input line driven, ADC per output line read, array per stored weight, a fixed part per tile;
  :func:`tile_mvm_equivalents`), never more than ``per_tile``.  ``mvm_energy`` includes
  DAC/ADC.  ``latency = out_positions * (mvm_latency + transfer_latency)``, the second term
  (optional) being the time to move each output vector on.  The chip is assumed to have
  enough tiles for the whole mapping (no tile re-programming).
* **Digital layer.**  ``energy = macs * mac_energy + params * bytes_per_weight *
  weight_read_pj_per_byte`` (weights read once per sample), ``latency = macs / macs_per_ns``.
  With ``memory.weight_sram_bytes`` given, the digital layers' weights fill that SRAM in layer
  order and the bytes beyond it are fetched from DRAM once per sample at
  ``dram_pj_per_byte`` on top (energy only: the fetch is assumed prefetched behind compute).
  Analog weights stay in their tiles and take no SRAM.
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
from typing import Annotated, Any, Literal, Mapping, Sequence

import pandas as pd
import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mps.config import ConfigError, _format_validation_error
from mps.layer_info import LayerInfo

DEFAULT_PROFILE_PATH = Path(__file__).resolve().parents[1] / "hardware" / "paper.yaml"
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

    value: float = Field(ge=0, allow_inf_nan=False)
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


@dataclass(frozen=True)
class _PhysicalRange:
    """Checks a constant lies in a physically sensible range (catches unit slips such as J for pJ)."""

    low: float
    high: float
    unit: str
    low_open: bool = False

    def __call__(self, c: CostConstant) -> CostConstant:
        above = c.value > self.low if self.low_open else c.value >= self.low
        if not (above and c.value <= self.high):
            bracket = "(" if self.low_open else "["
            raise ValueError(
                f"{c.value:g} {self.unit} is outside the physical range {bracket}{self.low:g}, {self.high:g}] "
                f"{self.unit}; fix: check the figure and its unit against its source"
            )
        return c


def _ranged(low: float, high: float, unit: str, low_open: bool = False) -> Any:
    return Annotated[CostConstant, AfterValidator(_PhysicalRange(low, high, unit, low_open))]


# The unit of each kind of constant and its physical range.
LatencyNs = _ranged(0, 1e6, "ns", low_open=True)
EnergyNj = _ranged(0, 1e5, "nJ")
EnergyPj = _ranged(0, 1e4, "pJ")
PjPerByte = _ranged(0, 1e4, "pJ/byte")
BytesPerValue = _ranged(0, 8, "bytes", low_open=True)
MacsPerNs = _ranged(0, 1e7, "MAC/ns", low_open=True)
Fraction = _ranged(0, 1, "(fraction)")
SramBytes = _ranged(0, 1e12, "bytes")

EnergyModel = Literal["per_tile", "per_active"]


class MvmEnergySplit(_Section):
    """How one whole-tile MVM's energy divides (``energy_model: per_active``); the shares sum to 1.

    ``dac``: the input lines' drivers, paid per input line a layer drives; ``adc``: the output
    lines' converters, per output line it reads; ``array``: the cells' read current, per stored
    weight (unused cells are left in the lowest-conductance state and draw almost none);
    ``fixed``: what each tile fired costs whatever it holds (control, local buffers)."""

    adc: Fraction
    dac: Fraction
    array: Fraction
    fixed: Fraction

    @model_validator(mode="after")
    def _sums_to_one(self) -> "MvmEnergySplit":
        total = self.adc.value + self.dac.value + self.array.value + self.fixed.value
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"adc + dac + array + fixed = {total:g}, not 1; fix: give shares of one MVM's energy")
        return self


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
    # --- the chip model (mps/analog/chip.py; defaults: aihwkit's StandardHWATrainingPreset, Rasch et al. 2023) ---
    input_ranges: Literal["static", "dynamic"] = Field(
        "static", description="static: one learned/calibrated input range per tile (a fixed-range DAC; direct "
        "convolutions); dynamic: per-input-vector abs-max scaling with iterative bound management (the earlier default)")
    input_range_init_batches: int = Field(100, ge=0, description="HWA training batches the range is initialised "
                                          "from (aihwkit init_from_data)")
    input_range_init_std: float = Field(3.0, gt=0, description="initial range = this many std of the tile's input "
                                        "(aihwkit init_std_alpha)")
    input_range_decay: float = Field(0.001, ge=0, description="range shrink rate while enough inputs are inside "
                                     "(aihwkit decay)")
    input_range_min_percentage: float = Field(0.95, gt=0, le=1, description="share of inputs inside the range "
                                              "above which it shrinks (aihwkit input_min_percentage)")
    out_bound: float = Field(10.0, gt=0, description="ADC range in units of a full-scale input on one full "
                             "weight, static ranges only (aihwkit forward.out_bound)")
    weight_remap: Literal["channelwise", "none"] = Field(
        "channelwise", description="channel-wise symmetric remapping after each update (aihwkit remap)")
    weight_clip: Literal["fixed", "layer_gaussian"] = Field(
        "fixed", description="fixed: clip at weight_clip_value after remapping; layer_gaussian: at weight_clip_sigma std")
    weight_clip_value: float = Field(1.0, gt=0, description="aihwkit clip.fixed_value")
    learn_out_scaling: bool = Field(False, description="aihwkit mapping.learn_out_scaling (columnwise)")
    mvm_latency_ns: LatencyNs
    mvm_energy_nj: EnergyNj
    # --- cost options (after the aihwkit knobs; older profiles and checkpoints lack them) ---
    energy_model: EnergyModel = Field("per_tile", description="per_tile: a whole tile's MVM energy per tile "
                                      "fired; per_active: only the lines and cells a layer uses")
    mvm_energy_split: MvmEnergySplit | None = None
    transfer_latency_ns: LatencyNs | None = Field(None, description="moving one MVM's output vector on")

    @model_validator(mode="after")
    def _split_for_per_active(self) -> "AnalogConfig":
        if self.energy_model == "per_active" and self.mvm_energy_split is None:
            raise ValueError("mvm_energy_split: energy_model per_active needs it; fix: add mvm_energy_split with "
                             "adc, dac, array and fixed shares, each {value, source}, or use per_tile")
        return self

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

    bytes_per_weight: BytesPerValue
    bytes_per_activation: BytesPerValue
    mac_energy_pj: EnergyPj
    macs_per_ns: MacsPerNs


class MemoryConfig(_Section):
    """On-chip SRAM traffic energies; optionally the weight SRAM's size and the DRAM behind it."""

    weight_read_pj_per_byte: PjPerByte
    activation_pj_per_byte: PjPerByte
    weight_sram_bytes: SramBytes | None = Field(None, description="None: every digital weight fits on chip")
    dram_pj_per_byte: PjPerByte | None = None

    @model_validator(mode="after")
    def _dram_behind_sram(self) -> "MemoryConfig":
        if self.weight_sram_bytes is not None and self.dram_pj_per_byte is None:
            raise ValueError("dram_pj_per_byte: needed when weight_sram_bytes is given (digital weights beyond the "
                             "SRAM come from DRAM); fix: add dram_pj_per_byte {value, source}")
        return self


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
            "fix: start from hardware/paper.yaml"
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
            "file (the shipped default is hardware/paper.yaml)"
        )
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}; fix: correct the syntax") from None
    return parse_hardware_profile(raw, str(path))


def default_hardware_profile() -> HardwareProfile:
    """The shipped default profile (``hardware/paper.yaml`` of the repository)."""
    return load_hardware_profile(DEFAULT_PROFILE_PATH)


def shipped_profile_paths(folder: str | Path = DEFAULT_PROFILE_PATH.parent) -> list[Path]:
    """Every profile in a hardware folder (``hardware/`` by default), by file name."""
    return sorted(Path(folder).glob("*.yaml"))


def with_energy_model(profile: HardwareProfile, energy_model: str) -> HardwareProfile:
    """The same profile with another analog energy model (validated: per_active needs the split)."""
    raw = profile.model_dump(mode="json")
    raw["analog"]["energy_model"] = energy_model
    return parse_hardware_profile(raw, f"{profile.name} with energy_model {energy_model}")


def profile_variants(profile: HardwareProfile) -> dict[str, HardwareProfile]:
    """The profile as written, plus its ``per_active`` variant when it has the split and uses
    ``per_tile``: the two analog energy models side by side (keys: ``name``, ``name/per_active``)."""
    out = {profile.name: profile}
    if profile.analog.energy_model == "per_tile" and profile.analog.mvm_energy_split is not None:
        out[f"{profile.name}/per_active"] = with_energy_model(profile, "per_active")
    return out


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
def _tile_grid(layer: LayerInfo, profile: HardwareProfile) -> tuple[int, int]:
    """Per group: (row blocks over the layer's outputs, column blocks over its unrolled inputs).

    As aihwkit's ``TileModuleArray`` splits the ``[out, in]`` weight matrix: ``ceil(out /
    max_output_size)`` by ``ceil(in / max_input_size)`` tiles (``mps/supernet/analog.py`` sets
    those to ``tile_rows`` / ``tile_cols``)."""
    a = profile.analog
    return math.ceil(layer.weight_rows / a.tile_rows), math.ceil(layer.weight_cols / a.tile_cols)


def analog_tiles(layer: LayerInfo, profile: HardwareProfile) -> int:
    """Tiles needed to store the layer: per group, rows over tile_rows and columns over tile_cols."""
    row_blocks, col_blocks = _tile_grid(layer, profile)
    return layer.groups * row_blocks * col_blocks


def stored_weights(layer: LayerInfo) -> int:
    """Weights held on crossbars (bias excluded: it is added in the tile periphery)."""
    return layer.groups * layer.weight_rows * layer.weight_cols


def tile_mvm_equivalents(layer: LayerInfo, profile: HardwareProfile) -> float:
    """Whole-tile MVM energies one MVM of the layer costs (over all its tiles).

    ``per_tile``: the number of tiles.  ``per_active``: per tile, the split's shares scaled by
    what the layer uses of it - ``dac`` x input lines driven / tile_cols, ``adc`` x output
    lines read / tile_rows, ``array`` x stored weights / tile size, plus ``fixed``.  Summed over
    a group's tile grid the lines used are ``row_blocks * in`` and ``col_blocks * out``, so no
    tile costs more than in ``per_tile`` and a full tile costs the same."""
    a = profile.analog
    row_blocks, col_blocks = _tile_grid(layer, profile)
    if a.energy_model == "per_tile":
        return float(layer.groups * row_blocks * col_blocks)
    split = a.mvm_energy_split
    rows, cols = layer.weight_rows, layer.weight_cols
    per_group = (split.dac.value * row_blocks * cols / a.tile_cols
                 + split.adc.value * col_blocks * rows / a.tile_rows
                 + split.array.value * rows * cols / a.tile_size
                 + split.fixed.value * row_blocks * col_blocks)
    return layer.groups * per_group


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
    dram_bytes: float
    compute_energy_uj: float
    weight_read_energy_uj: float
    dram_energy_uj: float
    activation_energy_uj: float
    energy_uj: float
    latency_ms: float


def layer_cost(layer: LayerInfo, operator: str, profile: HardwareProfile, dram_bytes: float = 0.0) -> LayerCost:
    """Cost of running ``layer`` with ``operator`` on ``profile`` (see the module docstring).

    ``dram_bytes``: how many of a digital layer's weight bytes do not fit in the weight SRAM
    (:func:`layer_costs` works it out over the whole mapping)."""
    kind = operator_kind(operator, profile)
    if kind == "skip":
        return LayerCost(layer.name, operator, kind, macs=0, params=0, tiles=0, tile_util_percent=0.0,
                         digital_bytes=0.0, dram_bytes=0.0, compute_energy_uj=0.0, weight_read_energy_uj=0.0,
                         dram_energy_uj=0.0, activation_energy_uj=0.0, energy_uj=0.0, latency_ms=0.0)

    n_in, n_out = activation_counts(layer)
    act_pj = profile.memory.activation_pj_per_byte.value
    dram_uj = 0.0
    if kind == "analog":
        a = profile.analog
        tiles = analog_tiles(layer, profile)
        util = 100.0 * stored_weights(layer) / (tiles * a.tile_size)
        compute_uj = layer.out_positions * tile_mvm_equivalents(layer, profile) * a.mvm_energy_nj.value * _NJ_TO_UJ
        weight_uj = 0.0  # weights stay in the tiles
        act_bytes = n_in * a.input_bytes + n_out * a.output_bytes
        step_ns = a.mvm_latency_ns.value + (a.transfer_latency_ns.value if a.transfer_latency_ns else 0.0)
        latency_ms = layer.out_positions * step_ns * _NS_TO_MS
        digital_bytes, dram_bytes = 0.0, 0.0
    else:
        p = profile.digital[operator]
        tiles, util = 0, 0.0
        digital_bytes = layer.params * p.bytes_per_weight.value
        dram_bytes = min(max(dram_bytes, 0.0), digital_bytes)
        compute_uj = layer.macs * p.mac_energy_pj.value * _PJ_TO_UJ
        weight_uj = digital_bytes * profile.memory.weight_read_pj_per_byte.value * _PJ_TO_UJ
        if dram_bytes:
            dram_uj = dram_bytes * profile.memory.dram_pj_per_byte.value * _PJ_TO_UJ
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
        dram_bytes=dram_bytes,
        compute_energy_uj=compute_uj,
        weight_read_energy_uj=weight_uj,
        dram_energy_uj=dram_uj,
        activation_energy_uj=act_uj,
        energy_uj=compute_uj + weight_uj + dram_uj + act_uj,
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
    sram = profile.memory.weight_sram_bytes
    sram_left = sram.value if sram is not None else math.inf
    out = []
    for layer in layers:
        try:
            cost = layer_cost(layer, mapping[layer.name], profile)
            if cost.digital_bytes and cost.digital_bytes > sram_left:
                cost = layer_cost(layer, mapping[layer.name], profile, dram_bytes=cost.digital_bytes - sram_left)
            sram_left = max(sram_left - cost.digital_bytes, 0.0)
        except ConfigError as err:
            raise ConfigError(f"layer {layer.name}: {err}") from None
        out.append(cost)
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


COSTS_COLUMNS = ["Profile", "Energy_model", "Model", "Method", "Mapping", "Analog_Tiles", "Analog_Tile_Util_percent",
                 "Analog_MAC_Ratio_percent", "Digital_Size_MB", "Latency_ms", "Energy_uJ_per_sample"]


@dataclass(frozen=True)
class CostedMapping:
    """A mapping to re-cost: its identity and the layer table it applies to."""

    model_id: str
    method: str
    name: str
    layers: Sequence[LayerInfo]
    mapping: Mapping[str, str]


def costs_table(mappings: Sequence[CostedMapping], profiles: Mapping[str, HardwareProfile]) -> pd.DataFrame:
    """Every mapping under every profile (keys: the labels shown), one row each: the paper's
    hardware columns, no model or data needed."""
    rows = []
    for label, profile in profiles.items():
        for m in mappings:
            try:
                row = mapping_costs(m.layers, m.mapping, profile).as_row()
            except ConfigError as err:
                raise ConfigError(f"mapping {m.name}, profile {label}: {err}") from None
            rows.append({"Profile": label, "Energy_model": profile.analog.energy_model, "Model": m.model_id,
                         "Method": m.method, "Mapping": m.name, **row})
    return pd.DataFrame(rows, columns=COSTS_COLUMNS)


__all__ = [
    "AnalogConfig",
    "COSTS_COLUMNS",
    "CostedMapping",
    "CostConstant",
    "DEFAULT_PROFILE_PATH",
    "DigitalPrecision",
    "HardwareProfile",
    "LayerCost",
    "MappingCosts",
    "MemoryConfig",
    "MvmEnergySplit",
    "activation_counts",
    "analog_tiles",
    "check_mapping",
    "costs_table",
    "default_hardware_profile",
    "layer_cost",
    "layer_costs",
    "layer_costs_table",
    "load_hardware_profile",
    "mapping_costs",
    "operator_kind",
    "parse_hardware_profile",
    "profile_constants_table",
    "profile_variants",
    "shipped_profile_paths",
    "stored_weights",
    "tile_mvm_equivalents",
    "with_energy_model",
]
