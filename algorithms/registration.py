"""Algorithm registry: name -> loss class, plus the `lsp.algorithms` entry-point group."""
from __future__ import annotations

import difflib
import importlib
import warnings
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

ENTRY_POINT_GROUP = "lsp.algorithms"
registry: dict[str, type | str] = {}
descriptions: dict[str, str] = {}
configs: dict[str, type | str] = {}  # name -> its settings class (or "module:Class"), when given apart
_plugins_loaded = False


def register(name: str, algorithm: type | str, *, description: str = "", config: type | str | None = None,
             override: bool = False) -> None:
    """Register an algorithm class (or "module:Class", imported on first use) under `name`.

    `description` is what `lsp algos` lists; by default the first line of the class docstring. `config` is
    its settings class (or "module:Class"), by default the class's `Config`; give it apart from a class
    that is slow to import, so that settings are checked before the class loads."""
    if name in registry and not override:
        raise ValueError(f"algorithm {name!r} is already registered; pass override=True to replace it")
    registry[name] = algorithm
    for table, value in ((descriptions, description), (configs, config)):
        if value:
            table[name] = value
        else:
            table.pop(name, None)


def _load_plugins() -> None:
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        if entry.name not in registry:
            registry[entry.name] = entry.value


class UnknownAlgorithmError(KeyError):
    """No algorithm is registered under the name; the message suggests close matches."""

    def __str__(self) -> str:
        return str(self.args[0])


def check_name(name: str) -> None:
    """Raise `UnknownAlgorithmError` naming close matches unless `name` is registered (imports nothing)."""
    _load_plugins()
    if name not in registry:
        close = difflib.get_close_matches(name, registry, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UnknownAlgorithmError(f"unknown algorithm {name!r}.{hint} Registered: {', '.join(sorted(registry))}")


def _load(name: str, table: dict) -> type:
    target = table[name]
    if isinstance(target, str):
        module, _, attribute = target.partition(":")
        try:
            table[name] = getattr(importlib.import_module(module), attribute)
        except (ImportError, AttributeError) as error:
            raise ImportError(f"algorithm {name!r} points to {target!r}, which cannot be loaded: {error}")
    return table[name]


def resolve(name: str) -> type:
    """The algorithm class registered as `name`."""
    check_name(name)
    return _load(name, registry)


def config_class(name: str) -> type:
    """The settings class of algorithm `name` (its `--algorithm_args`), without importing the algorithm when
    it was registered with a `config`."""
    check_name(name)
    return _load(name, configs) if name in configs else resolve(name).Config


def make(name: str, actor_network: torch.nn.Module, **settings):
    """Build the loss module of algorithm `name` for `actor_network`."""
    return resolve(name)(actor_network, **settings)


def available() -> list[tuple[str, str]]:
    """(name, description) for every algorithm, plugins included; classes load only when undescribed."""
    _load_plugins()
    rows = []
    for name in sorted(registry):
        if name in descriptions:
            rows.append((name, descriptions[name]))
            continue
        try:
            doc = ((resolve(name).__doc__ or "").strip().splitlines() or [""])[0]
        except (ImportError, KeyError) as error:
            warnings.warn(str(error))
            doc = "(cannot be loaded)"
        rows.append((name, doc))
    return rows
