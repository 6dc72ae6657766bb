"""The GPU check's CPU dry run: the same steps (train with and without LoRA, resume, decode) on a tiny model."""
import json

import pytest

from benchmarks import gpu_check


@pytest.mark.slow
def test_the_gpu_check_runs_on_a_cpu_and_reports_every_step(tmp_path):
    gpu_check.main(["run", "--device", "cpu", "--shape", "tiny", "--out", str(tmp_path)])
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert [line["iteration"] for line in report["lora"]] == [1]
    assert [line["iteration"] for line in report["full"]] == [1]
    assert [line["iteration"] for line in report["resume"]] == [1, 2]  # continued after the checkpoint
    for line in report["lora"] + report["full"]:
        assert {"time/generate", "time/train", "memory/peak_gib", "throughput/generated_tokens_per_s"} <= line.keys()
    assert report["decode"]["tokens_per_s"] > 0 and report["decode"]["hbm_fraction"] is None  # no GPU named
    log = (tmp_path / "gpu_check.log").read_text()
    assert "== resume: exit 0" in log and "== done" in log
