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
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from pettingzoo import AECEnv

ENTRY_POINT_GROUP = "lsp_env.games"
_ID = re.compile(r"^(?P<name>[A-Za-z][\w.:-]*?)(?:-v(?P<version>\d+))?$")

GameFactory = Callable[..., AECEnv]


class UnknownNameError(KeyError):
    """Nothing is registered under the name; the message suggests close matches."""

    def __str__(self) -> str:
        return str(self.args[0])


class UnknownGameError(UnknownNameError):
    """No game is registered under the id."""


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

    @classmethod
    def from_plugin(cls, plugin: EntryPoint) -> EnvSpec:
        """The spec of an installed package's game; it is imported now, for its description."""
        game = plugin.load()
        return cls(plugin.name, game, description=(getattr(game, "metadata", None) or {}).get("description", ""))

    def load(self) -> GameFactory:
        """The class or function that builds the game, importing it if needed."""
        return load_entry_point(self.entry_point)

    def summary(self) -> str:
        return self.description

    def settings_class(self) -> type:
        """The game's settings as a dataclass: its constructor's keyword arguments, with their types and defaults
        (the registered `kwargs` first), judges and `render_mode` left out. A type the game's module only imports
        for type checkers is `Any`, so that reading it imports nothing."""
        import inspect
        import sys
        from dataclasses import make_dataclass

        from lsp_env.contract import judge_arguments

        factory = self.load()
        skip = {"self", "render_mode", *judge_arguments(factory)}
        namespace = vars(sys.modules[factory.__module__]) if factory.__module__ in sys.modules else {}
        fields = []
        for name, parameter in inspect.signature(factory).parameters.items():
            if name in skip or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
                continue
            kind = parameter.annotation
            if isinstance(kind, str):
                try:
                    kind = eval(kind, dict(namespace))  # noqa: S307 (the game's own annotation)
                except Exception:  # noqa: BLE001 (a name imported only under TYPE_CHECKING)
                    kind = Any
            kind = Any if kind is inspect.Parameter.empty else kind
            value = self.kwargs.get(name, parameter.default)  # the registered value, else the constructor's
            fields.append((name, kind) if value is inspect.Parameter.empty
                          else (name, kind, field(default_factory=lambda value=value: value)))
        return make_dataclass(f"{getattr(factory, '__name__', 'Game')}Settings", fields, kw_only=True)

    def check_arguments(self, arguments: Mapping[str, Any]) -> None:
        """Check `arguments` against the game's typed settings (`settings_class`) without building it: an unknown
        name or a value of the wrong type is a `TypeError` listing the settings."""
        from dataclasses import fields

        from jsonargparse import ArgumentParser

        settings_class = self.settings_class()
        parser = ArgumentParser(exit_on_error=False)
        parser.add_class_arguments(settings_class, fail_untyped=False)
        try:
            parser.parse_object(dict(arguments))
        except Exception as error:  # jsonargparse's ArgumentError
            settings = [setting.name for setting in fields(settings_class)]
            message = " ".join(str(error).split())
            raise TypeError(f"{self.id}: {message}; its settings: {', '.join(settings) or 'none'}") from None

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


def load_entry_point(entry_point: str | Any) -> Any:
    """The object an entry point names ("package.module:Name"), imported; an object is returned as is."""
    if not isinstance(entry_point, str):
        return entry_point
    module, _, attribute = entry_point.partition(":")
    return functools.reduce(getattr, attribute.split("."), importlib.import_module(module))


class Registry(Mapping[str, Any]):
    """A read-only mapping id -> spec, plus `register`, `make` and plugin discovery.

    The games' registry holds `EnvSpec`s; `algorithms.registry` is the same class over
    `algorithms.registration.AlgorithmSpec`. A spec class takes (id, entry_point, ...) and has
    `from_plugin`, `summary` and `make`."""

    def __init__(self, entry_point_group: str = ENTRY_POINT_GROUP, spec: type = EnvSpec, kind: str = "game",
                 listing: str = "lsp_env.games_table() or `lsp games`", unknown: type = UnknownGameError):
        self.entry_point_group = entry_point_group
        self.spec, self.kind, self.listing, self.unknown = spec, kind, listing, unknown
        self._specs: dict[str, Any] = {}
        self._plugins_loaded = False

    def register(self, id: str, entry_point: str | Callable, *args: Any, override: bool = False, **details: Any):
        """Register under `id`; `entry_point` is "package.module:Class" (imported on first use) or the object.
        The other arguments are the spec's (for a game: `kwargs`, `description`)."""
        if id in self._specs and not override:
            raise ValueError(
                f"{self.kind.capitalize()} {id!r} is already registered (entry point "
                f"{self._specs[id].entry_point!r}). Give the new one another id"
                + (", or bump its version, e.g. 'Name-v1'." if self.kind == "game" else ", or pass override=True.")
            )
        spec = self.spec(id, entry_point, *args, **details)
        self._specs[id] = spec
        return spec

    def unregister(self, id: str) -> None:
        """Remove `id` (e.g. a game a test or a notebook registered)."""
        self[id]  # the usual error for an unknown id
        del self._specs[id]

    def make(self, id: str, *args: Any, **kwargs: Any):
        """Build what is registered as `id`; for a game, `kwargs` override the registered ones."""
        return self[id].make(*args, **kwargs)

    def table(self) -> list[tuple[str, str]]:
        """(id, description) rows, sorted by id."""
        return [(spec.id, spec.summary()) for spec in sorted(self.values(), key=lambda spec: spec.id)]

    def load_plugins(self) -> None:
        """Register the entries of installed packages (entry-point group `entry_point_group`). Runs by itself on
        first use; call it again after installing a package at run time. Plugins already registered are skipped."""
        self._plugins_loaded = True
        for plugin in entry_points(group=self.entry_point_group):
            try:
                spec = self.spec.from_plugin(plugin)
                if plugin.name in self._specs and self._specs[plugin.name].entry_point in (plugin.value,
                                                                                           spec.entry_point):
                    continue
                self.register(plugin.name, spec.entry_point, **_details(spec))
            except Exception as error:  # a broken plugin must not break the registry
                warnings.warn(
                    f"Skipping {self.kind} plugin {plugin.name!r} ({plugin.value}): {type(error).__name__}: {error}",
                    stacklevel=2,
                )

    def _ensure_plugins(self) -> None:
        if not self._plugins_loaded:
            self.load_plugins()

    def __getitem__(self, id: str):
        self._ensure_plugins()
        if id not in self._specs:
            raise self.unknown(self._unknown_id_message(id))
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
        message = f"No {self.kind} registered as {id!r}."
        match = _ID.match(id)
        name = match["name"] if match else id
        versions = sorted(spec.version for spec in self._specs.values()
                          if getattr(spec, "name", None) == name and getattr(spec, "version", None) is not None)
        if versions:
            message += f" {name!r} is registered in version(s): {', '.join(f'v{version}' for version in versions)}."
        close = difflib.get_close_matches(id, self._specs, n=3)
        if close:
            message += f" Did you mean: {', '.join(close)}?"
        return message + f" List them with {self.listing}."


def _details(spec: Any) -> dict[str, Any]:
    """The fields of a dataclass spec beyond its id and entry point, as `register` arguments."""
    from dataclasses import fields

    return {f.name: getattr(spec, f.name) for f in fields(spec) if f.init and f.name not in ("id", "entry_point")}


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
