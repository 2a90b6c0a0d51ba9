"""Stage ``adapt``: build the supernet from the pretrained model and adapt it.

Phase 1, strict fairness (FairNAS): each step draws K = max(#operators of a layer) single-path
sub-networks such that, in every layer, each allowed operator appears in at least one of
them (all of them exactly once for layers with K operators).  Gradients of the K paths on the
same batch are accumulated, then ONE optimizer update is made.  A layer with fewer operators
(k < K) fills its remaining paths with randomly drawn repeats; those operators' gradients are
divided by their use count, so every operator of every layer receives exactly one update of
equal weight per step.

Phase 2, progressive analog-noise scaling with QAT: the same fair sampling continues while
the analog operators' hardware-aware-training noise (output noise, weight noise) rises in
``noise_ramp.steps`` levels to the hardware profile's level, resilient layers faster than
sensitive ones (``mps.noise_schedule``; sensitivity from a quick probe at the start of the
phase: accuracy drop with only that layer analog under programming noise).  Fake
quantization stays on for the int8 paths throughout (it is part of the operator).

BatchNorm: BN layers are shared by all paths; a sub-network is evaluated after BN
recalibration on training batches (``mps.evaluation``), which is what fits its statistics.

Checkpoint each epoch (resume after interruption reproduces an uninterrupted run: each
epoch's sampling, shuffling and noise draw from generators seeded by (seed, epoch)).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn.functional as F

from mps import data as mdata
from mps.artifacts import ArtifactError, atomic_write_json, provenance
from mps.config import AdaptConfig, Params
from mps.evaluation import accuracy_at, drift_accuracy_grid
from mps.noise_schedule import normalised_sensitivity, ramp_fraction, ramp_step_at
from mps.runtime import progress, resolve_device, seed_everything
from mps.stages.common import (Splits, calibrate_input_ranges, eval_set, evaluation_options, hardware_profile,
                               load_splits)
from mps.stages.pretrain import load_pretrained
from mps.supernet import Supernet, convert_to_supernet, extract, realize, save_supernet
from mps.supernet.adapted import WIDE
from mps.analog.tiles import clip_analog, equalize_analog_gradients, set_training_noise, sync_gradient_scaling
from mps.tracking import Tracker
from mps.units import drift_label
from mps.training import (EpochCheckpointer, check_finite, epoch_chunks, epoch_generator, epoch_steps,
                          iterate_batches, sgd, steps_per_epoch)

PROBE_EXAMPLES = 512
PARAMETER_FREE = frozenset({"skip"})  # operators without weights: nothing to train, no path of their own


# --------------------------------------------------------------------------- fair sampling
def fair_paths(allowed: dict[str, list[str]], generator: torch.Generator,
               ties: dict[str, str] | None = None, mixing: float = 1.0,
               skip_contexts: bool = False) -> tuple[list[dict[str, str]], dict[str, dict[str, int]]]:
    """The single-path mappings of one fairness step, covering the operators of every layer;
    plus how often each operator is used.

    Only operators with weights take part (``skip_contexts=False``, the default): a removed
    layer has nothing to train, and paths with removed layers are broken networks (measured on
    ResNet8/Fashion-MNIST: a mean path loss of 2.2 against 0.12 without them) whose gradients
    pulled every operator away from the pretrained solution - the adapted all-analog, INT8 and
    FP16 paths ended 2.6, 1.1 and 1.9 points below doing nothing.  ``skip`` stays a search
    option; the evaluator measures what it costs.  ``skip_contexts=True`` restores FairNAS's
    treatment of skip as an operator like the others.

    ``mixing = 1`` is FairNAS's strict fairness: K = max(#operators of a layer) paths, each
    layer's column a random permutation of its operators (padded with random repeats), so
    every operator of every layer is trained exactly once per step, in random contexts.

    ``mixing < 1`` aligns the paths: path i runs the i-th operator kind (analog, int8, fp16, ...
    in order of first appearance) in every layer that has it (a layer without it takes one of
    its own operators at random), so each operator is trained in a context of its own kind -
    the all-analog path is hardware-aware training of the whole network, the all-int8 path is
    QAT.  A fraction ``mixing`` of the layers, drawn per step, take a random column instead.

    ``ties`` (consumer -> producer, MPAAS pairs): the consumer's ``analog_wide`` is put in the
    path where its producer's is, its other operators are spread over the other paths, so
    every path is a valid mapping and fairness holds for both layers.
    """
    ties = ties or {}
    trained = {name: [op for op in ops if skip_contexts or op not in PARAMETER_FREE] or list(ops)
               for name, ops in allowed.items()}
    kinds = list(dict.fromkeys(op for ops in trained.values() for op in ops))
    k = max(len(ops) for ops in trained.values()) if mixing >= 1.0 else max(1, len(kinds))
    columns: dict[str, list[str]] = {}
    counts: dict[str, dict[str, int]] = {}
    for name, ops in trained.items():
        if mixing >= 1.0 or float(torch.rand((), generator=generator)) < mixing:
            perm = [ops[i] for i in torch.randperm(len(ops), generator=generator).tolist()]
            extra = [ops[int(i)] for i in torch.randint(len(ops), (max(0, k - len(ops)),), generator=generator)]
            col = (perm + extra)[:k]
        else:
            col = [kind if kind in ops else ops[int(torch.randint(len(ops), (1,), generator=generator))]
                   for kind in kinds]
        if name in ties:
            col = _follow_producer(col, columns[ties[name]])
        columns[name] = col
        counts[name] = {op: col.count(op) for op in allowed[name]}
    paths = [{name: columns[name][i] for name in allowed} for i in range(k)]
    return paths, counts


def _follow_producer(col: list[str], producer: list[str]) -> list[str]:
    """A consumer's column with ``analog_wide`` exactly where the producer's column has it and
    the consumer's other operators, in their drawn order, in the remaining paths."""
    others = [op for op in col if op != WIDE] or ["analog"]
    out, j = [], 0
    for p in producer:
        if p == WIDE:
            out.append(WIDE)
        else:
            out.append(others[j % len(others)])
            j += 1
    return out


def scale_shared_grads(supernet: Supernet, counts: dict[str, dict[str, int]]) -> None:
    """Average the accumulated gradient of operators used more than once in a step."""
    layers = supernet.choice_layers()
    for name, per_op in counts.items():
        for op, n in per_op.items():
            if n > 1:
                for p in layers[name].ops[op].parameters():
                    if p.grad is not None:
                        p.grad.div_(n)


def path_loss(logits: torch.Tensor, yb: torch.Tensor, teacher: torch.Tensor | None, weight: float) -> torch.Tensor:
    """Cross-entropy, blended with distillation from the pretrained model's soft labels
    (KL divergence) when a teacher is given: it keeps every path close to the network the
    supernet came from while the paths are trained in random contexts."""
    loss = F.cross_entropy(logits, yb)
    if teacher is None or weight == 0:
        return loss
    kd = F.kl_div(F.log_softmax(logits, dim=1), F.softmax(teacher, dim=1), reduction="batchmean")
    return (1 - weight) * loss + weight * kd


def random_path(supernet: Supernet, generator: torch.Generator,
                skip_contexts: bool = False) -> tuple[list[dict[str, str]], dict[str, dict[str, int]]]:
    """One uniformly random single path (the ablation without fairness sampling), over the
    operators :func:`fair_paths` would train."""
    mapping = {}
    for name, ops in supernet.allowed.items():
        ops = [op for op in ops if skip_contexts or op not in PARAMETER_FREE] or ops
        mapping[name] = ops[int(torch.randint(len(ops), (1,), generator=generator))]
    mapping = supernet.tie(mapping)
    return [mapping], {name: {op: int(op == mapping[name]) for op in ops} for name, ops in supernet.allowed.items()}


def fair_step(supernet: Supernet, xb: torch.Tensor, yb: torch.Tensor, optimizer: torch.optim.Optimizer,
              generator: torch.Generator, where: str, teacher: torch.Tensor | None = None,
              cfg: AdaptConfig | None = None) -> tuple[float, dict[str, dict[str, int]]]:
    """One fairness step: the paths of :func:`fair_paths` (one random path without
    ``cfg.fairness``), accumulated gradients, one update; ``cfg`` (default: the defaults)
    gives distillation weight, context mixing, skip contexts and analog-gradient equalisation."""
    cfg = cfg or AdaptConfig()
    paths, counts = (fair_paths(supernet.allowed, generator, supernet.ties, cfg.context_mixing, cfg.skip_contexts)
                     if cfg.fairness else random_path(supernet, generator, cfg.skip_contexts))
    optimizer.zero_grad(set_to_none=True)
    total = 0.0
    for mapping in paths:
        supernet.set_mapping(mapping)
        loss = path_loss(supernet(xb), yb, teacher, cfg.distillation)
        check_finite(loss, where)
        loss.backward()
        total += loss.item()
    scale_shared_grads(supernet, counts)
    if cfg.equalize_analog_lr:
        equalize_analog_gradients(supernet)
    optimizer.step()
    clip_analog(supernet)
    return total / len(paths), counts


# --------------------------------------------------------------------------- noise ramp
def analog_choice_layers(supernet: Supernet) -> dict[str, torch.nn.Module]:
    return {n: l.ops["analog"].layer for n, l in supernet.choice_layers().items() if "analog" in l.ops}


def apply_noise_fraction(supernet: Supernet, fractions: dict[str, float], profile) -> None:
    for name, layer in analog_choice_layers(supernet).items():
        f = fractions.get(name, 1.0)
        set_training_noise(layer, f * profile.analog.out_noise, f * profile.analog.hwa_weight_noise)


def sensitivity_probe(supernet: Supernet, splits: Splits, seed: int, device: str, profile,
                      engine: str = "fast") -> dict[str, float]:
    """Quick per-layer probe: accuracy drop with only that layer analog (programming noise, t=1 s).

    The probe measures at the deployment noise: the tiles' output noise is the one setting
    that training changes and evaluation reads (``set_training_noise``), so it is put back to
    the profile's level first; otherwise the probe would measure at whatever level the last
    training step left (none after the fairness phase, but the full level when a resumed run
    starts here), and an interrupted run would not resume to the same weights.
    """
    apply_noise_fraction(supernet, {}, profile)
    data = eval_set(splits, "val", PROBE_EXAMPLES, seed, calib_batches=2, device=device, engine=engine)
    reference = supernet.uniform_mapping("fp16")
    ref_acc, _ = accuracy_at(extract(supernet, reference), data, 1.0, 1, seed)
    drops = {}
    for name in analog_choice_layers(supernet):
        acc, _ = accuracy_at(extract(supernet, {**reference, name: "analog"}), data, 1.0, 1, seed)
        drops[name] = ref_acc - acc
    return drops


# --------------------------------------------------------------------------- evidence
def evidence(supernet: Supernet, pretrained_path: Path, splits: Splits, params: Params, profile) -> dict[str, float]:
    """Accuracy of the adapted sub-networks against the pretrained model (test split).

    At each of ``adapt.evidence_drift_times`` (labelled ``1d``, ``1y``, ...): the pretrained
    model converted straight to analog and the supernet's all-analog path, each programmed
    ``evidence_repeats`` times; the FP32, INT8 and FP16 figures are drift-free.  The unlabelled
    ``*.accuracy_drift`` / ``analog_gain_points`` keys are at the first time.
    """
    cfg = params.adapt
    data = eval_set(splits, "test", cfg.evidence_examples, params.seed, calib_batches=cfg.bn_recalibration_batches,
                    device=params.device, **evaluation_options(params))
    times = [float(t) for t in cfg.evidence_drift_times]
    fp32_model, ckpt = load_pretrained(pretrained_path)
    shape = tuple(ckpt["image_shape"])
    out: dict[str, float] = {}
    fp32_acc, _ = accuracy_at(fp32_model, data, times[0], 1, params.seed)
    out["pretrained.accuracy"] = fp32_acc
    analog = supernet.uniform_mapping("analog")
    straight = calibrate_input_ranges(realize(load_pretrained(pretrained_path)[0], analog, profile, shape), splits, params)
    grids = {"pretrained_analog": drift_accuracy_grid(straight, data, times, cfg.evidence_repeats, params.seed),
             "adapted_analog": drift_accuracy_grid(extract(supernet, analog), data, times, cfg.evidence_repeats,
                                                   params.seed)}
    for name, grid in grids.items():
        for j, t in enumerate(times):
            out[f"{name}.accuracy_{drift_label(t)}"] = float(grid[:, j].mean())
            out[f"{name}.accuracy_{drift_label(t)}_std"] = float(grid[:, j].std())
        out[f"{name}.accuracy_drift"] = float(grid[:, 0].mean())
        out[f"{name}.accuracy_drift_std"] = float(grid[:, 0].std())
    for j, t in enumerate(times):
        label = drift_label(t)
        out[f"analog_gain_points_{label}"] = (out[f"adapted_analog.accuracy_{label}"]
                                              - out[f"pretrained_analog.accuracy_{label}"])
    out["analog_gain_points"] = out[f"analog_gain_points_{drift_label(times[0])}"]
    for op in ("int8", "fp16"):
        out[f"adapted_{op}.accuracy"], _ = accuracy_at(extract(supernet, supernet.uniform_mapping(op)), data,
                                                      times[0], 1, params.seed)
        out[f"{op}_drop_points"] = fp32_acc - out[f"adapted_{op}.accuracy"]
    return {k: round(float(v), 4) for k, v in out.items()}


# The evidence's headline (``metrics.json``, what ``dvc metrics show`` lists); all of it,
# spreads and timings included, is in ``evidence.json``.
HEADLINE_EVIDENCE = ("pretrained.accuracy", "pretrained_analog.accuracy_drift", "adapted_analog.accuracy_drift",
                     "adapted_int8.accuracy", "adapted_fp16.accuracy", "analog_gain_points", "analog_gain_points_1y",
                     "int8_drop_points", "fp16_drop_points")


# --------------------------------------------------------------------------- stage
def build_supernet(params: Params, pretrained_path: Path, data_manifest: dict, profile) -> Supernet:
    model, ckpt = load_pretrained(pretrained_path)
    if ckpt.get("data_fingerprint") != data_manifest["fingerprint"]:
        raise ArtifactError(f"{pretrained_path}: trained on other data (fingerprint {ckpt.get('data_fingerprint')} "
                            f"!= {data_manifest['fingerprint']}); fix: rerun pretrain on this data folder")
    meta = {"model_name": ckpt["model_name"], "model_id": ckpt["model_id"], "num_classes": ckpt["num_classes"],
            "data_fingerprint": ckpt["data_fingerprint"]}
    return convert_to_supernet(model, params.space, profile, tuple(ckpt["image_shape"]), meta)


def calibrate_supernet_ranges(supernet: Supernet, splits: Splits, params: Params) -> None:
    """Calibrate the input ranges of the supernet's analog operators before any training (so an
    unadapted supernet's analog paths are not handicapped by default ranges): on the all-analog
    path, then, for MPAAS, on the path with every adaptable pair widened."""
    mappings = [supernet.uniform_mapping("analog")]
    if supernet.pairs:
        mappings.append(supernet.tie({**mappings[0], **{p["producer"]: WIDE for p in supernet.pairs}}))
    before = supernet.active_mapping()
    for mapping in mappings:
        supernet.set_mapping(mapping)
        calibrate_input_ranges(supernet, splits, params)
    for name, layer in supernet.choice_layers().items():
        layer.set_active(before[name])


def run(params: Params, data_dir: Path, pretrained_path: Path, out_dir: Path, work_dir: Path,
        tracker: Tracker) -> dict:
    cfg = params.adapt
    splits = load_splits(data_dir)
    profile = hardware_profile(params)
    seed_everything(params.seed)
    device = resolve_device(params.device)
    supernet = build_supernet(params, pretrained_path, splits.manifest, profile).to(device)
    calibrate_supernet_ranges(supernet, splits, params)
    x_train, y_train = splits.train
    fill = mdata.black_fill(splits.manifest)
    n_steps = steps_per_epoch(len(x_train), cfg.batch_size)
    # each phase's budget cut into epochs (the last one partial): the units of checkpointing and shuffling
    phase_steps = {phase: epoch_steps(getattr(cfg, f"{phase}_epochs"), len(x_train), cfg.batch_size)
                   for phase in ("fairness", "noise")}
    epochs = [(phase, e, steps) for phase in ("fairness", "noise")
              for e, steps in enumerate(epoch_chunks(phase_steps[phase], n_steps))]
    teacher = load_pretrained(pretrained_path)[0].to(device).eval() if cfg.distillation > 0 else None
    frozen = set() if cfg.qat else {"int8"}  # without QAT the int8 path is post-training quantized
    trained = supernet.weight_parameters(frozen) if cfg.train_shared else supernet.operator_parameters(frozen)
    optimizer = sgd(trained, cfg.lr, cfg.momentum, cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, sum(phase_steps.values())))

    tracker.log_params({"model": params.model.name, "dataset": params.data.dataset, "seed": params.seed,
                        "layers": len(supernet.infos), "search_space": params.space.search_space,
                        "operators": ",".join(params.space.operators),
                        **{f"adapt.{k}": v for k, v in cfg.model_dump().items()}})
    ckpt = EpochCheckpointer(work_dir, "adapt-state",
                             fingerprint=params.digest() + splits.manifest["fingerprint"] + profile.digest())
    done, sensitivity, wall = 0, None, {"fairness": 0.0, "noise": 0.0}
    resumed = ckpt.load()
    if resumed is not None:
        done, state = resumed
        supernet.load_state_dict(state["supernet"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        sensitivity, wall = state["sensitivity"], state["wall"]
        print(f"adapt: resuming after epoch {done}/{len(epochs)}")

    noise_total = phase_steps["noise"]
    for index in range(done, len(epochs)):
        phase, epoch, chunk = epochs[index]
        t0 = time.perf_counter()
        gen = epoch_generator(params.seed, index, salt=17)
        torch.manual_seed(params.seed * 1000 + index)
        if phase == "fairness" or cfg.hwa == "none":
            # phase 1 trains every path fairly without HWA noise; phase 2 ramps it up
            apply_noise_fraction(supernet, {n: 0.0 for n in analog_choice_layers(supernet)}, profile)
        elif sensitivity is None and cfg.hwa == "noise_scaled":
            sensitivity = sensitivity_probe(supernet, splits, params.seed, params.device, profile,
                                            params.analog_engine)
            tracker.log_metrics({f"probe_drop.{n}": v for n, v in sensitivity.items()})
        # uniform HWA: every layer on the linear ramp (z = 0); noise-scaled: by probed sensitivity
        z = normalised_sensitivity(sensitivity or {}) if cfg.hwa == "noise_scaled" else {}
        supernet.train()
        sync_gradient_scaling(supernet)  # every epoch alike, whether resumed or not (see its docstring)
        losses = []
        batches = iterate_batches(len(x_train), cfg.batch_size, gen, drop_last=True)
        for step, idx in enumerate(progress(batches, f"adapt {phase} epoch {epoch + 1}", total=chunk)):
            if step >= chunk:
                break
            if phase == "noise" and cfg.hwa != "none":
                global_step = epoch * n_steps + step
                rs = ramp_step_at(global_step, noise_total, cfg.noise_ramp)
                apply_noise_fraction(supernet, {n: ramp_fraction(rs, cfg.noise_ramp, z.get(n, 0.0))
                                                for n in analog_choice_layers(supernet)}, profile)
            xb = x_train[idx]
            if cfg.augment:
                xb = mdata.augment_batch(xb, gen, fill=fill)
            xb = xb.to(device)
            soft = None
            if teacher is not None:
                with torch.no_grad():
                    soft = teacher(xb)
            loss, _ = fair_step(supernet, xb, y_train[idx].to(device), optimizer, gen,
                                f"adapt {phase} epoch {epoch + 1}", soft, cfg)
            scheduler.step()
            losses.append(loss)
        wall[phase] += time.perf_counter() - t0
        metrics = {f"{phase}.train_loss": sum(losses) / max(1, len(losses))}
        if phase == "noise":
            metrics["noise.fraction_mean"] = _mean_fraction(supernet, profile)
        tracker.log_metrics(metrics, step=index + 1)
        print(f"adapt: {phase} epoch {epoch + 1} loss {metrics[f'{phase}.train_loss']:.4f}")
        ckpt.save(index + 1, {"supernet": supernet.state_dict(), "optimizer": optimizer.state_dict(),
                              "scheduler": scheduler.state_dict(), "sensitivity": sensitivity, "wall": wall})

    apply_noise_fraction(supernet, {}, profile)  # leave every analog operator at the target level
    t0 = time.perf_counter()
    ev = evidence(supernet, pretrained_path, splits, params, profile)
    metrics = {**ev, "fairness_seconds": round(wall["fairness"], 2), "noise_seconds": round(wall["noise"], 2),
               "evidence_seconds": round(time.perf_counter() - t0, 2), "steps_per_epoch": n_steps,
               "fairness_steps": phase_steps["fairness"], "noise_steps": phase_steps["noise"]}
    save_supernet(out_dir / "supernet.pt", supernet, params.space, profile,
                  provenance(params.digest(), seed=params.seed), {"sensitivity_probe": sensitivity})
    atomic_write_json(out_dir / "evidence.json", metrics)
    atomic_write_json(out_dir / "metrics.json", {k: metrics[k] for k in HEADLINE_EVIDENCE})
    tracker.log_metrics(metrics)
    tracker.log_artifact(out_dir / "evidence.json")
    tracker.log_artifact(out_dir / "metrics.json")
    ckpt.clear()
    print("adapt: " + ", ".join(f"{k} {v}" for k, v in ev.items()))
    return metrics


def _mean_fraction(supernet: Supernet, profile) -> float:
    from mps.analog.tiles import training_noise

    layers = list(analog_choice_layers(supernet).values())
    if not layers or profile.analog.out_noise == 0:
        return 1.0
    return sum(training_noise(l)[0] for l in layers) / len(layers) / profile.analog.out_noise
