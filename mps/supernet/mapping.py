"""Mapping files: the contract between search, evaluate and deployment.

A mapping says, for one model, which operator runs each weight layer.  JSON, schema
``mps-mapping/1``::

    {
      "schema": "mps-mapping/1",
      "model_id": "resnet8@fashion-mnist",     # architecture @ data it was trained on
      "name": "mps-03",                          # unique within its search output
      "method": "mps",                           # mps | greedy | random | nsga2 | fp32 | int8 | analog | ...
      "layers": {"conv1": "int8", "layer1.0.conv1": "analog", ...},
      "objectives": {"accuracy": 91.2, "analog_mac_ratio": 0.73, ...},   # as estimated by its method
      "provenance": {"git_commit": ..., "params_digest": ..., "seed": ...},
      "source": "analog_hwa.pt"                  # optional: where the weights come from (below)
    }

``source`` says which weights realise the mapping: absent = the adapted supernet's operators
(every MPS mapping, and the searches over the supernet); ``"pretrained"`` = the pretrained
model converted as it is (FP32, straight conversion to analog); a file name = a deployed
model beside the mapping file, trained by its method (the full-analog HWA baseline,
LionHEART's retrained networks).  An all-``fp32`` mapping without ``source`` is the pretrained
model, as before the field existed.  A mapping with its own trained network may also use the
``fp32`` operator (:func:`allowed_for`): LionHEART keeps its digital layers in float.

Applying a mapping to a model whose layers do not match is an error naming the missing and
the extra layers; an unknown operator or one the layer may not take names the layers too.
Files are written with sorted keys so the same mapping gives byte-identical files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from mps.artifacts import ArtifactError, atomic_write_json, read_json
from mps.config import ConfigError

SCHEMA = "mps-mapping/1"
PRETRAINED = "pretrained"


def allowed_for(mapping: "MappingFile", allowed: Mapping[str, list[str]]) -> dict[str, list[str] | None]:
    """The operators each layer of ``mapping`` may take: the supernet's, plus ``fp32`` for a
    mapping realised from the pretrained model or trained by its method (not extracted)."""
    if mapping.source is None and not mapping.from_pretrained:
        return dict(allowed)
    return {n: [*ops, "fp32"] if "fp32" not in ops else list(ops) for n, ops in allowed.items()}


class MappingError(ConfigError):
    """A mapping does not fit the model it is applied to, or is malformed."""


@dataclass
class MappingFile:
    model_id: str
    name: str
    method: str
    layers: dict[str, str]
    objectives: dict[str, float] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    source: str | None = None  # None = supernet; "pretrained"; or a deployed model's file name

    @property
    def from_pretrained(self) -> bool:
        """Realised from the pretrained checkpoint (FP32, straight conversion)."""
        return self.source == PRETRAINED or (self.source is None and bool(self.layers)
                                              and all(op == "fp32" for op in self.layers.values()))

    @property
    def weights_file(self) -> str | None:
        """The deployed model file beside the mapping that holds this mapping's trained weights."""
        return self.source if self.source not in (None, PRETRAINED) else None

    def to_json(self) -> dict[str, Any]:
        out = {"schema": SCHEMA, "model_id": self.model_id, "name": self.name, "method": self.method,
               "layers": dict(self.layers), "objectives": dict(self.objectives), "provenance": dict(self.provenance)}
        if self.source is not None:
            out["source"] = self.source
        return out

    def save(self, path: str | Path) -> Path:
        return atomic_write_json(path, self.to_json())


def _short(names: list[str], limit: int = 6) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" (+{len(names) - limit} more)" if len(names) > limit else "")


def check_layers(layers: Mapping[str, str], allowed: Mapping[str, list[str] | None], model_id: str,
                 source: str = "mapping", ties: Mapping[str, str] | None = None) -> None:
    """Raise MappingError unless ``layers`` names exactly the model's layers with allowed operators.

    ``allowed[name]`` is the list of operators the layer may take, or None for 'any known one';
    ``ties`` (consumer -> producer) are the MPAAS pairs that take ``analog_wide`` together.
    """
    from mps.supernet.operators import OPERATORS

    missing = [n for n in allowed if n not in layers]
    extra = [n for n in layers if n not in allowed]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing layers: {_short(missing)}")
        if extra:
            parts.append(f"unknown layers: {_short(extra)}")
        raise MappingError(f"{source} does not match model {model_id}: {'; '.join(parts)}; "
                           "fix: use a mapping searched for this model")
    unknown = [f"{n}={op}" for n, op in layers.items() if op not in OPERATORS]
    if unknown:
        raise MappingError(f"{source}: unknown operators {_short(unknown)}; fix: use one of {', '.join(sorted(OPERATORS))}")
    refused = [f"{n}={op}" for n, op in layers.items() if allowed[n] is not None and op not in allowed[n]]
    if refused:
        raise MappingError(f"{source}: operators not allowed for these layers: {_short(refused)}; "
                           "fix: choose from the layer's allowed operators (params space section)")
    if ties:
        from mps.supernet.adapted import check_ties

        split = check_ties(layers, ties)
        if split:
            raise MappingError(f"{source}: adapted pairs must take analog_wide together: {_short(split)}; "
                               "fix: map both layers of each pair to analog_wide, or neither")


def mapping_files(folder: str | Path) -> list[Path]:
    """The mapping files (``*.json``) of a search's ``mappings/`` folder, sorted by file name.

    A search output folder itself (it holds ``mappings/`` beside ``search.json`` and
    ``metrics.json``, which are not mapping files) is refused with the subfolder to pass, before
    anything is read."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ArtifactError(f"{folder}: mapping folder not found; fix: run 'mps search' first or pass --mappings")
    if (folder / "mappings").is_dir() and (folder / "search.json").is_file():
        raise ArtifactError(f"{folder}: a search output folder, not its mapping folder; "
                            f"fix: pass --mappings {folder / 'mappings'}")
    paths = sorted(p for p in folder.glob("*.json") if p.is_file())
    if not paths:
        raise ArtifactError(f"{folder}: no mapping files (*.json); fix: pass the mappings/ folder 'mps search' wrote")
    return paths


def load_mapping(path: str | Path, model_id: str | None = None,
                 allowed: Mapping[str, list[str] | None] | None = None) -> MappingFile:
    """Read and validate a mapping file (against a model's layers when ``allowed`` is given)."""
    raw = read_json(path, "mapping file")
    if not isinstance(raw, dict) or raw.get("schema") != SCHEMA:
        raise MappingError(f"{path}: not an {SCHEMA} mapping file; fix: pass a file written by 'mps search'")
    for key in ("model_id", "name", "method", "layers"):
        if key not in raw:
            raise MappingError(f"{path}: mapping file lacks {key!r}; fix: rewrite it with 'mps search'")
    if not isinstance(raw["layers"], dict) or not all(isinstance(v, str) for v in raw["layers"].values()):
        raise MappingError(f"{path}: 'layers' must map layer names to operator names")
    source = raw.get("source")
    if source is not None and (not isinstance(source, str) or (source != PRETRAINED and (
            "/" in source or "\\" in source or not source.endswith(".pt")))):
        raise MappingError(f"{path}: 'source' must be {PRETRAINED!r} or the name of a .pt file beside the mapping "
                           f"(got {source!r}); fix: rewrite it with 'mps search'")
    mapping = MappingFile(raw["model_id"], raw["name"], raw["method"], dict(raw["layers"]),
                          dict(raw.get("objectives") or {}), dict(raw.get("provenance") or {}), source)
    if model_id is not None and mapping.model_id != model_id:
        raise MappingError(f"{path}: mapping is for model {mapping.model_id!r}, not {model_id!r}; "
                           "fix: use a mapping searched for this model")
    if allowed is not None:
        check_layers(mapping.layers, allowed, mapping.model_id, source=str(path))
    return mapping
