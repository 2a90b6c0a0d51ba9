"""The shared hardware-aware-training recipe (mps.hwa) on real aihwkit layers: a zero learning
rate changes nothing, and HWA fine-tuning does not lower a straight conversion's accuracy."""

from __future__ import annotations

import copy

import numpy as np
import torch

from conftest import tiny_params
from mps.evaluation import drift_accuracy_grid
from mps.hwa import finetune
from mps.stages.common import eval_set, hardware_profile, load_splits
from mps.stages.pretrain import load_pretrained
from mps.supernet import realize
from mps.analog.tiles import analog_layers, clip_analog

DAY = 86400.0


def _straight(pretrained_path):
    model, ckpt = load_pretrained(pretrained_path)
    shape = tuple(ckpt["image_shape"])
    return realize(model, "analog", hardware_profile(tiny_params()), shape)


def _tile_weights(model):
    return [t.tile.get_weights()[0].clone() for layer in analog_layers(model) for t in layer.analog_tiles()]


def test_zero_learning_rate_moves_weights_only_by_the_post_update_clip(tiny_data, tiny_pretrained):
    """The HWA loop itself (noisy forwards, backward, optimizer) must not move weights: with
    lr = 0 every analog tile holds its converted weights, up to aihwkit's post-update step
    (the profile's LAYER_GAUSSIAN clip, applied once per step), and the digital parameters are
    untouched."""
    splits = load_splits(tiny_data)
    model = _straight(tiny_pretrained)
    clipped = copy.deepcopy(model)
    for _ in range(3):
        clip_analog(clipped)
    digital = {n: p.detach().clone() for n, p in model.named_parameters() if ".analog_module." not in n
               and not n.endswith("analog_ctx")}
    finetune(model, *splits.train, steps=3, batch_size=32, lr=0.0, momentum=0.9, weight_decay=0.0, seed=0,
             device="auto")  # params' default device
    for a, b in zip(_tile_weights(clipped), _tile_weights(model)):
        assert torch.equal(a, b)
    for n, p in model.named_parameters():
        if n in digital:
            assert torch.equal(p.detach(), digital[n]), n


def test_hwa_finetuning_does_not_lower_the_straight_conversion(tiny_data, tiny_pretrained):
    """Same programming-noise seeds before and after (a paired comparison); the tiny model is
    under-trained, so HWA on its training split should help, and must not hurt beyond noise."""
    cfg = tiny_params().adapt
    splits = load_splits(tiny_data)
    data = eval_set(splits, "val", None, 0, calib_batches=2, device="cpu")
    model = _straight(tiny_pretrained)
    straight = drift_accuracy_grid(model, data, [DAY], 4, seed=11)[:, 0]
    stats = finetune(model, *splits.train, steps=40, batch_size=cfg.batch_size, lr=cfg.lr, momentum=cfg.momentum,
                     weight_decay=cfg.weight_decay, seed=0)
    hwa = drift_accuracy_grid(model, data, [DAY], 4, seed=11)[:, 0]
    assert stats["steps"] == 40 and stats["loss_last"] < stats["loss_first"]
    # one standard error of the paired difference of the 4 seeds is the tolerance
    se = float(np.std(hwa - straight, ddof=1) / np.sqrt(len(hwa)))
    assert hwa.mean() >= straight.mean() - se, (straight, hwa)
