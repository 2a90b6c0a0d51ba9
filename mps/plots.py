"""The report's figures (matplotlib, Agg backend: no display, no fonts from the web).

Each function takes plain data-frames (the evaluate stage's tables, a per-layer table) and
writes one PNG; none reads files or knows about stages, so the report, a notebook or a test
can call them alike.  PNGs carry no timestamp or software-version metadata, so the same data
gives the same file.

Markers and colours are fixed per method / operator (not assigned in order of appearance), so
the same method looks the same in every figure and every run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402  (backend first)
from matplotlib.artist import Artist  # noqa: E402
from matplotlib.collections import Collection  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from mps.units import drift_label, drift_title  # noqa: E402

# The searched method(s) are drawn as circles; each baseline has its own marker.
SEARCH_METHODS = ("mps", "mpaas")
METHOD_MARKERS = {"mps": "o", "mpaas": "h", "fp32": "*", "int8": "s", "fp16": "p", "analog": "D",
                  "greedy": "^", "random": "P", "nsga2": "v", "lionheart": "X", "odimo": "d"}
_EXTRA_MARKERS = ("<", ">", "d", "8", "X", "H")
METHOD_COLOURS = {"mps": "#1f77b4", "mpaas": "#17becf", "fp32": "#000000", "int8": "#ff7f0e", "fp16": "#bcbd22",
                  "analog": "#2ca02c", "greedy": "#d62728", "random": "#7f7f7f", "nsga2": "#9467bd",
                  "lionheart": "#8c564b", "odimo": "#e377c2"}
_EXTRA_COLOURS = ("#8c564b", "#e377c2", "#393b79", "#637939", "#843c39", "#7b4173")
OPERATOR_COLOURS = {"analog": "#2ca02c", "int8": "#ff7f0e", "int4": "#ffbb78", "fp16": "#bcbd22",
                    "fp32": "#7f7f7f", "skip": "#d9d9d9"}

_PNG_METADATA = {"Software": None}  # no matplotlib version in the file: identical bytes across installs


def _stable_pick(name: str, table: dict[str, str], extra: tuple[str, ...]) -> str:
    if name in table:
        return table[name]
    return extra[sum(name.encode()) % len(extra)]


def method_marker(method: str) -> str:
    return _stable_pick(method, METHOD_MARKERS, _EXTRA_MARKERS)


def method_colour(method: str) -> str:
    return _stable_pick(method, METHOD_COLOURS, _EXTRA_COLOURS)


def operator_colour(operator: str) -> str:
    if operator.startswith("analog"):
        return OPERATOR_COLOURS["analog"] if operator == "analog" else "#98df8a"
    return OPERATOR_COLOURS.get(operator, _stable_pick(operator, {}, _EXTRA_COLOURS))


def _save(fig, path: str | Path) -> Path:
    """Write through a temporary sibling and rename, like every other artifact."""
    from mps.artifacts import atomic_write_bytes

    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight", metadata=_PNG_METADATA)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def _front_2d(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Indices of the points not dominated when maximising both x and y, sorted by x."""
    order = np.lexsort((-y, -x))  # by x descending, then y descending
    keep, best_y = [], -np.inf
    for i in order:
        if y[i] > best_y:
            keep.append(i)
            best_y = y[i]
    return np.array(sorted(keep, key=lambda i: x[i]), dtype=int)


# --------------------------------------------------------------------------- Pareto front
def pareto_plot(results: pd.DataFrame, path: str | Path, reference_time: float,
                search_methods: Iterable[str] = SEARCH_METHODS) -> Path:
    """Accuracy at the reference drift time against analog MAC ratio, marker colour = digital
    weight memory (MB).  Each method has its own marker; baselines are labelled on the plot;
    the measured front of each searched method is drawn as a dashed line."""
    search_methods = set(search_methods)
    fig, ax = plt.subplots(figsize=(7.5, 5.0))
    size = results["Digital_Size_MB"].astype(float)
    vmin, vmax = float(size.min()), float(size.max())
    if vmax <= vmin:
        vmax = vmin + 1e-9
    scatter = None
    for method in sorted(results["Method"].unique(), key=lambda m: (m not in search_methods, m)):
        rows = results[results["Method"] == method]
        x = rows["Analog_MAC_Ratio_percent"].to_numpy(float)
        y = rows["Accuracy_mean"].to_numpy(float)
        err = rows["Accuracy_std"].to_numpy(float)
        baseline = method not in search_methods
        ax.errorbar(x, y, yerr=err, fmt="none", ecolor="#999999", elinewidth=0.8, capsize=2, zorder=1)
        scatter = ax.scatter(x, y, c=rows["Digital_Size_MB"].astype(float), cmap="viridis", vmin=vmin, vmax=vmax,
                             marker=method_marker(method), s=140 if baseline else 70, edgecolors="black",
                             linewidths=1.0 if baseline else 0.5, zorder=3, label=method)
        if baseline and len(rows) <= 2:
            for xi, yi, name in zip(x, y, rows["Mapping"]):
                text = method if len(rows) == 1 else f"{method}: {name}"
                ax.annotate(text, (xi, yi), textcoords="offset points", xytext=(7, 6), fontsize=8)
        if not baseline and len(rows) > 1:
            front = _front_2d(x, y)
            ax.plot(x[front], y[front], linestyle="--", color=method_colour(method), linewidth=1.0, zorder=2)
    if scatter is not None:
        bar = fig.colorbar(scatter, ax=ax)
        bar.set_label("digital weight memory (MB)")
    ax.set_xlabel("analog MAC ratio (%)")
    ax.set_ylabel(f"test accuracy at {drift_title(reference_time)} of drift (%)")
    ax.set_title("Mappings: accuracy vs analog share")
    ax.grid(True, alpha=0.3)
    legend = ax.legend(loc="best", fontsize=8, title="method")
    for handle in legend.legend_handles:  # the legend shows the marker shapes; colour means memory
        if isinstance(handle, Collection):
            handle.set_facecolor("white")
            handle.set_edgecolor("black")
    return _save(fig, path)


# --------------------------------------------------------------------------- mapping time
def mapping_time_plot(methods: pd.DataFrame, path: str | Path) -> Path:
    """Hypervolume against mapping time (log scale), one labelled point per method.

    ``methods`` has columns Method, mapping_seconds and hypervolume (all with the same
    reference point); methods without a time are left out."""
    rows = methods.dropna(subset=["mapping_seconds", "hypervolume"])
    fig, ax = plt.subplots(figsize=(7.0, 4.5))
    for r in rows.itertuples(index=False):
        t = max(float(r.mapping_seconds), 1e-2)  # a ~0 s method still shows on the log axis
        ax.scatter([t], [float(r.hypervolume)], marker=method_marker(r.Method), color=method_colour(r.Method),
                   s=90, edgecolors="black", linewidths=0.6, zorder=3)
        ax.annotate(r.Method, (t, float(r.hypervolume)), textcoords="offset points", xytext=(6, 5), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("mapping time: pretrained model to Pareto set, training included (s, log)")
    ax.set_ylabel("hypervolume (same reference point)")
    ax.set_title("Hypervolume vs mapping time")
    ax.grid(True, alpha=0.3, which="both")
    return _save(fig, path)


# --------------------------------------------------------------------------- drift
def best_per_method(results: pd.DataFrame) -> pd.DataFrame:
    """Each method's most accurate mapping at the reference time (ties: mapping name)."""
    ranked = results.sort_values(["Method", "Accuracy_mean", "Mapping"], ascending=[True, False, True])
    return ranked.groupby("Method", sort=True).head(1).reset_index(drop=True)


def drift_stats(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean, std (over repeats, ddof=0 as in results.csv), worst and best seed of accuracy per drift time."""
    grouped = rows.groupby("drift_time")["accuracy"]
    return pd.DataFrame({"mean": grouped.mean(), "std": grouped.agg(lambda s: float(np.std(s.to_numpy(float)))),
                         "worst": grouped.min(), "best": grouped.max()}).sort_index()


def drift_plot(drift: pd.DataFrame, results: pd.DataFrame, path: str | Path, reference_time: float) -> Path:
    """Accuracy against drift time (log axis) for each method's best mapping at the reference
    time; error bars are the standard deviation over noise repeats, the shaded band runs from the
    worst to the best programming seed (a collapsed seed shows as a band reaching down)."""
    best = best_per_method(results)
    fig, ax = plt.subplots(figsize=(7.5, 5.0))
    times = sorted(float(t) for t in drift["drift_time"].unique())
    for _, row in best.iterrows():
        rows = drift[drift["mapping"] == row["Mapping"]]
        stats = drift_stats(rows)
        std = stats["std"].to_numpy(float)
        method = row["Method"]
        ax.errorbar(stats.index.to_numpy(float), stats["mean"].to_numpy(float), yerr=std, capsize=3,
                    marker=method_marker(method), color=method_colour(method),
                    linestyle="--" if method == "fp32" else "-", label=f"{method} ({row['Mapping']})")
        ax.fill_between(stats.index.to_numpy(float), stats["worst"].to_numpy(float), stats["best"].to_numpy(float),
                        color=method_colour(method), alpha=0.12, linewidth=0)
    ax.set_xscale("log")
    ax.set_xticks(times)
    ax.set_xticklabels([drift_label(t) for t in times])
    ax.minorticks_off()
    ax.axvline(reference_time, color="#bbbbbb", linestyle=":", linewidth=1)
    ax.set_xlabel("time after programming (log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Accuracy under PCM drift (best mapping per method; band: worst to best seed)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    return _save(fig, path)


# --------------------------------------------------------------------------- layers
def layers_plot(layers: pd.DataFrame, path: str | Path, title: str,
                sensitivity: pd.Series | None = None) -> Path:
    """One bar per layer (model order): height = the layer's MACs per sample, colour = its
    operator in the mapping.  ``layers`` has columns ``layer``, ``operator``, ``macs``.  If a
    per-layer analog sensitivity (accuracy drop, points) is given it is drawn on a second axis."""
    fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * len(layers) + 2.0), 4.8))
    x = np.arange(len(layers))
    colours = [operator_colour(op) for op in layers["operator"]]
    hatches = ["//" if op == "skip" else "" for op in layers["operator"]]
    bars = ax.bar(x, layers["macs"].astype(float) / 1e6, color=colours, edgecolor="black", linewidth=0.5)
    for bar, hatch in zip(bars, hatches):
        bar.set_hatch(hatch)
    ax.set_xticks(x)
    ax.set_xticklabels(layers["layer"], rotation=60, ha="right", fontsize=7)
    macs = layers["macs"].astype(float)
    if len(macs) and macs[macs > 0].min() * 100 < macs.max():  # small layers (a classifier) stay visible
        ax.set_yscale("log")
    ax.set_ylabel("MACs per sample (millions)")
    ax.set_title(title, pad=28)
    handles: list[Artist] = [Patch(facecolor=operator_colour(op), edgecolor="black", hatch="//" if op == "skip" else "", label=op)
               for op in sorted(layers["operator"].unique())]
    if sensitivity is not None and len(sensitivity):
        ax2 = ax.twinx()
        values = [float(sensitivity.get(name, np.nan)) for name in layers["layer"]]
        line, = ax2.plot(x, values, color="#d62728", marker="o", linestyle="none", markersize=4,
                         label="analog sensitivity (drop, points)")
        ax2.set_ylabel("accuracy drop when analog alone (points)", color="#d62728")
        handles.append(line)
    ax.legend(handles=handles, loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=len(handles), fontsize=8,
              frameon=False)
    ax.grid(True, axis="y", alpha=0.3)
    return _save(fig, path)
