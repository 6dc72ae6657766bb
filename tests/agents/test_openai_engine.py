"""The "openai" engine and `agents.serve`.

Failure handling runs against local stand-ins (a port nobody listens on, a
socket that accepts and never answers, a process that dies). The round trip
runs against one `vllm serve` of SmolLM2-135M-Instruct for the whole file.
"""
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import torch

from agents.hf import HFPolicy
from agents.judges import FunctionJudge
from agents.models import DEFAULT_MODEL, load_model, resolve_model, tiny_model
from agents.openai_engine import OpenAIPolicy, ServerError
from agents.policy import SamplingParams
from agents.serve import ServeConfig, ServerStartError, VLLMServer, wait_until_healthy
from agents.sync import WeightSync
from algorithms.config import TrainConfig
from algorithms.trainer import Trainer

API_KEY = "test-key"
GREEDY = SamplingParams(max_new_tokens=16, temperature=0.0)
CHAT = [{"role": "user", "content": "What is the capital of France?"}]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def silent_server():
    """A local socket that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    accepted, stop = [], threading.Event()

    def accept():
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join()
    for connection in accepted:
        connection.close()
    listener.close()


# --- failures: fast, no vLLM ---------------------------------------------------------
def test_a_hung_server_gives_a_clear_error_within_its_timeout(silent_server):
    policy = OpenAIPolicy(silent_server, tiny_model()[1], model="m", timeout_s=1.0, max_retries=1)
    start = time.monotonic()
    with pytest.raises(ServerError, match=r"did not answer within 1 s \(2 tries\); is it hung"):
        policy.generate(CHAT, params=GREEDY)
    assert time.monotonic() - start < 6  # two tries of 1 s, plus the client's short back-off
    with pytest.raises(ServerError, match=r"did not answer /reset_prefix_cache within 1 s"):
        policy._post("/reset_prefix_cache", None)
    policy.close()


def test_a_dead_server_gives_a_clear_error():
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ServerError, match=f"no OpenAI-compatible server answers at {url}"):
        OpenAIPolicy(url, tiny_model()[1], timeout_s=1.0, max_retries=0)
    policy = OpenAIPolicy(url, tiny_model()[1], model="m", timeout_s=1.0, max_retries=0)
    with pytest.raises(ServerError, match=f"cannot reach the server at {url}.*is it running"):
        policy.score([[1, 2]], [[3]])
    policy.close()


def test_a_server_that_dies_at_start_up_is_reported_with_its_log(tmp_path):
    log = tmp_path / "server.log"
    with log.open("w") as out:
        process = subprocess.Popen([sys.executable, "-c", "print('CUDA out of memory'); raise SystemExit(3)"],
                                   stdout=out, stderr=subprocess.STDOUT)
    with pytest.raises(ServerStartError, match=r"exited with code 3(.|\n)*CUDA out of memory"):
        wait_until_healthy(f"http://127.0.0.1:{free_port()}", 60, process, log)


def test_a_server_that_never_gets_healthy_times_out(silent_server):
    start = time.monotonic()
    with pytest.raises(ServerStartError, match="was not healthy after 2 s"):
        wait_until_healthy(silent_server, 2)
    assert time.monotonic() - start < 5


def test_serve_command_binds_to_localhost_and_keeps_the_key_off_the_command_line():
    server = VLLMServer(ServeConfig(api_key="secret", port=8123))
    command = server.command()
    assert command[command.index("--host") + 1] == "127.0.0.1"
    assert "secret" not in " ".join(command)
    assert server.url == "http://127.0.0.1:8123"
    assert command[command.index("--middleware") + 1] == "agents.serve.KeyGuard"


@pytest.mark.parametrize("weight_updates", [True, False])
def test_the_key_guard_opens_only_health_without_the_key(monkeypatch, weight_updates):
    from starlette.testclient import TestClient

    from agents.serve import KeyGuard, _key_hash

    async def app(scope, receive, send):  # stands in for vLLM's app: every route answers 200
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    monkeypatch.setenv("LSP_SERVER_KEY_SHA256", _key_hash("k").hex())
    monkeypatch.setenv("VLLM_SERVER_DEV_MODE", "1" if weight_updates else "0")
    client = TestClient(KeyGuard(app))
    good, bad = {"Authorization": "Bearer k"}, {"Authorization": "Bearer kk"}
    assert client.get("/health").status_code == 200
    assert [client.post("/v1/completions", headers=h).status_code for h in ({}, bad, good)] == [401, 401, 200]
    assert client.post("/v1x", headers=good).status_code == 404
    assert client.post("/collective_rpc", headers=good).status_code == (200 if weight_updates else 404)
    assert client.post("/collective_rpc", headers=bad).status_code == (401 if weight_updates else 404)
    assert client.post("/sleep", headers=good).status_code == 404


def test_without_a_key_the_server_makes_a_fresh_one(monkeypatch):
    monkeypatch.delenv("LSP_API_KEY", raising=False)
    first, second = VLLMServer(ServeConfig()), VLLMServer(ServeConfig())
    assert len(first.api_key) >= 24 and first.api_key != second.api_key
    monkeypatch.setenv("LSP_API_KEY", "from-env")
    assert VLLMServer(ServeConfig()).api_key == "from-env"
    assert VLLMServer(ServeConfig(api_key="given")).api_key == "given"


# --- a real vllm serve -----------------------------------------------------------------
@pytest.fixture(scope="module")
def server():
    with VLLMServer(ServeConfig(port=free_port(), api_key=API_KEY, kv_cache_gib=0.5, weight_updates=True)) as running:
        yield running


@pytest.fixture(scope="module")
def hf():
    policy = HFPolicy(*load_model(resolve_model()), max_wait_s=0.0)
    yield policy
    policy.close()


@pytest.fixture(scope="module")
def client(server, hf):
    policy = OpenAIPolicy(server.url, hf.tokenizer, api_key=API_KEY, timeout_s=120)
    yield policy
    policy.close()


@pytest.mark.slow
def test_round_trip_matches_hf(client, hf):
    assert client.model == DEFAULT_MODEL
    [served], [reference] = client.generate(CHAT, 1, GREEDY), hf.generate(CHAT, 1, GREEDY)
    assert served.token_ids == reference.token_ids and served.text == reference.text
    assert served.logprobs == pytest.approx(reference.logprobs, abs=1e-3)
    samples = client.generate(CHAT, n=3, params=SamplingParams(max_new_tokens=8, temperature=1.0))
    assert len(samples) == 3 and all(0 < len(s.token_ids) == len(s.logprobs) <= 8 for s in samples)
    prompts, tokens = [s.prompt_ids for s in samples], [s.token_ids for s in samples]
    for sampled, scored, expected in zip(samples, client.score(prompts, tokens), hf.score(prompts, tokens)):
        assert sampled.logprobs == pytest.approx(scored, abs=1e-3)
        assert scored == pytest.approx(expected, abs=1e-3)
    digits = [hf.tokenizer.convert_tokens_to_ids(str(d)) for d in range(10)]
    assert client.next_token_logprobs(prompts[0], digits) == pytest.approx(
        hf.next_token_logprobs(prompts[0], digits), abs=1e-3)


@pytest.mark.slow
def test_seeded_batches_repeat(client):
    params = SamplingParams(max_new_tokens=8, temperature=1.0)
    runs = []
    for _ in range(2):
        torch.manual_seed(3)
        runs.append([[c.token_ids for c in group] for group in client.generate_batch([CHAT] * 3, 2, params)])
    assert runs[0] == runs[1]
    assert len({tuple(tokens) for group in runs[0] for tokens in group}) > 1


@pytest.mark.slow
def test_a_wrong_api_key_is_refused(server, hf):
    with pytest.raises(ServerError, match="HTTP 401"):
        OpenAIPolicy(server.url, hf.tokenizer, model=DEFAULT_MODEL, api_key="wrong").generate(CHAT, params=GREEDY)


@pytest.mark.slow
def test_every_route_but_health_needs_the_key_and_other_development_routes_are_closed(server):
    good, bad = {"Authorization": f"Bearer {API_KEY}"}, {"Authorization": "Bearer wrong"}
    assert httpx.get(f"{server.url}/health").status_code == 200
    for path in ("/v1/models", "/version"):
        assert httpx.get(server.url + path).status_code == 401
        assert httpx.get(server.url + path, headers=bad).status_code == 401
        assert httpx.get(server.url + path, headers=good).status_code == 200
    for path in ("/collective_rpc", "/reset_prefix_cache"):  # the weight sync's routes: open, behind the key
        assert httpx.post(server.url + path, json={}).status_code == 401
    assert httpx.post(f"{server.url}/reset_prefix_cache", headers=good).status_code == 200
    for path in ("/server_info", "/is_sleeping", "/sleep", "/reset_mm_cache", "/docs", "/openapi.json"):
        response = httpx.request("GET" if path in ("/server_info", "/is_sleeping", "/docs", "/openapi.json")
                                 else "POST", server.url + path, headers=good)
        assert response.status_code == 404 and response.json() == {"error": "not served"}, path


def live_processes() -> dict[int, int]:
    """pid -> parent pid of every process that is not a zombie, from /proc."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            parents[int(stat.parent.name)] = int(fields[1])
    return parents


def descendants(root: int) -> set[int]:
    """`root` and the live processes under it."""
    parents = live_processes()
    tree = {root} & set(parents)
    while grown := {pid for pid, parent in parents.items() if parent in tree} - tree:
        tree |= grown
    return tree


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_sigterm_to_lsp_serve_stops_the_whole_server_tree(hf):
    port = free_port()
    env = {name: value for name, value in os.environ.items() if name != "LSP_API_KEY"}
    serve = subprocess.Popen([sys.executable, "-m", "lsp.cli", "serve", "--port", str(port), "--kv_cache_gib", "0.5"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        wait_until_healthy(f"http://127.0.0.1:{port}", 600, serve)
        output = ""
        for line in serve.stdout:  # up to the last line of what it prints at start
            output += line
            if "Ctrl-C stops the server" in line:
                break
        tree = descendants(serve.pid)
        assert len(tree) >= 2  # lsp serve and the vLLM server
        key = output.split("export LSP_API_KEY=")[1].split()[0]
        client = OpenAIPolicy(f"http://127.0.0.1:{port}", hf.tokenizer, api_key=key)
        with pytest.raises(ServerError, match="--weight_updates true"):  # by default it serves fixed weights
            client.check_weight_updates()
        client.close()
        serve.send_signal(signal.SIGTERM)
        output += serve.communicate(timeout=120)[0]
    finally:
        serve.kill()
    assert "export LSP_API_KEY=" in output  # the key it made, and how to use it
    deadline = time.monotonic() + 30
    while tree & set(live_processes()) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not tree & set(live_processes()), "server processes outlived lsp serve"
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/health")


@pytest.mark.slow
def test_weight_update_changes_outputs_and_matches_the_trainer(client, hf):
    [before] = client.generate(CHAT, 1, GREEDY)
    trained, tokenizer = load_model(resolve_model())
    with torch.no_grad():
        for parameter in trained.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.02)
    assert WeightSync(client, trained, tokenizer)().max_abs_diff < 1e-3
    [after] = client.generate(CHAT, 1, GREEDY)
    assert after.token_ids != before.token_ids
    WeightSync(client, hf.model, hf.tokenizer)()  # back to the original weights


@pytest.mark.slow
def test_trainer_runs_unchanged_on_the_openai_engine(server, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    config = TrainConfig(model=DEFAULT_MODEL, engine="openai", server_url=server.url, algorithm="lsp-zero",
                         game="LanguageSelfPlay-v0", lora_rank=0, min_p=0.0, autocast=False, eval_suite=None,
                         num_queries=2, group_size=2, batch_size=1, grad_accumulation=2, max_new_tokens=8,
                         iterations=1, lr=1e-4, output=str(tmp_path), save_every=100)
    judge = FunctionJudge(lambda query, answer: answer.count(" ") / max(len(answer), 1), name="spaces")
    trainer = Trainer(config, judges={"judge": judge})
    try:
        metrics, _ = trainer.iteration(1)
    finally:
        trainer.close()
    assert trainer.rollout.parts.policy.name == "openai"
    assert metrics["sync/max_logprob_gap"] < 1e-3
