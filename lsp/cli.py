"""`lsp`: train language models by self-play, evaluate, watch games, run benchmarks, list what is registered.

Every subcommand's settings come from a dataclass, so the same names work as
flags and as YAML keys (`--config FILE`); see `lsp SUBCOMMAND --help`.
"""
from __future__ import annotations

import sys
from dataclasses import fields

from jsonargparse import ActionConfigFile, ArgumentParser, set_parsing_settings
from rich.console import Console
from rich.table import Column, Table

from agents.serve import ServeConfig
from algorithms.config import TrainConfig
from lsp.evaluate import EvalConfig
from lsp.play import PlayConfig


def build_parser() -> ArgumentParser:
    set_parsing_settings(docstring_parse_attribute_docstrings=True)
    parser = ArgumentParser(prog="lsp", description=__doc__.split("\n\n")[0])
    commands = parser.add_subcommands(dest="command")

    train = ArgumentParser(description="Train with self-play (paper's Algorithm 1). Writes metrics, "
                                       "TensorBoard logs, transcripts, checkpoints and a plot to a run folder.")
    train.add_argument("--config", action=ActionConfigFile, help="a YAML file of the settings below")
    train.add_class_arguments(TrainConfig, as_group=False)
    train.add_argument("--resume", type=str | None, default=None,
                       help="continue the run in this folder from its latest checkpoint "
                            "(only flags given explicitly, e.g. --iterations, override its config)")
    commands.add_subcommand("train", train, help="train a model by self-play")

    play = ArgumentParser(description=PlayConfig.__doc__)
    play.add_argument("--config", action=ActionConfigFile, help="a YAML file of the settings below")
    play.add_class_arguments(PlayConfig, as_group=False)
    commands.add_subcommand("play", play, help="watch one episode played by a model against itself")

    evaluate = ArgumentParser(description=EvalConfig.__doc__ + " Writes report.json, summary.md and plots.")
    evaluate.add_argument("--config", action=ActionConfigFile, help="a YAML file of the settings below")
    evaluate.add_class_arguments(EvalConfig, as_group=False)
    commands.add_subcommand("eval", evaluate, help="win rate, verifiable accuracy or a checkpoint league")

    serve = ArgumentParser(description=ServeConfig.__doc__ + " Runs until interrupted (Ctrl-C).")
    serve.add_argument("--config", action=ActionConfigFile, help="a YAML file of the settings below")
    serve.add_class_arguments(ServeConfig, as_group=False)
    commands.add_subcommand("serve", serve, help="serve a model with vLLM for the openai engine")

    bench = ArgumentParser(description="Run a benchmark from benchmarks/ and print its Markdown table. "
                                       "`lsp bench` lists them; `lsp bench NAME --help` shows one's settings.")
    commands.add_subcommand("bench", bench, help="run a benchmark (lsp bench NAME ...)")

    commands.add_subcommand("games", ArgumentParser(description="List the registered games."),
                            help="list the registered games")
    commands.add_subcommand("algos", ArgumentParser(description="List the registered algorithms."),
                            help="list the registered algorithms")
    return parser


class SetupError(Exception):
    """A run could not start: bad settings, a missing model, an unreadable checkpoint."""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    console = Console()
    try:
        if argv[:1] == ["bench"] and argv[1:2] and not argv[1].startswith("-"):  # each benchmark has its own flags
            from lsp.bench import run_benchmark

            _setup(lambda: run_benchmark(argv[1], argv[2:], console))
            return 0
        args = build_parser().parse_args(argv)
        command, options = args.command, args[args.command]
        if command == "bench":
            from lsp.bench import list_benchmarks

            list_benchmarks(console)
        elif command == "games":
            _list_games(console)
        elif command == "algos":
            _list_algorithms(console)
        elif command == "play":
            from lsp.play import play

            _setup(lambda: play(_dataclass(PlayConfig, options), console))
        elif command == "eval":
            from lsp.evaluate import evaluate

            _setup(lambda: evaluate(_dataclass(EvalConfig, options), console))
        elif command == "train":
            _train(options, argv, console)
        elif command == "serve":
            _serve(_dataclass(ServeConfig, options), console)
    except SetupError as error:
        Console(stderr=True).print(f"[bold red]error:[/] {error.__cause__ or error}")
        return 2
    return 0


def _setup(build):
    """Run `build`, turning the errors a user can fix into `SetupError`."""
    from agents.engines import EngineUnavailableError
    from agents.models import ModelNotFoundError
    from agents.serve import ServerStartError
    from agents.sync import WeightSyncError
    from algorithms.checkpoint import CheckpointError

    try:
        return build()
    except (ValueError, TypeError, KeyError, ModelNotFoundError, CheckpointError, EngineUnavailableError,
            ServerStartError, WeightSyncError) as error:
        raise SetupError(str(error)) from error


def _dataclass(cls, options):
    return cls(**{f.name: options[f.name] for f in fields(cls)})


def _train(options, argv: list[str], console: Console) -> None:
    from algorithms.trainer import Trainer

    if options.resume:
        given = {f.name for f in fields(TrainConfig)
                 if any(a == f"--{f.name}" or a.startswith(f"--{f.name}=") for a in argv)}
        trainer = _setup(lambda: Trainer.resume(options.resume, **{name: options[name] for name in given}))
        console.print(f"resuming {trainer.run_dir} after iteration {trainer.start_iteration}")
    else:
        trainer = _setup(lambda: Trainer(_dataclass(TrainConfig, options)))
    engine = trainer.policy.name + (" (picked by auto)" if trainer.config.engine == "auto" else "")
    console.print(f"run folder: [bold]{trainer.run_dir}[/]  (engine {engine}, "
                  f"algorithm {trainer.config.algorithm}, game {trainer.config.game})")
    try:
        run_dir = trainer.train()
    finally:
        trainer.close()
    console.print(f"done. metrics: {run_dir / 'metrics.jsonl'}  plot: {run_dir / 'curves.png'}  "
                  f"transcripts: {run_dir / 'transcripts.md'}  checkpoints: {run_dir / 'checkpoints'}")


def _serve(config: ServeConfig, console: Console) -> None:
    from agents.serve import VLLMServer

    server = VLLMServer(config)
    with console.status(f"starting vLLM for {config.model} (log: {server.log_path}) ..."):
        url = _setup(server.start)
    console.print(f"serving {config.model} at [bold]{url}[/]. Train on it with: "
                  f"lsp train --engine openai --server_url {url}   (Ctrl-C stops the server)")
    try:
        code = server.process.wait()
    except KeyboardInterrupt:
        return
    finally:
        server.stop()
    raise SetupError(f"the server exited with code {code}; see its log: {server.log_path}")


def _list_games(console: Console) -> None:
    import lsp_env

    table = Table(Column("game", no_wrap=True), "roles", "reward", "guards", "description")
    for game_id, description in lsp_env.games_table():
        game = lsp_env.registry[game_id].load()
        metadata = getattr(game, "metadata", None) or {}
        guards = ", ".join(getattr(game, "default_guards", ())) or "none"
        table.add_row(game_id, ", ".join(metadata.get("roles", ["?"])), metadata.get("reward", "?"), guards, description)
    console.print(table)


def _list_algorithms(console: Console) -> None:
    import algorithms

    table = Table("algorithm", "description")
    for name, description in algorithms.available():
        table.add_row(name, description)
    console.print(table)


if __name__ == "__main__":
    sys.exit(main())
