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
    monkeypatch.setattr(algorithm_registry, "_plugins_loaded", False)
    monkeypatch.setattr(algorithm_registry, "registry", dict(algorithm_registry.registry))
    assert algorithm_registry.resolve("half").__name__ == "HalfChallenger"
    sys.modules.pop("my_algos", None)


def test_settings_classes_come_from_the_registration_or_from_the_class(monkeypatch):
    from algorithms.configs import GRPOConfig, LSPZeroConfig
    from algorithms.lsp_zero import LSPZero

    for table in ("registry", "descriptions", "configs"):
        monkeypatch.setattr(algorithm_registry, table, dict(getattr(algorithm_registry, table)))
    assert algorithms.config_class("grpo") is GRPOConfig and algorithms.config_class("lsp-zero") is LSPZeroConfig

    class Mine(LSPZero):
        """No settings of its own."""

    algorithms.register("mine", Mine)
    algorithms.register("broken", "no_such_module:Loss", config="algorithms.configs:GRPOConfig")
    assert algorithms.config_class("mine") is LSPZeroConfig  # its class's Config
    assert algorithms.config_class("broken") is GRPOConfig  # read without importing the algorithm
    with pytest.raises(ImportError, match="no_such_module"):
        algorithms.resolve("broken")
