"""`lsp`: train language models by self-play, evaluate, watch games, run benchmarks, list what is registered.

Every subcommand's settings come from a dataclass, so the same names work as
flags and as YAML keys (`--config FILE`); see `lsp SUBCOMMAND --help`.
Only the chosen command's modules are imported, so `--help` and the listings
answer at once; torch, transformers and vLLM load when a model does.

Errors in what the user gave (settings, flags, names, paths), and a few that
the user can fix (a missing model, an engine that cannot start, a damaged
checkpoint), print one line; `--debug` adds their traceback. Any other error is
a bug and keeps its traceback.
"""
from __future__ import annotations

import importlib
import logging
import os
import signal
import sys
import traceback
from argparse import ArgumentError
from dataclasses import asdict, fields

from jsonargparse import ActionConfigFile, ArgumentParser, set_parsing_settings
from rich.console import Console
from rich.table import Column, Table

# name: (one-line help, "module:ConfigClass" or None, description when there is no config class)
COMMANDS = {
    "train": ("train a model by self-play", "algorithms.config:TrainConfig",
              "Train with self-play (paper's Algorithm 1). Writes metrics, TensorBoard logs, transcripts, "
              "checkpoints and a plot to a run folder."),
    "play": ("watch one episode played by a model against itself", "lsp.play:PlayConfig", ""),
    "eval": ("win rate, verifiable accuracy or a checkpoint league", "evaluation.evaluate:EvalConfig",
             " Writes report.json, summary.md and plots."),
    "serve": ("serve a model with vLLM for the openai engine", "agents.serve:ServeConfig",
              " Runs until interrupted (Ctrl-C or SIGTERM), then stops the whole server."),
    "bench": ("run a benchmark (lsp bench NAME ...)", None,
              "Run a benchmark from benchmarks/ and print its Markdown table. `lsp bench` lists them; "
              "`lsp bench NAME --help` shows one's settings."),
    "games": ("list the registered games", None, "List the registered games."),
    "algos": ("list the registered algorithms", None, "List the registered algorithms."),
}


class SetupError(Exception):
    """A run could not start: bad settings, a missing model, an unreadable checkpoint."""


def config_class(command: str) -> type | None:
    """The settings dataclass of `command`, imported on demand."""
    target = COMMANDS[command][1]
    if target is None:
        return None
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def build_parser(command: str | None = None) -> ArgumentParser:
    """The `lsp` parser. Only `command`'s settings are read; the other commands are listed by name."""
    set_parsing_settings(docstring_parse_attribute_docstrings=True)
    parser = ArgumentParser(prog="lsp", description=__doc__.split("\n\n")[0], exit_on_error=False,
                            epilog="--debug (anywhere): a one-line error also prints its traceback")
    commands = parser.add_subcommands(dest="command")
    for name, (help, _, _) in COMMANDS.items():
        sub = _command_parser(name) if name == command else ArgumentParser(exit_on_error=False)
        commands.add_subcommand(name, sub, help=help)
    return parser


def _command_parser(command: str) -> ArgumentParser:
    config, description = config_class(command), COMMANDS[command][2]
    if config is not None:
        description = config.__doc__ + description
    parser = ArgumentParser(description=description, exit_on_error=False)
    if config is not None:
        parser.add_argument("--config", action=ActionConfigFile, help="a YAML file of the settings below")
        parser.add_class_arguments(config, as_group=False)
        parser.add_argument("--verbose", action="store_true", help="show vLLM's and transformers' own logs")
    if command == "train":
        parser.add_argument("--resume", type=str | None, default=None,
                            help="continue the run in this folder from its latest checkpoint "
                                 "(only flags given explicitly, e.g. --iterations, override its config)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv  # a one-line error also prints its traceback
    argv = [a for a in argv if a != "--debug"]
    console = Console()
    command = argv[0] if argv and argv[0] in COMMANDS else None
    try:
        if command == "bench" and argv[1:2] and not argv[1].startswith("-"):  # each benchmark has its own flags
            from lsp.bench import benchmark_settings, run_benchmark

            _quiet_logs("--verbose" in argv)
            module, settings = _setup(lambda: benchmark_settings(argv[1], argv[2:]))
            _run(lambda: run_benchmark(module, settings, console))
            return 0
        print_config = command == "train" and "--print_config" in argv  # resolved by the run (`_train`)
        argv = [a for a in argv if not (print_config and a == "--print_config")]
        try:
            args = build_parser(command).parse_args(argv)
        except ArgumentError as error:
            message = " ".join(line.strip() for line in str(error).splitlines())
            raise SetupError(f"{message}\n(see: lsp {command + ' ' if command else ''}--help)") from None
        command, options = args.command, args[args.command]
        _quiet_logs(bool(options.get("verbose")))
        if command == "bench":
            from lsp.bench import list_benchmarks

            list_benchmarks(console)
        elif command == "games":
            _list_games(console)
        elif command == "algos":
            _list_algorithms(console)
        elif command == "play":
            from lsp.play import check_play, play

            config = _setup(lambda: _dataclass(config_class(command), options))
            _setup(lambda: check_play(config))
            _run(lambda: play(config, console))
        elif command == "eval":
            from evaluation.evaluate import check_eval, evaluate

            config = _setup(lambda: _dataclass(config_class(command), options))
            _setup(lambda: check_eval(config))
            _run(lambda: evaluate(config, console))
        elif command == "train" and print_config:
            _print_config(options)
        elif command == "train":
            return _train(options, argv, console)
        elif command == "serve":
            _serve(_setup(lambda: _dataclass(config_class(command), options)), console)
    except SetupError as error:
        if debug:
            traceback.print_exception(error.__cause__ or error)
        Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/] {error.__cause__ or error}", highlight=False)
        return 2
    return 0


def _quiet_logs(verbose: bool) -> None:
    """vLLM and transformers log at length; show only their errors unless `--verbose` (the user's own
    VLLM_LOGGING_LEVEL / TRANSFORMERS_VERBOSITY win)."""
    if not verbose:
        level = os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
        logging.getLogger("vllm").setLevel(level)  # also before vLLM sets up its logging (TorchRL imports parts)
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


# Errors a user can fix, whenever they are raised, by module; a module that is not loaded cannot have raised its
# error, so checking only the loaded ones keeps a quick failure (a wrong setting) from importing torch.
FIXABLE_ERRORS = {"agents.engines": "EngineUnavailableError", "agents.models": "ModelNotFoundError",
                  "agents.serve": "ServerStartError", "agents.sync": "WeightSyncError",
                  "algorithms.checkpoint": "CheckpointError", "lsp_env.registry": "UnknownNameError"}


def _fixable() -> tuple[type, ...]:
    return tuple(getattr(sys.modules[module], name) for module, name in FIXABLE_ERRORS.items() if module in sys.modules)


def _setup(build):
    """Run `build`, which reads the user's input (settings, flags, names, paths): its ValueError, TypeError and
    KeyError, and the fixable errors, become a one-line `SetupError`."""
    try:
        return build()
    except Exception as error:
        if isinstance(error, (ValueError, TypeError, KeyError, *_fixable())):
            raise SetupError(str(error)) from error
        raise


def _run(work):
    """Run `work`, a whole run: only the fixable errors (a missing model, an engine that cannot start, a damaged
    checkpoint) become a one-line `SetupError`; any other error is a bug, and keeps its traceback."""
    try:
        return work()
    except Exception as error:
        if isinstance(error, _fixable()):
            raise SetupError(str(error)) from error
        raise


def _dataclass(cls, options):
    """`cls` from parsed options; nested settings groups (`--cluster.address`) come as dicts."""
    values = {f.name: options[f.name] for f in fields(cls)}
    return cls(**{name: value.as_dict() if hasattr(value, "as_dict") else value for name, value in values.items()})


def _print_config(options) -> None:
    """Print the settings the run will use, as YAML: the config with the defaults its run resolves."""
    import yaml

    from algorithms.config import TrainConfig

    if options.resume:
        raise SetupError("--print_config shows a new run's settings; a resumed run's are in its config.yaml")
    config = _setup(lambda: _dataclass(TrainConfig, options))
    from algorithms.assembly import resolved_config

    print(yaml.safe_dump(asdict(_setup(lambda: resolved_config(config))), sort_keys=False), end="")


def _train(options, argv: list[str], console: Console) -> int:
    """Train; SIGINT or SIGTERM stops the run cleanly (`algorithms.stopping`), a second one at once. Every
    process the run started has ended when this returns."""
    import psutil

    from algorithms.config import TrainConfig, check_settings
    from algorithms.stopping import StopRequested, StopSignals, end_processes

    if options.resume and not os.path.isdir(options.resume):  # before torch loads: in a moment
        raise SetupError(f"--resume {options.resume}: no such folder (give a run folder, or the --output folder "
                         f"that holds runs)")
    config = None if options.resume else _setup(lambda: _dataclass(TrainConfig, options))
    if config is not None:
        _setup(lambda: check_settings(config))  # a wrong name or setting fails here, before torch loads
    trainer, stopped = None, None
    with StopSignals(lambda line: console.print(f"[yellow]{line}[/]", highlight=False)) as stop:
        try:
            with stop.phase(abandonable=True):
                trainer = _start_training(options, argv, config, console)
            run_dir = _run(lambda: trainer.train(stop=stop))
        except StopRequested as signal_name:
            stopped = str(signal_name)
        finally:
            started = psutil.Process().children(recursive=True)
            try:
                if trainer is not None:
                    trainer.close()
            finally:
                end_processes(started)
    if stopped:
        where = trainer.stopped_checkpoint if trainer is not None else None
        console.print(f"stopped ({stopped}); every process of the run has ended. " + (
            f"`lsp train --resume {trainer.run_dir}` continues from {where}" if where else
            "Nothing was trained yet, so there is no checkpoint to resume."), highlight=False)
        return 128 + signal.Signals[stopped].value
    console.print(f"done. metrics: {run_dir / 'metrics.jsonl'}  plot: {run_dir / 'curves.png'}  "
                  f"transcripts: {run_dir / 'transcripts.md'}  checkpoints: {run_dir / 'checkpoints'}")
    return 0


def _start_training(options, argv: list[str], config, console: Console):
    """The run's `Trainer`, new or resumed (torch, transformers and vLLM load here), and what it runs on."""
    from agents.models import slow_bf16_note
    from algorithms.config import TrainConfig
    from algorithms.trainer import Trainer

    if options.resume:
        given = {f.name for f in fields(TrainConfig)
                 if any(a == f"--{f.name}" or a.startswith((f"--{f.name}=", f"--{f.name}.")) for a in argv)}
        overrides = {name: (options[name].as_dict() if hasattr(options[name], "as_dict") else options[name])
                     for name in given}
        trainer = _setup(lambda: Trainer.resume(options.resume, **overrides))
        console.print(f"resuming {trainer.run_dir} after iteration {trainer.start_iteration}")
    else:
        trainer = _setup(lambda: Trainer(config))
    cluster = trainer.config.cluster
    where = (f"Ray cluster {cluster.address}: {cluster.rollout_workers} rollout workers, "
             f"{cluster.trainer_processes} trainer processes" if cluster.address else
             "engine " + trainer.rollout.parts.policy.name + (" (picked by auto)" if trainer.config.engine == "auto" else ""))
    console.print(f"run folder: [bold]{trainer.run_dir}[/]  ({where}, "
                  f"algorithm {trainer.config.algorithm}, game {trainer.config.game}, "
                  f"{'bf16 autocast' if trainer.config.autocast else trainer.config.dtype})")
    note = slow_bf16_note(trainer.config.device) if trainer.config.autocast else None
    if note:
        console.print(f"[yellow]note:[/] {note}")
    return trainer


def _serve(config, console: Console) -> None:
    """Run the server until Ctrl-C or SIGTERM; either stops its whole process tree."""
    from agents.serve import KEY_ENV, VLLMServer

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    server = VLLMServer(config)
    try:
        with console.status(f"starting vLLM for {config.model} (log: {server.log_path}) ..."):
            url = _run(server.start)
        lines = [f"serving {config.model} at [bold]{url}[/] (every request needs the API key)"]
        if not (config.api_key or os.environ.get(KEY_ENV)):
            lines.append(f"  export {KEY_ENV}={server.api_key}")
        lines.append(f"Train on it with:\n  lsp train --engine openai --server_url {url}" if config.weight_updates
                     else "It serves fixed weights (agents.openai_engine.OpenAIPolicy reads them); to train on it, "
                          "start it with --weight_updates true.")
        console.print("\n".join([*lines, "(Ctrl-C stops the server)"]), highlight=False)
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
