"""The choice layer: one weight layer of the network, realisable by several operators.

Weights: every operator keeps its **own copy** of the layer's weights, all initialised from
the pretrained layer, rather than sharing one latent tensor.  Why:
  * interference: an analog path trained with weight/output noise and clipping, an int8 path
    whose weights snap to a per-channel grid, and an fp16 path want different optima; with one
    shared tensor, fairness training would pull it between them and every path would be a
    compromise (the interference one-shot NAS suffers from when candidates share weights);
  * aihwkit owns its analog weights inside tiles (with their own scaling and clipping), so
    sharing would mean copying a latent tensor into every tile at every step;
  * extraction is trivial and exact: the chosen operator *is* the deployable layer;
  * memory: the cost is (number of operators) x the weights, small for the networks this
    targets (ResNet8: 78 k parameters -> ~0.3 M); activations dominate training memory anyway.

Forward modes (:attr:`ChoiceLayer.mode`):
  * ``fixed``: run the active operator only (a sub-network; also the sampled path of
    fairness training, which sets ``active`` before each forward);
  * ``mixture``: softmax(alpha / tau)-weighted sum of all operators' outputs;
  * ``gumbel``: Gumbel-softmax relaxation over the alphas (hard straight-through if
    ``hard``), sampled from the layer's generator.

Operators of other widths (the MPAAS ``analog_wide`` candidate, :mod:`mps.supernet.adapted`):
in ``fixed`` mode the mapping guarantees matching widths (tied pairs); in the relaxed modes
each operator reads the first features of the input it expects and outputs are zero-padded
to the widest before they are mixed.  In ``mixture`` mode an operator whose weight is exactly
zero (an excluded one: :meth:`Supernet.excluding` sets its alpha to -1e4) is left out, so a
search of the plain space on an MPAAS supernet (ODiMo's) mixes plain widths only.  Padding at
the end is right for pairs of one block (an MLP's hidden width, a conv block's channels) but
not for an attention block's ``qkv``, whose outputs the block splits into 3 x heads equal
blocks: padded narrow outputs would land in the wrong heads.  Measured on the ViT before this
rule (2026-12-03): the mixture of two near-identical operators (int8 and fp16, uniform
weights) had cross-entropy 4.4 where either alone had 0.33, and ODiMo ended at chance.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mps.layer_info import LayerInfo
from mps.supernet.operators import fit_width

MODES = ("fixed", "mixture", "gumbel")


class ChoiceLayer(nn.Module):
    def __init__(self, info: LayerInfo, operators: dict[str, nn.Module],
                 shapes: dict[str, LayerInfo] | None = None):
        super().__init__()
        if not operators:
            raise ValueError(f"{info.name}: a choice layer needs at least one operator")
        self.info = info
        # (in, out) features per operator; an adapted operator may differ from the layer's own
        shapes = shapes or {}
        self.widths = {op: (shapes.get(op, info).in_features, shapes.get(op, info).out_features) for op in operators}
        self.ops = nn.ModuleDict(operators)
        self.alphas = nn.Parameter(torch.zeros(len(operators)))
        self.active: str = next(iter(operators))
        self.mode: str = "fixed"
        self.tau: float = 1.0
        self.hard: bool = False

    @property
    def op_names(self) -> list[str]:
        return list(self.ops.keys())

    def set_active(self, op: str) -> None:
        if op not in self.ops:
            raise KeyError(f"{self.info.name}: operator {op!r} not allowed here (allowed: {', '.join(self.ops)})")
        self.active = op
        self.mode = "fixed"

    def probabilities(self, tau: float | None = None) -> torch.Tensor:
        return F.softmax(self.alphas / (tau or self.tau), dim=0)

    def log_probability(self, op: str) -> torch.Tensor:
        """log softmax(alpha)[op]: the layer's share of a sub-network's supernet score."""
        return F.log_softmax(self.alphas, dim=0)[self.op_names.index(op)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "fixed":
            return self.ops[self.active](x)
        if self.mode == "mixture":
            weights = self.probabilities()
        elif self.mode == "gumbel":
            weights = F.gumbel_softmax(self.alphas, tau=self.tau, hard=self.hard)
        else:
            raise ValueError(f"unknown mode {self.mode!r}; use one of {MODES}")
        dim = 1 if self.info.kind == "conv" else -1
        terms = list(zip(weights, self.ops.items()))
        if self.mode == "mixture":  # a zero softmax weight adds no value and no gradient (module docstring)
            terms = [t for t in terms if float(t[0].detach()) != 0.0] or terms
        width = max(self.widths[name][1] for _, (name, _) in terms)
        out = None
        for w, (name, op) in terms:
            y = w * fit_width(op(fit_width(x, self.widths[name][0], dim)), width, dim)
            out = y if out is None else out + y
        return out

    def extra_repr(self) -> str:
        return f"{self.info.name}: ops={self.op_names}, mode={self.mode}, active={self.active}"
