"""The GPU check: the scale path's training on one GPU, in one call of a few minutes.

    python -m benchmarks.gpu_check pack                  # on a machine with the project installed: wheels and
                                                         # tokenizer into benchmarks/gpu_pack/ (about 10 MB)
    benchmarks/gpu_check.sh --device cuda --out DIR      # on the GPU machine (torch, transformers, peft only)
    python -m benchmarks.gpu_check run --device cpu --shape tiny   # the CPU dry run that CI takes

On a randomly initialised model of Llama-3.2-1B's shape (SmolLM2's tokenizer; throughput and memory do not
depend on the weights), it runs `lsp train --engine hf` for 2 iterations with LoRA and 2 without, resumes the
LoRA run for a third, then times plain decoding. It prints each iteration's phase times, generated tokens/s
and peak GPU memory, and decoding's share of the GPU's memory bandwidth (each decode step reads every weight
once). Every line also goes to `DIR/gpu_check.log` as it is written, and the figures to `DIR/gpu_check.json`,
so a run cut short keeps what finished.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACK = ROOT / "benchmarks" / "gpu_pack"
# The pure-Python dependencies (and two small compiled ones) a GPU image with torch, transformers and peft lacks.
PACKED = ["torchrl", "tensordict", "pettingzoo", "gymnasium", "jsonargparse", "typeshed-client", "docstring-parser",
          "cloudpickle", "farama-notifications", "pyvers", "hoptorch", "orjson", "importlib-metadata", "zipp",
          "lazy-importer"]
SHAPES = {  # LlamaConfig settings; the vocabulary is the tokenizer's
    "llama-1b": dict(hidden_size=2048, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                     intermediate_size=8192, rope_theta=500000.0, max_position_embeddings=8192),
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=128, max_position_embeddings=2048),
}
HBM_BYTES_PER_S = {"H100": 3.35e12, "H200": 4.8e12}  # SXM parts; a GPU not named here gets no fraction
PHASES = ("time/generate", "time/env_and_judge", "time/reference", "time/train", "time/sync", "time/iteration",
          "throughput/generated_tokens_per_s", "memory/device_peak_gib", "memory/peak_gib")


class Log:
    """Print and append to a file, flushed at each line."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = path.open("a")

    def __call__(self, line: str) -> None:
        print(line, flush=True)
        self.file.write(line + "\n")
        self.file.flush()


def pack() -> None:
    """Download the wheels of `PACKED` (the versions installed here, for CPython 3.12 on x86-64 Linux) and save
    the tokenizer, into `PACK`."""
    from importlib.metadata import version

    from agents.models import DEFAULT_MODEL, resolve_model
    from transformers import AutoTokenizer

    shutil.rmtree(PACK, ignore_errors=True)
    pins = [f"{name}=={version(name)}" for name in PACKED]
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                    "--python-version", "3.12", "--implementation", "cp", "--platform", "manylinux_2_28_x86_64",
                    "--platform", "manylinux_2_17_x86_64", "--platform", "manylinux2014_x86_64",
                    "--dest", str(PACK / "wheels"), *pins], check=True)
    AutoTokenizer.from_pretrained(resolve_model(DEFAULT_MODEL)).save_pretrained(PACK / "tokenizer")
    size = sum(path.stat().st_size for path in PACK.rglob("*") if path.is_file())
    print(f"packed {len(pins)} wheels and the tokenizer into {PACK} ({size / 2**20:.1f} MiB)")


def tokenizer_folder() -> str:
    if (PACK / "tokenizer").is_dir():
        return str(PACK / "tokenizer")
    from agents.models import DEFAULT_MODEL, resolve_model

    return resolve_model(DEFAULT_MODEL)


def build_model(shape: str, folder: Path, dtype: str, device: str) -> int:
    """Save a randomly initialised model of `shape` with the tokenizer to `folder`; returns its parameters."""
    import torch
    from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_folder())
    config = LlamaConfig(vocab_size=len(tokenizer), tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **SHAPES[shape])
    torch.manual_seed(0)
    with torch.device(device):  # initialised where it will run: faster on a GPU
        model = LlamaForCausalLM(config).to(getattr(torch, dtype))
    model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id,
                                               pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return sum(p.numel() for p in model.parameters())


def train(log: Log, name: str, arguments: list[str], output: Path, timeout_s: float) -> tuple[Path, list[dict]]:
    """`lsp train` in a fresh process, its output logged as it comes; returns the run folder it wrote under
    `output` and its metrics lines."""
    command = [sys.executable, "-m", "lsp.cli", "train", *arguments]
    log(f"== {name}: {' '.join(command[2:])}")
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in process.stdout:
        log(f"   {line.rstrip()}")
    code = process.wait(timeout=timeout_s)
    log(f"== {name}: exit {code} after {time.perf_counter() - started:.0f} s")
    if code:
        raise SystemExit(f"{name} failed (exit {code}); see the log above")
    run_dir = max(output.rglob("metrics.jsonl"), key=lambda path: path.stat().st_mtime).parent
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for line in lines:
        log(f"   iteration {line['iteration']}: " + "  ".join(
            f"{key.split('/')[-1]} {line[key]:.3g}" for key in PHASES if line.get(key) is not None))
    return run_dir, lines


def decode(log: Log, folder: Path, device: str, dtype: str, rows: int, new_tokens: int) -> dict:
    """Plain `generate` of `rows` x `new_tokens` tokens: decode steps per second, and on a GPU named in
    `HBM_BYTES_PER_S` the share of its bandwidth that reading the weights once per step takes."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, dtype)).to(device).eval()
    prompt = torch.randint(100, 1000, (rows, 64), device=device)
    settings = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
    with torch.inference_mode():
        model.generate(prompt, max_new_tokens=4, do_sample=False)  # warm-up
        if device == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        model.generate(prompt, **settings)
        if device == "cuda":
            torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    gpu = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    bandwidth = next((value for key, value in HBM_BYTES_PER_S.items() if key in gpu), None)
    steps_per_s = new_tokens / seconds
    result = {"device": gpu, "rows": rows, "new_tokens": new_tokens, "seconds": seconds,
              "tokens_per_s": rows * new_tokens / seconds, "steps_per_s": steps_per_s,
              "weight_gib": weight_bytes / 2**30,
              "hbm_fraction": None if bandwidth is None else steps_per_s * weight_bytes / bandwidth}
    fraction = "n/a" if result["hbm_fraction"] is None else f"{result['hbm_fraction']:.1%}"
    log(f"== decode on {gpu}: {rows} rows x {new_tokens} tokens in {seconds:.1f} s: "
        f"{result['tokens_per_s']:.0f} tokens/s, {steps_per_s:.1f} steps/s, weights {result['weight_gib']:.2f} GiB, "
        f"share of the memory bandwidth {fraction}")
    return result


def run(args) -> dict:
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    log = Log(out / "gpu_check.log")
    import torch
    import transformers

    log(f"== gpu check: device {args.device}, shape {args.shape}, torch {torch.__version__}, "
        f"transformers {transformers.__version__}, cuda {torch.cuda.is_available()}")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda, but torch sees no GPU")
    results = {"device": args.device, "shape": args.shape}
    report = out / "gpu_check.json"

    def record(key, value):
        results[key] = value
        report.write_text(json.dumps(results, indent=1))

    folder = out / "model"
    record("parameters", build_model(args.shape, folder, args.dtype, args.device))
    log(f"== model: {args.shape}, {results['parameters'] / 1e6:.0f}M parameters, {args.dtype}, in {folder}")
    small = args.shape == "tiny"
    common = ["--model", str(folder), "--engine", "hf", "--device", args.device, "--dtype", args.dtype,
              "--eval_suite", "null", "--save_every", "1",
              "--num_queries", "2" if small else "8", "--group_size", "2" if small else "4",
              "--max_new_tokens", "8" if small else "64", "--judge_max_new_tokens", "8" if small else "64"]
    iterations = 1 if small else 2
    runs = {}
    for name, extra in (("lora", ["--lora_rank", "16"]), ("full", ["--lora_rank", "0"])):
        output = out / "runs" / name
        runs[name], lines = train(log, name, [*common, *extra, "--iterations", str(iterations), "--output",
                                              str(output)], output, args.step_timeout_s)
        record(name, lines)
    _, resumed = train(log, "resume", ["--resume", str(runs["lora"]), "--iterations", str(iterations + 1)],
                       runs["lora"], args.step_timeout_s)
    if resumed[-1]["iteration"] != iterations + 1:
        raise SystemExit(f"the resumed run ended at iteration {resumed[-1]['iteration']}, not {iterations + 1}")
    record("resume", resumed)
    record("decode", decode(log, folder, args.device, args.dtype, 4 if small else 64, 8 if small else 128))
    log(f"== done: {report}")
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("pack", help="wheels and tokenizer for a GPU machine without network")
    check = commands.add_parser("run", help="train, resume and decode on the device")
    check.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    check.add_argument("--shape", default="llama-1b", choices=sorted(SHAPES))
    check.add_argument("--dtype", default=None, help="default: bfloat16 on cuda, float32 on cpu")
    check.add_argument("--out", default="runs/gpu_check")
    check.add_argument("--step_timeout_s", type=float, default=240.0)
    args = parser.parse_args(argv)
    if args.command == "pack":
        pack()
    else:
        args.dtype = args.dtype or ("bfloat16" if args.device == "cuda" else "float32")
        run(args)


if __name__ == "__main__":
    main()
