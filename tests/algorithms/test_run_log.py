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


def test_transcripts_show_what_the_solver_sees_and_each_answer_with_its_scores(tmp_path):
    from algorithms.collector import Episode, Rollout, Turn
    from algorithms.run_log import RunLog

    task = Turn("challenger", "write a task", "Describe a harbor.", None, branch=False)
    episodes = [Episode(group=0, turns=[task, Turn("solver", "Describe a harbor.\n\n- Use no commas.", answer, None,
                                                   branch=True)],
                        returns={"challenger": -r, "solver": r}, branched=True,
                        infos={"solver": {"reward": r, "passed": float(r == 1)}})
                for answer, r in (("Boats sleep.", 1.0), ("Boats, sleeping.", 0.45))]
    log = RunLog(tmp_path)
    log.transcripts(3, Rollout(episodes, {}))
    log.close()
    text = (tmp_path / "transcripts.md").read_text()
    assert "## Iteration 3" in text and "**solver sees:**" in text and "> - Use no commas." in text
    assert "**solver #2:**\n\n> Boats, sleeping." in text and "reward 0.450, passed 0.000" in text
