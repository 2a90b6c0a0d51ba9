"""Choosing one mapping to deploy: the best on one objective within an accuracy budget.

A search gives a set of mappings; someone deploying needs one.  The usual question is
"the most analog (or smallest, or cheapest) mapping that loses at most X points of accuracy
against FP32 after time T on the chip".  :func:`select_mapping` answers it from the search
output, with accuracies measured by the evaluate stage at drift time T (``drift.csv``, mean
over repeats) when an evaluate folder is given, else the search's own estimates (which exist
only at ``search.drift_time``).  Cost objectives come from the search's ``pareto.csv``
(the cost model; they do not depend on time).

``mps select --search DIR [--evaluate DIR] --max-acc-drop 1.0 --at 1d --maximize analog_mac_ratio
[--copy-to FILE]`` prints the chosen mapping's name, objectives and path.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from mps.artifacts import ArtifactError, atomic_write_bytes, read_json
from mps.config import ConfigError

FP32 = "fp32"
DURATION_UNITS = {"": 1.0, "s": 1.0, "min": 60.0, "h": 3600.0, "d": 86400.0, "m": 30 * 86400.0,
                  "y": 365 * 86400.0}
"""Seconds per unit of :func:`parse_duration`; ``m`` is a 30-day month, ``min`` a minute."""

TARGETS = {"analog_mac_ratio": "max", "accuracy": "max", "digital_size_mb": "min", "energy_uj": "min",
           "latency_ms": "min"}
ALIASES = {"energy": "energy_uj", "latency": "latency_ms", "digital_size": "digital_size_mb"}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)(?:e([+-]?\d+))?\s*([a-z]*)\s*$")


def parse_duration(value: str | float | int) -> float:
    """Seconds from ``3600``, ``'3600'``, ``'1s'``, ``'30min'``, ``'1h'``, ``'1d'``, ``'1m'`` (30 days), ``'1y'`` (365 days)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value).lower())
        if not match or match.group(3) not in DURATION_UNITS:
            raise ConfigError(f"drift time {value!r}: not a duration; fix: give seconds or a number with a unit "
                              "s, min, h, d, m (30 days) or y (365 days), e.g. 1d")
        number = float(match.group(1)) * (10.0 ** int(match.group(2)) if match.group(2) else 1.0)
        seconds = number * DURATION_UNITS[match.group(3)]
    if not math.isfinite(seconds) or seconds <= 0:
        raise ConfigError(f"drift time {value!r}: must be a positive time; fix: e.g. 1d or 86400")
    return seconds


def _label(seconds: float) -> str:
    from mps.units import drift_label

    return drift_label(seconds)


def _read_csv(path: Path, what: str, columns: list[str]) -> pd.DataFrame:
    if not path.is_file():
        raise ArtifactError(f"{path}: {what} not found; fix: run the stage that writes it first")
    try:
        table = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
        raise ArtifactError(f"{path}: {what} is not a readable CSV table; fix: rerun the stage that writes it") from None
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ArtifactError(f"{path}: {what} lacks columns {', '.join(missing)}; fix: rerun the stage that writes it")
    return table


def _target(maximize: str) -> tuple[str, str]:
    name = ALIASES.get(maximize, maximize)
    if name not in TARGETS:
        raise ConfigError(f"--maximize {maximize!r}: unknown objective; fix: use one of "
                          f"{', '.join(TARGETS)} (the last three are minimised)")
    return name, TARGETS[name]


def _accuracies(search_dir: Path, evaluate_dir: Path | None, at: float,
                table: pd.DataFrame) -> tuple[dict[str, float], str]:
    """Accuracy (%) per mapping name at drift time ``at``, and where it comes from."""
    if evaluate_dir is not None:
        drift = _read_csv(Path(evaluate_dir) / "drift.csv", "evaluate drift table",
                          ["mapping", "method", "drift_time", "repeat", "accuracy"])
        times = sorted(set(drift["drift_time"].astype(float)))
        match = [t for t in times if math.isclose(t, at, rel_tol=1e-6)]
        if not match:
            raise ConfigError(f"--at {_label(at)}: the evaluate stage measured only at "
                              f"{', '.join(_label(t) for t in times)}; fix: choose one of those or add the time "
                              "to evaluate.drift_times and rerun evaluate")
        rows = drift[drift["drift_time"].astype(float) == match[0]]
        means = rows.groupby("mapping")["accuracy"].mean()
        return {str(k): float(v) for k, v in means.items()}, f"evaluate, mean over repeats at {_label(at)}"
    summary_path = Path(search_dir) / "search.json"
    search_time = float(read_json(summary_path, "search summary").get("drift_time", at)) if summary_path.is_file() else at
    if not math.isclose(search_time, at, rel_tol=1e-6):
        raise ConfigError(f"--at {_label(at)}: search estimates exist only at {_label(search_time)}; "
                          f"fix: pass --evaluate DIR (the evaluate stage's output) or --at {_label(search_time)}")
    return {str(n): float(a) for n, a in zip(table["name"], table["accuracy"])}, f"search estimate at {_label(at)}"


def select_mapping(search_dir: Path, evaluate_dir: Path | None, max_acc_drop: float, at: str | float,
                   maximize: str) -> dict[str, Any]:
    """The mapping within ``max_acc_drop`` points of FP32's accuracy at ``at`` that is best on ``maximize``.

    The FP32 mapping is the reference, not a candidate (it would always meet the bound).
    Ties go to the higher accuracy, then to the name.  Raises ConfigError when no mapping
    meets the bound (naming the best accuracy available and the drop it would need).
    """
    search_dir = Path(search_dir)
    seconds = parse_duration(at)
    target, sense = _target(maximize)
    if max_acc_drop < 0:
        raise ConfigError(f"--max-acc-drop {max_acc_drop}: must be >= 0 accuracy points; fix: e.g. 1.0")
    table = _read_csv(search_dir / "pareto.csv", "search Pareto table",
                      ["name", "method", "file", *TARGETS])
    accuracy, source = _accuracies(search_dir, evaluate_dir, seconds, table)
    fp32_names = [str(n) for n, m in zip(table["name"], table["method"]) if m == FP32 and str(n) in accuracy]
    if not fp32_names:
        raise ConfigError(f"{search_dir}: no FP32 mapping with an accuracy ({source}) to measure the drop against; "
                          "fix: keep 'fp32' in search.baselines and rerun search (and evaluate)")
    fp32_acc = max(accuracy[n] for n in fp32_names)
    rows: list[dict[str, Any]] = []
    for row in table.to_dict("records"):
        name = str(row["name"])
        if name not in accuracy or row["method"] == FP32:  # the reference, not a candidate
            continue
        objectives = {k: float(row[k]) for k in TARGETS}
        objectives["accuracy"] = accuracy[name]
        rows.append({"name": name, "method": str(row["method"]), "path": str(search_dir / str(row["file"])),
                     "objectives": objectives, "accuracy_drop": fp32_acc - accuracy[name]})
    if not rows:
        raise ConfigError(f"{search_dir}: no mapping besides FP32 has an accuracy ({source}); "
                          "fix: rerun search (and evaluate) with more methods")
    ok = [r for r in rows if r["accuracy_drop"] <= max_acc_drop + 1e-9]
    if not ok:
        best = max(rows, key=lambda r: (r["objectives"]["accuracy"], r["name"]))
        raise ConfigError(
            f"no mapping is within {max_acc_drop:g} points of FP32's {fp32_acc:.2f} % ({source}); the best available "
            f"is {best['name']} at {best['objectives']['accuracy']:.2f} % ({best['accuracy_drop']:.2f} points below); "
            f"fix: raise --max-acc-drop to at least {math.ceil(best['accuracy_drop'] * 100 - 1e-6) / 100:.2f}, choose an "
            "earlier --at, or search with a larger budget")
    sign = 1.0 if sense == "max" else -1.0
    chosen = min(ok, key=lambda r: (-sign * r["objectives"][target], -r["objectives"]["accuracy"], r["name"]))
    return {**chosen, "accuracy": chosen["objectives"]["accuracy"], "fp32_accuracy": fp32_acc,
            "accuracy_source": source, "drift_time": seconds, "maximize": target, "sense": sense,
            "max_acc_drop": max_acc_drop, "candidates": len(ok)}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mps select", description=__doc__.splitlines()[0])
    p.add_argument("--search", required=True, help="search output folder (pareto.csv, mappings/)")
    p.add_argument("--evaluate", help="evaluate output folder (drift.csv); default: the search's estimates")
    p.add_argument("--max-acc-drop", type=float, default=1.0, help="accuracy points below FP32 allowed (default 1.0)")
    p.add_argument("--at", default="1d", help="drift time: seconds or 1s, 30min, 1h, 1d, 1m (30 days), 1y (default 1d)")
    p.add_argument("--maximize", default="analog_mac_ratio",
                   help="analog_mac_ratio or accuracy (maximised); digital_size_mb, energy_uj, latency_ms (minimised)")
    p.add_argument("--copy-to", help="also copy the chosen mapping file here")
    return p


def select_main(argv: list[str] | None = None) -> int:
    """``mps select``: print the chosen mapping; exit 2 with a one-line message when none fits."""
    args = build_parser().parse_args(argv)
    try:
        chosen = select_mapping(Path(args.search), Path(args.evaluate) if args.evaluate else None,
                                args.max_acc_drop, args.at, args.maximize)
        if args.copy_to:
            source = Path(chosen["path"])
            if not source.is_file():
                raise ArtifactError(f"{source}: mapping file not found; fix: rerun 'mps search'")
            atomic_write_bytes(args.copy_to, source.read_bytes())
    except ConfigError as exc:
        print(f"mps select: error: {exc}", file=sys.stderr)
        return 2
    obj = chosen["objectives"]
    verb = "maximising" if chosen["sense"] == "max" else "minimising"
    print(f"selected: {chosen['name']} (method {chosen['method']}), {verb} {chosen['maximize']} among "
          f"{chosen['candidates']} mapping(s) within {chosen['max_acc_drop']:g} points of FP32")
    print(f"  accuracy {obj['accuracy']:.2f} % ({chosen['accuracy_source']}); FP32 {chosen['fp32_accuracy']:.2f} %, "
          f"drop {chosen['accuracy_drop']:.2f} points")
    print(f"  analog_mac_ratio {obj['analog_mac_ratio']:.4f}, digital_size_mb {obj['digital_size_mb']:.6f}, "
          f"energy_uj {obj['energy_uj']:.6g}, latency_ms {obj['latency_ms']:.6g}")
    print(f"  file: {chosen['path']}" + (f" (copied to {args.copy_to})" if args.copy_to else ""))
    return 0


if __name__ == "__main__":
    sys.exit(select_main())
