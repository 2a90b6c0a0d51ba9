"""Hardware-aware training (HWA) of a standalone network: the one recipe that the full-analog
HWA baseline, LionHEART's retraining and ODiMo's fine-tuning share with the adaptation stage.

The analog side of the recipe lives in the analog layers themselves
(:func:`mps.supernet.analog.rpu_config_from_profile`: training-time weight noise, output noise,
DAC/ADC, clipping and channel-wise remapping, all aihwkit's); this module only runs the loop
around them, the same way :mod:`mps.stages.adapt` runs its fairness steps: plain torch SGD
(Nesterov) with a cosine schedule over every trainable parameter, then aihwkit's post-update
step (:func:`mps.supernet.analog.clip_analog`, what ``AnalogSGD`` would call) after each
update.  Following aihwkit's HWA tutorial and LionHEART (``lionheart/methods/LH.py``: the
whole network retrained, digital layers and BatchNorm included), every parameter trains.

Each step draws its batch from a generator seeded by ``(seed, step)``, so the same seed and
settings give the same weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mps import data as mdata
from mps.runtime import progress, resolve_device
from mps.analog.tiles import clip_analog, equalize_analog_gradients, sync_gradient_scaling
from mps.training import check_finite, epoch_generator, iterate_batches, sgd


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Every parameter but aihwkit's ``analog_ctx`` placeholders (the torch tile's weight is a
    parameter of its own, trained by plain autograd)."""
    return [p for n, p in model.named_parameters() if p.requires_grad and not n.endswith("analog_ctx")]


def finetune(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, batch_size: int, lr: float,
             momentum: float, weight_decay: float, seed: int, device: str = "cpu", augment: bool = False,
             fill: torch.Tensor | None = None, desc: str = "hwa", equalize: bool = False) -> dict[str, float]:
    """Train ``model`` in place for ``steps`` SGD steps (batches of ``x``/``y``, reshuffled each
    pass); returns the mean training loss of the first and last tenth of the steps."""
    device = str(resolve_device(device))  # params' "auto" works here too
    model.to(device).train()
    sync_gradient_scaling(model)
    optimizer = sgd(trainable_parameters(model), lr, momentum, weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, steps))
    losses: list[float] = []
    step, epoch = 0, 0
    bar = progress(None, desc, total=steps)
    while step < steps:
        gen = epoch_generator(seed, epoch, salt=29)
        for idx in iterate_batches(len(x), batch_size, gen, drop_last=len(x) >= batch_size):
            if step >= steps:
                break
            xb = mdata.augment_batch(x[idx], gen, fill=fill) if augment else x[idx]
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(xb.to(device)), y[idx].to(device))
            check_finite(loss, f"{desc} step {step + 1}")
            loss.backward()
            if equalize:
                equalize_analog_gradients(model)
            optimizer.step()
            clip_analog(model)
            scheduler.step()
            losses.append(float(loss.item()))
            step += 1
            bar.update(1)
        epoch += 1
    bar.close()
    model.eval()
    tenth = max(1, len(losses) // 10)
    return {"loss_first": sum(losses[:tenth]) / tenth, "loss_last": sum(losses[-tenth:]) / tenth, "steps": steps}
