"""Typed, validated configuration: ``params.yaml`` and the hardware profile.

Every knob of the pipeline lives in ``params.yaml``; this module is the only place that
reads it.  Each section is a pydantic model with ``extra="forbid"`` so a misspelt key is an
error, not a silently ignored setting.  :func:`load_params` turns any validation failure
into a :class:`ConfigError` whose message is one line naming the key, the problem and the
fix; the CLI prints it and exits with code 2 before any work starts.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mps.errors import ConfigError  # lives in the leaf module; `from mps.config import ConfigError` still works

OPERATOR_NAMES = ("analog", "int8", "fp16", "skip")
BUILTIN_MODELS = ("resnet8", "resnet20", "mobilenetv2", "vit_tiny")
DATASETS = ("fashion-mnist", "cifar10")
DEFAULT_FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"


class _Section(BaseModel):
    # allow_inf_nan=False: every float knob (times, rates, fractions) must be a finite number;
    # YAML's .nan passes no bound check at all and .inf passes every lower bound.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


# Seeds feed torch, numpy (whose legacy seeding takes 32 bits) and ``seed * 1000 + epoch``.
MAX_SEED = 2**32 - 1


def _distinct(v: list[Any] | None, what: str) -> list[Any] | None:
    """``v`` unchanged if no item repeats, else the one-line error naming the repeat."""
    if v is None:
        return v
    seen: set[Any] = set()
    for item in v:
        if item in seen:
            raise ValueError(f"{item!r} is listed twice in {what}; fix: list each once")
        seen.add(item)
    return v


# --------------------------------------------------------------------------- data
class SubsetConfig(_Section):
    """Examples per class kept in each split (seeded), for fast profiles."""

    train: int = Field(gt=0)
    val: int = Field(gt=0)
    test: int = Field(gt=0)


class DataConfig(_Section):
    dataset: Literal["fashion-mnist", "cifar10"] = "fashion-mnist"
    root: str | None = Field(default=None, min_length=1)
    val_size: int = Field(default=5000, gt=0)
    subset: SubsetConfig | None = None
    split_seed: int = Field(default=0, ge=0, le=MAX_SEED)

    def resolved_root(self) -> Path:
        if self.root is not None:
            return Path(self.root).expanduser()
        if self.dataset == "fashion-mnist":
            return Path(DEFAULT_FASHION_MNIST_ROOT)
        raise ConfigError(
            "data.root: CIFAR-10 has no default folder; fix: set data.root to the folder "
            "holding 'cifar-10-batches-py' (the python version)"
        )


# --------------------------------------------------------------------------- model
class ModelConfig(_Section):
    name: str = "resnet8"

    @field_validator("name")
    @classmethod
    def _known_model(cls, v: str) -> str:
        if v in BUILTIN_MODELS:
            return v
        if ":" in v:
            return v
        raise ValueError(
            f"unknown model {v!r}; fix: use one of {', '.join(BUILTIN_MODELS)} "
            "or 'package.module:factory'"
        )


# --------------------------------------------------------------------------- pretrain
class PretrainConfig(_Section):
    epochs: int = Field(default=8, gt=0)
    batch_size: int = Field(default=128, gt=0)
    lr: float = Field(default=0.1, gt=0)
    momentum: float = Field(default=0.9, ge=0, lt=1)
    weight_decay: float = Field(default=5e-4, ge=0)
    schedule: Literal["onecycle", "cosine"] = "onecycle"
    augment: bool = True
    label_smoothing: float = Field(default=0.0, ge=0, lt=1)


# --------------------------------------------------------------------------- space
class SpaceConfig(_Section):
    """Which operators each choice layer may take."""

    search_space: Literal["mps", "mpaas"] = "mps"
    operators: list[str] = Field(default_factory=lambda: list(OPERATOR_NAMES))
    first_layer: list[str] | None = None
    last_layer: list[str] | None = None
    overrides: dict[str, list[str]] = Field(default_factory=dict)

    @field_validator("operators", "first_layer", "last_layer")
    @classmethod
    def _nonempty_known(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        if not v:
            raise ValueError("empty operator set; fix: list at least one of " + ", ".join(OPERATOR_NAMES))
        # known names are checked against the operator registry before any work (mps.cli.preflight)
        return _distinct(v, "the operator set")

    @field_validator("overrides")
    @classmethod
    def _overrides_nonempty(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        for pattern, ops in v.items():
            if not ops:
                raise ValueError(f"override {pattern!r} has an empty operator set; fix: list at least one operator")
            if not pattern:
                raise ValueError("an override has an empty layer-name glob; fix: name layers, e.g. 'layer3.*'")
            _distinct(ops, f"override {pattern!r}")
        return v


# --------------------------------------------------------------------------- adapt
class NoiseRampConfig(_Section):
    """Progressive analog-noise scaling (phase 2)."""

    steps: int = Field(default=4, gt=0)
    start_fraction: float = Field(default=0.25, gt=0, le=1)
    sensitivity_slowdown: float = Field(default=0.5, ge=0, le=1)


def _removed_step_caps(data: Any, section: str, moves: dict[str, str]) -> Any:
    """Budgets are epochs of the training split (fractions allowed), not capped step counts: an
    old params file that still names a step cap stops here with the key that replaces it."""
    if isinstance(data, dict):
        for old, fix in moves.items():
            if old in data:
                raise ValueError(f"{section}.{old} was removed: training budgets are epochs of the training split "
                                 f"(fractions allowed, e.g. 0.25 = a quarter of a pass); fix: {fix}")
    return data


class AdaptConfig(_Section):
    # budgets in epochs of the training split (fractions allowed); both phases step the same way
    fairness_epochs: float = Field(default=1.0, ge=0)
    noise_epochs: float = Field(default=2.0, ge=0)
    batch_size: int = Field(default=128, gt=0)
    lr: float = Field(default=0.002, gt=0)
    momentum: float = Field(default=0.9, ge=0, lt=1)
    weight_decay: float = Field(default=1e-4, ge=0)
    bn_recalibration_batches: int = Field(default=8, ge=0)
    # also train the layers every path shares (BatchNorm affine, embeddings); off = only the
    # operators' own weights adapt, which keeps paths from pulling shared layers apart
    train_shared: bool = False
    augment: bool = False  # random crop + flip, as in pretraining
    # weight of distillation from the pretrained model in each path's loss (0 = cross-entropy only)
    distillation: float = Field(default=0.5, ge=0, le=1)
    # fairness paths: 1 = FairNAS strict (random contexts); < 1 = paths aligned by operator kind
    # (all-analog, all-int8, ...) with this fraction of the layers in random order (mps.stages.adapt.fair_paths)
    context_mixing: float = Field(default=1.0, ge=0, le=1)
    # also train paths in which layers are skipped (FairNAS treats skip like any operator; measured
    # here to pull every operator away from the pretrained solution - see fair_paths)
    skip_contexts: bool = False
    # analog layers train at the digital layers' effective learning rate (mps.supernet.analog.equalize_analog_gradients)
    equalize_analog_lr: bool = False
    # ablation switches (the paper's ablation study; `snakemake ablation`):
    fairness: bool = True  # false: one uniformly random path per step instead of the fair paths
    qat: bool = True       # false: the int8 operators keep the pretrained weights (post-training quantization)
    # analog noise during phase 2: none (no HWA) | uniform (one ramp for all layers) |
    # noise_scaled (per-layer ramp, sensitive layers slower: noise_ramp.sensitivity_slowdown)
    hwa: Literal["none", "uniform", "noise_scaled"] = "noise_scaled"
    noise_ramp: NoiseRampConfig = Field(default_factory=NoiseRampConfig)
    # evidence logged at the end: adapted vs pretrained sub-networks on the test split
    evidence_examples: int | None = Field(default=5000, gt=0)
    evidence_repeats: int = Field(default=3, gt=0)
    # drift times of the evidence (the first one is the headline analog_gain_points)
    evidence_drift_times: list[float] = Field(default_factory=lambda: [86400.0, 31536000.0])

    @field_validator("evidence_drift_times")
    @classmethod
    def _positive_times(cls, v: list[float]) -> list[float]:
        return list(dict.fromkeys(_check_drift_times_in_order(v)))

    @model_validator(mode="before")
    @classmethod
    def _step_cap_removed(cls, data: Any) -> Any:
        return _removed_step_caps(data, "adapt", {
            "max_steps_per_epoch": "delete it and give fairness_epochs / noise_epochs as fractions "
                                   "(40 steps of a 429-step epoch = 0.093)"})

    @model_validator(mode="after")
    def _some_training(self) -> "AdaptConfig":
        if self.fairness_epochs + self.noise_epochs == 0:
            raise ValueError("fairness_epochs and noise_epochs are both 0; fix: set at least one > 0")
        return self


# --------------------------------------------------------------------------- calibrate / evaluate
class CalibrateConfig(_Section):
    drift_times: list[float] = Field(default_factory=lambda: [86400.0])
    repeats: int = Field(default=2, gt=0)
    # caps the scoring batches (of batch_size) per sub-network; null = all val_examples
    # seeded subset of the validation split each layer is scored on (null = the whole split)
    val_examples: int | None = Field(default=1000, gt=0)
    batch_size: int = Field(default=512, gt=0)
    # training batches (of 128) that re-estimate a sub-network's BatchNorm statistics before it is scored
    bn_recalibration_batches: int = Field(default=8, ge=0)

    @field_validator("drift_times")
    @classmethod
    def _positive_times(cls, v: list[float]) -> list[float]:
        return _check_drift_times(v)


class EvaluateConfig(_Section):
    drift_times: list[float] = Field(
        default_factory=lambda: [1.0, 3600.0, 86400.0, 2592000.0, 31536000.0]
    )
    reference_time: float = Field(default=86400.0, gt=0)
    repeats: int = Field(default=3, gt=0)
    batch_size: int = Field(default=512, gt=0)
    max_test_examples: int | None = Field(default=None, gt=0)
    # training batches (of 128) that re-estimate a sub-network's BatchNorm statistics before it is scored
    bn_recalibration_batches: int = Field(default=8, ge=0)
    # what a deployed chip does over time, for every method alike and in every stage's evaluations
    # (search, calibrate, adapt evidence, evaluate; mps/evaluation.py): aihwkit's drift compensation
    # by name (mps/analog/tiles.py says what a chip needs for each), and BatchNorm statistics
    # re-estimated after drift at each time on this many unlabelled training batches (0 = off)
    # (defaults chosen by the study in the README, "One-year accuracy as a chip would deliver it")
    drift_compensation: Literal["global", "global_exact", "per_column", "none"] = "global_exact"
    bn_reestimation_batches: int = Field(default=8, ge=0, le=64)

    @model_validator(mode="before")
    @classmethod
    def _engine_moved(cls, data: Any) -> Any:
        if isinstance(data, dict) and "engine" in data:
            raise ValueError("engine: the analog engine is now one switch for training and inference; fix: "
                             f"move it to the top-level key analog_engine: {data['engine']}")
        return data

    @field_validator("drift_times")
    @classmethod
    def _positive_times(cls, v: list[float]) -> list[float]:
        return _check_drift_times(v)

    @model_validator(mode="after")
    def _reference_in_times(self) -> "EvaluateConfig":
        if self.reference_time not in self.drift_times:
            raise ValueError(
                f"reference_time {self.reference_time} is not one of drift_times; fix: add it to drift_times"
            )
        return self


def _check_drift_times_in_order(v: list[float]) -> list[float]:
    """Like :func:`_check_drift_times` but keeps the given order (the first time is the headline)."""
    _check_drift_times(list(v))
    return list(v)


def _check_drift_times(v: list[float]) -> list[float]:
    if not v:
        raise ValueError("no drift times; fix: list at least one time in seconds (e.g. 86400 for 1 day)")
    for t in v:
        if t <= 0:
            raise ValueError(f"drift time {t} must be > 0 seconds; fix: use times after programming, e.g. 1, 3600, 86400")
    _distinct(v, "drift_times")  # one column per time: a repeat would be evaluated and reported twice
    return sorted(v)


# --------------------------------------------------------------------------- search
def _sweep_values(v: list[float], what: str, example: str) -> list[float]:
    """A baseline's sweep (LionHEART thresholds, ODiMo lambdas): values >= 0, each once, sorted
    (one run and one mapping per value)."""
    if any(x < 0 for x in v):
        raise ValueError(f"{what} must be >= 0; fix: e.g. {example}")
    return sorted(_distinct(v, what))


class LionheartConfig(_Section):
    """LionHEART (mps.search.lionheart): one greedy retrain-and-test run per accuracy threshold."""

    # accuracy points a run may lose against its digital start; one run (one mapping) per value
    thresholds: list[float] = Field(default_factory=lambda: [0.5, 1.0, 2.0, 4.0], min_length=1)
    # retraining after each candidate layer, in rounds of this many epochs (LH.py num_steps = -1:
    # one epoch), each followed by an evaluation; rounds go on while the score improves (LH.py's
    # patience rule: stop once the last `patience` rounds all score below the best), at most
    # `max_rounds` (null = no cap, as LH.py); the best round's network is kept
    epochs_per_round: float = Field(default=1.0, gt=0)
    patience: int = Field(default=1, gt=0)
    max_rounds: int | None = Field(default=None, gt=0)
    # programming-noise repeats per evaluation at search.drift_time (LionHEART: 10)
    repeats: int = Field(default=10, gt=0)
    # candidate order: MACs (largest first, LH.py) or analog tile utilisation (highest first)
    order: Literal["macs", "tile_utilization"] = "macs"
    # operator of the layers still digital: fp32 (LionHEART's float network) or int8 (the chip's digital unit)
    digital: Literal["fp32", "int8"] = "fp32"

    @model_validator(mode="before")
    @classmethod
    def _step_cap_removed(cls, data: Any) -> Any:
        return _removed_step_caps(data, "search.lionheart", {
            "steps": "delete it and set epochs_per_round (1 = LionHEART's epoch) and max_rounds"})

    @field_validator("thresholds")
    @classmethod
    def _thresholds(cls, v: list[float]) -> list[float]:
        return _sweep_values(v, "thresholds", "[0.5, 1, 2, 4]")


# ODiMo's ResNet20/CIFAR-10 search (image_classification/cifar10/run_ic_fulltest.sh): 200 epochs,
# temperature 1 annealed by exp(-0.045) per epoch (search_r20.py, anneal_temperature)
ODIMO_FINAL_TEMPERATURE = math.exp(-0.045 * 200)


class OdimoConfig(_Section):
    """ODiMo-style differentiable search (mps.search.odimo): one search + fine-tuning per lambda."""

    # weights of the expected cost (normalised to the costliest mapping) in the loss; one mapping
    # each; 0 = accuracy only (the most accurate mapping), the largest should give the cheapest
    lambdas: list[float] = Field(default_factory=lambda: [0.0, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0], min_length=1)
    search_epochs: float = Field(default=1.0, gt=0)  # joint weight + alpha training of each search
    cost: Literal["energy", "latency"] = "energy"
    # HWA fine-tuning of each argmax mapping, in epochs; null = the adaptation's budget (as analog_hwa)
    finetune_epochs: float | None = Field(default=None, gt=0)
    weight_lr: float = Field(default=1e-3, gt=0)  # ODiMo: weights SGD lr 1e-3
    alpha_lr: float = Field(default=1e-3, gt=0)   # ODiMo: alphas Adam lr 1e-3
    # the softmax temperature anneals geometrically per step from initial to final over each
    # search, whatever its length: the final value is where ODiMo's 200 epochs of exp(-0.045) end
    initial_temperature: float = Field(default=1.0, gt=0)
    final_temperature: float = Field(default=ODIMO_FINAL_TEMPERATURE, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _step_cap_removed(cls, data: Any) -> Any:
        if isinstance(data, dict) and "temperature_decay" in data:
            raise ValueError("search.odimo.temperature_decay was removed: the temperature anneals per step from "
                             "initial_temperature to final_temperature; fix: delete it (the default final "
                             "temperature is where ODiMo's 200 epochs of exp(-0.045) end)")
        return _removed_step_caps(data, "search.odimo", {
            "steps": "delete it and set search_epochs", "finetune_steps": "delete it and set finetune_epochs"})

    @field_validator("lambdas")
    @classmethod
    def _lambdas(cls, v: list[float]) -> list[float]:
        return _sweep_values(v, "lambdas", "[0, 0.1, 0.3, 1, 3, 10, 30]")

    @model_validator(mode="after")
    def _anneals_down(self) -> "OdimoConfig":
        if self.final_temperature > self.initial_temperature:
            raise ValueError(f"final_temperature {self.final_temperature} > initial_temperature "
                             f"{self.initial_temperature}; fix: anneal down (final <= initial)")
        return self


class SearchConfig(_Section):
    budget: int = Field(default=48, gt=0, description="sub-network evaluations per searcher")
    iterations: int = Field(default=4, gt=0)
    alpha_lr: float = Field(default=0.05, gt=0)
    alpha_steps: int = Field(default=50, gt=0)
    pareto_size: int = Field(default=8, gt=0)
    drift_time: float = Field(default=86400.0, gt=0)
    objectives: list[Literal["accuracy", "analog_mac_ratio", "digital_size_mb", "energy_uj", "latency_ms"]] = (
        Field(default_factory=lambda: ["accuracy", "analog_mac_ratio", "digital_size_mb"])
    )
    val_examples: int | None = Field(default=2000, gt=0)
    max_acc_drop: float = Field(default=1.0, ge=0, le=100)  # accuracy points
    baselines: list[Literal["fp32", "int8", "analog", "analog_straight", "analog_hwa", "greedy", "random",
                            "nsga2", "lionheart", "odimo"]] = Field(
        default_factory=lambda: ["fp32", "int8", "analog", "analog_straight", "analog_hwa", "greedy", "random",
                                 "nsga2", "lionheart", "odimo"]
    )
    # training batches (of 128) that re-estimate a sub-network's BN statistics before it is scored; 0 = none
    bn_recalibration_batches: int = Field(default=8, ge=0)
    # HWA fine-tuning of the analog_hwa baseline, in epochs; null = the adaptation's budget (the same updates)
    hwa_epochs: float | None = Field(default=None, gt=0)
    # MPS's draws per round: "stratified" (round 0 uniform after the anchors, later rounds softmax(alpha),
    # each draw tilted toward its own stratum of analog MAC share) or "alphas" (the same, untilted)
    sampling: Literal["stratified", "alphas"] = "stratified"
    # which sequence of draws MPS's search (and MPAAS's) takes: 0 = the run seed's (every run before
    # 2026-12-05); k > 0 = an independent one derived from the run seed and k. The evaluator, its
    # images and programming seeds stay the run seed's, so searches of one supernet with different
    # draw seeds differ only in the search's own luck (the ablation runs several: ablation.search_draws)
    draw_seed: int = Field(default=0, ge=0)
    # round 0 anchors of MPS (and MPAAS) beyond the uniform paths: the all-analog path with its k most
    # sensitive layers per MAC (the calibrate stage's table at drift_time) on INT8, k = 1 .. this; 0 = none
    sensitivity_anchors: int = Field(default=0, ge=0)
    # mappings drawn from the learned alphas to choose MPS's extraction candidates (cost model only, no evaluations)
    extraction_samples: int = Field(default=512, gt=0)
    # NSGA-II population size; None = budget // 4 clamped to [4, 50], so a small budget still sees generations
    nsga2_population: int | None = Field(default=None, gt=1)
    lionheart: LionheartConfig = Field(default_factory=LionheartConfig)
    odimo: OdimoConfig = Field(default_factory=OdimoConfig)

    @field_validator("baselines")
    @classmethod
    def _distinct_baselines(cls, v: list[str]) -> list[str]:
        return _distinct(v, "search.baselines")  # each writes its own mapping file

    @field_validator("objectives")
    @classmethod
    def _accuracy_first(cls, v: list[str]) -> list[str]:
        if "accuracy" not in v:
            raise ValueError("objectives must include 'accuracy'; fix: add accuracy")
        if len(set(v)) != len(v):
            raise ValueError("an objective is listed twice; fix: list each once")
        return v


class ReportConfig(_Section):
    max_acc_drop: float = Field(default=1.0, ge=0, le=100)  # accuracy points
    maximize: Literal["analog_mac_ratio", "accuracy"] = "analog_mac_ratio"
    # the second test hypervolume's accuracy axis: from FP32 minus this many points to FP32 (the
    # useful range; the first one spans [0, 100] %, where usable mappings differ in the third decimal)
    hypervolume_window: float = Field(default=5.0, gt=0, le=100)
    # the aggregate's methods-at-a-glance table reads each mapper by its most accurate mapping with at
    # least this analog MAC share (the paper's ">= 70 % analog" rows; mps.stages.aggregate)
    min_analog_mac_percent: float = Field(default=70.0, ge=0, le=100)
    # mapping drawn in layers.png; None = the one meeting the constraint (else the most accurate at the reference time)
    layers_mapping: str | None = Field(default=None, min_length=1)


class MlflowConfig(_Section):
    experiment: str = Field(default="mps", min_length=1)


def _default_variants() -> dict[str, dict[str, Any]]:
    # the paper's ablation (ResNet20: 81.9 -> 84.5 -> 87.3 -> 88.7 -> 90.8), plus fairness sampling off
    return {"no_qat_no_hwa": {"qat": False, "hwa": "none"}, "qat": {"hwa": "none"},
            "qat_uniform_hwa": {"hwa": "uniform"}, "noise_scaled_hwa": {"qat": False},
            "mps": {}, "no_fairness": {"fairness": False}}


class AblationConfig(_Section):
    """`snakemake ablation`: adaptation variants (overrides of adapt.* keys), each adapted from
    the same pretrained model with every seed, then searched `search_draws` times and each search
    evaluated (mps.stages.ablation)."""

    seeds: list[int] = Field(default_factory=lambda: [0, 1], min_length=1)
    # MPS searches of each adapted supernet, with draw seeds 0 ... n-1 (search.draw_seed): one search's
    # best >= 70 % mapping moves by about a point with its draws alone, more than most components do
    search_draws: int = Field(default=2, ge=1)
    variants: dict[str, dict[str, Any]] = Field(default_factory=_default_variants, min_length=1)
    min_analog_mac_percent: float = Field(default=70.0, ge=0, le=100)

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v) or any(s < 0 for s in v):
            raise ValueError("seeds must be distinct non-negative integers; fix: e.g. [0, 1, 2]")
        return v

    @field_validator("variants")
    @classmethod
    def _valid_variants(cls, v: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for name, overrides in v.items():
            if not isinstance(name, str) or not name.replace("_", "").replace("-", "").isalnum():
                raise ValueError(f"variant name {name!r} must be letters, digits, '_' or '-'; fix: rename it")
            if not isinstance(overrides, dict):
                raise ValueError(f"variant {name}: overrides must be a mapping of adapt keys; fix: e.g. {{qat: false}}")
            try:
                AdaptConfig(**overrides)
            except ValidationError as err:
                first = err.errors()[0]
                key = ".".join(str(p) for p in first["loc"])
                raise ValueError(f"variant {name}: adapt.{key}: {first['msg']}; fix: use adapt's keys and values") from None
        return v


class SweepConfig(_Section):
    """Grid run by Snakemake; empty lists mean 'just the scalar value above'."""

    datasets: list[Literal["fashion-mnist", "cifar10"]] = Field(default_factory=list)
    models: list[str] = Field(default_factory=list)
    seeds: list[int] = Field(default_factory=list)

    # a repeated grid value names the same Snakemake outputs twice
    @field_validator("datasets", "models", "seeds")
    @classmethod
    def _distinct_grid(cls, v: list[Any], info: Any) -> list[Any]:
        if info.field_name == "models":
            for name in v:
                ModelConfig._known_model(name)
        if info.field_name == "seeds":
            for seed in v:
                if not 0 <= seed <= MAX_SEED:
                    raise ValueError(f"seed {seed} is outside [0, {MAX_SEED}]; fix: use a seed in that range")
        return _distinct(v, f"sweep.{info.field_name}")


# --------------------------------------------------------------------------- root
class Params(_Section):
    seed: int = Field(default=0, ge=0, le=MAX_SEED)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    out_dir: str = Field(default="results", min_length=1)  # "" would put outputs under /data, /logs...
    threads: int = Field(default=0, ge=0, description="torch threads; 0 = Snakemake/cores default")
    hardware_profile: str = Field(default="hardware/paper.yaml", min_length=1)
    # the forward of analog layers in training and inference alike (mps/analog/engine.py): fast = direct
    # convolutions for static input ranges (im2col in eval mode for dynamic ones), checked against aihwkit;
    # aihwkit = aihwkit's own forward everywhere.  Programming, drift and compensation are aihwkit's in both.
    analog_engine: Literal["fast", "aihwkit"] = "fast"
    # batches (of 128 training images) that calibrate the static input ranges of an analog model that
    # is not trained (straight conversion, the supernet before adaptation; mps/analog/calibration.py)
    range_calibration_batches: int = Field(default=4, gt=0)
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    pretrain: PretrainConfig = Field(default_factory=PretrainConfig)
    space: SpaceConfig = Field(default_factory=SpaceConfig)
    adapt: AdaptConfig = Field(default_factory=AdaptConfig)
    calibrate: CalibrateConfig = Field(default_factory=CalibrateConfig)
    search: SearchConfig = Field(default_factory=SearchConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)
    mlflow: MlflowConfig = Field(default_factory=MlflowConfig)
    sweep: SweepConfig = Field(default_factory=SweepConfig)
    ablation: AblationConfig = Field(default_factory=AblationConfig)

    def digest(self) -> str:
        """Stable hash of the validated params: recorded in every artifact."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


# --------------------------------------------------------------------------- errors
_FIXES = {
    "extra_forbidden": "remove it or fix its spelling",
    "missing": "add it",
    "literal_error": "use one of the allowed values",
    "greater_than": "use a larger value",
    "greater_than_equal": "use a larger value",
    "less_than": "use a smaller value",
    "less_than_equal": "use a smaller value",
    "finite_number": "use a finite number",
    "string_too_short": "give a non-empty value",
}


def _format_validation_error(source: str, err: ValidationError) -> str:
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"]) or "(top level)"
    kind = first["type"]
    msg = first["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    got = first.get("input")
    got_txt = ""
    if kind not in ("missing",) and not isinstance(got, dict) and got is not None:
        got_txt = f" (got {got!r})"
    fix = _FIXES.get(kind)
    if fix is None and (kind.endswith("_type") or kind.endswith("_parsing")):
        fix = "use a value of the right type"
    if fix is None and "fix:" not in msg:
        fix = "correct the value"
    fix_txt = f"; fix: {fix}" if fix else ""
    return f"{source}: {key}: {msg}{got_txt}{fix_txt}"


def parse_params(raw: Any, source: str = "params") -> Params:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: top level must be a mapping of sections; fix: see the README's params.yaml")
    try:
        params = Params.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(source, err)) from None
    return params


def load_params(path: str | Path, overrides: dict[str, Any] | None = None) -> Params:
    """Read, override (dotted keys) and validate ``params.yaml``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found; fix: pass --params with an existing params.yaml")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}; fix: correct the syntax") from None
    raw = raw or {}
    for dotted, value in (overrides or {}).items():
        _set_dotted(raw, dotted, value)
    return parse_params(raw, str(path))


def _set_dotted(raw: dict, dotted: str, value: Any) -> None:
    node = raw
    parts = dotted.split(".")
    for part in parts[:-1]:
        nxt = node.get(part)
        if nxt is None:
            nxt = node[part] = {}
        if not isinstance(nxt, dict):
            raise ConfigError(f"override {dotted}: {part} is not a section")
        node = nxt
    node[parts[-1]] = value


def check_user_model(name: str) -> None:
    """Fail early (exit 2) if a 'package.module:factory' model cannot be imported."""
    from mps.models import resolve_factory

    try:
        resolve_factory(name)
    except ConfigError as exc:
        raise ConfigError(f"model.name: {exc}") from None
