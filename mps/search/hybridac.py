"""HybridAC ("Harmonica"): every layer on analog tiles, with the few input lines most sensitive
to the tiles' imperfections computed beside them on a digital unit, and no retraining.

The peer issue 23 names as Harmonica (Behnam et al., arXiv 2208.13896; the MPS paper's
CIFAR-10 table has it at 87.41 %).  That arXiv entry is titled "An Algorithm-Hardware
Co-design Framework to Overcome Imperfections of Mixed-signal DNN Accelerators" and calls
the framework HybridAC.  Neither its code nor its full text could be found from here (the
``search`` tool's code, issue and page corpora hold only the abstract), so this module
implements the abstract's description:

    "a data-movement-aware weight selection method that does not require retraining [...].
    It computes a fraction of the results with a small number of variation-sensitive
    weights using a robust digital accelerator, while the main computation is performed in
    analog PIM units."

Every choice the abstract leaves open is ours, and says why:

* **unit of selection: one input line of the crossbar** (a conv's input channel at one
  kernel offset, a linear layer's input feature), with its whole column of weights.
  "Data-movement-aware" is read as: the digital unit needs only the inputs of the lines it
  holds, and the analog tile keeps every output, so no partial sums move but the digital
  unit's;
* **sensitivity of a line** (:func:`line_sensitivity`): ``sum_o F_{o,line} * w_{o,line}^2``,
  the loss increase a *relative* weight error causes through that line (``F``: the empirical
  Fisher information, from per-example gradients of the float network on seeded training
  examples; no retraining).  The PCM model's drift variability and read noise scale with the
  conductance (aihwkit ``PCMLikeNoiseModel``), so a relative error is what the tiles add;
* **budget: a share of the network's MACs**, filled across layers by sensitivity per MAC
  moved (:func:`select_lines`), so one number sets the point on the analog-MAC axis the
  search stage scores, and the lines that buy the most robustness for the analog MACs they
  cost go first.  Measured on the default run (2026-12-04; README "HybridAC"): the first
  reading, the same share of every layer's lines ranked by ``E[x^2] * sum_o w^2``, gained
  +0.4 / +1.6 points at 1 day / 1 year over the straight conversion at 80 % analog MACs; the
  same score ranked across layers per MAC gained +1.2 / +3.0 at 95 %, and the Fisher score
  across layers +1.1 / +2.9 (per layer, +0.1 / +0.5 at 95 %).  Ranking across layers is what
  matters; the Fisher score is kept because, unlike the input energy, it compares layers on
  one scale (the loss);
* **the two halves**: the analog half is aihwkit's conversion of the layer with the
  selected lines' weights set to zero (channel-wise remapping then spreads each output
  channel's remaining weights over the full conductance range, which is part of what
  taking the largest weights off the tile buys); the digital half holds the selected lines'
  weights only, in FP32 (LionHEART's digital layers here are FP32 too), and no bias;
* **not modelled**: HybridAC's hardware changes (lower ADC precision, hybrid quantization,
  the peripheral savings).  The chip is the hardware profile's, as for every method.

The result is a set of networks, one per fraction, measured by the shared evaluator
(``benchmarks/hybridac.py``).  It is not one of the search stage's baselines: a mapping
file assigns one operator per layer, and HybridAC splits every layer.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mps.config import ConfigError
from mps.layer_info import LayerInfo
from mps.supernet.convert import _set_submodule, trace_layers, weight_layers
from mps.supernet.operators import Analog, BuildContext


def check_layers(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, LayerInfo]:
    """The weight layers' traced infos; stops before any work if a layer cannot go on analog
    tiles (HybridAC puts every layer there), naming the layer."""
    infos, _ = trace_layers(model, input_shape)
    for name, layer in weight_layers(model):
        reason = Analog.unsupported_reason(layer, infos[name])
        if reason:
            raise ConfigError(f"layer {name}: HybridAC puts every layer on analog tiles, and {reason}; "
                              "fix: use a model whose weight layers are all analog-capable")
    return infos


def line_sensitivity(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """For every Conv2d/Linear of ``model``, the sensitivity of each input line (a tensor shaped
    like one output channel's weights): ``sum_o F_{o,line} * w_{o,line}^2``, with ``F`` the
    empirical Fisher information of the weight (the mean of its squared per-example loss
    gradient over ``x``, ``y``; batch norm in eval mode).  ``F * (s * w)^2 / 2`` is the
    second-order loss increase a relative weight error of std ``s`` causes, so the score ranks
    lines by what the tiles' conductance-proportional errors cost, across layers alike."""
    layers = dict(weight_layers(model))
    squares = {name: torch.zeros_like(layer.weight) for name, layer in layers.items()}
    was_training = model.training
    model.eval()
    try:
        for i in range(len(x)):  # per example: the Fisher needs each example's own gradient
            model.zero_grad(set_to_none=True)
            F.cross_entropy(model(x[i:i + 1]), y[i:i + 1]).backward()
            for name, layer in layers.items():
                squares[name] += layer.weight.grad.detach() ** 2
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return {name: (squares[name] / len(x) * layers[name].weight.detach() ** 2).sum(0) for name in layers}


def select_lines(infos: dict[str, LayerInfo], sensitivity: dict[str, torch.Tensor],
                 fraction: float) -> dict[str, torch.Tensor]:
    """For every weight layer, a boolean mask shaped like one output channel's weights: the input
    lines moved to the digital unit.  Lines are taken in order of sensitivity per MAC (each line
    of a layer carries ``macs / lines`` of its MACs), across all layers, while the MACs moved stay
    within ``fraction`` of the network's; a line that would overshoot is passed over for cheaper
    ones after it.  Ties keep network and line order, so the same weights give the same set."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction {fraction} is not in [0, 1]; fix: give the share of MACs to move to digital")
    budget = fraction * sum(info.macs for info in infos.values())
    candidates = []
    for name, score in sensitivity.items():
        per_line = infos[name].macs / score.numel()
        candidates += [(-(value / per_line), name, j, per_line) for j, value in enumerate(score.flatten().tolist())]
    order = {name: i for i, name in enumerate(sensitivity)}
    candidates.sort(key=lambda c: (c[0], order[c[1]], c[2]))
    masks = {name: torch.zeros(score.numel(), dtype=torch.bool) for name, score in sensitivity.items()}
    moved = 0.0
    for _, name, j, macs in candidates:
        if moved + macs <= budget * (1 + 1e-12):
            masks[name][j] = True
            moved += macs
    return {name: masks[name].view(sensitivity[name].shape) for name in sensitivity}


class HybridLayer(nn.Module):
    """One weight layer split in two: the analog operator (the unselected lines) plus the
    digital layer (the selected lines); their outputs add, as the digital unit's partial sums
    would join the tile's."""

    def __init__(self, analog: Analog, digital: nn.Module):
        super().__init__()
        self.analog = analog
        self.digital = digital

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.analog(x) + self.digital(x)


@dataclass(frozen=True)
class HybridCost:
    """The search objectives' cost axes for a HybridAC network."""

    analog_mac_ratio: float   # share of the network's MACs left on analog tiles
    digital_weights: int      # weights on the digital unit
    digital_size_mb: float    # their storage at FP32 (4 bytes each)
    protected_lines: int      # input lines moved to the digital unit, all layers


def hybrid_cost(infos: dict[str, LayerInfo], masks: dict[str, torch.Tensor]) -> HybridCost:
    """Every line of a layer carries the same MACs (out channels x output positions), so a layer's
    analog MACs shrink by the share of its lines that moved."""
    total = sum(info.macs for info in infos.values())
    analog = sum(info.macs * (1.0 - masks[n].float().mean().item()) for n, info in infos.items())
    lines = sum(int(m.sum()) for m in masks.values())
    weights = sum(int(masks[n].sum()) * info.weight_rows * info.groups for n, info in infos.items())
    return HybridCost(analog / total if total else 0.0, weights, weights * 4 / 1e6, lines)


@torch.no_grad()
def build_hybrid(model: nn.Module, masks: dict[str, torch.Tensor], profile,
                 input_shape: tuple[int, ...]) -> nn.Module:
    """``model`` (float, changed in place and returned) with every weight layer replaced by a
    :class:`HybridLayer`: the selected lines on a digital FP32 copy, the rest on the profile's
    analog tiles."""
    infos = check_layers(model, input_shape)
    for name, layer in weight_layers(model):
        mask = masks[name].to(layer.weight.device)
        analog_part = copy.deepcopy(layer)
        analog_part.weight.mul_(~mask)
        digital_part = copy.deepcopy(layer)
        digital_part.weight.mul_(mask)
        digital_part.bias = None
        digital_part.eval()
        _set_submodule(model, name, HybridLayer(Analog.from_layer(analog_part, BuildContext(infos[name], profile)),
                                                digital_part))
    return model
