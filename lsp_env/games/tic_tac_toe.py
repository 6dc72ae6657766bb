"""
# Tic-Tac-Toe

| Creation           | `lsp_env.make("TicTacToe-v0")`                       |
|--------------------|------------------------------------------------------|
| Actions            | Text (`UnicodeText`)                                 |
| Parallel API       | No                                                   |
| Agents             | `agents= ['x', 'o']`                                 |
| Agents             | 2                                                    |
| Action Values      | non-blank text naming one empty cell, 1-9            |
| Observation Values | text: the board, whose turn it is, the empty cells   |
| Branch point       | none: every episode is its own group                 |

A classic two-player zero-sum game, played by one shared policy in both
seats, as in SPIRAL (Liu et al., 2025). Train it with the `rae` algorithm
(role-conditioned advantages: a running baseline per seat).

### Observation Space

The player to move sees the board (cells numbered 1-9, row by row), its mark
and the empty cells. The other player sees the board only.

### Action Space

A move is text that names exactly one number, the cell to play ("5",
"I take cell 5."). Text naming no number, several different numbers, a
number outside 1-9 or a taken cell is an invalid move.

### Rewards

Win +1, loss -1, draw 0, for the player who moves (zero-sum). An invalid
move ends the game with `invalid_move_penalty` (-1, never partial credit) for
the offender and 0 for the other player, who did nothing to earn a win.

`infos[agent]["outcome"]` is "win", "loss", "draw", or "invalid" (this
player's invalid move); it is None while the game runs, and also for the
opponent of an invalid move. `lsp_env.outcomes.outcome_rates` turns these into
the trainer's `outcome/ROLE/{win,loss,draw,invalid}` rates.

### Arguments

    TicTacToe(max_action_chars=256, invalid_move_penalty=-1.0, render_mode=None)

### Version History

* v0: Initial version.
"""
from __future__ import annotations

import re

from lsp_env.guards import GuardedGame

LINES = ((0, 1, 2), (3, 4, 5), (6, 7, 8), (0, 3, 6), (1, 4, 7), (2, 5, 8), (0, 4, 8), (2, 4, 6))
RULES = ("You are playing tic-tac-toe as {mark}. Players take turns putting their mark in an empty cell; three "
         "marks in a row, column or diagonal win. Cells are numbered 1-9, row by row.")


def parse_cell(text: str) -> int | str:
    """The cell (1-9) a move names, or the reason it names none."""
    numbers = set(re.findall(r"(?<![\d.])\d+(?![\d.]\d)", text))
    if len(numbers) != 1:
        return f"a move must name exactly one cell number, this one names {len(numbers)}"
    cell = int(numbers.pop())
    return cell if 1 <= cell <= 9 else f"cell {cell} is not on the board (1-9)"


class TicTacToe(GuardedGame):
    """Tic-tac-toe between two seats of one shared policy; invalid moves lose with a penalty."""

    metadata = {
        "name": "TicTacToe-v0",
        "description": "Tic-tac-toe, both seats played by one shared policy (zero-sum; train with rae).",
        "roles": ["x", "o"],
        "reward": "game outcome (win +1, loss -1, draw 0)",
        "is_parallelizable": False,
        "render_modes": ["human", "ansi"],
    }
    branch_agent = None
    default_guards = ()

    def __init__(self, *, max_action_chars: int = 256, invalid_move_penalty: float = -1.0,
                 render_mode: str | None = None):
        super().__init__(self.metadata["roles"], max_action_chars=max_action_chars, max_observation_chars=1024,
                         invalid_move_penalty=invalid_move_penalty, render_mode=render_mode)
        self.board: list[str | None] = [None] * 9

    def reset_game(self, seed: int | None, options: dict | None) -> str:
        self.board = [None] * 9
        for info in self.infos.values():
            info["outcome"] = None
        return "x"

    def board_text(self) -> str:
        cells = [mark.upper() if mark else str(index + 1) for index, mark in enumerate(self.board)]
        return "\n".join(" | ".join(cells[row:row + 3]) for row in (0, 3, 6))

    def observation_text(self, agent: str) -> str:
        text = f"{RULES.format(mark=agent.upper())}\n\nBoard:\n{self.board_text()}"
        if agent != self.agent_selection or not self.agents or self.terminations[agent]:
            return text
        empty = ", ".join(str(index + 1) for index, mark in enumerate(self.board) if mark is None)
        return f"{text}\n\nYour move. Empty cells: {empty}. Reply with the number of the cell you take."

    def apply_move(self, agent: str, text: str) -> str | None:
        cell = parse_cell(text)
        if isinstance(cell, int) and self.board[cell - 1] is not None:
            cell = f"cell {cell} is already taken"
        if isinstance(cell, str):
            self.infos[agent]["outcome"] = "invalid"
            return self.reject_move(agent, cell)
        self.board[cell - 1] = agent
        opponent = "o" if agent == "x" else "x"
        if any(all(self.board[i] == agent for i in line) for line in LINES):
            self._finish({agent: 1.0, opponent: -1.0}, {agent: "win", opponent: "loss"})
            return None
        if all(self.board):
            self._finish({agent: 0.0, opponent: 0.0}, {agent: "draw", opponent: "draw"})
            return None
        return opponent

    def _finish(self, rewards: dict[str, float], outcomes: dict[str, str]) -> None:
        self.rewards.update(rewards)
        for agent, outcome in outcomes.items():
            self.infos[agent]["outcome"] = outcome
        self.transcript.append(("board", self.board_text()))
