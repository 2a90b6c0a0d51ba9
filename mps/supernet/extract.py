"""Sub-network extraction, and saving/loading supernets and deployed models.

A saved model is a *recipe plus state*: the architecture name, input shape, operator space
or mapping, and hardware profile, plus the state dict.  Loading rebuilds the structure with
the same code path that created it (``convert_to_supernet`` / ``realize``) and then loads the
state, so no pickled code is needed and a mismatch is a clear error rather than silent
garbage.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from mps.artifacts import ArtifactError, load_checkpoint, save_checkpoint
from mps.config import SpaceConfig
from mps.models import build_model
from mps.supernet.adapted import WIDE
from mps.supernet.choice import ChoiceLayer
from mps.layer_info import LayerInfo
from mps.supernet.convert import (Supernet, _set_submodule, convert_to_supernet, forward_one_sample, layer_info_from,
                                  realize)
from mps.supernet.operators import Operator, Skip, shaped_layer
from mps.supernet.mapping import MappingFile

SUPERNET_KIND = "supernet"
DEPLOYED_KIND = "deployed"


def extract(supernet: Supernet, mapping: Mapping[str, str]) -> nn.Module:
    """A standalone model where each layer is its trained operator (a copy; the supernet is untouched)."""
    supernet.set_mapping(mapping)  # validates layers and operators
    model = copy.deepcopy(supernet.model)
    for name in supernet.infos:
        layer = model.get_submodule(name)
        assert isinstance(layer, ChoiceLayer)
        _set_submodule(model, name, layer.ops[mapping[name]])
    for pair in supernet.pairs:  # adapted pairs: an ordinary BatchNorm of the width this path uses
        if pair["norm"] is not None:
            width = pair["width"] if mapping[pair["producer"]] == WIDE else pair["base_width"]
            _set_submodule(model, pair["norm"], model.get_submodule(pair["norm"]).to_plain(width))
    return model.eval()


@torch.no_grad()
def describe_deployed(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[dict[str, LayerInfo], dict[str, str]]:
    """Layer table and mapping read back from a standalone model: each operator found by type,
    its shape from its own weights and one traced forward pass (a skip keeps the removed
    layer's description).  Lets a cost be computed from a deployed model alone."""
    ops = [(n, m) for n, m in model.named_modules() if isinstance(m, Operator)]
    outputs: dict[str, torch.Tensor] = {}
    forward_one_sample(model, input_shape, [(m, lambda mod, i, o, n=n: outputs.setdefault(n, o)) for n, m in ops])
    infos, mapping = {}, {}
    for name, op in ops:
        if isinstance(op, Skip):
            infos[name] = LayerInfo(**{**op.source.__dict__, "name": name})
        else:
            infos[name] = layer_info_from(name, shaped_layer(op), outputs[name])
        mapping[name] = op.name
    return infos, mapping


def _profile_from(raw: Mapping[str, Any]):
    from mps.cost_model import parse_hardware_profile

    return parse_hardware_profile(dict(raw), "checkpoint hardware profile")


def _base_model(meta: Mapping[str, Any]) -> nn.Module:
    c, h, _ = meta["input_shape"]
    return build_model(meta["model_name"], in_channels=c, num_classes=int(meta["num_classes"]), image_size=h)


def save_supernet(path: str | Path, supernet: Supernet, space: SpaceConfig, profile,
                  provenance: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> Path:
    return save_checkpoint(path, SUPERNET_KIND, {
        "meta": dict(supernet.meta),
        "space": space.model_dump(mode="json"),
        "profile": profile.model_dump(mode="json"),
        "layers": [info.to_dict() for info in supernet.infos.values()],
        "state_dict": supernet.state_dict(),
        **(extra or {}),
    }, dict(provenance))


def load_supernet(path: str | Path) -> tuple[Supernet, dict[str, Any]]:
    ckpt = load_checkpoint(path, SUPERNET_KIND)
    meta = ckpt["meta"]
    profile = _profile_from(ckpt["profile"])
    supernet = convert_to_supernet(_base_model(meta), SpaceConfig.model_validate(ckpt["space"]), profile,
                                   tuple(meta["input_shape"]), meta)
    try:
        supernet.load_state_dict(ckpt["state_dict"])
    except RuntimeError as exc:
        raise ArtifactError(f"{path}: supernet state does not fit its recorded structure ({str(exc)[:200]}); "
                            "fix: rerun 'mps adapt'") from None
    return supernet, ckpt


def save_deployed(path: str | Path, model: nn.Module, mapping: MappingFile, meta: Mapping[str, Any], profile,
                  provenance: Mapping[str, Any]) -> Path:
    return save_checkpoint(path, DEPLOYED_KIND, {
        "meta": dict(meta), "mapping": mapping.to_json(), "profile": profile.model_dump(mode="json"),
        "state_dict": model.state_dict(),
    }, dict(provenance))


def load_deployed(path: str | Path) -> tuple[nn.Module, MappingFile]:
    ckpt = load_checkpoint(path, DEPLOYED_KIND)
    meta, m = ckpt["meta"], ckpt["mapping"]
    mapping = MappingFile(m["model_id"], m["name"], m["method"], m["layers"], m["objectives"], m["provenance"])
    model = realize(_base_model(meta), mapping.layers, _profile_from(ckpt["profile"]), tuple(meta["input_shape"]))
    model.load_state_dict(ckpt["state_dict"])
    return model.eval(), mapping
