"""The algorithm registry and third-party algorithms."""
import sys
import textwrap

import pytest
import torch

import algorithms
from algorithms import registration as algorithm_registry
from agents.models import tiny_model


def test_builtin_algorithms_are_registered():
    names = [name for name, _ in algorithms.available()]
    assert {"lsp", "lsp-zero", "grpo"} <= set(names)


def test_unknown_algorithm_suggests_close_names():
    with pytest.raises(KeyError, match="lsp-zero"):
        algorithms.resolve("lsp-zer")


def test_duplicate_registration_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        algorithms.register("lsp", algorithms.SelfPlayLoss)


def test_unknown_setting_is_refused():
    model, _ = tiny_model()
    with pytest.raises(TypeError, match="no setting"):
        algorithms.make("lsp", model, betta=0.1)


def test_entry_point_algorithm_is_discovered(tmp_path, monkeypatch):
    package = tmp_path / "my_algos.py"
    package.write_text(textwrap.dedent('''
        from algorithms.lsp_zero import LSPZero

        class HalfChallenger(LSPZero):
            """LSP-Zero with half the challenger weight."""
    '''))
    dist = tmp_path / "my_algos-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-algos\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[lsp.algorithms]\nhalf = my_algos:HalfChallenger\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = algorithm_registry.Registry(algorithm_registry.ENTRY_POINT_GROUP, algorithm_registry.AlgorithmSpec,
                                           kind="algorithm")
    monkeypatch.setattr(algorithm_registry, "registry", registry)
    assert algorithm_registry.resolve("half").__name__ == "HalfChallenger"
    assert dict(algorithms.available())["half"] == "LSP-Zero with half the challenger weight."
    sys.modules.pop("my_algos", None)


def test_settings_classes_come_from_the_registration_or_from_the_class():
    from algorithms.configs import GRPOConfig, LSPZeroConfig
    from algorithms.lsp_zero import LSPZero

    assert algorithms.config_class("grpo") is GRPOConfig and algorithms.config_class("lsp-zero") is LSPZeroConfig

    class Mine(LSPZero):
        """No settings of its own."""

    algorithms.register("mine", Mine)
    algorithms.register("broken", "no_such_module:Loss", config="algorithms.configs:GRPOConfig")
    try:
        assert algorithms.config_class("mine") is LSPZeroConfig  # its class's Config
        assert algorithms.config_class("broken") is GRPOConfig  # read without importing the algorithm
        with pytest.raises(ImportError, match="no_such_module"):
            algorithms.resolve("broken")
        with pytest.warns(UserWarning, match="'broken' points to 'no_such_module:Loss'"):
            listed = dict(algorithms.available())
        assert listed["mine"] == "No settings of its own." and listed["broken"] == "(cannot be loaded)"
    finally:
        algorithms.registry.unregister("mine")
        algorithms.registry.unregister("broken")


def test_algorithms_and_games_share_one_registry_class():
    import lsp_env

    assert type(algorithms.registry) is type(lsp_env.registry)
    with pytest.raises(algorithm_registry.UnknownAlgorithmError, match="Did you mean: lsp-zero") as error:
        algorithms.registry["lsp-zer"]
    assert isinstance(error.value, KeyError)
    algorithms.register("lsp", "somewhere:Else", override=True)  # replaces, then back
    algorithms.register("lsp", "algorithms.lsp:LSP", config="algorithms.configs:AlgorithmConfig", override=True,
                        description="Language Self-Play with quality self-reward.")
    assert algorithms.resolve("lsp").__name__ == "LSP"
