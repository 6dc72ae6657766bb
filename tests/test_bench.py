"""`lsp bench`: list and run the benchmarks."""
import os
import re

import pytest

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


def test_a_benchmark_part_runs_in_a_fresh_process_with_its_own_peak_memory(tmp_path, monkeypatch):
    from benchmarks.fresh_process import PartFailed, run_fresh

    (tmp_path / "parts_for_test.py").write_text(
        "import os\n"
        "def allocate(mib):\n"
        "    block = b'\\x01' * (mib * 2**20)  # written, so resident\n"
        "    return {'pid': os.getpid(), 'size': len(block)}\n"
        "def fail(_):\n"
        "    raise RuntimeError('this part fails')\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    small, large = run_fresh("parts_for_test:allocate", 1), run_fresh("parts_for_test:allocate", 512)
    assert small["pid"] != large["pid"] != os.getpid()
    assert large["peak_rss_gib"] >= small["peak_rss_gib"] + 0.4  # each process's own high-water mark
    assert large["vllm_imported"] is False and large["torch_threads"] >= 1
    with pytest.raises(PartFailed, match="parts_for_test:fail"):
        run_fresh("parts_for_test:fail", None)


def test_the_learning_result_keeps_the_adapter_the_run_record_and_the_reports(tmp_path):
    from benchmarks.learning_result import Settings, keep

    run_dir = tmp_path / "run"
    checkpoint = run_dir / "checkpoints" / "iter_000002"
    (checkpoint / "model").mkdir(parents=True)
    (checkpoint / "model" / "adapter_model.safetensors").write_text("adapter")
    (checkpoint / "trainer.pt").write_text("state")
    (checkpoint / "config.yaml").write_text("{}")
    (run_dir / "checkpoints" / "latest").write_text("iter_000002")
    run_files = ("metrics.jsonl", "config.yaml", "eval.json", "transcripts.md", "curves.png")
    for name in run_files:
        (run_dir / name).write_text(name)
    reports = {}
    for report in ("heldout", "winrate"):
        reports[report] = tmp_path / report
        reports[report].mkdir()
        (reports[report] / "report.json").write_text(report)
    (reports["heldout"] / "summary.md").write_text("summary")
    (reports["heldout"] / "strict_pass.png").write_text("plot")

    keep(Settings(results=str(tmp_path / "results")), "lsp", run_dir, reports)
    kept = tmp_path / "results" / "lsp"
    assert (kept / "adapter_model.safetensors").read_text() == "adapter"
    assert all((kept / name).read_text() == name for name in run_files)
    assert (kept / "heldout.report.json").read_text() == "heldout"
    assert (kept / "winrate.report.json").read_text() == "winrate"
    assert (kept / "heldout.summary.md").read_text() == "summary"
    assert (kept / "strict_pass.png").read_text() == "plot"


def test_the_packing_benchmark_times_padded_and_packed_passes_of_the_same_rows(tiny_path, capsys):
    assert main(["bench", "packing", "--model", tiny_path, "--prompts", "2", "--repeats", "1",
                 "--max_new_tokens", "6"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"\| padded \| [\d.]+ \| [\d.]+ \| 1.00 \|", out)
    assert re.search(r"\| packed \| [\d.]+ \| [\d.]+ \| [\d.]+ \|", out)
    gap = float(re.search(r"largest log-prob difference, packed against padded: (\S+)", " ".join(out.split())).group(1))
    assert gap < 0.1  # the same numbers, up to bfloat16 rounding where autocast is on
