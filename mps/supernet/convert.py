"""Turning any model into a supernet, and the supernet's controls.

``convert_to_supernet`` walks an ``nn.Module`` (like ``torch.ao.quantization``'s converter),
traces one forward pass to record each Conv2d/Linear's :class:`LayerInfo` (shape, MACs,
output positions), decides which operators each layer may take (params' ``space`` section,
operator support, skip shape-matching), and swaps every weight layer for a
:class:`ChoiceLayer`.  Grouped/depthwise convs and the Linear layers inside attention blocks
are included; layers no operator can realise are an error naming the layer.
"""

from __future__ import annotations

import contextlib
import fnmatch
from typing import Callable, Iterable, Iterator, Mapping

import torch
from torch import nn

from mps.config import ConfigError, SpaceConfig
from mps.layer_info import LayerInfo
from mps.supernet.adapted import (WIDE, AdaptedPair, WidthAdaptiveBatchNorm, plan_pairs, repair_ties,
                                  widened_info)
from mps.supernet.choice import ChoiceLayer
from mps.supernet.operators import BuildContext, Operator, operator_class, skip_output_matches

WEIGHT_LAYERS = (nn.Conv2d, nn.Linear)


def weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every Conv2d/Linear in forward-definition order (module registration order)."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, WEIGHT_LAYERS)]


def layer_info_from(name: str, layer: nn.Module, output: torch.Tensor) -> LayerInfo:
    """LayerInfo of a conv-like (in_channels, kernel_size, groups) or linear-like
    (in_features) module from its attributes and one output of a single example."""
    # aihwkit layers set bias=False and keep a digital bias inside their tile module
    has_bias = isinstance(getattr(layer, "bias", None), torch.Tensor) or any(
        n.split(".")[-1] == "bias" for n, _ in layer.named_parameters())
    if hasattr(layer, "in_channels"):
        positions = int(output.shape[-1] * output.shape[-2])
        info = LayerInfo(name, "conv", layer.in_channels, layer.out_channels, tuple(layer.kernel_size),
                         layer.groups, has_bias, macs=0, out_positions=positions)
    else:
        positions = int(output.numel() // output.shape[-1])
        info = LayerInfo(name, "linear", layer.in_features, layer.out_features, has_bias=has_bias,
                         macs=0, out_positions=positions)
    return LayerInfo(**{**info.__dict__, "macs": positions * info.out_features * info.weight_cols})


@torch.no_grad()
def forward_one_sample(model: nn.Module, input_shape: tuple[int, ...],
                       hooks: Iterable[tuple[nn.Module, Callable]]) -> None:
    """One eval-mode forward pass of a single zero example with each ``(module, hook)``
    registered as a forward hook meanwhile; hooks removed and the model's mode restored after."""
    handles = [module.register_forward_hook(hook) for module, hook in hooks]
    was_training = model.training
    try:
        model.eval()
        model(torch.zeros((1, *input_shape)))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)


@torch.no_grad()
def trace_layers(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[dict[str, LayerInfo], dict[str, bool]]:
    """One forward pass of a single example: LayerInfo per weight layer, plus whether the
    parameter-free skip path reproduces each layer's output shape."""
    layers = weight_layers(model)
    infos: dict[str, LayerInfo] = {}
    skip_ok: dict[str, bool] = {}

    def hook(name):
        def record(module, inputs, output):
            info = layer_info_from(name, module, output)
            prev = infos.get(name)
            if prev is not None:  # a layer called twice per sample: its MACs add up
                info = LayerInfo(**{**info.__dict__, "macs": info.macs + prev.macs,
                                    "out_positions": info.out_positions + prev.out_positions})
            infos[name] = info
            skip_ok[name] = skip_output_matches(module, inputs[0][:1], output[:1])
        return record

    forward_one_sample(model, input_shape, [(m, hook(n)) for n, m in layers])
    unused = [n for n, _ in layers if n not in infos]
    if unused:
        raise ConfigError(f"layers never called in a forward pass: {', '.join(unused)}; fix: remove them from the model")
    return {n: infos[n] for n, _ in layers}, skip_ok


def allowed_operators(name: str, index: int, count: int, layer: nn.Module, info: LayerInfo,
                      space: SpaceConfig, skip_ok: bool) -> list[str]:
    """The operators a layer may take: params first, then what each operator supports."""
    wanted = list(space.operators)
    if index == 0 and space.first_layer is not None:
        wanted = list(space.first_layer)
    if index == count - 1 and space.last_layer is not None:
        wanted = list(space.last_layer)
    for pattern, ops in space.overrides.items():
        if fnmatch.fnmatchcase(name, pattern):
            wanted = list(ops)
    allowed = []
    for op in wanted:
        cls = operator_class(op)
        if cls.unsupported_reason(layer, info) is not None:
            continue
        if op == "skip" and not skip_ok:
            continue
        allowed.append(op)
    if not allowed:
        reasons = "; ".join(f"{op}: {operator_class(op).unsupported_reason(layer, info) or 'shape cannot be matched'}"
                            for op in wanted)
        raise ConfigError(f"layer {name}: none of its operators {wanted} can realise it ({reasons}); "
                          "fix: allow a digital operator for it under space.overrides")
    return allowed


def _set_submodule(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


class Supernet(nn.Module):
    """A model whose weight layers are choice layers, with its static layer table."""

    def __init__(self, model: nn.Module, infos: Mapping[str, LayerInfo], meta: Mapping[str, object]):
        super().__init__()
        self.model = model
        self.infos = dict(infos)
        self.meta = dict(meta)
        self.excluded: frozenset[str] = frozenset()  # operators hidden from samplers (see ``excluding``)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    # ---- layers
    def choice_layers(self) -> dict[str, ChoiceLayer]:
        return {name: self.model.get_submodule(name) for name in self.infos}

    @property
    def allowed(self) -> dict[str, list[str]]:
        return {name: [op for op in layer.op_names if op not in self.excluded]
                for name, layer in self.choice_layers().items()}

    @contextlib.contextmanager
    def excluding(self, operators: Iterable[str]) -> Iterator["Supernet"]:
        """Search a sub-space: the operators vanish from ``allowed``, from sampling and from
        the argmax (their alphas are pushed to -inf meanwhile and restored after)."""
        hidden = frozenset(operators)
        saved = [a.detach().clone() for a in self.alpha_parameters()]
        before = self.excluded
        self.excluded = before | hidden
        with torch.no_grad():
            for layer in self.choice_layers().values():
                for i, op in enumerate(layer.op_names):
                    if op in hidden:
                        layer.alphas[i] = -1e4
        try:
            yield self
        finally:
            self.excluded = before
            with torch.no_grad():
                for a, v in zip(self.alpha_parameters(), saved):
                    a.copy_(v)

    # ---- adapted (MPAAS) pairs
    @property
    def pairs(self) -> list[dict]:
        """The adapted pairs: producer, norm, consumer, width, base_width (meta, so they persist)."""
        return list(self.meta.get("adapted_pairs", []))

    @property
    def ties(self) -> dict[str, str]:
        """consumer -> producer of each adapted pair (they take ``analog_wide`` together)."""
        return {p["consumer"]: p["producer"] for p in self.pairs}

    def tie(self, mapping: Mapping[str, str]) -> dict[str, str]:
        """``mapping`` made valid for the adapted pairs (the consumer follows the producer)."""
        return repair_ties(mapping, self.ties)

    def layer_infos(self, mapping: Mapping[str, str]) -> list[LayerInfo]:
        """The layer table the cost model needs for ``mapping``: adapted layers at their width."""
        wide: dict[str, LayerInfo] = {}
        for p in self.pairs:
            if mapping.get(p["producer"]) == WIDE:
                wide[p["producer"]] = widened_info(self.infos[p["producer"]], out_features=p["producer_width"])
                wide[p["consumer"]] = widened_info(self.infos[p["consumer"]], in_features=p["width"])
        return [wide.get(name, info) for name, info in self.infos.items()]

    def costs(self, mapping: Mapping[str, str], profile):
        """Hardware objectives of a sub-network (``mps.cost_model.MappingCosts``)."""
        from mps.cost_model import mapping_costs

        return mapping_costs(self.layer_infos(mapping), mapping, profile)

    def alpha_parameters(self) -> list[nn.Parameter]:
        return [layer.alphas for layer in self.choice_layers().values()]

    def weight_parameters(self, frozen_ops: Iterable[str] = ()) -> Iterable[nn.Parameter]:
        """Trainable weights: not the alphas, and not aihwkit's ``analog_ctx`` placeholders (the
        torch tile's real weight is its own parameter, trained by plain autograd); nor the
        weights of the operators named in ``frozen_ops``."""
        skip = {id(p) for p in self.alpha_parameters()} | {id(p) for p in self._op_params(frozen_ops)}
        return (p for n, p in self.named_parameters() if id(p) not in skip and not n.endswith("analog_ctx"))

    def operator_parameters(self, frozen_ops: Iterable[str] = ()) -> Iterable[nn.Parameter]:
        """Weights held by the operators of the choice layers (not the layers shared by all paths,
        such as BatchNorm, and not the alphas), except those of the operators in ``frozen_ops``."""
        frozen = set(frozen_ops)
        for layer in self.choice_layers().values():
            for op, module in layer.ops.items():
                if op not in frozen:
                    yield from (p for n, p in module.named_parameters() if not n.endswith("analog_ctx"))

    def _op_params(self, ops: Iterable[str]) -> Iterator[nn.Parameter]:
        wanted = set(ops)
        for layer in self.choice_layers().values():
            for op, module in layer.ops.items():
                if op in wanted:
                    yield from module.parameters()

    # ---- sub-networks
    def set_mapping(self, mapping: Mapping[str, str]) -> None:
        from mps.supernet.mapping import check_layers

        check_layers(mapping, self.allowed, self.meta.get("model_id", "?"), ties=self.ties)
        for name, layer in self.choice_layers().items():
            layer.set_active(mapping[name])

    def active_mapping(self) -> dict[str, str]:
        return {name: layer.active for name, layer in self.choice_layers().items()}

    def set_mode(self, mode: str, tau: float = 1.0, hard: bool = False) -> None:
        for layer in self.choice_layers().values():
            layer.mode, layer.tau, layer.hard = mode, tau, hard

    def sample_mapping(self, generator: torch.Generator) -> dict[str, str]:
        """Uniformly random sub-network (each layer's operator drawn from its allowed set)."""
        out = {}
        for name, ops in self.allowed.items():
            out[name] = ops[int(torch.randint(len(ops), (1,), generator=generator))]
        return self.tie(out)

    def uniform_mapping(self, op: str, fallback: tuple[str, ...] = ("int8", "fp16")) -> dict[str, str]:
        """Every layer on ``op`` where allowed, else the first allowed fallback (e.g. the
        depthwise convs of an 'all analog' mapping go to int8)."""
        out = {}
        for name, ops in self.allowed.items():
            choice = next((o for o in (op, *fallback) if o in ops), ops[0])
            out[name] = choice
        return out

    def score(self, mapping: Mapping[str, str]) -> torch.Tensor:
        """The supernet's score of a sub-network: sum over layers of log softmax(alpha)[op]."""
        layers = self.choice_layers()
        return torch.stack([layers[n].log_probability(op) for n, op in mapping.items()]).sum()

    def argmax_mapping(self) -> dict[str, str]:
        allowed = self.allowed
        out = {n: max(allowed[n], key=lambda op, l=l: float(l.alphas.detach()[l.op_names.index(op)]))
               for n, l in self.choice_layers().items()}
        return self.tie(out)


def convert_to_supernet(model: nn.Module, space: SpaceConfig, profile, input_shape: tuple[int, ...],
                        meta: Mapping[str, object] | None = None) -> Supernet:
    """Replace every Conv2d/Linear of ``model`` (in place) with a choice layer.

    With ``space.search_space == "mpaas"`` the model's adaptable pairs also get the
    ``analog_wide`` candidate (:mod:`mps.supernet.adapted`), and the BatchNorm between the
    two layers of a pair is held at the wide width."""
    infos, skip_ok = trace_layers(model, input_shape)
    layers = dict(weight_layers(model))
    count = len(infos)
    allowed = {name: allowed_operators(name, index, count, layers[name], info, space, skip_ok[name])
               for index, (name, info) in enumerate(infos.items())}
    plans = plan_pairs(model, infos, allowed, profile) if space.search_space == "mpaas" else []
    shapes = _adapt_pairs(model, plans, wide_norms=False)
    for name, info in infos.items():
        if name in shapes:
            allowed[name].append(WIDE)
        built: dict[str, Operator] = {
            op: operator_class(op).from_layer(layers[name], BuildContext(info, profile, *shapes[name])
                                              if op == WIDE else BuildContext(info, profile))
            for op in allowed[name]}
        _set_submodule(model, name, ChoiceLayer(info, built, {WIDE: shapes[name][0]} if name in shapes else None))
    pairs = [{"producer": p.producer, "norm": p.norm, "consumer": p.consumer, "width": p.width,
              "base_width": p.base_width, "producer_width": p.producer_info.out_features, "blocks": list(p.blocks)}
             for p in plans]
    return Supernet(model, infos, {"input_shape": list(input_shape), **(meta or {}), "adapted_pairs": pairs})


def _adapt_pairs(model: nn.Module, plans: list[AdaptedPair],
                 wide_norms: bool) -> dict[str, tuple[LayerInfo, tuple[int, int]]]:
    """Widen the BatchNorm of each pair (supernet: width-adaptive; deployed wide model: a plain
    BatchNorm of the wide width); return each widened layer's (shape, (out, in) blocks)."""
    shapes: dict[str, tuple[LayerInfo, tuple[int, int]]] = {}
    for p in plans:
        shapes[p.producer] = (p.producer_info, (p.blocks[0], 1))
        shapes[p.consumer] = (p.consumer_info, (1, p.blocks[1]))
        if p.norm is not None:
            norm = WidthAdaptiveBatchNorm.from_norm(model.get_submodule(p.norm), p.width)
            _set_submodule(model, p.norm, norm.to_plain(p.width) if wide_norms else norm)
    return shapes


def realize(model: nn.Module, mapping: Mapping[str, str] | str, profile, input_shape: tuple[int, ...]) -> nn.Module:
    """A standalone model from a float model: each weight layer replaced (in place) by a fresh
    operator of the mapping (one operator name: every layer on it, e.g. ``"analog"`` for the
    straight conversion).  Used for the FP32 / straight-to-analog baselines and to rebuild a
    saved deployed model before loading its state dict."""
    from mps.supernet.mapping import check_layers

    infos, _ = trace_layers(model, input_shape)
    if isinstance(mapping, str):
        mapping = {name: mapping for name in infos}
    plans = plan_pairs(model, infos, None, profile) if WIDE in mapping.values() else []
    check_layers(mapping, {n: None for n in infos}, "model", ties={p.consumer: p.producer for p in plans})
    shapes = _adapt_pairs(model, [p for p in plans if mapping[p.producer] == WIDE], wide_norms=True)
    layers = dict(weight_layers(model))
    for name, info in infos.items():
        op = mapping[name]
        reason = operator_class(op).unsupported_reason(layers[name], info) if op != WIDE else None
        if op == WIDE and name not in shapes:
            reason = "the layer is not part of an adaptable pair"
        if reason:
            raise ConfigError(f"layer {name}: operator {op!r} not possible ({reason}); fix: choose another operator")
        ctx = BuildContext(info, profile, *shapes[name]) if op == WIDE else BuildContext(info, profile)
        _set_submodule(model, name, operator_class(op).from_layer(layers[name], ctx))
    return model
