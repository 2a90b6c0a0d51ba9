"""Figure 4: what one training step costs per operator, and the supernet's fairness step.

Uniform sub-networks of the supernet (every layer analog, int8, fp16 or skip; layers that
cannot take the operator fall back as :meth:`Supernet.uniform_mapping` does) in training
mode, forward + backward of one batch; then the adaptation stage's strict-fairness step
(:func:`mps.stages.adapt.fair_step`: K paths, accumulated gradients, one SGD update, analog
weight clipping) against a plain FP32 step (forward + backward + SGD update) of the pretrained
model.  All variants run round-robin on the same batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from benchmarks.common import Figure, Inputs, Stats, interleaved, ratio

TITLE = "4. Training step cost per operator, and the supernet fairness step"
TEXT = ("Seconds per training step (forward + backward) of the uniform sub-networks of the supernet, and of the "
        "adaptation stage's fairness step (all K paths + one update) vs a plain FP32 step of the pretrained model "
        "(forward + backward + update). Same batch for all, round-robin.")


def run(inp: Inputs) -> Figure:
    fig = Figure("training", TITLE, TEXT)
    reason = inp.missing(inp.supernet_path, inp.pretrained_path, inp.data_dir)
    if reason:
        fig.skip(reason)
        return fig
    from mps.stages.adapt import fair_step
    from mps.stages.common import load_splits
    from mps.stages.pretrain import load_pretrained
    from mps.supernet import load_supernet
    from mps.training import sgd

    cfg = inp.params.adapt
    batch = 32 if inp.quick else 128
    supernet, _ = load_supernet(inp.supernet_path)
    splits = load_splits(inp.data_dir)
    x, y = splits.train[0][:batch], splits.train[1][:batch]
    batch = len(x)
    supernet.train()

    ops = [op for op in ("analog", "int8", "fp16", "skip") if any(op in a for a in supernet.allowed.values())]
    mappings = {op: supernet.uniform_mapping(op) for op in ops}

    def path_step(op: str):
        def step() -> None:
            supernet.set_mapping(mappings[op])
            supernet.zero_grad(set_to_none=True)
            F.cross_entropy(supernet(x), y).backward()
        return step

    optimizer = sgd(supernet.weight_parameters(), cfg.lr, cfg.momentum, cfg.weight_decay)
    generator = torch.Generator().manual_seed(inp.params.seed)

    def fairness() -> None:
        fair_step(supernet, x, y, optimizer, generator, "benchmark fairness step")

    model, _ = load_pretrained(inp.pretrained_path)
    model.train()
    fp32_opt = sgd(model.parameters(), cfg.lr, cfg.momentum, cfg.weight_decay)

    def fp32_step() -> None:
        fp32_opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        fp32_opt.step()

    variants = {f"all-{op}": path_step(op) for op in ops}
    variants["fairness step"] = fairness
    variants["fp32 step"] = fp32_step
    stats = interleaved(variants, inp.runs, warmup=1)

    k = max(len(a) for a in supernet.allowed.values())
    for op in ops:
        on = sum(1 for m in mappings[op].values() if m == op)
        fig.add_stats(f"all-{op} sub-network: forward + backward", stats[f"all-{op}"], "s/step",
                      note=f"batch {batch}; {on}/{len(mappings[op])} layers {op}")
    fig.add_stats("plain FP32 step (forward + backward + SGD update)", stats["fp32 step"], "s/step",
                  note=f"batch {batch}, pretrained model")
    fig.add_stats("supernet fairness step (adapt.fair_step)", stats["fairness step"], "s/step",
                  note=f"K = {k} paths on the same batch, one SGD update, analog clipping")
    for op in ops:
        fig.add_stats(f"all-{op} step / FP32 step", ratio(stats[f"all-{op}"], stats["fp32 step"]), "x")
    fig.add_stats("fairness step / FP32 step", ratio(stats["fairness step"], stats["fp32 step"]), "x")
    paths = Stats([sum(stats[f"all-{op}"].values[i] for op in ops) for i in range(inp.runs)])
    fig.add_stats("fairness step / sum of the uniform path steps", ratio(stats["fairness step"], paths), "x",
                  note="~1: the fairness step costs its K paths; > 1: overhead (update, clipping, mixing)")
    allocator_rows(fig, inp, batch)
    return fig


def allocator_rows(fig: Figure, inp: Inputs, batch: int) -> None:
    """The fairness step with glibc's default malloc vs the tuned one (mps.runtime.tune_glibc_malloc),
    each in a fresh process on the same seeds; the losses of the steps must be identical."""
    from benchmarks.throughput import run_process

    common = ["--task", "fair-step", "--batch-size", str(batch), "--steps", "2" if inp.quick else "3"]
    names = {"default malloc": ["--allocator", "default"], "tuned malloc": ["--allocator", "tuned"]}
    out: dict[str, list[dict]] = {n: [] for n in names}
    for _ in range(inp.runs):
        for name, extra in names.items():
            out[name].append(run_process(inp, [*common, *extra]))
    seconds = {n: Stats([r["seconds"][0] for r in rs]) for n, rs in out.items()}
    same = all(r["grids"] == out["default malloc"][0]["grids"] for rs in out.values() for r in rs)
    for name in names:
        fig.add_stats(f"fairness step, fresh process, {name}", seconds[name], "s/step",
                      note=f"batch {batch}; median of the timed steps")
    fig.add_stats("fairness step speed-up from tuned malloc", ratio(seconds["default malloc"], seconds["tuned malloc"]),
                  "x", note="identical losses" if same else "NOT identical losses")
