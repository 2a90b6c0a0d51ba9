"""Stage ``prepare-data``: read the data set source, split it, write tensors and a manifest."""

from __future__ import annotations

from pathlib import Path

from mps.config import Params
from mps.data import prepare_dataset
from mps.tracking import Tracker


def run(params: Params, out_dir: Path, tracker: Tracker) -> dict:
    manifest = prepare_dataset(params.data, out_dir)
    tracker.log_params({f"data.{k}": v for k, v in params.data.model_dump().items()})
    tracker.log_metrics({f"{split}_examples": manifest["splits"][split]["count"] for split in ("train", "val", "test")})
    tracker.log_artifact(out_dir / "manifest.json")
    counts = ", ".join(f"{s} {manifest['splits'][s]['count']}" for s in ("train", "val", "test"))
    print(f"prepare-data: {params.data.dataset}: {counts} -> {out_dir}")
    return manifest
