"""Hardware-aware adapted candidates (the paper's MPAAS variant): fill the tiles a layer already occupies.

An analog layer pays for whole tiles: ResNet8's ``layer1.0.conv1`` (16 x 144 weights) uses
under 1 % of one 512 x 512 tile, yet its area, energy per MVM and latency are the tile's.
With ``space.search_space: mpaas`` the supernet offers one more operator, ``analog_wide``, on
*adaptable pairs*: a producer weight layer whose output feeds only a consumer weight layer,
optionally through a BatchNorm and an element-wise activation:

* ResNet basic blocks: ``conv1 -> bn1 -> relu -> conv2`` (block adaptation);
* ViT MLPs: ``fc1 -> GELU -> fc2`` (weight-layer resizing of the hidden width).

A model declares its pairs with a method ``mpaas_pairs() -> [(producer, norm | None, consumer)]``
(module names); models without it, or whose pairs cannot be widened, get the plain space.

Which shapes: the pair's hidden width ``C`` (producer out-channels/features = consumer
in-channels/features) grows to the largest ``W`` such that *both* layers still need exactly
the tiles they need at width ``C``: producer rows ``W <= ceil(C / tile_rows) * tile_rows``,
consumer columns ``W * kh * kw <= ceil(C * kh * kw / tile_cols) * tile_cols``.  Nothing else
changes: kernel, stride, padding, bias, the consumer's outputs (so residual additions and the
rest of the network are untouched).  Pairs where ``W == C`` offer no adapted candidate.

How the neighbours follow: the two layers of a pair take ``analog_wide`` together or not at
all (a *tie*: a mapping with one wide and the other not is refused; samplers repair it by
letting the consumer follow the producer).  The BatchNorm between them is held at width
``W`` (:class:`WidthAdaptiveBatchNorm`); plain paths use its first ``C`` channels, which are
the pretrained ones.  Weight initialisation makes the adapted pair start as the plain one:
original rows/columns copied, the producer's new output rows small random, the consumer's new
input columns zero (so the new channels contribute nothing until trained).

Costs: the same tiles, hence the same analog MVM energy and latency per output position; the
activations crossing the tile periphery grow with the width, and the cost model charges that
traffic (so energy rises by exactly the extra activation bytes; see ``tests/test_mpaas.py``).
Attention heads / projection widths of the ViT are not adapted (the q/k/v split would need a
head-aware widening of three matrices at once); they keep the plain operators.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from mps.config import ConfigError
from mps.layer_info import LayerInfo

WIDE = "analog_wide"
NEW_ROW_SCALE = 0.1  # new producer rows ~ N(0, (0.1 * std of the pretrained rows)^2)


@dataclass(frozen=True)
class AdaptedPair:
    """One adaptable producer -> (norm) -> consumer pair and its widened shapes."""

    producer: str
    norm: str | None
    consumer: str
    width: int            # consumer inputs W on the adapted path (= the norm's width)
    base_width: int       # consumer inputs C of the plain network
    blocks: tuple[int, int]   # (producer output blocks, consumer input blocks), see declared_pairs
    producer_info: LayerInfo  # the widened layers' descriptions (for the cost model)
    consumer_info: LayerInfo


def declared_pairs(model: nn.Module) -> list[tuple[str, str | None, str, tuple[int, int]]]:
    """``model.mpaas_pairs()`` as (producer, norm, consumer, blocks).

    ``blocks = (p, c)``: the hidden features are ``p`` equal blocks in the producer's outputs
    and ``c`` in the consumer's inputs, and every block grows by the same amount (attention:
    ``qkv`` outputs are 3 x heads blocks of one head's width, ``proj`` inputs heads blocks);
    plain pairs are ``(1, 1)``.
    """
    method = getattr(model, "mpaas_pairs", None)
    out = []
    for p in (method() if callable(method) else []):
        producer, norm, consumer, *rest = p
        out.append((producer, norm, consumer, tuple(rest[0]) if rest else (1, 1)))
    return out


def widened_info(info: LayerInfo, out_features: int | None = None, in_features: int | None = None) -> LayerInfo:
    out_f = out_features or info.out_features
    in_f = in_features or info.in_features
    wide = replace(info, out_features=out_f, in_features=in_f)
    return replace(wide, macs=info.out_positions * wide.out_features * wide.weight_cols)


def wide_width(producer: LayerInfo, consumer: LayerInfo, tile_rows: int, tile_cols: int,
               blocks: tuple[int, int] = (1, 1)) -> int:
    """Largest hidden block width that keeps both layers on the tiles they occupy at the plain
    width (``blocks`` as in :func:`declared_pairs`; plain pairs: the hidden width itself)."""
    pb, cb = blocks
    b = producer.out_features // pb
    area = consumer.kernel_size[0] * consumer.kernel_size[1]
    by_rows = (math.ceil(pb * b / tile_rows) * tile_rows) // pb
    by_cols = (math.ceil(cb * b * area / tile_cols) * tile_cols) // (cb * area)
    return max(b, min(by_rows, by_cols))


def plan_pairs(model: nn.Module, infos: Mapping[str, LayerInfo], allowed: Mapping[str, list[str]] | None,
               profile) -> list[AdaptedPair]:
    """The model's declared pairs that can be widened (checked against the traced layers)."""
    modules = dict(model.named_modules())
    used: set[str] = set()
    plans = []
    for producer, norm, consumer, blocks in declared_pairs(model):
        for name in (producer, consumer):
            if name not in infos:
                raise ConfigError(f"mpaas pair ({producer}, {consumer}): {name} is not a Conv2d/Linear of the model; "
                                  "fix: correct the model's mpaas_pairs()")
        p, c = infos[producer], infos[consumer]
        pb, cb = blocks
        if (p.out_features % pb or c.in_features % cb or p.out_features // pb != c.in_features // cb
                or p.groups != 1 or c.groups != 1):
            raise ConfigError(f"mpaas pair ({producer}, {consumer}): {producer} has {p.out_features} outputs in "
                              f"{pb} block(s), {consumer} takes {c.in_features} in {cb} (groups {p.groups}, "
                              f"{c.groups}); fix: pair layers where one feeds the other, with blocks of equal width")
        if norm is not None and (blocks != (1, 1) or not isinstance(modules.get(norm), nn.BatchNorm2d)):
            raise ConfigError(f"mpaas pair ({producer}, {consumer}): {norm} is not a BatchNorm between plain "
                              "(1, 1)-block layers; fix: name the BatchNorm between the two layers, or None")
        if used & {producer, consumer}:
            raise ConfigError(f"mpaas pair ({producer}, {consumer}): a layer is in two pairs; fix: list each layer once")
        if allowed is not None and not ("analog" in allowed[producer] and "analog" in allowed[consumer]):
            continue  # the space keeps one of them digital: nothing to adapt
        block = wide_width(p, c, profile.analog.tile_rows, profile.analog.tile_cols, blocks)
        if block == p.out_features // pb:
            continue
        used |= {producer, consumer}
        plans.append(AdaptedPair(producer, norm, consumer, cb * block, c.in_features, blocks,
                                 widened_info(p, out_features=pb * block), widened_info(c, in_features=cb * block)))
    return plans


def _block_positions(blocks: int, old: int, new: int) -> torch.Tensor:
    """Where the ``old`` features of each of ``blocks`` blocks sit after the blocks grow to ``new``."""
    return torch.tensor([i * (new // blocks) + r for i in range(blocks) for r in range(old // blocks)])


@torch.no_grad()
def widen_layer(layer: nn.Module, shape: LayerInfo, generator: torch.Generator | None = None,
                blocks: tuple[int, int] = (1, 1)) -> nn.Module:
    """A float Conv2d/Linear of ``shape``'s width holding ``layer``'s weights: original rows
    and columns copied into the start of each (output, input) block, new output rows small
    random, new input columns zero."""
    w = layer.weight
    if isinstance(layer, nn.Conv2d):
        new = nn.Conv2d(shape.in_features, shape.out_features, layer.kernel_size, layer.stride, layer.padding,
                        layer.dilation, layer.groups, layer.bias is not None, layer.padding_mode)
    elif isinstance(layer, nn.Linear):
        new = nn.Linear(shape.in_features, shape.out_features, layer.bias is not None)
    else:
        raise TypeError(f"cannot widen {type(layer).__name__}")
    new = new.to(w.device, w.dtype)
    rows = _block_positions(blocks[0], w.shape[0], new.weight.shape[0]).to(w.device)
    cols = _block_positions(blocks[1], w.shape[1], new.weight.shape[1]).to(w.device)
    noise = torch.randn(new.weight.shape, generator=generator, dtype=w.dtype).to(w.device)
    new.weight.copy_(noise * NEW_ROW_SCALE * w.std())
    new_cols = torch.ones(new.weight.shape[1], dtype=torch.bool, device=w.device)
    new_cols[cols] = False
    new.weight[:, new_cols] = 0.0
    new.weight[rows[:, None], cols[None, :]] = w
    if layer.bias is not None:
        new.bias.zero_()
        new.bias[rows] = layer.bias
    return new


class WidthAdaptiveBatchNorm(nn.BatchNorm2d):
    """A BatchNorm held at the wide width that normalises whatever width arrives: plain paths
    (``C`` channels) use and update the first ``C`` entries only, the adapted path all ``W``."""

    @classmethod
    @torch.no_grad()
    def from_norm(cls, bn: nn.BatchNorm2d, width: int) -> "WidthAdaptiveBatchNorm":
        new = cls(width, bn.eps, bn.momentum, bn.affine, bn.track_running_stats).to(bn.weight.device)
        c = bn.num_features
        if bn.affine:
            new.weight[:c] = bn.weight
            new.bias[:c] = bn.bias
        if bn.track_running_stats:
            new.running_mean[:c] = bn.running_mean
            new.running_var[:c] = bn.running_var
            new.num_batches_tracked.copy_(bn.num_batches_tracked)
        return new

    @torch.no_grad()
    def to_plain(self, width: int) -> nn.BatchNorm2d:
        """An ordinary BatchNorm2d of the first ``width`` channels (for extracted models)."""
        bn = nn.BatchNorm2d(width, self.eps, self.momentum, self.affine, self.track_running_stats).to(self.weight.device)
        if self.affine:
            bn.weight.copy_(self.weight[:width])
            bn.bias.copy_(self.bias[:width])
        if self.track_running_stats:
            bn.running_mean.copy_(self.running_mean[:width])
            bn.running_var.copy_(self.running_var[:width])
            bn.num_batches_tracked.copy_(self.num_batches_tracked)
        return bn

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1] > self.num_features:
            raise ValueError(f"expected (N, <= {self.num_features}, H, W) input, got {tuple(x.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        n = x.shape[1]
        # the same momentum / cumulative-average rule as nn.BatchNorm2d, on the first n channels
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        use_batch = self.training or not self.track_running_stats
        return F.batch_norm(
            x,
            self.running_mean[:n] if self.track_running_stats else None,
            self.running_var[:n] if self.track_running_stats else None,
            self.weight[:n] if self.affine else None,
            self.bias[:n] if self.affine else None,
            use_batch, factor, self.eps)


def check_ties(mapping: Mapping[str, str], ties: Mapping[str, str]) -> list[str]:
    """Pairs whose two layers disagree about ``analog_wide`` (empty when the mapping is valid)."""
    return [f"{producer}={mapping.get(producer)} / {consumer}={mapping.get(consumer)}"
            for consumer, producer in ties.items()
            if (mapping.get(producer) == WIDE) != (mapping.get(consumer) == WIDE)]


def repair_ties(mapping: Mapping[str, str], ties: Mapping[str, str]) -> dict[str, str]:
    """Make a sampled mapping valid: the consumer follows the producer (wide with it; a consumer
    drawn wide under a plain producer falls back to plain ``analog``)."""
    out = dict(mapping)
    for consumer, producer in ties.items():
        if out[producer] == WIDE:
            out[consumer] = WIDE
        elif out[consumer] == WIDE:
            out[consumer] = "analog"
    return out
