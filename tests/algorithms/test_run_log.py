"""Plots of one or several runs' metrics."""
import json

from algorithms.run_log import plot_curves, plot_runs


def write_metrics(run_dir, values):
    run_dir.mkdir()
    lines = [json.dumps({"iteration": i + 1, "judge/reward": v, "loss/kl": v / 10}) for i, v in enumerate(values)]
    (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return run_dir


def test_one_run_is_plotted_into_its_folder(tmp_path):
    run = write_metrics(tmp_path / "run", [0.5, 0.6, 0.55])
    assert plot_curves(run) == run / "curves.png"
    assert (run / "curves.png").stat().st_size > 0


def test_several_runs_share_one_smoothed_figure(tmp_path):
    runs = {"lsp": write_metrics(tmp_path / "a", [0.5, 0.6, 0.55, 0.7]),
            "lsp-zero": write_metrics(tmp_path / "b", [0.4, 0.5])}
    path = plot_runs(runs, tmp_path / "both.png", smooth=3)  # the 2-iteration run is too short to smooth
    assert path.stat().st_size > 0


def test_nothing_to_plot_gives_none(tmp_path):
    (tmp_path / "empty").mkdir()
    assert plot_runs({"empty": tmp_path / "empty"}, tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()
