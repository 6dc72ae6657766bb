"""Evaluation: pairwise win rates, verifiable accuracy and checkpoint leagues (`lsp eval`).

- `evaluate`: `EvalConfig` and `evaluate`, what `lsp eval` runs;
- `episodes`: the one episode driver (fixed challenger moves answered by any solver; plain prompts);
- `winrate`: both answer orders judged, ties counted, bootstrap confidence intervals;
- `pairwise`: `PairwiseJudge` (an LLM picks A, B or tie) and `ScoreComparer` (any pointwise judge);
- `alpaca`: AlpacaEval-format prompts, outputs and annotations;
- `verifiable`: held-out challenger moves for verifiable games, and accuracy on them;
- `suite`: held-out instruction-following suites (`suites/if-heldout.jsonl`): strict pass rates, paired CIs;
- `league`: checkpoints of one run play each other; Elo ratings with intervals;
- `report`: JSON, Markdown and PNG plots.
"""
