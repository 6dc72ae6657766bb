"""Algorithm registry: name -> `AlgorithmSpec`, plus the `lsp.algorithms` entry-point group.

It is the games' `lsp_env.Registry` over algorithm specs: the same lookups, errors and plugin discovery.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from importlib.metadata import EntryPoint
from typing import TYPE_CHECKING

from lsp_env.registry import Registry, UnknownNameError, load_entry_point

if TYPE_CHECKING:
    import torch

ENTRY_POINT_GROUP = "lsp.algorithms"


class UnknownAlgorithmError(UnknownNameError):
    """No algorithm is registered under the name."""


@dataclass
class AlgorithmSpec:
    """A registered algorithm: its loss class (or "module:Class", imported on first use) and its settings class."""

    id: str
    entry_point: type | str
    config: type | str | None = None
    """The settings class (or "module:Class"), given apart from a class that is slow to import so that settings
    are checked before it loads; by default the class's `Config`."""
    description: str = ""
    """What `lsp algos` lists; by default the first line of the class docstring."""

    @classmethod
    def from_plugin(cls, plugin: EntryPoint) -> AlgorithmSpec:
        return cls(plugin.name, plugin.value)  # imported on first use

    def load(self) -> type:
        """The loss class."""
        try:
            return load_entry_point(self.entry_point)
        except (ImportError, AttributeError) as error:
            raise ImportError(f"algorithm {self.id!r} points to {self.entry_point!r}, which cannot be loaded: "
                              f"{error}") from error

    def load_config(self) -> type:
        """The settings class, without importing the loss class when `config` is given."""
        return load_entry_point(self.config) if self.config else self.load().Config

    def summary(self) -> str:
        if self.description:
            return self.description
        try:
            return ((self.load().__doc__ or "").strip().splitlines() or [""])[0]
        except ImportError as error:
            warnings.warn(str(error))
            return "(cannot be loaded)"

    def make(self, actor_network: torch.nn.Module, **settings):
        """The loss module for `actor_network`."""
        return self.load()(actor_network, **settings)


registry = Registry(ENTRY_POINT_GROUP, AlgorithmSpec, kind="algorithm", listing="`lsp algos`",
                    unknown=UnknownAlgorithmError)


def register(name: str, algorithm: type | str, *, description: str = "", config: type | str | None = None,
             override: bool = False) -> AlgorithmSpec:
    """Register an algorithm class (or "module:Class", imported on first use) under `name` (`AlgorithmSpec`)."""
    return registry.register(name, algorithm, config=config, description=description, override=override)


def resolve(name: str) -> type:
    """The algorithm class registered as `name`."""
    return registry[name].load()


def config_class(name: str) -> type:
    """The settings class of algorithm `name` (its `--algorithm_args`)."""
    return registry[name].load_config()


def make(name: str, actor_network: torch.nn.Module, **settings):
    """Build the loss module of algorithm `name` for `actor_network`."""
    return registry.make(name, actor_network, **settings)


def available() -> list[tuple[str, str]]:
    """(name, description) for every algorithm, plugins included; classes load only when undescribed."""
    return registry.table()
