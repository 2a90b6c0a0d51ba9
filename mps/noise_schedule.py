"""Progressive analog-noise scaling (adaptation phase 2).

The hardware-aware-training noise of each analog operator (output noise and weight noise)
rises in ``steps`` discrete levels from ``start_fraction`` of the hardware profile's level to
exactly the profile's level.  Layers found resilient move faster and sensitive layers slower:
with progress ``t = s / (steps - 1)`` of ramp step ``s`` and a layer's normalised
sensitivity ``z`` in [0, 1] (0 = most resilient), the layer's fraction is

    f(s) = start + (1 - start) * t ** (1 + 4 * slowdown * z)

so every layer starts at ``start``, ends at 1 (the target) at the last step, never exceeds it,
and a sensitive layer's curve stays below a resilient one's in between.  ``slowdown = 0``
gives the same linear ramp for all layers.
"""

from __future__ import annotations

from typing import Mapping

from mps.config import NoiseRampConfig


def normalised_sensitivity(drops: Mapping[str, float]) -> dict[str, float]:
    """Accuracy drops (larger = more sensitive) -> [0, 1] by rank (robust to outliers and ties)."""
    if not drops:
        return {}
    names = sorted(drops, key=lambda n: (drops[n], n))
    if len(names) == 1:
        return {names[0]: 0.0}
    return {n: i / (len(names) - 1) for i, n in enumerate(names)}


def ramp_fraction(step: int, cfg: NoiseRampConfig, z: float) -> float:
    """Fraction of the target noise for a layer of normalised sensitivity ``z`` at ramp ``step``."""
    if cfg.steps <= 1:
        return 1.0
    step = min(max(step, 0), cfg.steps - 1)
    t = step / (cfg.steps - 1)
    frac = cfg.start_fraction + (1.0 - cfg.start_fraction) * t ** (1.0 + 4.0 * cfg.sensitivity_slowdown * z)
    return min(1.0, frac)


def layer_schedule(sensitivity: Mapping[str, float], cfg: NoiseRampConfig) -> dict[str, list[float]]:
    """Per-layer list of noise fractions, one per ramp step."""
    z = normalised_sensitivity(sensitivity)
    return {name: [ramp_fraction(s, cfg, z[name]) for s in range(cfg.steps)] for name in z}


def ramp_step_at(global_step: int, total_steps: int, cfg: NoiseRampConfig) -> int:
    """Which ramp step a training step of phase 2 is in (ramp steps spread evenly)."""
    if total_steps <= 0:
        return cfg.steps - 1
    return min(cfg.steps - 1, global_step * cfg.steps // total_steps)
