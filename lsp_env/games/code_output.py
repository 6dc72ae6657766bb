"""
# Code Output Self-Play

| Creation           | `lsp_env.make("CodeOutputSelfPlay-v0")`              |
|--------------------|------------------------------------------------------|
| Actions            | Text (`UnicodeText`)                                 |
| Parallel API       | No                                                   |
| Agents             | `agents= ['challenger', 'solver']`                   |
| Agents             | 2                                                    |
| Action Values      | non-blank text, up to `max_query_chars` / `max_answer_chars` |
| Observation Values | text                                                 |
| Branch point       | `solver` (`branch_agent`)                            |

A verifiable game in the spirit of Absolute Zero (Zhao et al., 2025): the
challenger writes a short Python function `f` and an input; the solver
predicts the output. The program runs in `lsp_env.sandbox`: a fresh
interpreter in its own Linux namespaces (bubblewrap), with a read-only
filesystem, no network, no new processes, and CPU, memory, file, output and
time limits. Without user namespaces the game refuses to start, naming the fix.

### Observation Space

The challenger observes `CHALLENGER_PROMPT`. The solver observes "" until the
program exists, then `SOLVER_PROMPT` with the program and the call.

### Action Space

The challenger's move is a program that defines `f`, then a last line
`Input: ARGS`, where ARGS are Python literals (`Input: [3, 1, 2]` or
`Input: "abc", 2`); Markdown code fences are ignored. The solver's move is
its prediction of `repr(f(ARGS))`; the text after the last "Output:" is read
if there is one, else the whole answer, without backticks.

### Rewards

The program runs twice; its output is the `repr` of the value, as the
sandbox's runner writes it (a program that writes that pipe itself chose its
output, see `lsp_env.sandbox`). The solver
gets R = 1 when its prediction equals the output (compared as Python literals
when both parse as literals, else as stripped text) and 0 otherwise; the
challenger gets -R (zero-sum; over a group of answers, -V(q)).

### Invalid moves

A challenger move is invalid, with `invalid_move_penalty`, when it has no
`Input:` line, the input is not literals, the code does not define `f`, or
the run does not end "ok" with the same output twice (an error, a timeout, a
resource limit, a crash, non-determinism). The reason, with the
sandbox's status, is in `infos["challenger"]["invalid_move"]`.

### Arguments

    CodeOutputSelfPlay(limits=SandboxLimits(), isolation="bwrap", max_query_chars=4096,
                       max_answer_chars=4096, guards=None, invalid_move_penalty=-1.0, render_mode=None)

`guards` is empty by default (code is what this game asks for).
`isolation="none-unsafe"` runs the programs with rlimits only, where user
namespaces are not available: model-written code can then do anything the
user running the game can.

### Version History

* v0: Initial version.
"""
from __future__ import annotations

import ast
import re
import warnings

from lsp_env.guards import GuardedGame
from lsp_env.sandbox import ISOLATIONS, Isolation, SandboxLimits, check_isolation, run_python
from lsp_env.text_game import InvalidMove

CHALLENGER_PROMPT = (
    "You are writing a test of how well a student can read Python code. Write a short Python function named f, "
    "then, on the last line, an input for it in the form\nInput: ARGUMENTS\nwhere the arguments are Python "
    "literals, for example:\n\ndef f(items):\n    return sorted(items)[::-1]\nInput: [3, 1, 2]\n\nThe student will "
    "have to predict the exact value f returns. Make it tricky but deterministic. Use only the standard "
    "library's math, itertools, functools, collections, re and string modules. Do not write the output."
)
SOLVER_PROMPT = ("Predict the exact value this Python code returns, written as Python would print it with repr(). "
                 "End with a line\nOutput: VALUE\n\n{program}\n\nf({arguments})")

_FENCE = re.compile(r"^\s*```[\w+-]*\s*$", re.MULTILINE)
_INPUT = re.compile(r"^\s*input\s*:\s*(.+?)\s*$", re.IGNORECASE | re.MULTILINE)


def parse_program(text: str) -> tuple[str, str]:
    """(program, arguments) from a challenger move, or `InvalidMove` saying what is wrong."""
    text = _FENCE.sub("", text)
    inputs = list(_INPUT.finditer(text))
    if not inputs:
        raise InvalidMove("no 'Input: ARGUMENTS' line")
    last = inputs[-1]
    program, arguments = text[:last.start()].strip("\n"), last.group(1).strip("` ")
    try:
        ast.literal_eval(f"({arguments},)")
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        raise InvalidMove(f"the input {arguments[:80]!r} is not a list of Python literals") from None
    try:
        tree = ast.parse(program)
    except (SyntaxError, ValueError) as error:
        raise InvalidMove(f"the program does not parse ({error})") from None
    if not any(isinstance(node, ast.FunctionDef) and node.name == "f" for node in tree.body):
        raise InvalidMove("the program does not define a function f")
    return program, arguments


def parse_prediction(text: str) -> str:
    """The solver's predicted value: the text after the last "Output:", without backticks."""
    parts = re.split(r"output\s*:", text, flags=re.IGNORECASE)
    return parts[-1].strip().strip("`").strip()


def same_value(prediction: str, output: str) -> bool:
    """Whether a prediction matches a `repr` output, as literals when both parse, else as text."""
    try:
        return _literal(prediction) == _literal(output)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return prediction.strip() == output.strip()


def _literal(text: str):
    value = ast.literal_eval(text)
    return (type(value), value)  # True != 1 and 1.0 != 1 here


def run_program(program: str, arguments: str, limits: SandboxLimits, isolation: Isolation = "bwrap") -> str:
    """The `repr` of `f(arguments)`, run twice in the sandbox, or `InvalidMove` saying why there is none."""
    outputs = []
    for _ in range(2):
        result = run_python(program, call=f"f({arguments})", limits=limits, isolation=isolation)
        if not result.ok:
            raise InvalidMove(f"the program did not run ({result.status}: {result.error})")
        outputs.append(result.value)
    if outputs[0] != outputs[1]:
        raise InvalidMove("the program is not deterministic (two runs gave different outputs)")
    return outputs[0]


class CodeOutputSelfPlay(GuardedGame):
    """The challenger writes a Python function and an input; the solver predicts the output."""

    metadata = {
        "name": "CodeOutputSelfPlay-v0",
        "description": "The challenger writes a Python function and an input; the solver predicts its output "
                       "(run in a sandbox).",
        "roles": ["challenger", "solver"],
        "reward": "verified (sandboxed run)",
        "is_parallelizable": False,
        "render_modes": ["human", "ansi"],
    }
    branch_agent = "solver"
    default_guards = ()

    def __init__(self, *, limits: SandboxLimits = SandboxLimits(), isolation: Isolation = "bwrap",
                 max_query_chars: int = 4096, max_answer_chars: int = 4096, guards=None,
                 invalid_move_penalty: float = -1.0, render_mode: str | None = None):
        if isolation not in ISOLATIONS:
            raise ValueError(f"isolation must be one of {ISOLATIONS}, not {isolation!r}")
        if isolation == "bwrap":
            check_isolation()  # SandboxUnavailable, naming the fix, before any program runs
        else:
            warnings.warn("CodeOutputSelfPlay-v0 with isolation='none-unsafe' runs model-written code WITHOUT "
                          "ISOLATION: it can read, write and delete anything this user can, and reach the network.",
                          RuntimeWarning, stacklevel=2)
        super().__init__(
            self.metadata["roles"],
            max_action_chars={"challenger": max_query_chars, "solver": max_answer_chars},
            max_observation_chars=max(len(CHALLENGER_PROMPT), len(SOLVER_PROMPT) + 2 * max_query_chars),
            invalid_move_penalty=invalid_move_penalty,
            render_mode=render_mode,
            guards=guards,
        )
        self.limits = limits
        self.isolation = isolation
        self.program: str | None = None
        self.arguments: str | None = None
        self.output: str | None = None

    def reset_game(self, seed: int | None, options: dict | None) -> str:
        self.program = self.arguments = self.output = None
        return "challenger"

    def observation_text(self, agent: str) -> str:
        if agent == "challenger":
            return CHALLENGER_PROMPT
        if self.program is None:
            return ""
        return SOLVER_PROMPT.format(program=self.program, arguments=self.arguments)

    def apply_move(self, agent: str, text: str) -> str | None:
        if agent == "challenger":
            try:
                program, arguments = parse_program(text)
                self.output = run_program(program, arguments, self.limits, self.isolation)
            except InvalidMove as invalid:
                return self.reject_move(agent, str(invalid))
            self.program, self.arguments = program, arguments
            for info in self.infos.values():
                info["query"] = self.observation_text("solver")
            return "solver"
        prediction = parse_prediction(text)
        reward = float(same_value(prediction, self.output))
        self.score(self.observation_text("solver"), text, {"solver": reward, "challenger": -reward},
                   {"answer": text, "prediction": prediction, "solution": self.output, "reward": reward})
        return None
