"""`lsp bench`: list and run the benchmarks."""
import re

from lsp.bench import BENCHMARKS
from lsp.cli import main


def test_bench_lists_every_benchmark(capsys):
    assert main(["bench"]) == 0
    out = capsys.readouterr().out
    for name in BENCHMARKS:
        assert name in out


def test_an_unknown_benchmark_is_a_clear_error(capsys):
    assert main(["bench", "no-such-benchmark"]) == 2
    assert "engine-throughput" in capsys.readouterr().err


def test_bench_runs_a_benchmark_with_its_own_flags(tiny_path, capsys):
    args = ["--train.model", tiny_path, "--iterations", "1", "--warmup", "0", "--train.algorithm", "lsp-zero",
            "--train.num_queries", "2", "--train.group_size", "2", "--train.max_new_tokens", "4"]
    assert main(["bench", "iteration-time", *args]) == 0
    out = capsys.readouterr().out
    for phase in ("generate", "env_and_judge", "reference", "train", "sync"):
        assert phase in out


def test_the_load_benchmark_reads_memory_fds_and_threads_each_iteration(capsys):
    assert main(["bench", "collector-load", "--groups", "2", "--group_size", "2", "--iterations", "2",
                 "--warmup", "1", "--max_new_tokens", "4"]) == 0
    out = capsys.readouterr().out
    assert "| 2 | 4 |" in out and re.search(r"resident memory [+-]\d+ MiB .* open fds [+-]\d+, threads [+-]\d+", out)


def test_the_game_signal_benchmark_tells_tasks_from_assistant_replies():
    from benchmarks.game_signal import is_task

    for task in ("Why is the sea salty?", "Write a poem about rain.", "  Explain how bees make honey."):
        assert is_task(task), task
    for reply in ("I'm ready to assist. What can I help you with?", "Sure! Here is a poem.", "The moon is bright.",
                  "", "Hello, how can I help?"):
        assert not is_task(reply), reply


def test_the_speed_benchmark_reads_each_parts_peak_memory_and_resets_it():
    from benchmarks.speed import peak_memory

    def gib(line: str) -> float:
        return float(re.search(r"peak RSS of \w+: ([\d.]+) GiB", line).group(1))

    peak_memory("before")
    block = b"\x01" * (512 * 2**20)  # written, so resident (a zeroed bytearray may stay unmapped)
    del block
    first, second = gib(peak_memory("first")), gib(peak_memory("second"))
    assert first >= second + 0.4  # the block counted in the first part only
