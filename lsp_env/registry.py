"""The game registry, modelled on gymnasium's.

    lsp_env.register("MyGame-v0", entry_point="my_pkg.games:MyGame", kwargs={...})
    env = lsp_env.make("MyGame-v0", **overrides)

Installed packages add games through the entry-point group `lsp_env.games`
(name: the game id, value: "module:Class"), for example in pyproject.toml:

    [project.entry-points."lsp_env.games"]
    MyGame-v0 = "my_pkg.games:MyGame"

They are loaded once, the first time the registry is read. A plugin that fails
to load is skipped with a warning naming it.
"""
from __future__ import annotations

import difflib
import functools
import importlib
import re
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

from pettingzoo import AECEnv

ENTRY_POINT_GROUP = "lsp_env.games"
_ID = re.compile(r"^(?P<name>[A-Za-z][\w.:-]*?)(?:-v(?P<version>\d+))?$")

GameFactory = Callable[..., AECEnv]


class UnknownGameError(KeyError):
    """No game is registered under the id; the message suggests close matches."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass
class EnvSpec:
    """How to build one registered game. `name` and `version` come from the id ("Name-v0")."""

    id: str
    entry_point: str | GameFactory
    kwargs: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    name: str = field(init=False)
    version: int | None = field(init=False)

    def __post_init__(self) -> None:
        match = _ID.match(self.id)
        if match is None:
            raise ValueError(f"Malformed game id {self.id!r}: expected 'Name-v<number>', e.g. 'MyGame-v0'.")
        self.name = match["name"]
        self.version = None if match["version"] is None else int(match["version"])
        if isinstance(self.entry_point, str) and ":" not in self.entry_point:
            raise ValueError(f"Entry point {self.entry_point!r} of {self.id!r} must look like 'package.module:Class'.")

    def load(self) -> GameFactory:
        """The class or function that builds the game, importing it if needed."""
        if not isinstance(self.entry_point, str):
            return self.entry_point
        module, _, attribute = self.entry_point.partition(":")
        return functools.reduce(getattr, attribute.split("."), importlib.import_module(module))

    def make(self, **kwargs: Any) -> AECEnv:
        """Build the game; `kwargs` override the registered ones. An argument the game does not take is a
        `TypeError` that lists the ones it does."""
        factory = self.load()
        try:
            env = factory(**{**self.kwargs, **kwargs})
        except TypeError as error:
            if "unexpected keyword argument" not in str(error):
                raise
            import inspect

            accepted = [name for name in inspect.signature(factory).parameters if name not in ("self", "render_mode")]
            raise TypeError(f"{self.id} got an argument it does not take ({error}); it takes: "
                            f"{', '.join(accepted) or 'none'}") from None
        if not isinstance(env, AECEnv):
            raise TypeError(f"{self.id!r} built a {type(env).__name__}, not a pettingzoo.AECEnv.")
        return env


class Registry(Mapping[str, EnvSpec]):
    """A read-only mapping id -> `EnvSpec`, plus `register`, `make` and plugin discovery."""

    def __init__(self, entry_point_group: str = ENTRY_POINT_GROUP):
        self.entry_point_group = entry_point_group
        self._specs: dict[str, EnvSpec] = {}
        self._plugins_loaded = False

    def register(
        self,
        id: str,
        entry_point: str | GameFactory,
        kwargs: Mapping[str, Any] | None = None,
        description: str = "",
    ) -> EnvSpec:
        """Register a game; `entry_point` is "package.module:Class" or a class/function."""
        if id in self._specs:
            raise ValueError(
                f"Game {id!r} is already registered (entry point {self._specs[id].entry_point!r}). "
                "Give the new game another id, or bump its version, e.g. 'Name-v1'."
            )
        spec = EnvSpec(id, entry_point, dict(kwargs or {}), description)
        self._specs[id] = spec
        return spec

    def make(self, id: str, **kwargs: Any) -> AECEnv:
        """Build the game registered as `id`; `kwargs` override the registered ones."""
        return self[id].make(**kwargs)

    def table(self) -> list[tuple[str, str]]:
        """(id, description) rows, sorted by id."""
        return [(spec.id, spec.description) for spec in sorted(self.values(), key=lambda spec: spec.id)]

    def load_plugins(self) -> None:
        """Register the games of installed packages (entry-point group
        `entry_point_group`). Runs by itself on first use; call it again after
        installing a package at run time. Plugins already registered are skipped."""
        self._plugins_loaded = True
        for plugin in entry_points(group=self.entry_point_group):
            try:
                game = plugin.load()
                if plugin.name in self._specs and self._specs[plugin.name].entry_point is game:
                    continue
                metadata = getattr(game, "metadata", None) or {}
                self.register(plugin.name, game, description=metadata.get("description", ""))
            except Exception as error:  # a broken plugin must not break the registry
                warnings.warn(
                    f"Skipping game plugin {plugin.name!r} ({plugin.value}): {type(error).__name__}: {error}",
                    stacklevel=2,
                )

    def _ensure_plugins(self) -> None:
        if not self._plugins_loaded:
            self.load_plugins()

    def __getitem__(self, id: str) -> EnvSpec:
        self._ensure_plugins()
        if id not in self._specs:
            raise UnknownGameError(self._unknown_id_message(id))
        return self._specs[id]

    def __contains__(self, id: object) -> bool:
        self._ensure_plugins()
        return id in self._specs

    def __iter__(self) -> Iterator[str]:
        self._ensure_plugins()
        return iter(self._specs)

    def __len__(self) -> int:
        self._ensure_plugins()
        return len(self._specs)

    def _unknown_id_message(self, id: str) -> str:
        message = f"No game registered as {id!r}."
        match = _ID.match(id)
        name = match["name"] if match else id
        versions = sorted(spec.version for spec in self._specs.values() if spec.name == name and spec.version is not None)
        if versions:
            message += f" {name!r} is registered in version(s): {', '.join(f'v{version}' for version in versions)}."
        close = difflib.get_close_matches(id, self._specs, n=3)
        if close:
            message += f" Did you mean: {', '.join(close)}?"
        return message + " List the games with lsp_env.games_table() or `lsp games`."


registry = Registry()
register = registry.register
make = registry.make
games_table = registry.table
load_plugins = registry.load_plugins


def make_with_judges(id: str, judges: Mapping[str, Any], game_args: Mapping[str, Any] | None = None) -> AECEnv:
    """`make(id)` given the judges among `judges` ({"judge": ..., "quality_judge": ...}) that the game declares
    (`lsp_env.contract`: its `judges`); a game that declares none gets none."""
    from lsp_env.contract import judge_arguments

    accepted = judge_arguments(registry[id].load())
    given = {name: judge for name, judge in judges.items() if judge is not None and name in accepted}
    return make(id, **given, **dict(game_args or {}))
