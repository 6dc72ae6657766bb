"""The game registry: ids and versions, errors, kwargs overrides, entry-point plugins."""
import importlib
import sys
import textwrap

import pytest
from pettingzoo.test import api_test

import lsp_env
from lsp_env import EnvSpec, Registry, UnknownGameError

PLUGIN_MODULE = "lsp_parrot_plugin"
PLUGIN_SOURCE = '''
from lsp_env import TextGame


class Parrot(TextGame):
    """One speaker says anything; the reward is the share of `max_chars` it used."""

    metadata = {"name": "Parrot-v0", "description": "Say anything.", "render_modes": ["human", "ansi"]}

    def __init__(self, prompt="Say something.", max_chars=40, render_mode=None):
        super().__init__(["speaker"], max_action_chars=max_chars, max_observation_chars=40, render_mode=render_mode)
        self.prompt = prompt

    def observation_text(self, agent):
        return self.prompt

    def apply_move(self, agent, text):
        self.rewards[agent] = len(text) / self.action_space(agent).max_length
        return None
'''
ENTRY_POINTS = """
[lsp_env.games]
Parrot-v0 = lsp_parrot_plugin:Parrot
Broken-v0 = lsp_parrot_plugin:Missing
"""


@pytest.fixture
def module_dir(tmp_path):
    """A directory holding a tiny game module, `lsp_parrot_plugin`."""
    (tmp_path / f"{PLUGIN_MODULE}.py").write_text(PLUGIN_SOURCE)
    yield tmp_path
    sys.modules.pop(PLUGIN_MODULE, None)


@pytest.fixture
def plugin_dirs(module_dir, tmp_path_factory):
    """The module directory plus a site directory whose dist-info declares its game (and a broken one)."""
    site = tmp_path_factory.mktemp("site")
    dist_info = site / "lsp_parrot_plugin-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: lsp-parrot-plugin\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text(textwrap.dedent(ENTRY_POINTS))
    return [str(module_dir), str(site)]


@pytest.fixture
def parrot(module_dir, monkeypatch):
    monkeypatch.syspath_prepend(str(module_dir))
    return importlib.import_module(PLUGIN_MODULE).Parrot


def test_ids_parse_into_name_and_version():
    spec = lsp_env.registry["LanguageSelfPlay-v0"]
    assert (spec.id, spec.name, spec.version) == ("LanguageSelfPlay-v0", "LanguageSelfPlay", 0)
    assert EnvSpec("My.Game-v12", "pkg.mod:Game").version == 12
    assert EnvSpec("MyGame", "pkg.mod:Game").version is None
    with pytest.raises(ValueError, match="Malformed game id"):
        EnvSpec("my game v0", "pkg.mod:Game")
    with pytest.raises(ValueError, match="package.module:Class"):
        EnvSpec("MyGame-v0", "pkg.mod.Game")


def test_games_table_lists_builtin_games():
    rows = dict(lsp_env.games_table())
    assert rows["LanguageSelfPlay-v0"] == lsp_env.registry["LanguageSelfPlay-v0"].description != ""
    assert lsp_env.registry.entry_point_group == "lsp_env.games"


def test_unknown_id_suggests_close_matches_and_versions(parrot):
    registry = Registry()
    registry.register("Parrot-v0", parrot)
    registry.register("Parrot-v1", parrot)
    with pytest.raises(UnknownGameError, match=r"'Parrot' is registered in version\(s\): v0, v1") as error:
        registry.make("Parrot-v3")
    assert isinstance(error.value, KeyError)
    with pytest.raises(UnknownGameError, match="Did you mean: Parrot-v0"):
        registry.make("Parot-v0")
    with pytest.raises(UnknownGameError, match="version.*v0.*Did you mean: LanguageSelfPlay-v0"):
        lsp_env.make("LanguageSelfPlay-v9")
    assert "Nothing-v0" not in registry and registry.get("Nothing-v0") is None


def test_registering_an_id_twice_fails(parrot):
    registry = Registry()
    registry.register("Parrot-v0", parrot)
    with pytest.raises(ValueError, match="'Parrot-v0' is already registered"):
        registry.register("Parrot-v0", "somewhere.else:Parrot")
    with pytest.raises(ValueError, match="already registered"):
        lsp_env.register("LanguageSelfPlay-v0", "lsp_env.games.language_self_play:LanguageSelfPlay")


def test_make_kwargs_override_registered_kwargs(parrot):
    registry = Registry()
    registry.register("Parrot-v0", parrot, kwargs={"prompt": "Squawk!", "max_chars": 10})
    env = registry.make("Parrot-v0", max_chars=20)
    assert env.prompt == "Squawk!" and env.action_space("speaker").max_length == 20
    assert registry.make("Parrot-v0").action_space("speaker").max_length == 10


def test_string_entry_points_load_lazily():
    registry = Registry()
    registry.register(
        "Lsp-v0", "lsp_env.games.language_self_play:LanguageSelfPlay", kwargs={"task": "writing haiku", "judge": None}
    )
    from agents.judges import FunctionJudge

    env = registry.make("Lsp-v0", judge=FunctionJudge(lambda query, answer: 0.0), template="Topic: <topic>")
    assert "writing haiku" in env.challenger_prompt and "Topic: <topic>" in env.challenger_prompt


def test_make_rejects_factories_that_do_not_build_aec_envs():
    registry = Registry()
    registry.register("NotAGame-v0", dict)
    with pytest.raises(TypeError, match="not a pettingzoo.AECEnv"):
        registry.make("NotAGame-v0")


@pytest.mark.filterwarnings("ignore:.*(NumPy|gymnasium.spaces|player_0)")  # api_test's advice for numeric envs
def test_plugins_register_through_entry_points(plugin_dirs, monkeypatch):
    registry = Registry()
    assert "Parrot-v0" not in registry  # the first read discovers plugins; this one is not installed yet
    for path in plugin_dirs:
        monkeypatch.syspath_prepend(path)
    with pytest.warns(UserWarning, match=r"Skipping game plugin 'Broken-v0' \(lsp_parrot_plugin:Missing\)"):
        registry.load_plugins()
    assert registry["Parrot-v0"].description == "Say anything."
    assert "Broken-v0" not in registry
    env = registry.make("Parrot-v0", max_chars=30)
    env.reset()
    env.step("Polly wants a cracker")
    assert env.rewards == {"speaker": 21 / 30}
    api_test(registry.make("Parrot-v0"), num_cycles=5)
    with pytest.warns(UserWarning) as warned:
        registry.load_plugins()  # loading again skips the plugins already registered, silently
    assert len(warned) == 1 and "'Broken-v0'" in str(warned[0].message)
    assert list(registry) == ["Parrot-v0"]


def test_plugins_load_once_on_first_read(plugin_dirs, monkeypatch):
    for path in plugin_dirs:
        monkeypatch.syspath_prepend(path)
    registry = Registry()
    with pytest.warns(UserWarning, match="Broken-v0"):
        env = registry.make("Parrot-v0")
    assert isinstance(env, lsp_env.TextGame)
    assert dict(registry.table()) == {"Parrot-v0": "Say anything."}


def test_settings_are_the_games_typed_keyword_arguments():
    spec = lsp_env.registry["ConstrainedInstructions-v1"]
    settings = spec.settings_class()()
    assert settings.topics and settings.partial_credit and settings.max_constraints == 3  # v1's registered kwargs
    assert not hasattr(settings, "quality_judge") and not hasattr(settings, "render_mode")
    spec.check_arguments({"min_constraints": 2, "topics": False})
    with pytest.raises(TypeError, match=r"Expected a <class 'int'>. Got value: two; its settings: min_constraints"):
        spec.check_arguments({"min_constraints": "two"})
    with pytest.raises(TypeError, match="Option 'partial' is not accepted; its settings: .*partial_credit"):
        spec.check_arguments({"partial": True})
    with pytest.raises(TypeError, match=r"Literal\['bwrap', 'none-unsafe'\]"):
        lsp_env.registry["CodeOutputSelfPlay-v0"].check_arguments({"isolation": "off"})
