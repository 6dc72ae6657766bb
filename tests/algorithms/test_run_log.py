"""Plots of one or several runs' metrics."""
import json

from algorithms.run_log import plot_curves, plot_runs


def write_metrics(run_dir, values):
    run_dir.mkdir()
    lines = [json.dumps({"iteration": i + 1, "judge/reward": v, "loss/kl": v / 10}) for i, v in enumerate(values)]
    (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return run_dir


def pixels(path):
    from matplotlib.image import imread

    return imread(path)


def test_one_run_is_plotted_into_its_folder_and_the_plot_shows_its_values(tmp_path):
    run = write_metrics(tmp_path / "run", [0.5, 0.6, 0.55])
    assert plot_curves(run) == run / "curves.png"
    other = write_metrics(tmp_path / "other", [0.1, 0.9, 0.2])
    same = write_metrics(tmp_path / "same", [0.5, 0.6, 0.55])
    plot_curves(other), plot_curves(same)
    image = pixels(run / "curves.png")
    assert (image == pixels(same / "curves.png")).all()  # drawn from the values alone
    assert (image != pixels(other / "curves.png")).any()  # and other values draw another plot


def test_several_runs_share_one_smoothed_figure(tmp_path):
    runs = {"lsp": write_metrics(tmp_path / "a", [0.5, 0.6, 0.55, 0.7]),
            "lsp-zero": write_metrics(tmp_path / "b", [0.4, 0.5])}
    path = plot_runs(runs, tmp_path / "both.png", smooth=3)  # the 2-iteration run is too short to smooth
    alone = plot_runs({"lsp": runs["lsp"]}, tmp_path / "alone.png", smooth=3)
    raw = plot_runs(runs, tmp_path / "raw.png", smooth=1)
    raw_alone = plot_runs({"lsp": runs["lsp"]}, tmp_path / "raw-alone.png", smooth=1)
    assert (pixels(path) == pixels(alone)).all()  # too short to smooth: left out
    assert (pixels(raw) != pixels(raw_alone)).any()  # unsmoothed, both runs are drawn
    assert (pixels(path) != pixels(raw)).any()  # smoothing changes the curves


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
