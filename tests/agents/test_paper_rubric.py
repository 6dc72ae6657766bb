"""The paper's Box 3 rubric (`paper-rubric`): its output format, its parser, and malformed verdicts counted."""
import logging

import pytest
from transformers import AutoTokenizer

from agents.judges import PAPER_INSTRUCTIONS, RUBRICS, Judge, SelfJudge, build_judge, parse_paper_rubric
from agents.models import DEFAULT_MODEL, resolve_model
from agents.policy import Completion

WELL_FORMED = "Justification: clear task, on topic, covers most of it.\nSum: 1+1+1+1+1+0+0\nScore: 5"


@pytest.mark.parametrize("text, points", [
    (WELL_FORMED, 5),
    ("Justification: empty answer.\nSum: 1+1+0+0+0+0+0\nScore: 2", 2),
    ("Justification: ...\nSum: 0+0+0+0+0+0+0\nScore: 0", 0),
    ("Justification: flawless.\nSum: 1+1+1+1+1+1+1\n**Score:** 7", 7),
    ("- Score: 4/7", 4),
    ("Score: 3 points.", 3),
    ("Score: 1\nOn reflection the answer is better.\nScore: 6", 6),  # the last score line counts
])
def test_well_formed_verdicts_parse(text, points):
    assert parse_paper_rubric(text) == points


@pytest.mark.parametrize("text", [
    "",
    "Justification: a fine answer.\nSum: 1+1+1+1+0+0+0",  # no score line
    "Justification: ...\nScore: four",
    "Justification: ...\nScore: 4.5",  # points are whole
    "Total: 4",  # the paper's format names the score "Score"
    "The score: 4 is what I would give if asked.",  # not a score line
    "Score:",
])
def test_malformed_verdicts_give_none(text):
    assert parse_paper_rubric(text) is None


@pytest.mark.parametrize("text", ["Score: 8", "Score: -1", "Score: 12", "Score: 5/10"])
def test_out_of_range_verdicts_give_none(text):
    assert parse_paper_rubric(text) is None


def test_the_prompt_asks_for_justification_then_sum_then_score():
    rubric = RUBRICS["paper-rubric"]
    assert rubric.max_score == 7 and rubric.parse is parse_paper_rubric and rubric.output_format == PAPER_INSTRUCTIONS
    format_lines = [line.split(":")[0] for line in PAPER_INSTRUCTIONS.strip().splitlines()[1:]]
    assert format_lines == ["Justification", "Sum", "Score"]
    assert rubric.prompt.count("\n1. ") == 1 and "\n7. " in rubric.prompt and "\n8. " not in rubric.prompt


class ScriptedPolicy:
    """A policy whose generations are fixed texts, in turn."""

    def __init__(self, texts):
        self.tokenizer = AutoTokenizer.from_pretrained(resolve_model(DEFAULT_MODEL))  # judges cut long inputs
        self.texts = list(texts)
        self.prompts = []

    def generate_batch(self, chats, n, params):
        self.prompts.extend(chat[0]["content"] for chat in chats)
        return [[Completion(self.texts.pop(0), [], [], [])] for _ in chats]


def test_a_malformed_verdict_is_flagged_counted_and_logged_not_silently_zero(caplog):
    policy = ScriptedPolicy([WELL_FORMED, "I like it.", "Score: 9"])
    judge = build_judge("paper-rubric", policy, mode="generate")
    assert isinstance(judge, SelfJudge) and isinstance(judge, Judge)
    with caplog.at_level(logging.WARNING, logger="agents.judges"):
        good, malformed, out_of_range = judge.judge_batch([("q", "a1"), ("q", "a2"), ("q", "a3")])
    assert good.parsed and good.score == pytest.approx(5 / 7)  # R_Q = points / 7
    assert not malformed.parsed and not out_of_range.parsed
    assert judge.failures == 2 and judge.calls == 3
    assert "2 of 3 outputs had no valid score" in caplog.text
    assert "Justification:" in policy.prompts[0] and "{" not in policy.prompts[0]
