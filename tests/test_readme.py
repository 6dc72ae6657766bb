"""The README's "Bring your own game or algorithm" code runs as written, and the two train together."""
import json
import re
from pathlib import Path

import algorithms
import lsp_env
from lsp.cli import main

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def snippet(marker: str) -> str:
    """The Python block that follows `<!-- marker -->` in the README."""
    match = re.search(rf"<!-- {marker} -->\n```python\n(.*?)```", README, re.DOTALL)
    assert match, f"no code block after <!-- {marker} --> in README.md"
    return match.group(1)


def test_the_readme_game_and_algorithm_train_together(tiny_path, tmp_path):
    game, algorithm = snippet("own-game"), snippet("own-algorithm")
    assert len(game.strip().splitlines()) <= 30 and len(algorithm.strip().splitlines()) <= 30
    exec(compile(game, "README own-game", "exec"), {"__name__": "readme_game"})
    exec(compile(algorithm, "README own-algorithm", "exec"), {"__name__": "readme_algorithm"})
    try:
        code = main(["train", "--game", "ShortAnswers-v0", "--algorithm", "mean-baseline", "--engine", "hf",
                     "--model", tiny_path, "--num_queries", "2", "--group_size", "2", "--batch_size", "1",
                     "--grad_accumulation", "2", "--max_new_tokens", "8", "--iterations", "1",
                     "--eval_suite", "null", "--output", str(tmp_path)])
        assert code == 0
        (run_dir,) = tmp_path.iterdir()
        (record,) = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        assert 0 < record["reward/writer"] <= 0.5  # at least one word: 1 / (1 + words)
    finally:
        for registry, name in ((lsp_env.registry, "ShortAnswers-v0"), (algorithms.registry, "mean-baseline")):
            if name in registry:
                registry.unregister(name)
