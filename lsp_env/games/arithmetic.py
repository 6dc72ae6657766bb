"""
# Arithmetic Self-Play

| Creation           | `lsp_env.make("ArithmeticSelfPlay-v0")`              |
|--------------------|------------------------------------------------------|
| Actions            | Text (`UnicodeText`)                                 |
| Parallel API       | No                                                   |
| Agents             | `agents= ['challenger', 'solver']`                   |
| Agents             | 2                                                    |
| Action Values      | non-blank text, up to `max_query_chars` / `max_answer_chars` |
| Observation Values | text                                                 |
| Branch point       | `solver` (`branch_agent`)                            |

A verifiable game. The challenger writes one arithmetic problem as a Python
expression; the environment computes the exact answer with its own evaluator
(Python's `ast` parser and a whitelist of nodes, never `eval`); the solver
answers.

### Observation Space

The challenger observes `CHALLENGER_PROMPT`. The solver observes "" until the
problem exists, then `SOLVER_PROMPT` with the expression.

### Action Space

The challenger's move is the expression alone, on one line (surrounding
backticks and a trailing "=" or "= ?" are ignored): integers or decimals,
`+ - * / // % **` and parentheses, at least one operation. Limits:
`MAX_EXPRESSION_CHARS` characters, `MAX_OPERATIONS` operations, exponents up to
`MAX_EXPONENT` in size, and every intermediate value below 10**`MAX_DIGITS`
(numerator and denominator). The answer is the exact rational value: `7/2` is
3.5, `0.1 + 0.2` is 0.3 (no floating-point rounding).

The solver's answer is the last number in its text: an integer, a decimal or a
fraction `a/b`, optionally negative; thousands separators are not read.

### Rewards

Exact match, no partial credit: the solver gets R = 1 for the exact value and
0 otherwise (an answer without a number included); the challenger gets -R
(zero-sum; over a group of answers, -V(q)).

### Invalid moves

A challenger move that does not parse or breaks a limit (unknown syntax,
names, calls, division by zero, a value too large) is an invalid move: the
challenger gets `invalid_move_penalty`, the solver 0, and
`infos["challenger"]["invalid_move"]` says why. Text-level invalid moves are
handled as in every `TextGame`.

### Arguments

    ArithmeticSelfPlay(max_query_chars=1024, max_answer_chars=4096,
                       guards=None, invalid_move_penalty=-1.0, render_mode=None)

`guards` (names or `Guard`s, see `lsp_env.guards`) is empty by default: the
verifier already rejects degenerate problems.

### Version History

* v0: Initial version.
"""
from __future__ import annotations

import ast
import math
import re
from fractions import Fraction

from lsp_env.guards import GuardedGame
from lsp_env.text_game import InvalidMove

MAX_EXPRESSION_CHARS = 200
MAX_OPERATIONS = 20
MAX_EXPONENT = 64
MAX_DIGITS = 60

CHALLENGER_PROMPT = (
    "You are writing a test for a student's mental arithmetic. Write ONE arithmetic problem as a Python "
    "expression, on one line, using numbers, + - * / // % ** and parentheses, for example (17 + 5) * 3 - 2 ** 4. "
    "Make it as hard as you like, but it must have an exact answer. Write the expression only, with no "
    "answer and no explanation."
)
SOLVER_PROMPT = "Compute the exact value of this expression. End with the answer as a number.\n\n{expression}"

_OPERATORS = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
    ast.FloorDiv: lambda a, b: Fraction(a // b),
    ast.Mod: lambda a, b: a % b,
    ast.Pow: lambda a, b: a ** int(b),
}
_ALLOWED_NODES = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Constant, ast.UAdd, ast.USub, *_OPERATORS)
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:\s*/\s*\d+)?")


def parse_expression(text: str) -> str:
    """The expression in a challenger's move (backticks and a trailing "= ?" removed)."""
    expression = re.sub(r"\s*=\s*\??\s*$", "", text.replace("`", "").strip())
    if "\n" in expression:
        raise InvalidMove("the expression must be on one line")
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise InvalidMove(f"the expression is longer than {MAX_EXPRESSION_CHARS} characters")
    return expression


def evaluate(expression: str) -> Fraction:
    """The exact value of an arithmetic expression, or `InvalidMove` saying why there is none."""
    try:
        tree = ast.parse(expression, mode="eval")
    except (SyntaxError, ValueError) as error:
        raise InvalidMove(f"not a Python expression ({error.msg if isinstance(error, SyntaxError) else error})")
    nodes = list(ast.walk(tree))
    unknown = next((node for node in nodes if not isinstance(node, _ALLOWED_NODES)), None)
    if unknown is not None:
        raise InvalidMove(f"{type(unknown).__name__} is not allowed: use numbers, + - * / // % ** and parentheses")
    operations = sum(isinstance(node, (ast.BinOp, ast.UnaryOp)) for node in nodes)
    if not any(isinstance(node, ast.BinOp) for node in nodes):
        raise InvalidMove("the problem needs at least one operation")
    if operations > MAX_OPERATIONS:
        raise InvalidMove(f"more than {MAX_OPERATIONS} operations")
    return _value(tree.body)


def _value(node: ast.AST) -> Fraction:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        if not math.isfinite(node.value):
            raise InvalidMove(f"{node.value} is not a finite number")
        return _bounded(Fraction(str(node.value)))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
        value = _value(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        left, right = _value(node.left), _value(node.right)
        if isinstance(node.op, ast.Pow):
            _check_power(left, right)
        try:
            return _bounded(_OPERATORS[type(node.op)](left, right))
        except ZeroDivisionError:
            raise InvalidMove("division by zero") from None
    raise InvalidMove(f"{type(node).__name__} is not allowed: use numbers, + - * / // % ** and parentheses")


def _check_power(base: Fraction, exponent: Fraction) -> None:
    if exponent.denominator != 1:
        raise InvalidMove("exponents must be whole numbers")
    if abs(exponent) > MAX_EXPONENT:
        raise InvalidMove(f"exponents must be at most {MAX_EXPONENT} in size")
    size = max(abs(base.numerator), base.denominator).bit_length() * abs(int(exponent))
    if size > MAX_DIGITS * 3.33:
        raise InvalidMove(f"the power has more than {MAX_DIGITS} digits")


def _bounded(value: Fraction) -> Fraction:
    if max(abs(value.numerator), value.denominator) >= 10 ** MAX_DIGITS:
        raise InvalidMove(f"a value in the problem has more than {MAX_DIGITS} digits")
    return value


def parse_answer(text: str) -> Fraction | None:
    """The solver's answer: the last number in `text` (integer, decimal or a/b), or None."""
    numbers = _NUMBER.findall(text.replace(",", ""))
    if not numbers:
        return None
    try:
        return Fraction(numbers[-1].replace(" ", ""))
    except ZeroDivisionError:
        return None


def format_value(value: Fraction) -> str:
    """An exact value as an integer, a decimal when it terminates, or a fraction a/b."""
    if value.denominator == 1:
        return str(value.numerator)
    rest = value.denominator
    for prime in (2, 5):
        while rest % prime == 0:
            rest //= prime
    return _decimal(value) if rest == 1 else f"{value.numerator}/{value.denominator}"


def _decimal(value: Fraction) -> str:
    sign, value = ("-" if value < 0 else ""), abs(value)
    whole, remainder = divmod(value.numerator, value.denominator)
    digits = []
    while remainder:
        remainder *= 10
        digit, remainder = divmod(remainder, value.denominator)
        digits.append(str(digit))
    return f"{sign}{whole}." + "".join(digits)


class ArithmeticSelfPlay(GuardedGame):
    """The challenger writes an arithmetic expression, the solver computes it, exact match scores."""

    metadata = {
        "name": "ArithmeticSelfPlay-v0",
        "description": "The challenger writes an arithmetic expression; the solver's answer must match its exact value.",
        "roles": ["challenger", "solver"],
        "reward": "verified (exact match)",
        "is_parallelizable": False,
        "render_modes": ["human", "ansi"],
    }
    branch_agent = "solver"
    default_guards = ()

    def __init__(self, *, max_query_chars: int = 1024, max_answer_chars: int = 4096,
                 guards=None, invalid_move_penalty: float = -1.0, render_mode: str | None = None):
        super().__init__(
            self.metadata["roles"],
            max_action_chars={"challenger": max_query_chars, "solver": max_answer_chars},
            max_observation_chars=max(len(CHALLENGER_PROMPT), len(SOLVER_PROMPT) + max_query_chars),
            invalid_move_penalty=invalid_move_penalty,
            render_mode=render_mode,
            guards=guards,
        )
        self.expression: str | None = None
        self.value: Fraction | None = None

    def reset_game(self, seed: int | None, options: dict | None) -> str:
        self.expression = self.value = None
        return "challenger"

    def observation_text(self, agent: str) -> str:
        if agent == "challenger":
            return CHALLENGER_PROMPT
        return "" if self.expression is None else SOLVER_PROMPT.format(expression=self.expression)

    def apply_move(self, agent: str, text: str) -> str | None:
        if agent == "challenger":
            try:
                expression = parse_expression(text)
                self.value = evaluate(expression)
            except InvalidMove as invalid:
                return self.reject_move(agent, str(invalid))
            self.expression = expression
            for info in self.infos.values():
                info["query"] = expression
            return "solver"
        answer = parse_answer(text)
        reward = float(answer is not None and answer == self.value)
        self.score(self.expression, text, {"solver": reward, "challenger": -reward},
                   {"answer": text, "solution": format_value(self.value), "reward": reward,
                    "parsed_answer": None if answer is None else format_value(answer)})
        return None
