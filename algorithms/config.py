"""`TrainConfig`: every setting of `lsp train`. The same names are YAML keys
and CLI flags (`lsp train --config run.yaml --lr 1e-6`)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

SAMPLE_PROMPTS = str(Path(__file__).parent / "data" / "sample_prompts.jsonl")


@dataclass
class TrainConfig:
    """Language Self-Play training settings.

    Paper values (Kuba et al., 2025): N=8 queries, beta=0.05, lr 3e-6 (1e-6 for
    GRPO), batch 4 with gradient accumulation 2. The paper does not give G,
    alpha_ch, max tokens or the sampling temperature; the defaults here are
    ours (G=4, alpha_ch=1, 64 new tokens, temperature 1.0) and sized for a
    135M model on a 2-core CPU.
    """

    # Model and engine
    model: str = "smollm2-135m-instruct"
    """Alias, Hugging Face id or local folder."""
    engine: str = "auto"
    """Policy engine serving the shared challenger/solver policy: hf, vllm (in-process), openai (a server at
    server_url), or auto (vllm when installed and it starts, else hf)."""
    server_url: str | None = None
    """openai engine: the server's base URL, e.g. http://127.0.0.1:8000 from `lsp serve` (API key: $OPENAI_API_KEY)."""
    server_timeout_s: float = 120.0
    """openai engine: timeout of each request (retried at most twice)."""
    sync_tolerance: float | None = None
    """Largest |engine - trainer| token log-prob allowed on the probe batch after a weight sync
    (default 0.05 in float32, 0.25 in bfloat16)."""
    sync_timeout_s: float = 300.0
    """A weight sync (push and verification) that takes longer stops the run."""
    dtype: str = "float32"
    """float32 or bfloat16."""
    device: str = "cpu"
    """cpu or cuda."""
    # Game and algorithm
    game: str = "LanguageSelfPlay-v0"
    game_args: dict = field(default_factory=dict)
    """Extra game settings, e.g. {task: ..., template: ...}."""
    algorithm: str = "lsp"
    """lsp, lsp-zero, grpo, or any registered name."""
    algorithm_args: dict = field(default_factory=dict)
    """Extra settings of the algorithm's config."""
    judge: str = "helpfulness"
    """R: helpfulness, rubric, reward-model:PATH."""
    quality_judge: str = "rubric"
    """R_Q for algorithms with self-reward (lsp)."""
    judge_mode: str = "expected"
    """Self-judges: "expected" (score = expected digit, one forward pass) or "generate" (paper: write, then parse)."""
    prompts: str | None = None
    """JSONL prompt file for data-driven algorithms (grpo); default: a small bundled sample."""
    # Self-play sizes
    num_queries: int = 8
    """N: challenger queries (groups) per iteration."""
    group_size: int = 4
    """G: solver answers per query."""
    # Optimisation
    beta: float = 0.05
    """KL(pi || pi_ref) coefficient."""
    challenger_weight: float = 1.0
    """Alpha_ch."""
    lr: float = 3e-6
    batch_size: int = 4
    """Groups per micro-batch."""
    grad_accumulation: int = 2
    """Micro-batches per optimizer step."""
    max_grad_norm: float = 1.0
    weight_decay: float = 0.0
    # Sampling
    max_new_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    judge_max_new_tokens: int = 96
    """Self-judge output length in "generate" mode."""
    # Run
    iterations: int = 3
    time_limit_minutes: float | None = None
    """Wall-clock budget: stop (and checkpoint) after the first iteration that ends past it, even before
    `iterations`. Counted from the start of this process, so a resumed run gets a fresh budget."""
    seed: int = 0
    output: str = "runs"
    """A new run folder is made inside."""
    save_every: int = 5
    """Checkpoint every k iterations (and always at the end)."""
    transcript_every: int = 1
    """Write sample transcripts every k iterations."""

    def __post_init__(self):
        groups_per_step = self.batch_size * self.grad_accumulation
        if groups_per_step != self.num_queries:
            raise ValueError(f"batch_size * grad_accumulation ({groups_per_step}) must equal num_queries "
                             f"({self.num_queries}): each iteration makes one optimizer step")
        for name in ("num_queries", "group_size", "iterations", "max_new_tokens", "save_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.time_limit_minutes is not None and self.time_limit_minutes <= 0:
            raise ValueError("time_limit_minutes must be positive")
        if self.dtype not in ("float32", "bfloat16"):
            raise ValueError("dtype must be float32 or bfloat16")

    def to_yaml(self, path: Path) -> None:
        path.write_text(yaml.safe_dump(asdict(self), sort_keys=False))

    @classmethod
    def from_yaml(cls, path: Path, **overrides) -> "TrainConfig":
        values = yaml.safe_load(Path(path).read_text()) or {}
        values.update(overrides)
        return cls(**values)
