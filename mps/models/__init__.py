"""Model zoo: built-in networks by name, or a user's ``package.module:factory``.

Every factory takes the keyword arguments ``in_channels``, ``num_classes`` and ``image_size``
and returns an ``nn.Module`` whose weight layers are plain ``nn.Conv2d`` / ``nn.Linear`` (the
layers the supernet converter replaces).  Weights are drawn from torch's global RNG only, so
``torch.manual_seed(s)`` before ``build_model`` gives the same model every time.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Callable

from torch import nn

from mps.errors import ConfigError
from mps.models.mobilenetv2 import mobilenetv2
from mps.models.resnet import resnet8, resnet20
from mps.models.vit import vit_tiny

ModelFactory = Callable[..., nn.Module]

#: built-in model name -> factory(*, in_channels, num_classes, image_size)
MODELS: dict[str, ModelFactory] = {
    "resnet8": resnet8,
    "resnet20": resnet20,
    "mobilenetv2": mobilenetv2,
    "vit_tiny": vit_tiny,
}

__all__ = ["MODELS", "build_model", "resolve_factory"]


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


def resolve_factory(name: str) -> ModelFactory:
    """The factory for a built-in name or an importable ``package.module:factory``."""
    if name in MODELS:
        return MODELS[name]
    if ":" not in name:
        raise ConfigError(
            f"unknown model {name!r}; fix: use one of {', '.join(sorted(MODELS))} "
            "or 'package.module:factory'"
        )
    module_name, _, attr = name.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"model {name!r} is not 'package.module:factory'; fix: name a module and a factory")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any import failure is the user's to fix
        raise ConfigError(
            f"model {name!r}: cannot import {module_name!r} ({_one_line(exc)}); "
            "fix: put the package on PYTHONPATH or correct the name"
        ) from exc
    factory = getattr(module, attr, None)
    if factory is None:
        raise ConfigError(f"model {name!r}: module {module_name!r} has no {attr!r}; fix: name an existing factory")
    if not callable(factory):
        raise ConfigError(f"model {name!r}: {attr!r} is a {type(factory).__name__}, not callable; fix: name a function or class")
    return factory


def build_model(name: str, in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    """Build model ``name`` for ``in_channels`` x ``image_size`` x ``image_size`` inputs."""
    for key, value in (("in_channels", in_channels), ("num_classes", num_classes), ("image_size", image_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"build_model: {key} must be a positive int, got {value!r}; fix: pass the data's shape")
    factory = resolve_factory(name)
    kwargs = {"in_channels": in_channels, "num_classes": num_classes, "image_size": image_size}
    try:
        inspect.signature(factory).bind(**kwargs)
    except TypeError as exc:
        raise ConfigError(
            f"model {name!r}: factory does not accept in_channels, num_classes, image_size ({_one_line(exc)}); "
            "fix: give it those keyword parameters"
        ) from exc
    except ValueError:
        pass  # no introspectable signature (some builtins): let the call decide
    try:
        model = factory(**kwargs)
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - report the user's factory failure in one line
        raise ConfigError(f"model {name!r}: factory raised {_one_line(exc)}; fix: the factory") from exc
    if not isinstance(model, nn.Module):
        raise ConfigError(
            f"model {name!r}: factory returned {type(model).__name__}, not a torch.nn.Module; "
            "fix: return the network"
        )
    return model
