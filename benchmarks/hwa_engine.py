"""Figure 6: what hardware-aware training and analog evaluation cost on each engine.

Per model (ResNet8, ResNet20; the run's image shape, random weights: speed depends only on the
shapes and the chip model), all layers analog with the run's hardware profile, input ranges
calibrated as a straight conversion:

* one training step (forward + backward + SGD update + aihwkit's post-update step) of the
  direct-convolution engine (``analog_engine: fast``), of aihwkit's own forward on the same chip
  model (``analog_engine: aihwkit``), and of aihwkit's forward on the earlier dynamic chip model
  (``hardware/paper-dynamic.yaml``: what every training ran on before), against a plain FP32
  step of the same network; ratios to FP32;
* drift evaluation (program + drift to 1 day + forward of every image) on the same three and on
  the im2col eval engine of the dynamic chip model (what the pipeline evaluated with before), in
  images per second, and the speed-ups.
Every variant runs round-robin in this process, one batch of 128, median of the runs.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from benchmarks.common import REPO, Figure, Inputs, Stats, interleaved, ratio

TITLE = "6. Hardware-aware training and analog evaluation cost per engine"
TEXT = ("Seconds per training step (forward + backward + update + post-update step) of an all-analog network on "
        "the direct-convolution engine and on aihwkit's own forward, against the FP32 step of the same network; "
        "images/s of drift evaluation on both engines. Batch 128, round-robin, median of the runs.")
MODELS = ("resnet8", "resnet20")
BATCH = 128


def run(inp: Inputs) -> Figure:
    from mps.analog.calibration import calibrate_ranges
    from mps.analog.engine import use_engine
    from mps.analog.tiles import clip_analog, drift_analog, program_analog, reset_programming
    from mps.cost_model import load_hardware_profile
    from mps.models import build_model
    from mps.stages.common import hardware_profile
    from mps.supernet import realize
    from mps.training import evaluate_accuracy, sgd

    fig = Figure("hwa_engine", TITLE, TEXT)
    params = inp.params
    shape = (1, 28, 28) if params.data.dataset == "fashion-mnist" else (3, 32, 32)
    profile = hardware_profile(params)
    dynamic = load_hardware_profile(REPO / "hardware" / "paper-dynamic.yaml")
    torch.manual_seed(params.seed)
    batch = 32 if inp.quick else BATCH
    x = torch.randn(batch, *shape)
    y = torch.randint(0, 10, (batch,))
    eval_x = torch.randn(64 if inp.quick else 512, *shape)
    eval_y = torch.randint(0, 10, (len(eval_x),))
    models = MODELS[:1] if inp.quick else MODELS
    for name in models:
        fp32 = build_model(name, shape[0], 10, shape[-1])
        analog = realize(copy.deepcopy(fp32), "analog", profile, shape)
        calibrate_ranges(analog, x, 1, batch, params.seed)
        nets = {"fp32": fp32, "fast": analog, "aihwkit": copy.deepcopy(analog),
                "dynamic": realize(copy.deepcopy(fp32), "analog", dynamic, shape)}
        opts = {k: sgd([p for n, p in m.named_parameters() if not n.endswith("analog_ctx")], 0.01, 0.9, 0.0)
                for k, m in nets.items()}

        def step(key: str):
            def go() -> None:
                model = nets[key]
                model.train()
                with use_engine("aihwkit" if key in ("aihwkit", "dynamic") else "fast"):
                    opts[key].zero_grad(set_to_none=True)
                    F.cross_entropy(model(x), y).backward()
                    opts[key].step()
                    clip_analog(model)
            return go

        train = interleaved({k: step(k) for k in nets}, inp.runs, warmup=1)
        labels = (("fp32", "FP32"), ("fast", "direct engine"), ("aihwkit", "aihwkit forward"),
                  ("dynamic", "aihwkit forward, dynamic chip model (before)"))
        for key, label in labels:
            fig.add_stats(f"{name}: training step, {label}", train[key], "s/step", note=f"batch {batch}")
        for key, label in labels[1:]:
            fig.add_stats(f"{name}: analog training step / FP32 step, {label}", ratio(train[key], train["fp32"]), "x",
                          note="goal <= 3x (direct)" if key == "fast" else "")

        def evaluation(engine: str):
            def go() -> float:
                model = nets["dynamic" if engine in ("dynamic", "im2col") else "fast"]
                torch.manual_seed(params.seed)
                reset_programming(model)
                program_analog(model)
                drift_analog(model, 86400.0)
                with use_engine({"dynamic": "aihwkit", "im2col": "fast"}.get(engine, engine)):
                    return evaluate_accuracy(model, eval_x, eval_y, batch)
            return go

        ev = interleaved({e: evaluation(e) for e in ("fast", "aihwkit", "dynamic", "im2col")}, inp.runs, warmup=1)
        for e, label in (*labels[1:], ("im2col", "im2col engine, dynamic chip model (the pipeline before)")):
            fig.add_stats(f"{name}: program + drift + forward, {label}",
                          Stats([len(eval_x) / s for s in ev[e].values]), "images/s", note=f"{len(eval_x)} images")
        for e, label in (*labels[2:], ("im2col", "the im2col engine, dynamic chip model (the pipeline before)")):
            fig.add_stats(f"{name}: evaluation speed-up of the direct engine over {label}", ratio(ev[e], ev["fast"]),
                          "x", note="goal >= 20x" if e != "im2col" else "")
    return fig
