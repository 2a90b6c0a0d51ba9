"""Short, stable labels for drift times (seconds after programming).

One helper, shared by evaluate (MLflow metric names such as ``mps-00.accuracy_1d``), the
report (table headers, plot ticks) and any later stage, so that the same time is always
written the same way and the MLflow compare view lines metrics up across runs.
Kept free of matplotlib and torch so that every stage can import it cheaply.
"""

from __future__ import annotations

import math

# Largest first.  "30d" rather than "1mo": a month has no fixed length, so the label says
# exactly what was simulated.
_UNITS = (("y", 365 * 86400), ("d", 86400), ("h", 3600), ("min", 60), ("s", 1))


def drift_label(seconds: float) -> str:
    """``1 -> '1s'``, ``3600 -> '1h'``, ``86400 -> '1d'``, ``2592000 -> '30d'``, ``31536000 -> '1y'``.

    The largest unit that divides the time exactly; otherwise whole seconds, or (for
    fractions of a second) the value with ``p`` as decimal point (``0.5 -> '0p5s'``), so the
    label is always a valid, unambiguous MLflow metric-name fragment.
    """
    t = float(seconds)
    if not math.isfinite(t) or t <= 0:
        raise ValueError(f"drift time must be a positive number of seconds, got {seconds!r}")
    for unit, size in _UNITS:
        if t >= size and float(t / size).is_integer():
            return f"{int(t // size)}{unit}"
    return f"{t:g}".replace(".", "p") + "s"


def drift_title(seconds: float) -> str:
    """Human-readable form for plot axes and report headers (``86400 -> '1 d'``)."""
    label = drift_label(seconds)
    number = label.rstrip("abcdefghijklmnopqrstuvwxyz")
    return f"{number.replace('p', '.')} {label[len(number):]}"
