"""Algorithm registry: name -> loss class, plus the `lsp.algorithms` entry-point group."""
from __future__ import annotations

import difflib
import importlib
import warnings
from importlib.metadata import entry_points

import torch

ENTRY_POINT_GROUP = "lsp.algorithms"
registry: dict[str, type] = {}
_plugins_loaded = False


def register(name: str, algorithm: type | str, *, override: bool = False) -> None:
    """Register an algorithm class (or "module:Class") under `name`."""
    if name in registry and not override:
        raise ValueError(f"algorithm {name!r} is already registered; pass override=True to replace it")
    registry[name] = algorithm


def _load_plugins() -> None:
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        if entry.name not in registry:
            registry[entry.name] = entry.value


def resolve(name: str) -> type:
    """The algorithm class registered as `name`."""
    _load_plugins()
    if name not in registry:
        close = difflib.get_close_matches(name, registry, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"unknown algorithm {name!r}.{hint} Registered: {', '.join(sorted(registry))}")
    algorithm = registry[name]
    if isinstance(algorithm, str):
        module, _, attribute = algorithm.partition(":")
        try:
            algorithm = getattr(importlib.import_module(module), attribute)
        except (ImportError, AttributeError) as error:
            raise ImportError(f"algorithm {name!r} points to {registry[name]!r}, which cannot be loaded: {error}")
        registry[name] = algorithm
    return algorithm


def make(name: str, actor_network: torch.nn.Module, **settings):
    """Build the loss module of algorithm `name` for `actor_network`."""
    return resolve(name)(actor_network, **settings)


def available() -> list[tuple[str, str]]:
    """(name, first docstring line) for every algorithm, plugins included."""
    rows = []
    for name in sorted(set(registry) | {e.name for e in entry_points(group=ENTRY_POINT_GROUP)}):
        try:
            doc = (resolve(name).__doc__ or "").strip().splitlines()[0]
        except (ImportError, KeyError) as error:
            warnings.warn(str(error))
            doc = "(cannot be loaded)"
        rows.append((name, doc))
    return rows
