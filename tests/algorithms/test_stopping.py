"""A clean stop: the signal handlers, the second signal, and ending processes; then `lsp train` stopped by
SIGTERM in one process, checked from outside (exit code, checkpoint, no process left, a resume)."""
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from algorithms import checkpoint
from algorithms.config import ClusterConfig
from algorithms.stopping import StopRequested, StopSignals, end_processes, is_alive
from algorithms.trainer import Trainer


def test_a_signal_leaves_an_abandonable_phase_at_once_and_waits_for_the_check_elsewhere():
    lines, before = [], signal.getsignal(signal.SIGTERM)
    with StopSignals(lines.append) as stop:
        with pytest.raises(StopRequested, match="SIGTERM"):
            with stop.phase(abandonable=True):
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)  # not reached: the handler raises
    assert stop.requested == "SIGTERM" and "stopping" in lines[0]
    with StopSignals(lines.append) as stop:
        with stop.phase(abandonable=False):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            finished = True  # the phase ran to its end
        assert finished and "when this phase ends" in lines[-1]
        with pytest.raises(StopRequested, match="SIGINT"):
            stop.check()
        with pytest.raises(StopRequested):  # an abandonable phase does not start after a stop
            with stop.phase(abandonable=True):
                pytest.fail("started")
    assert signal.getsignal(signal.SIGTERM) is before  # the old handlers are back


def test_inside_polled_a_signal_only_asks_and_poll_raises_from_python():
    from algorithms.stopping import polled

    with StopSignals(lambda line: None) as stop:
        with stop.phase(abandonable=True), polled() as poll:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)  # the handler ran here, and did not raise
            assert stop.requested == "SIGTERM"
            with pytest.raises(StopRequested):
                poll()
        with stop.phase(abandonable=False), polled() as poll:
            poll()  # a phase that may not be abandoned goes on


def test_a_second_signal_kills_every_child_and_exits_at_once(tmp_path):
    script = ("import os, signal, subprocess, sys, time\nfrom algorithms.stopping import StopSignals\n"
              "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
              "print(child.pid, flush=True)\nwith StopSignals() as stop:\n"
              "    os.kill(os.getpid(), signal.SIGTERM)\n    time.sleep(0.1)\n"
              "    os.kill(os.getpid(), signal.SIGTERM)\n    time.sleep(30)\n")
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).parents[2])
    child = int(done.stdout.split()[0])
    assert done.returncode == 128 + signal.SIGTERM and time.monotonic() - started < 20
    assert "again: stopping now" in done.stdout
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE


def test_end_processes_kills_what_ignores_sigterm():
    stubborn = subprocess.Popen([sys.executable, "-c", "import signal, time\n"
                                 "signal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint(flush=True)\ntime.sleep(60)"],
                                stdout=subprocess.PIPE)
    stubborn.stdout.readline()  # its handler is set
    polite = subprocess.Popen(["sleep", "60"])
    started = time.monotonic()
    end_processes([psutil.Process(stubborn.pid), psutil.Process(polite.pid)], timeout_s=0.5)
    assert not psutil.pid_exists(stubborn.pid) and not psutil.pid_exists(polite.pid)  # killed, and reaped
    assert time.monotonic() - started < 5


def train_command(tiny_path, output, *more):
    return [sys.executable, "-m", "lsp.cli", "train", "--model", tiny_path, "--engine", "hf",
            "--game", "ConstrainedInstructions-v1", "--algorithm", "lsp-zero", "--num_queries", "4",
            "--group_size", "2", "--max_new_tokens", "8", "--lora_rank", "4", "--autocast", "false",
            "--eval_suite", "null", "--output", str(output), "--save_every", "100", *more]


def stop_after_first_iteration(command: list[str], output: Path, timeout_s: float = 600):
    """Start `command` (an `lsp train`), SIGTERM it once its first metrics line is written; returns
    (exit code, console output, {process it had started: its command line}, seconds from the signal to the last
    one's end)."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               cwd=Path(__file__).parents[2])
    deadline = time.monotonic() + timeout_s
    while not any(p.read_text().strip() for p in output.glob("*/metrics.jsonl")):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()[0]
        time.sleep(0.2)
    tree = {}
    for child in psutil.Process(process.pid).children(recursive=True):
        with contextlib.suppress(psutil.Error):
            tree[child] = " ".join(child.cmdline())
    signalled = time.monotonic()
    process.send_signal(signal.SIGTERM)
    printed = process.communicate(timeout=120)[0]
    while living := [line for child, line in tree.items() if is_alive(child)]:
        assert time.monotonic() - signalled < 30, living
        time.sleep(0.2)
    return process.returncode, printed, tree, time.monotonic() - signalled


@pytest.mark.slow
def test_sigterm_to_lsp_train_checkpoints_stops_everything_and_the_run_resumes(tiny_path, tmp_path):
    code, printed, _, took = stop_after_first_iteration(train_command(tiny_path, tmp_path, "--iterations", "200"),
                                                        tmp_path)
    assert code == 128 + signal.SIGTERM, printed
    assert "SIGTERM: stopping" in printed and "stopped (SIGTERM); every process of the run has ended" in printed
    [run_dir] = tmp_path.iterdir()
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    saved = (run_dir / "checkpoints" / "latest").read_text().strip()
    assert saved == f"iter_{len(lines):06d}" and saved in printed  # the last whole iteration, named
    resumed = subprocess.run([sys.executable, "-m", "lsp.cli", "train", "--resume", str(run_dir), "--iterations",
                              str(len(lines) + 1)], capture_output=True, text=True, timeout=600,
                             cwd=Path(__file__).parents[2])
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert [json.loads(line)["iteration"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()] == \
        list(range(1, len(lines) + 2))


@pytest.mark.distributed
def test_sigterm_stops_a_local_cluster_run_with_every_process_and_it_resumes(tiny_path, tmp_path):
    """`lsp train --cluster.address local` (a Ray cluster of its own), SIGTERM after its first iteration: it
    checkpoints, every process it started (Ray's agents included) has ended within 30 s, and a resume (here in one
    process) continues from the checkpoint."""
    pytest.importorskip("ray")
    command = train_command(tiny_path, tmp_path, "--iterations", "200", "--cluster.address", "local",
                            "--cluster.rollout_workers", "2", "--cluster.trainer_processes", "1")
    code, printed, tree, took = stop_after_first_iteration(command, tmp_path)
    assert code == 128 + signal.SIGTERM, printed
    assert any("raylet" in line for line in tree.values())  # the cluster was this run's, and has ended
    assert "stopped (SIGTERM); every process of the run has ended" in printed
    [run_dir] = tmp_path.iterdir()
    done = len(metrics(run_dir))
    assert checkpoint.latest_checkpoint(run_dir).name == f"iter_{done:06d}"
    trainer = Trainer.resume(run_dir, iterations=done + 1, cluster=ClusterConfig())
    try:
        assert trainer.start_iteration == done
        trainer.train(progress=False)
    finally:
        trainer.close()
    assert [line["iteration"] for line in metrics(run_dir)] == list(range(1, done + 2))


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
