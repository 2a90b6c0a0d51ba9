"""The project's error types, in a leaf module (imports nothing of ``mps``), so any module —
configuration, models, Pareto math — can raise them without importing each other."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration or input problem the user must fix; message is one line."""
