"""The held-out instruction-following suite: its content, grading, the paired difference and `lsp eval --suite`."""
import json
from collections import Counter
from pathlib import Path

import pytest

from agents.policy import Completion, Policy, SamplingParams
from algorithms.config import SAMPLE_PROMPTS
from evaluation.suite import (SUITES_DIR, answer_suite, evaluate_policy, grade, load_suite,
                              paired_difference, summarize)
from lsp.cli import main
from lsp_env import constraints as library
from lsp_env.constraints import KINDS, Constraint, compatible
from lsp_env.games.constrained_instructions import CHALLENGER_PROMPT
from lsp_env.prompts import challenger_prompt

BUNDLED = SUITES_DIR / "if-heldout.jsonl"
TRAINING_PROMPTS = Path(SAMPLE_PROMPTS)


def records():
    return [json.loads(line) for line in BUNDLED.read_text(encoding="utf-8").splitlines()]


def write_suite(path, items):
    path.write_text("".join(json.dumps(item) + "\n" for item in items), encoding="utf-8")
    return path


def test_the_bundled_suite_is_large_diverse_and_covers_every_kind():
    suite = load_suite("if-heldout")
    assert suite.name == "if-heldout" and len(suite.items) >= 120
    assert len({item.id for item in suite.items}) == len(suite.items)
    tasks = [record["task"] for record in records()]
    assert len({task.casefold() for task in tasks}) == len(tasks)
    kinds = Counter(c.kind for item in suite.items for c in item.constraints)
    assert {kind for kind in KINDS if kinds[kind] < 3} == set()
    assert Counter(len(item.constraints) for item in suite.items).keys() == {1, 2, 3}


def test_every_prompt_states_its_task_and_compatible_constraints():
    for record, item in zip(records(), load_suite("if-heldout").items):
        chosen = [KINDS[c.kind] for c in item.constraints]
        assert all(compatible(kind, chosen[:i]) for i, kind in enumerate(chosen)), item.id
        assert item.prompt == " ".join([record["task"], *(c.instruction for c in item.constraints)])


def test_no_task_or_word_comes_from_training():
    training = [json.loads(line)["prompt"].casefold() for line in TRAINING_PROMPTS.read_text().splitlines()]
    training += [CHALLENGER_PROMPT.casefold(), challenger_prompt().casefold()]
    for task in (record["task"].casefold() for record in records()):
        assert not any(task in text or text in task for text in training), task
    used = [c.parameters for item in load_suite("if-heldout").items for c in item.constraints]
    words = {w for p in used for w in p.get("words", [])} | {p["word"] for p in used if "word" in p}
    for vocabulary in (library.NARROW, library.WIDE):
        assert not {w.casefold() for w in words} & {w.casefold() for w in (*vocabulary.keywords, *vocabulary.forbidden,
                                                                           *vocabulary.openers)}
        assert not {p["phrase"] for p in used if "phrase" in p} & set(vocabulary.closers)


# kind: (the suite's parameters, right answer, wrong answer); edges the library's own tests leave out
CASES = {
    "max_words": ({"n": 40}, " ".join(["word"] * 40), " ".join(["word"] * 41)),
    "min_words": ({"n": 40}, " ".join(["it's"] * 40), " ".join(["it's"] * 39)),
    "max_sentences": ({"n": 4}, "One. Two? Three! Four.", "One. Two? Three! Four. Five."),
    "include_keywords": ({"words": ["sunlight", "droplets"]}, "SUNLIGHT bends inside Droplets.",
                         "Sunlight bends inside each droplet."),
    "forbidden_words": ({"words": ["rain", "wet"]}, "A rainbow after the downpour.", "The rain came down."),
    "keyword_frequency": ({"word": "ice", "n": 3}, "Ice on ice under ICE.", "Ice, an iceberg and icebergs."),
    "all_lowercase": ({}, "- a [name] wrote p.s. here", "- a [Name] wrote here"),
    "all_uppercase": ({}, '{"CALORIE": "A UNIT OF ENERGY."}', '{"calorie": "A UNIT OF ENERGY."}'),
    "bullet_points": ({"n": 4}, "Tips:\n- one\n* two\n• three\n  - four", "- one\n- two\n- three\n-four"),
    "paragraphs": ({"n": 3}, "One.\n\nTwo.\n   \nThree.", "One.\nTwo.\n\nThree."),
    "json_output": ({}, '[{"game": "chess"}, {"game": "go"}]', 'Games: {"game": "chess"}'),
    "quotation": ({}, '  "Breathe, you know this."\n', '"Breathe," she said.'),
    "start_with": ({"word": "Sure"}, '"Sure! Take off the wheel first.', "Surely you can fix it."),
    "title": ({}, "<<a castle by the sea>>\nIt stands on the cliff.", "Title: <<a castle>>"),
    "end_with": ({"phrase": "Kind regards."}, "The tap drips.\nKIND REGARDS.", "Kind regards.\n[name]"),
    "postscript": ({}, "Wear good shoes.\n\np.s. carry water.", "Wear good shoes, P.S. carry water."),
    "no_commas": ({}, "Rinse the rice and cook it slowly.", "Rinse the rice, then cook it."),
    "no_digits": ({}, "Happy ninetieth birthday!", "Happy 90th birthday!"),
    "placeholders": ({"n": 3}, "Dear [landlord], the tap in [room] leaks since [date].", "Dear [landlord], [ ]"),
    "highlights": ({"n": 3}, "*Clear*, *short* and *kind* slides.", "*Clear* and *short* slides."),
}


def test_every_kind_has_a_case_with_the_suites_own_parameters():
    used = [(c.kind, c.parameters) for item in load_suite("if-heldout").items for c in item.constraints]
    assert set(CASES) == set(KINDS)
    assert all((kind, parameters) in used for kind, (parameters, _, _) in CASES.items())


@pytest.mark.parametrize("kind", sorted(CASES))
def test_right_and_wrong_answers_under_the_suites_parameters(kind):
    parameters, right, wrong = CASES[kind]
    assert Constraint(kind, parameters).check(right)
    assert not Constraint(kind, parameters).check(wrong)


def test_three_constraint_prompts_can_be_met_together():
    answers = {
        "Explain why the sea is salty.": "RIVERS CARRY SALT FROM ROCKS INTO THE SEA. WATER EVAPORATES BUT THE SALT "
                                         "STAYS AND BUILDS UP. THAT IS THE SCIENCE.",
        "Describe the steps to make pancakes.": "- Whisk eggs and milk\n- Add flour\n- Heat a pan\n- Pour the batter"
                                                "\n- Flip after two minutes",
        "Explain how a thermometer measures temperature.": '{"answer": "the liquid inside expands when warm."}',
    }
    suite = load_suite("if-heldout")
    by_task = {record["task"]: item for record, item in zip(records(), suite.items)}
    for task, answer in answers.items():
        assert len(by_task[task].constraints) == 3
        assert all(c.check(answer) for c in by_task[task].constraints), task


SMALL = [
    {"id": "a", "prompt": "Greet me.", "constraints": [{"kind": "all_lowercase"}, {"kind": "no_commas"}]},
    {"id": "b", "prompt": "Count.", "constraints": [{"kind": "max_words", "parameters": {"n": 3}}]},
    {"id": "c", "prompt": "Describe the sea.",
     "constraints": [{"kind": "include_keywords", "parameters": {"words": ["ocean", "candle"]}},
                     {"kind": "all_lowercase"}, {"kind": "placeholders", "parameters": {"n": 1}}]},
]


def test_grade_and_summarize_a_small_suite(tmp_path):
    suite = load_suite(write_suite(tmp_path / "small.jsonl", SMALL))
    graded = grade(suite, ["hello there.", "one two three four", "An ocean near [town]."])
    assert [g["met"] for g in graded] == [[True, True], [False], [False, False, True]]
    assert [g["strict"] for g in graded] == [True, False, False]
    assert graded[2]["kinds"] == ["include_keywords", "all_lowercase", "placeholders"]
    assert graded[1]["prompt"] == "Count." and graded[1]["answer"] == "one two three four"
    score = summarize(graded)
    assert score.strict == pytest.approx(1 / 3) and score.constraint_level == pytest.approx(3 / 6)
    assert score.prompts == 3
    assert score.per_kind == {"all_lowercase": (1, 2), "include_keywords": (0, 1), "max_words": (0, 1),
                              "no_commas": (1, 1), "placeholders": (1, 1)}
    with pytest.raises(ValueError, match="3 prompts but 2 answers"):
        grade(suite, ["a", "b"])


class RecordingPolicy(Policy):
    """Answers each chat with a fixed text per prompt and records what it was sent."""

    def __init__(self, answers):
        self.answers, self.sent = answers, []

    @property
    def tokenizer(self):
        return None

    def generate(self, chat, n=1, params=SamplingParams()):
        raise NotImplementedError

    def generate_batch(self, chats, n=1, params=SamplingParams()):
        self.sent.append((chats, n, params))
        return [[Completion(self.answers[chat[0]["content"]], [], [], [])] for chat in chats]

    def score(self, prompt_ids, completion_ids):
        raise NotImplementedError

    def load_state_dict(self, state_dict):
        raise NotImplementedError


def test_a_policy_answers_each_prompt_as_one_user_turn_in_order(tmp_path):
    suite = load_suite(write_suite(tmp_path / "small.jsonl", SMALL))
    policy = RecordingPolicy({"Greet me.": "hi", "Count.": "one two", "Describe the sea.": "ocean candle [x]"})
    params = SamplingParams(32, 0.0)
    assert answer_suite(policy, suite, params) == ["hi", "one two", "ocean candle [x]"]
    [(chats, n, sent_params)] = policy.sent
    assert chats == [[{"role": "user", "content": item.prompt}] for item in suite.items]
    assert n == 1 and sent_params == params
    score, graded = evaluate_policy(policy, suite, params)
    assert score.strict == 1.0 and [g["answer"] for g in graded] == ["hi", "one two", "ocean candle [x]"]


def test_paired_difference_on_a_worked_example():
    result = paired_difference([1, 1, 0, 1, 0], [0, 1, 0, 0, 0])  # differences 1, 0, 0, 1, 0
    assert result.mean == pytest.approx(0.4)
    assert result.ci_low == pytest.approx(-0.0801, abs=1e-3) and result.ci_high == pytest.approx(0.8801, abs=1e-3)
    assert (result.n, result.wins, result.losses, result.confidence) == (5, 2, 0, 0.95)
    narrower = paired_difference([1, 1, 0, 1, 0], [0, 1, 0, 0, 0], confidence=0.5)
    assert result.ci_low < narrower.ci_low < 0.4 < narrower.ci_high < result.ci_high


def test_paired_difference_edge_cases():
    same = paired_difference([1, 0, 1], [0, -1, 0])
    assert (same.mean, same.ci_low, same.ci_high) == (1.0, 1.0, 1.0)
    assert (same.wins, same.losses) == (3, 0)
    with pytest.raises(ValueError, match="at least 2"):
        paired_difference([1], [0])
    with pytest.raises(ValueError, match="equal lengths"):
        paired_difference([1, 0], [0])


@pytest.mark.parametrize("line, problem", [
    ("{not json", "not valid JSON"),
    ('{"id": "x", "constraints": [{"kind": "no_commas"}]}', "'prompt'"),
    ('{"id": "x", "prompt": "p", "constraints": []}', "constraints"),
    ('{"id": "x", "prompt": "p", "constraints": [{"kind": "rhymes"}]}', "unknown constraint"),
    ('{"id": "x", "prompt": "p", "constraints": [{"kind": "max_words", "parameters": {"m": 3}}]}',
     "wrong parameters for max_words"),
    ('{"id": "a", "prompt": "p", "constraints": [{"kind": "no_commas"}]}', "duplicate ids"),
])
def test_a_malformed_suite_names_the_file_and_line(tmp_path, line, problem):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(SMALL[0]) + "\n" + line + "\n")
    with pytest.raises(ValueError, match=problem) as error:
        load_suite(path)
    assert str(path) in str(error.value)
    if problem != "duplicate ids":
        assert "line 2" in str(error.value)


def test_an_unknown_or_empty_suite_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="if-heldout"):
        load_suite("if-nonexistent")
    with pytest.raises(ValueError, match="no items"):
        load_suite(write_suite(tmp_path / "empty.jsonl", []))


def test_lsp_eval_on_a_suite_reports_both_models_and_their_difference(tmp_path, tiny_path):
    suite = write_suite(tmp_path / "small.jsonl", SMALL)
    code = main(["eval", "--mode", "verifiable", "--suite", str(suite), "--model", tiny_path, "--baseline",
                 tiny_path, "--max_new_tokens", "6", "--resamples", "200", "--output", str(tmp_path / "out")])
    assert code == 0
    [folder] = list((tmp_path / "out").iterdir())
    report = json.loads((folder / "report.json").read_text())
    assert report["suite"] == "small" and report["prompts"] == 3
    for role in ("candidate", "baseline"):
        score = report["scores"][role]
        assert 0 <= score["strict"] <= 1 and 0 <= score["constraint_level"] <= 1
        assert sum(total for _, total in score["per_kind"].values()) == 6
        assert [a["id"] for a in report["answers"][role]] == ["a", "b", "c"]
    difference = report["difference"]
    assert difference["n"] == 3 and difference["mean"] == 0.0  # the same model, greedy: the same answers
    assert {"ci_low", "ci_high", "wins", "losses"} <= difference.keys()
    assert (folder / "strict_pass.png").stat().st_size > 0
    summary = (folder / "summary.md").read_text()
    assert "Instruction following on small" in summary and "| all_lowercase |" in summary
