"""Stage ``report``: the paper-style table, three plots and a Markdown/HTML report.

Reads what the earlier stages wrote (evaluate's ``results.csv``/``drift.csv``, search's
``pareto.csv``, ``search.json`` and mapping files, calibrate's ``sensitivity.csv``) and
writes ``pareto.png``, ``drift.png``, ``layers.png``, ``mapping_time.png`` (each method's
hypervolume against its mapping time, from ``search.json``), ``report.md`` and ``report.html``.

* The user's constraint (``report.max_acc_drop`` points below FP32 at
  ``evaluate.reference_time``, maximising ``report.maximize``) picks one mapping among the
  evaluated ones (the FP32 reference itself excluded); if none meets it the report says so.
* Each method's hypervolume and search time come from ``search.json`` (validation
  estimates, as searched); the report adds the hypervolume of each method's *measured* test
  results at the reference time, with the same fixed bounds and reference point
  (:func:`mps.pareto.report_bounds`), so the methods are compared on the same data.
* ``layers.png`` needs each layer's MACs: they are recomputed from the architecture
  (``model.name`` on the data set's image shape, one traced forward pass), which is what the
  supernet recorded; the mapping's layers are checked against them.
* "Energy and latency under every hardware profile": each method's best mapping re-costed
  under every profile in the folder of ``params.hardware_profile`` (``hardware/``), each as
  written and with ``per_active`` analog energy, so a reader sees under which assumptions
  analog wins (:func:`profiles_table`; ``mps costs`` does the same for any mapping folder).
* The pipeline's headline params and metrics (:func:`headline`) go to the MLflow parent run,
  where pipeline runs are compared side by side.
* Deterministic: no timestamps; the same inputs give the same files.  The HTML is
  self-contained (inline CSS, no JavaScript, no web fonts) and shows the PNGs by relative
  path, so the folder can be moved or served as is.
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from mps import plots
from mps.artifacts import ArtifactError, atomic_write_json, atomic_write_text, read_json
from mps.config import ConfigError, Params
from mps.pareto import REPORT_OBJECTIVES, REPORT_SENSES, normalized_hypervolume, report_bounds, to_minimization
from mps.stages.evaluate import DRIFT_COLUMNS, FP32, RESULT_COLUMNS
from mps.stages.pretrain import model_id
from mps.supernet.mapping import MappingFile, check_layers, load_mapping, mapping_files
from mps.tracking import Tracker
from mps.units import drift_label, drift_title

SENSITIVITY_COLUMNS = ["layer", "drift_time", "mean_drop", "std_drop"]
OUTPUTS = ("report.md", "report.html", "pareto.png", "drift.png", "layers.png", "mapping_time.png",
           "metrics.json")
# display names where the method key alone would mislead
METHOD_LABELS = {"greedy": "greedy (sensitivity-greedy, no retraining)"}
_MAXIMIZE_COLUMN = {"analog_mac_ratio": "Analog_MAC_Ratio_percent", "accuracy": "Accuracy_mean"}


# --------------------------------------------------------------------------- inputs
def read_table(path: Path, columns: Sequence[str] | None, what: str, producer: str) -> pd.DataFrame:
    """A CSV input; with ``columns``, they must all be present (extra ones are kept)."""
    if not path.is_file():
        raise ArtifactError(f"{path}: {what} not found; fix: run '{producer}' first")
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}: {what} is not a readable CSV ({str(exc).splitlines()[0]}); "
                            f"fix: rerun '{producer}'") from None
    if columns is not None:
        missing = [c for c in columns if c not in df.columns]
        if missing:
            raise ArtifactError(f"{path}: {what} lacks columns {', '.join(missing)}; fix: rerun '{producer}'")
        if df.empty:
            raise ArtifactError(f"{path}: {what} has no rows; fix: rerun '{producer}'")
    return df


def read_mappings(mappings_dir: Path, model_id: str) -> dict[str, MappingFile]:
    """The search's mapping files by name; all must be for ``model_id`` (this run's model)."""
    return {m.name: m for m in (load_mapping(path, model_id) for path in mapping_files(mappings_dir))}


def _flatten(prefix: str, obj: Any, out: dict[str, Any]) -> dict[str, Any]:
    if isinstance(obj, dict):
        for k, v in obj.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = obj
    return out


_SEARCH_FIELDS = {"hypervolume": "search_hypervolume", "search_seconds": "search_seconds",
                  "evaluations": "evaluations", "mapping_seconds": "mapping_seconds"}
SEARCH_COLUMNS = ["Method", "search_hypervolume", "search_seconds", "evaluations", "mapping_seconds"]


def search_summary(summary: Any, methods: Sequence[str]) -> pd.DataFrame:
    """Per method: hypervolume, search seconds and evaluations used, from search.json.

    The search stage writes ``{"methods": {<method>: {"hypervolume", "search_seconds",
    "evaluations", ...}}}``; flat DVC-style keys (``"mps.hypervolume"``) are read too.  A
    method the search did not report (e.g. one evaluated from hand-written mappings) gets
    empty cells."""
    rows: dict[str, dict[str, float]] = {}
    if isinstance(summary, dict):
        flat = _flatten("", summary, {})
        # shallowest keys first, so a method's own entry wins over anything nested in its details
        for key in sorted(flat, key=lambda k: (k.count("."), k)):
            value = flat[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            parts = key.split(".")
            if len(parts) < 2 or parts[-1] not in _SEARCH_FIELDS or parts[-2] not in methods:
                continue
            if parts[:-2] not in ([], ["methods"]):
                continue
            rows.setdefault(parts[-2], {}).setdefault(_SEARCH_FIELDS[parts[-1]], float(value))
    return pd.DataFrame([{"Method": m, **rows.get(m, {})} for m in methods], columns=SEARCH_COLUMNS)


# --------------------------------------------------------------------------- analysis
def fp32_accuracy(results: pd.DataFrame) -> float | None:
    rows = results[results["Method"] == FP32]
    return float(rows["Accuracy_mean"].max()) if len(rows) else None


def select_mapping(results: pd.DataFrame, fp32_acc: float | None, max_drop: float, maximize: str
                   ) -> tuple[pd.Series | None, str]:
    """The mapping meeting the constraint that maximises ``maximize`` (ties: accuracy, then
    smaller digital memory, then name), and a sentence saying what was chosen or why not."""
    if fp32_acc is None:
        return None, ("No FP32 baseline among the evaluated mappings, so the accuracy-drop constraint cannot be "
                      "checked; fix: keep 'fp32' in search.baselines.")
    pool = results[results["Method"] != FP32].copy()
    pool["drop"] = fp32_acc - pool["Accuracy_mean"]
    ok = pool[pool["drop"] <= max_drop + 1e-9]
    if ok.empty:
        best = pool.sort_values(["drop", "Mapping"]).head(1)
        closest = (f" The closest is {best.iloc[0]['Mapping']} ({best.iloc[0]['Method']}), "
                   f"{best.iloc[0]['drop']:.2f} points below FP32.") if len(best) else ""
        return None, (f"No mapping stays within {max_drop:g} points of FP32 ({fp32_acc:.2f} %).{closest}")
    column = _MAXIMIZE_COLUMN[maximize]
    chosen = ok.sort_values([column, "Accuracy_mean", "Digital_Size_MB", "Mapping"],
                            ascending=[False, False, True, True]).iloc[0]
    return chosen, (f"**{chosen['Mapping']}** ({chosen['Method']}) meets the constraint: "
                    f"{chosen['Accuracy_percent']} % accuracy, {chosen['drop']:.2f} points below FP32 "
                    f"({fp32_acc:.2f} %), with {chosen['Analog_MAC_Ratio_percent']:.1f} % of MACs on analog "
                    f"and {chosen['Digital_Size_MB']:.4f} MB of digital weights "
                    f"({len(ok)} of {len(pool)} mappings meet it).")


def measured_hypervolumes(results: pd.DataFrame, accuracy_window: float | None = None) -> dict[str, float]:
    """Normalised hypervolume of each method's test results (accuracy, analog MAC ratio,
    digital memory) with the fixed report bounds; FP32 size from the FP32 row or, without
    one, from the largest parameter count at 4 bytes per weight.

    ``accuracy_window`` (points): the accuracy axis runs from FP32 minus the window to FP32
    instead of [0, 100] % (the same bounds for every method; a mapping more than 10 % of the
    window below its start adds nothing, as any point beyond the reference point); without an
    FP32 row there is no such range and the result is empty."""
    fp32_rows = results[results["Method"] == FP32]
    fp32_mb = float(fp32_rows["Digital_Size_MB"].max()) if len(fp32_rows) else float(results["Params_M"].max() * 4)
    if not math.isfinite(fp32_mb) or fp32_mb <= 0:
        return {}
    narrow = None
    if accuracy_window is not None:
        fp32_acc = fp32_accuracy(results)
        if fp32_acc is None:
            return {}
        narrow = {"accuracy": (fp32_acc - accuracy_window) / 100.0}
        lower, upper = report_bounds(fp32_mb, REPORT_OBJECTIVES, upper={"accuracy": fp32_acc / 100.0}, lower=narrow)
    else:
        lower, upper = report_bounds(fp32_mb, REPORT_OBJECTIVES)
    out = {}
    for method, rows in results.groupby("Method", sort=True):
        F = np.column_stack([rows["Accuracy_mean"] / 100.0, rows["Analog_MAC_Ratio_percent"] / 100.0,
                             rows["Digital_Size_MB"]]).astype(float)
        out[str(method)] = float(normalized_hypervolume(to_minimization(F, REPORT_SENSES), lower, upper))
    return out


def drift_table(drift: pd.DataFrame, results: pd.DataFrame) -> pd.DataFrame:
    """Mapping x drift time: 'mean±std' over repeats, mappings in results order."""
    times = sorted(float(t) for t in drift["drift_time"].unique())
    rows = []
    for _, r in results.iterrows():
        stats = plots.drift_stats(drift[drift["mapping"] == r["Mapping"]])
        row = {"Method": r["Method"], "Mapping": r["Mapping"]}
        for t in times:
            row[drift_label(t)] = (f"{stats.loc[t, 'mean']:.2f}±{stats.loc[t, 'std']:.2f}" if t in stats.index else "")
        rows.append(row)
    return pd.DataFrame(rows, columns=["Method", "Mapping", *[drift_label(t) for t in times]])


def spread_columns(drift: pd.DataFrame, results: pd.DataFrame, reference_time: float) -> pd.DataFrame:
    """Per mapping (results order): the worst programming seed at the reference time, and mean±std
    with the worst seed at the last drift time (1 year by default; not repeated when it is the
    reference time), so a collapsed seed shows beside the mean that would hide it."""
    last = max(float(t) for t in drift["drift_time"].unique())
    rows = []
    for _, r in results.iterrows():
        stats = plots.drift_stats(drift[drift["mapping"] == r["Mapping"]])
        ref = stats.loc[reference_time] if reference_time in stats.index else None
        end = stats.loc[last] if last in stats.index else None
        row = {f"Worst seed ({drift_label(reference_time)})": f"{ref['worst']:.2f}" if ref is not None else ""}
        if last != reference_time:
            row[f"Accuracy_percent ({drift_label(last)})"] = f"{end['mean']:.2f}±{end['std']:.2f}" if end is not None else ""
            row[f"Worst seed ({drift_label(last)})"] = f"{end['worst']:.2f}" if end is not None else ""
        rows.append(row)
    return pd.DataFrame(rows, index=results.index)


def layer_macs(params: Params, layer_names: Sequence[str], infos: dict | None = None) -> dict[str, int]:
    """Each weight layer's MACs per sample, traced from the architecture on the data set's shape
    (or taken from ``infos``, such a traced table)."""
    from mps.stages.common import architecture_layers

    infos = infos if infos is not None else architecture_layers(params.model.name, params.data.dataset)
    check_layers({n: "fp32" for n in layer_names}, {n: None for n in infos}, params.model.name,
                 source="mapping of the layers plot")
    return {n: int(info.macs) for n, info in infos.items()}


def profiles_table(key: pd.DataFrame, mappings: dict[str, MappingFile], infos: dict, profile_dir: Path
                   ) -> tuple[pd.DataFrame, str]:
    """Energy and latency of the key mappings (``key``: Method, Mapping rows) under every
    profile in ``profile_dir`` and its ``per_active`` variant: one row per profile, one column
    per mapping ("µJ / ms"), and the cheapest mapping in energy.  MPAAS mappings with
    ``analog_wide`` layers are left out (their widths are in the supernet: ``mps costs --supernet``)."""
    from mps.cost_model import load_hardware_profile, mapping_costs, profile_variants, shipped_profile_paths

    layers = list(infos.values())
    shown = [(r["Method"], r["Mapping"]) for _, r in key.iterrows()
             if r["Mapping"] in mappings and "analog_wide" not in mappings[r["Mapping"]].layers.values()]
    left_out = [r["Mapping"] for _, r in key.iterrows() if (r["Method"], r["Mapping"]) not in shown]
    rows = []
    for path in shipped_profile_paths(profile_dir):
        for label, profile in profile_variants(load_hardware_profile(path)).items():
            row: dict[str, Any] = {"Profile": label, "Analog energy": profile.analog.energy_model}
            energies = {}
            for method, name in shown:
                c = mapping_costs(layers, mappings[name].layers, profile)
                energies[name] = c.energy_uj_per_sample
                row[f"{name} ({method}) µJ / ms"] = f"{c.energy_uj_per_sample:.2f} / {c.latency_ms_per_sample:.3f}"
            row["Lowest energy"] = min(energies, key=energies.get) if energies else "–"
            rows.append(row)
    note = (f"Each profile in `{profile_dir}/` (as written, and with `per_active` analog energy); the best "
            "mapping of each method at the reference time. Profile sources: the YAML files; `mps costs` "
            "re-costs every mapping file the same way.")
    if left_out:
        note += f" Left out (MPAAS analog_wide layers need the supernet): {', '.join(left_out)}."
    return pd.DataFrame(rows), note


def sensitivity_at(sensitivity: pd.DataFrame, reference_time: float) -> tuple[pd.Series, float | None]:
    """Per-layer mean drop at the calibrated drift time closest (in log time) to the reference."""
    if sensitivity.empty:
        return pd.Series(dtype=float), None
    times = np.array(sorted(sensitivity["drift_time"].astype(float).unique()))
    t = float(times[np.argmin(np.abs(np.log(times) - math.log(reference_time)))])
    rows = sensitivity[sensitivity["drift_time"].astype(float) == t]
    return rows.set_index("layer")["mean_drop"].astype(float), t


ONE_YEAR = 365 * 86400.0


def headline(params: Params, results: pd.DataFrame, drift: pd.DataFrame, per_method: pd.DataFrame,
             hv_test: dict[str, float], chosen: pd.Series | None,
             hv_useful: dict[str, float] | None = None) -> tuple[dict[str, Any], dict[str, float]]:
    """The params and metrics a whole pipeline run is compared by (logged to the parent run).

    Params: model, data set, seed, search space, hardware profile and the budgets.  Metrics
    per method, of its most accurate mapping at the reference time: that accuracy, its
    accuracy at one year (when evaluated), its energy; the method's hypervolume on the test
    results and its mapping time (search seconds, when the search reported it); and the
    mapping the constraint selected.  In a sweep every key is prefixed with
    ``<dataset>/<model>/s<seed>/``, so the grid's reports share one parent without clashing."""
    ref = drift_label(float(params.evaluate.reference_time))
    run_params: dict[str, Any] = {
        "model": params.model.name, "dataset": params.data.dataset, "seed": params.seed,
        "search_space": params.space.search_space, "hardware_profile": params.hardware_profile,
        "budget.search_evaluations": params.search.budget, "budget.pretrain_epochs": params.pretrain.epochs,
        "budget.adapt_epochs": params.adapt.fairness_epochs + params.adapt.noise_epochs,
        "budget.evaluate_repeats": params.evaluate.repeats, "reference_time": params.evaluate.reference_time,
        "data.subset": params.data.subset.model_dump() if params.data.subset is not None else "full",
    }
    metrics: dict[str, float] = {}
    search = per_method.set_index("Method")
    year = drift[drift["drift_time"].astype(float) == ONE_YEAR]
    for _, row in plots.best_per_method(results).iterrows():
        m = str(row["Method"])
        metrics[f"{m}.best_accuracy_{ref}"] = float(row["Accuracy_mean"])
        metrics[f"{m}.energy_uj"] = float(row["Energy_uJ_per_sample"])
        at_year = year[year["mapping"] == row["Mapping"]]["accuracy"]
        if len(at_year):
            metrics[f"{m}.accuracy_1y"] = float(at_year.astype(float).mean())
        if m in hv_test:
            metrics[f"{m}.hypervolume"] = float(hv_test[m])
        if m in (hv_useful or {}):
            metrics[f"{m}.hypervolume_useful"] = float(hv_useful[m])
        seconds = search.loc[m, "search_seconds"] if m in search.index else float("nan")
        if math.isfinite(float(seconds)):
            metrics[f"{m}.mapping_seconds"] = float(seconds)
    metrics["constraint_met"] = float(chosen is not None)
    if chosen is not None:
        metrics.update({f"selected.accuracy_{ref}": float(chosen["Accuracy_mean"]),
                        "selected.energy_uj": float(chosen["Energy_uJ_per_sample"]),
                        "selected.analog_mac_ratio_percent": float(chosen["Analog_MAC_Ratio_percent"])})
    sweep = params.sweep
    if sweep.datasets or sweep.models or sweep.seeds:
        prefix = f"{params.data.dataset}/{params.model.name}/s{params.seed}/"
        run_params = {prefix + k: v for k, v in run_params.items()}
        metrics = {prefix + k: v for k, v in metrics.items()}
    return run_params, metrics


# --------------------------------------------------------------------------- rendering
Block = tuple  # ("p", text) | ("table", DataFrame) | ("img", file, alt)


def _fmt(value: Any) -> str:
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if not math.isfinite(v):
            return "–"
        if v != 0 and abs(v) < 1e-3:
            return f"{v:.4g}"
        text = f"{v:.4f}".rstrip("0").rstrip(".")
        return "0" if text == "-0" else text
    if value is None:
        return "–"
    return str(value)


def markdown_table(df: pd.DataFrame) -> str:
    def cell(v: Any) -> str:
        return _fmt(v).replace("|", "\\|")

    head = "| " + " | ".join(cell(c) for c in df.columns) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, rule, *body])


def html_table(df: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(_fmt(c))}</th>" for c in df.columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row) + "</tr>"
                   for row in df.itertuples(index=False))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _html_inline(text: str) -> str:
    """The few inline Markdown forms the report's sentences use: **bold** and `code`."""
    out = html.escape(text)
    parts = out.split("**")
    out = "".join(f"<strong>{p}</strong>" if i % 2 else p for i, p in enumerate(parts))
    parts = out.split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def render_markdown(title: str, sections: list[tuple[str, list[Block]]]) -> str:
    lines = [f"# {title}", ""]
    for heading, blocks in sections:
        lines += [f"## {heading}", ""]
        for block in blocks:
            if block[0] == "p":
                lines += [block[1], ""]
            elif block[0] == "table":
                lines += [markdown_table(block[1]), ""]
            elif block[0] == "img":
                lines += [f"![{block[2]}]({block[1]})", ""]
    return "\n".join(lines).rstrip() + "\n"


_CSS = """body{font-family:sans-serif;max-width:72em;margin:2em auto;padding:0 1em;color:#222;line-height:1.4}
table{border-collapse:collapse;margin:0.5em 0 1.2em;font-size:0.9em}
th,td{border:1px solid #ccc;padding:0.25em 0.6em;text-align:right}
th{background:#f0f0f0}td:first-child,td:nth-child(2),th:first-child,th:nth-child(2){text-align:left}
img{max-width:100%;border:1px solid #ddd;margin:0.5em 0}code{background:#f4f4f4;padding:0 0.2em}"""


def render_html(title: str, sections: list[tuple[str, list[Block]]]) -> str:
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             f"<title>{html.escape(title)}</title>", f"<style>{_CSS}</style>", "</head>", "<body>",
             f"<h1>{html.escape(title)}</h1>"]
    for heading, blocks in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        for block in blocks:
            if block[0] == "p":
                parts.append(f"<p>{_html_inline(block[1])}</p>")
            elif block[0] == "table":
                parts.append(html_table(block[1]))
            elif block[0] == "img":
                parts.append(f'<figure><img src="{html.escape(block[1])}" alt="{html.escape(block[2])}">'
                             f"<figcaption>{html.escape(block[2])}</figcaption></figure>")
    parts += ["</body>", "</html>"]
    return "\n".join(parts) + "\n"


# --------------------------------------------------------------------------- stage
def run(params: Params, evaluate_dir: Path, search_dir: Path, calibrate_dir: Path, out_dir: Path,
        tracker: Tracker) -> dict:
    cfg = params.report
    reference_time = float(params.evaluate.reference_time)
    ref = drift_label(reference_time)

    # ---- inputs, all checked before any output
    results = read_table(evaluate_dir / "results.csv", RESULT_COLUMNS, "results table", "mps evaluate")
    drift = read_table(evaluate_dir / "drift.csv", DRIFT_COLUMNS, "drift table", "mps evaluate")
    pareto = read_table(search_dir / "pareto.csv", None, "search Pareto table", "mps search")
    summary = read_json(search_dir / "search.json", "search summary")
    mappings = read_mappings(search_dir / "mappings", model_id(params))
    sensitivity = read_table(calibrate_dir / "sensitivity.csv", SENSITIVITY_COLUMNS, "sensitivity table",
                             "mps calibrate")
    if cfg.layers_mapping is not None and cfg.layers_mapping not in mappings:
        raise ConfigError(f"report.layers_mapping: no mapping named {cfg.layers_mapping!r} in "
                          f"{search_dir / 'mappings'}; fix: use one of {', '.join(sorted(mappings)[:8])}")
    if reference_time not in set(drift["drift_time"].astype(float)):
        raise ConfigError(f"{evaluate_dir / 'drift.csv'}: no results at evaluate.reference_time "
                          f"{reference_time:g} s; fix: rerun 'mps evaluate' with the current params")
    unknown = sorted(set(drift["mapping"]) - set(results["Mapping"]))
    if unknown:
        raise ArtifactError(f"{evaluate_dir / 'drift.csv'}: mappings {', '.join(unknown[:5])} are not in "
                            "results.csv; fix: rerun 'mps evaluate'")

    # ---- analysis
    fp32_acc = fp32_accuracy(results)
    chosen, verdict = select_mapping(results, fp32_acc, cfg.max_acc_drop, cfg.maximize)
    methods = sorted(results["Method"].unique())
    per_method = search_summary(summary, methods)
    best = plots.best_per_method(results)
    hv_test = measured_hypervolumes(results)
    hv_ref = [hv_test.get(m, float("nan")) for m in methods]
    window = cfg.hypervolume_window
    hv_useful = measured_hypervolumes(results, window)
    hv_useful_column = f"Hypervolume (test, {ref}, accuracy FP32−{window:g}…FP32)"
    methods_table = pd.DataFrame({
        "Method": [METHOD_LABELS.get(m, m) for m in methods],
        "Mappings": [int((results["Method"] == m).sum()) for m in methods],
        f"Best accuracy at {ref} (%)": [best.set_index("Method").loc[m, "Accuracy_percent"] for m in methods],
        "Best mapping": [best.set_index("Method").loc[m, "Mapping"] for m in methods],
        "Hypervolume (search, val)": per_method["search_hypervolume"].to_list(),
        f"Hypervolume (test, {ref})": hv_ref,
        hv_useful_column: [hv_useful.get(m, float("nan")) for m in methods],
        "Mapping time (s)": per_method["mapping_seconds"].to_list(),
    })
    race_table = pd.DataFrame({  # the equal-evaluation-budget view: the second table, not the headline
        "Method": methods_table["Method"],
        "Evaluations": per_method["evaluations"].to_list(),
        "Search time (s)": per_method["search_seconds"].to_list(),
        "Hypervolume (search, val)": per_method["search_hypervolume"].to_list(),
    })

    layer_name = cfg.layers_mapping or (chosen["Mapping"] if chosen is not None else
                                        results.sort_values(["Accuracy_mean", "Mapping"],
                                                            ascending=[False, True]).iloc[0]["Mapping"])
    if layer_name not in mappings:
        raise ConfigError(f"report.layers_mapping: no mapping named {layer_name!r} in {search_dir / 'mappings'}; "
                          f"fix: use one of {', '.join(sorted(mappings)[:8])}")
    layer_mapping = mappings[layer_name]
    from mps.stages.common import architecture_layers

    infos = architecture_layers(params.model.name, params.data.dataset)
    macs = layer_macs(params, list(layer_mapping.layers), infos)
    profiles, profiles_note = profiles_table(best[["Method", "Mapping"]], mappings, infos,
                                             Path(params.hardware_profile).parent)
    layer_df = pd.DataFrame([{"layer": n, "operator": layer_mapping.layers[n], "macs": macs[n]} for n in macs])
    sens, sens_time = sensitivity_at(sensitivity, reference_time)

    # ---- outputs
    out_dir.mkdir(parents=True, exist_ok=True)
    plots.pareto_plot(results, out_dir / "pareto.png", reference_time)
    plots.drift_plot(drift, results, out_dir / "drift.png", reference_time)
    plots.mapping_time_plot(pd.DataFrame({"Method": methods, "mapping_seconds": per_method["mapping_seconds"],
                                          "hypervolume": hv_ref}), out_dir / "mapping_time.png")
    plots.layers_plot(layer_df, out_dir / "layers.png",
                      f"{layer_name} ({layer_mapping.method}): operator and MACs per layer", sens)

    table = results[["Method", "Mapping", "Accuracy_percent", "Analog_MAC_Ratio_percent", "Digital_Size_MB",
                     "Analog_Tiles", "Analog_Tile_Util_percent", "Params_M", "Latency_ms", "Energy_uJ_per_sample"]]
    table = table.rename(columns={"Accuracy_percent": f"Accuracy_percent ({ref})"})
    spread = spread_columns(drift, results, reference_time)
    for i, column in enumerate(spread.columns):
        table.insert(3 + i, column, spread[column])
    title = f"MPS report: {results['Model'].iloc[0]} on {params.data.dataset}, seed {params.seed}"
    constraint = (f"Constraint: at most {cfg.max_acc_drop:g} points below FP32 at {drift_title(reference_time)} "
                  f"of drift, maximising `{cfg.maximize}` (the FP32 reference itself excluded).")
    op_counts = layer_df["operator"].value_counts().sort_index()
    why = ("set by report.layers_mapping" if cfg.layers_mapping else
           "the selected mapping" if chosen is not None else "the most accurate mapping: none meets the constraint")
    layers_text = (f"Layers of **{layer_name}** ({layer_mapping.method}; {why}): "
                   + ", ".join(f"{n} × {op}" for op, n in op_counts.items())
                   + (f"; red dots: each layer's analog sensitivity from calibrate at {drift_title(sens_time)}."
                      if sens_time is not None else "."))
    sections: list[tuple[str, list[Block]]] = [
        ("Selected mapping", [("p", constraint), ("p", verdict)]),
        (f"Results at {drift_title(reference_time)} of drift",
         [("p", f"Test accuracy as mean±std over {int(drift['repeat'].nunique())} PCM noise repeats (programming "
                "seeds), with the worst seed beside it, at the reference time and at the last drift time; "
                f"drift compensation: {params.evaluate.drift_compensation}; BatchNorm re-estimated after drift: "
                f"{'on ' + str(params.evaluate.bn_reestimation_batches) + ' batches' if params.evaluate.bn_reestimation_batches else 'no'}; "
                "hardware columns from the cost model (per sample)."), ("table", table)]),
        ("Methods", [("p", "Hypervolume: normalised, same bounds and reference point for every method "
                           "(accuracy, analog MAC ratio, digital memory). The search value is the method's own "
                           "validation estimate from search.json; the test value uses the results above, with "
                           "accuracy over [0, 100] %; the useful-range value uses the same results with the "
                           f"accuracy axis from FP32 − {window:g} points to FP32 (report.hypervolume_window; "
                           "memory from 0 to the FP32 model's, analog MAC share from 0 to 100 %, reference "
                           "point 1.1 in each normalised objective, so the most is 1.331), where a difference "
                           "that matters to a user is not squeezed into the third decimal."),
                     ("p", "Mapping time: wall time from the pretrained model to the method's set, all the "
                           "training it needs included (the adaptation for methods that use the supernet's "
                           "weights; LionHEART's retraining loop; ODiMo's searches and fine-tuning; the HWA "
                           "fine-tuning)."),
                     ("table", methods_table),
                     ("img", "mapping_time.png", f"Hypervolume (test, {ref}) vs mapping time")]),
        ("Equal evaluation budget", [("p", f"Each searcher's evaluations (budget {params.search.budget}) and its "
                                           "search time alone. LionHEART and ODiMo are not held to the budget: "
                                           "their cost is their time."), ("table", race_table)]),
        ("Energy and latency under every hardware profile", [("p", profiles_note), ("table", profiles)]),
        ("Pareto front", [("img", "pareto.png", "Accuracy vs analog MAC ratio; colour: digital memory (MB)")]),
        ("Accuracy over drift time", [("img", "drift.png", "Accuracy vs drift time, best mapping per method"),
                                      ("table", drift_table(drift, results))]),
        (f"Layers of {layer_name}", [("p", layers_text), ("img", "layers.png", f"Operators of {layer_name}")]),
    ]
    if not pareto.empty:
        sections.append(("Search's Pareto set (validation estimates)", [("table", pareto)]))
    atomic_write_text(out_dir / "report.md", render_markdown(title, sections))
    atomic_write_text(out_dir / "report.html", render_html(title, sections))

    metrics: dict[str, float] = {"constraint_met": float(chosen is not None)}
    if chosen is not None:
        metrics.update({f"selected.accuracy_{ref}": float(chosen["Accuracy_mean"]),
                        "selected.analog_mac_ratio_percent": float(chosen["Analog_MAC_Ratio_percent"]),
                        "selected.digital_size_mb": float(chosen["Digital_Size_MB"]),
                        "selected.energy_uj": float(chosen["Energy_uJ_per_sample"]),
                        "selected.accuracy_drop": float(chosen["drop"])})
    # the selected mapping, what `dvc metrics show` lists (the rest is in the report)
    atomic_write_json(out_dir / "metrics.json", {k: round(v, 6) for k, v in metrics.items()})
    for name in OUTPUTS:
        tracker.log_artifact(out_dir / name)
    metrics.update({f"{m}.hypervolume_test": v for m, v in hv_test.items()})
    metrics.update({f"{m}.hypervolume_test_useful": v for m, v in hv_useful.items()})
    tracker.log_metrics(metrics)
    if chosen is not None:
        tracker.set_tags({"mps.selected_mapping": chosen["Mapping"]})
    run_params, run_metrics = headline(params, results, drift, per_method, hv_test, chosen, hv_useful)
    tracker.parent.log_params(run_params)
    tracker.parent.log_metrics(run_metrics)
    print(f"report: {verdict.replace('**', '')}")
    return {"selected": None if chosen is None else str(chosen["Mapping"]), "verdict": verdict,
            "layers_mapping": layer_name, "metrics": metrics}
