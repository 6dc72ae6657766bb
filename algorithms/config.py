"""`TrainConfig`: every setting of `lsp train`. The same names are YAML keys
and CLI flags (`lsp train --config run.yaml --lr 1e-6`)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from agents.lora import ALL_LINEAR
from agents.models import DEFAULT_MODEL, bf16_is_fast

SAMPLE_PROMPTS = str(Path(__file__).parent / "data" / "sample_prompts.jsonl")


@dataclass
class ClusterConfig:
    """Where a run's processes go. The default (no address) is one process on this machine; with an address the
    run is spread over a Ray cluster (`algorithms.cluster`): rollout workers sample and judge, trainer processes
    share the optimizer step with FSDP2."""

    address: str | None = None
    """None: one process. "local": start a Ray cluster on this machine; "auto": join the one `ray start` runs here;
    or a head node's address (host:port, ray://host:port)."""
    rollout_workers: int = 1
    """Ray actors that each hold an engine, the game and the judges, and play a share of each iteration's groups."""
    trainer_processes: int = 1
    """Ray actors that form one torch process group (gloo on CPU, NCCL on GPU) and share each optimizer step."""
    gpus_per_worker: float = 0.0
    """GPUs Ray gives each rollout worker and each trainer process (0 on CPU; a fraction packs several on one GPU)."""
    cpus_per_worker: float = 1.0
    """CPUs Ray reserves for each rollout worker and each trainer process."""

    def __post_init__(self):
        if self.rollout_workers < 1 or self.trainer_processes < 1:
            raise ValueError("cluster.rollout_workers and cluster.trainer_processes must be at least 1")
        if self.gpus_per_worker < 0 or self.cpus_per_worker <= 0:
            raise ValueError("cluster.gpus_per_worker must be >= 0 and cluster.cpus_per_worker > 0")


@dataclass
class TrainConfig:
    """Language Self-Play training settings.

    The defaults are a short run of the CPU recipe `recipes/instruction-following-cpu.yaml`:
    LSP on the verifiable ConstrainedInstructions-v2 game with a LoRA adapter, sampled at
    temperature 1.0 with min_p 0.1, then the held-out suite before and after. Paper values
    (Kuba et al., 2025) kept here: N=8 queries, beta=0.05, batch 4 with gradient accumulation 2.
    The paper's lr (3e-6; 1e-6 for GRPO) is for full fine-tuning; LoRA needs a larger one (1e-4).
    The paper does not give G, alpha_ch, max tokens or the sampling settings; ours are G=4,
    alpha_ch=1, 80 new tokens, temperature 1.0 with min_p 0.1 (benchmarks/RESULTS.md).
    """

    # Model and engine
    model: str = DEFAULT_MODEL
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
    (default 0.05 in float32, 1.0 when either side computes in bfloat16)."""
    sync_timeout_s: float = 300.0
    """A weight sync (push and verification) that takes longer stops the run."""
    dtype: str = "float32"
    """float32 or bfloat16."""
    autocast: bool | None = None
    """Compute the trainer's forward passes, the reference and the self-judges in bfloat16 autocast, with
    float32 weights (dtype float32). Default (null): on where bfloat16 is fast, a GPU or a CPU with AMX, and off
    elsewhere, where it was 1.34x (AVX-512) to over 5x (AVX2 only) slower per iteration (benchmarks/RESULTS.md)."""
    engine_dtype: str | None = None
    """dtype of the vllm engines (the policy's, and the self-judges' if on vllm): default bfloat16 under autocast, else
    dtype. Sampling in bfloat16 is 1.7x faster on CPU; the trainer recomputes every log-prob it trains on, so
    only the logged sampler gap and the sync check's tolerance (1.0) see the difference."""
    kv_cache_gib: float = 1.0
    """vllm on CPU: the policy engine's KV cache (GiB; ~24k tokens of SmolLM2-135M per GiB). An iteration's
    concurrent answers need a few thousand tokens; a longer queue waits its turn. On GPUs vLLM sizes it."""
    device: str = "cpu"
    """cpu or cuda."""
    # Game and algorithm
    game: str = "ConstrainedInstructions-v2"
    game_args: dict = field(default_factory=dict)
    """Extra game settings, e.g. {task: ..., template: ...}."""
    algorithm: str = "lsp"
    """lsp, lsp-zero, grpo, or any registered name."""
    algorithm_args: dict = field(default_factory=lambda: {"aggregation": "prompt_mean", "kl_estimator": "k3"})
    """Settings of the algorithm's config (given, this dict replaces the default). The default is the CPU recipe's:
    each answer's token mean and the k3 KL; the algorithms' own default is the paper's sequence sum."""
    judge: str = "helpfulness"
    """R: helpfulness, rubric, paper-rubric, reward-model:PATH."""
    quality_judge: str = "rubric"
    """R_Q for algorithms with self-reward (lsp): rubric (ours) or paper-rubric (the paper's Box 3), points / 7."""
    judge_mode: str = "expected"
    """Self-judges: "expected" (score = expected digit, one forward pass) or "generate" (paper: write, then parse)."""
    judge_engine: str = "hf"
    """Engine serving the frozen base weights to the self-judges: hf (the trainer's reference model, under
    autocast) or vllm (a second, frozen in-process vLLM engine, in `engine_dtype`). On CPU, "expected"-mode
    judging is prefill only, and hf in bfloat16 autocast is the fastest (vllm: 0.7x; benchmarks/RESULTS.md)."""
    prompts: str | None = None
    """JSONL prompt file for data-driven algorithms (grpo); default: a small bundled sample."""
    # Self-play sizes
    num_queries: int = 8
    """N: challenger queries (groups) per iteration."""
    group_size: int = 4
    """G: solver answers per query."""
    # Optimisation
    beta: float | None = None
    """KL(pi || pi_ref) coefficient: an alias of `algorithm_args.beta` (giving both with different values is an
    error). Default (null): the algorithm's (0.05)."""
    challenger_weight: float | None = None
    """Alpha_ch, the weight of the challenger's loss: an alias of `algorithm_args.challenger_weight`. Default
    (null): the algorithm's (1.0; grpo: 0, its prompts are data)."""
    lr: float | None = None
    """AdamW learning rate (default: the algorithm's: 1e-4 with LoRA; the paper's 3e-6 for full fine-tuning, 1e-6
    for grpo)."""
    batch_size: int | None = None
    """Groups per micro-batch (default: the largest of 1-4 that divides num_queries)."""
    grad_accumulation: int | None = None
    """Micro-batches per optimizer step (default: num_queries / batch_size, so one step per iteration)."""
    rows_per_pass: int | None = None
    """Rows (sampled turns) per forward and backward pass of the training step, longest first; 0: a whole
    micro-batch. Default (null): 4 on a CPU, where smaller passes keep the activations in cache, and a whole
    micro-batch on a GPU. Only memory and speed depend on it: the gradient is the same (`algorithms.update`)."""
    max_grad_norm: float = 1.0
    weight_decay: float = 0.0
    overlap: bool = False
    """Sample iteration k+1 while training on k (one-step off-policy, as PipelineRL and prime-rl do): the samples
    come from the weights before the last step, so the loss weighs them by pi / pi_sampler, clipped at
    `algorithm_args.clip_epsilon` (0.2 unless given). Needs an engine with its own copy of the weights (vllm,
    openai). Off by default: on a 2-core CPU both phases share the cores (benchmarks/RESULTS.md)."""
    packing: bool = False
    """Run each pass's rows as one sequence without padding (position ids restart per row, a block-diagonal
    mask keeps rows apart). No pad token is computed, but on a CPU the mask is dense, so attention costs more
    than the padding saves (benchmarks/RESULTS.md); worth trying with a varlen attention kernel on a GPU."""
    gradient_checkpointing: bool = False
    """Recompute each layer's activations in the backward pass instead of keeping them: less memory for the
    training step, at the cost of a second forward (transformers' `gradient_checkpointing_enable`)."""
    # LoRA (PEFT)
    lora_rank: int = 16
    """LoRA rank; 0 trains every weight. With LoRA the reference and the self-judges are the base weights
    (the adapter switched off) and checkpoints hold the adapter only."""
    lora_alpha: float = 32.0
    lora_target_modules: list[str] = field(default_factory=lambda: list(ALL_LINEAR))
    # Sampling
    max_new_tokens: int = 80
    temperature: float = 1.0
    top_p: float = 1.0
    min_p: float = 0.1
    """Drop tokens below min_p times the most likely one's probability. The trainer's log-probs are those of
    this distribution (temperature, min_p and top_p applied), and the KL is taken to the reference model under
    the same settings."""
    judge_max_new_tokens: int = 96
    """Self-judge output length in "generate" mode."""
    # Held-out evaluation
    eval_suite: str | None = "if-heldout"
    """A held-out instruction-following suite (e.g. if-heldout) answered greedily before and after training;
    its strict pass rates are printed and saved to eval.json. None: no evaluation."""
    eval_max_new_tokens: int = 128
    # Run
    iterations: int = 8
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
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    """Spread the run over a Ray cluster (`--cluster.address local`); by default everything runs in this process."""

    def __post_init__(self):
        if isinstance(self.cluster, dict):  # from YAML
            self.cluster = ClusterConfig(**self.cluster)
        if self.autocast is None:
            self.autocast = bf16_is_fast(self.device)
        if self.num_queries < 1:
            raise ValueError("num_queries must be at least 1")
        batch_size, grad_accumulation = self.micro_batches()
        groups_per_step = batch_size * grad_accumulation
        if groups_per_step != self.num_queries:
            raise ValueError(f"batch_size * grad_accumulation ({groups_per_step}) must equal num_queries "
                             f"({self.num_queries}): each iteration makes one optimizer step")
        if self.rows_per_pass is None:
            self.rows_per_pass = 4 if self.device == "cpu" else 0
        if self.rows_per_pass < 0:
            raise ValueError("rows_per_pass must be at least 1, or 0 for a whole micro-batch per pass")
        for name in ("num_queries", "group_size", "iterations", "max_new_tokens", "save_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.time_limit_minutes is not None and self.time_limit_minutes <= 0:
            raise ValueError("time_limit_minutes must be positive")
        if self.lora_rank < 0:
            raise ValueError("lora_rank must be 0 (no LoRA) or positive")
        if not (0 <= self.min_p < 1 and 0 < self.top_p <= 1 and self.temperature >= 0):
            raise ValueError("need temperature >= 0, 0 < top_p <= 1 and 0 <= min_p < 1")
        if self.dtype not in ("float32", "bfloat16") or self.engine_dtype not in (None, "float32", "bfloat16"):
            raise ValueError("dtype and engine_dtype must be float32 or bfloat16")
        if self.kv_cache_gib <= 0:
            raise ValueError("kv_cache_gib must be positive")
        if self.judge_engine not in ("hf", "vllm"):
            raise ValueError(f"judge_engine must be hf or vllm, got {self.judge_engine!r}")
        if self.cluster.address and self.num_queries % self.cluster.rollout_workers:
            raise ValueError(f"num_queries ({self.num_queries}) must be a multiple of cluster.rollout_workers "
                             f"({self.cluster.rollout_workers}): each worker plays the same number of groups")
        if self.cluster.address and self.num_queries % self.cluster.trainer_processes:
            raise ValueError(f"num_queries ({self.num_queries}) must be a multiple of cluster.trainer_processes "
                             f"({self.cluster.trainer_processes}): each process trains on the same number of groups")

    def sampling(self):
        """The sampling settings of both roles."""
        from agents import SamplingParams

        return SamplingParams(self.max_new_tokens, self.temperature, self.top_p, self.min_p)

    def engine_dtype_name(self) -> str:
        """The vllm engines' dtype: `engine_dtype`, else bfloat16 under autocast, else `dtype`."""
        return self.engine_dtype or ("bfloat16" if self.autocast else self.dtype)

    def micro_batches(self) -> tuple[int, int]:
        """(batch_size, grad_accumulation): as given, or derived from num_queries (one optimizer step per
        iteration). Derived each time rather than stored, so that overriding num_queries alone re-derives them."""
        batch_size, accumulation = self.batch_size, self.grad_accumulation
        if batch_size is None:
            batch_size = (self.num_queries // accumulation if accumulation and self.num_queries % accumulation == 0
                          else max(size for size in range(1, 5) if self.num_queries % size == 0))
        return batch_size, accumulation or max(1, self.num_queries // batch_size)

    def to_yaml(self, path: Path) -> None:
        path.write_text(yaml.safe_dump(asdict(self), sort_keys=False))

    @classmethod
    def from_yaml(cls, path: Path, **overrides) -> "TrainConfig":
        values = yaml.safe_load(Path(path).read_text()) or {}
        values.update(overrides)
        return cls(**values)


ALGORITHM_ALIASES = ("beta", "challenger_weight")  # top-level flags that set `algorithm_args` entries


def algorithm_arguments(config: TrainConfig) -> dict:
    """`config.algorithm_args` with the aliases (`ALGORITHM_ALIASES`) given at the top level merged in; an
    alias that disagrees with `algorithm_args` is an error."""
    arguments = dict(config.algorithm_args)
    for name in ALGORITHM_ALIASES:
        value = getattr(config, name)
        if value is None:
            continue
        if name in arguments and arguments[name] != value:
            raise ValueError(f"{name} is given twice, as --{name} {value} and in algorithm_args "
                             f"({arguments[name]}); give it once")
        arguments[name] = value
    return arguments


def check_settings(config: TrainConfig):
    """The checks that need no model, and no torch: the game and the algorithm are registered, and
    `game_args` and `algorithm_args` (with the aliases `beta` and `challenger_weight`) fit them. Returns the
    algorithm's settings object; raises the error a user can fix."""
    import lsp_env
    from algorithms import registration

    settings = registration.config_class(config.algorithm).from_kwargs(**algorithm_arguments(config))
    if getattr(settings, "group_relative", False) and config.group_size < 2:
        raise ValueError(f"{config.algorithm} compares each answer with the other answers to its query, so "
                         f"group_size must be at least 2 (with {config.group_size}, every advantage is 0 and "
                         f"nothing trains); use --group_size 2 or more, or rae, whose baseline runs over groups")
    lsp_env.registry[config.game].check_arguments(config.game_args)  # names and types
    probe = lsp_env.make_with_judges(config.game, {}, config.game_args)  # what only the game's constructor checks
    try:
        if getattr(settings, "zero_sum", False) and not hasattr(probe, "zero_sum"):
            raise ValueError(f"zero_sum needs a game that credits penalties (a TextGame); {config.game} is not one")
    finally:
        probe.close()
    return settings
