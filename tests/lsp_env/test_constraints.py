"""The constraint library (each checker with right, wrong and malformed responses) and ConstrainedInstructions."""
import json
import random

import pytest

import lsp_env
from agents.judges import FunctionJudge
from lsp_env.constraints import (KINDS, NEAR_MISS_CREDIT, Constraint, compatible, fraction_met, partial_credit,
                                 sample_constraints)

MALFORMED = ["", "\x00\ufffd", "```", "{[(<<"]

# kind: (parameters, right response, wrong response)
CASES = {
    "max_words": ({"n": 5}, "Rivers run to the sea.", "Rivers run slowly and surely to the sea."),
    "min_words": ({"n": 5}, "Rivers run slowly to the sea.", "Rivers run."),
    "max_sentences": ({"n": 2}, "One. Two!", "One. Two. Three?"),
    "include_keywords": ({"words": ["river", "window"]}, "A River seen from a window.", "A river, nothing else."),
    "forbidden_words": ({"words": ["very", "just"]}, "It is fine.", "It is very fine."),
    "keyword_frequency": ({"word": "river", "n": 2}, "river after river", "one river"),
    "all_lowercase": ({}, "all quiet here.", "All quiet here."),
    "all_uppercase": ({}, "ALL QUIET HERE.", "ALL QUIET here."),
    "bullet_points": ({"n": 2}, "- first\n- second", "- first\n- second\n- third"),
    "paragraphs": ({"n": 2}, "First part.\n\nSecond part.", "Only one part."),
    "json_output": ({}, '```json\n{"answer": [1, 2]}\n```', "answer: 1, 2"),
    "quotation": ({}, '"Quoted answer."', "Quoted answer."),
    "start_with": ({"word": "Yes"}, "Yes, it works.", "It works, yes."),
    "title": ({}, "<<A Title>>\nBody text.", "A Title\nBody text."),
    "end_with": ({"phrase": "That is all."}, "Done here. That is all.", "That is all. Done here."),
    "postscript": ({}, "Main text.\nP.S. One more thing.", "Main text. PS one more thing."),
    "no_commas": ({}, "No commas here.", "Commas, here."),
    "no_digits": ({}, "Twenty two apples.", "22 apples."),
    "placeholders": ({"n": 2}, "Dear [name], see you at [place].", "Dear [name], see you."),
    "highlights": ({"n": 2}, "This is *key* and *vital*.", "This is *key* only."),
}

# kind: (a near miss, a far miss) of the parameters in CASES
NEAR_MISSES = {
    "max_words": ("Rivers run slowly to the sea.", "Rivers run slowly and surely and quietly down to the sea."),
    "min_words": ("Rivers run to sea.", "Rivers."),
    "max_sentences": ("One. Two. Three.", "One. Two. Three. Four. Five. Six."),
    "include_keywords": ("A river, nothing else.", "Nothing at all."),
    "forbidden_words": ("It is very fine.", "Very very good, really just very good."),
    "keyword_frequency": ("one river", "no rivers"),
    "all_lowercase": ("All quiet here.", "ALL Quiet Here, Says The Keeper."),
    "all_uppercase": ("ALL QUIET here.", "All quiet here."),
    "bullet_points": ("- first\n- second\n- third", "- first\n- second\n- third\n- fourth\n- fifth"),
    "paragraphs": ("One.\n\nTwo.\n\nThree.", "One.\n\nTwo.\n\nThree.\n\nFour."),
    "json_output": ('{"answer": [1, 2', "answer: 1, 2"),
    "quotation": ('"Quoted answer.', "Quoted answer."),
    "start_with": ("Well, yes, it works.", "It works."),
    "title": ("Body text.\n<<A Title>>", "A Title\nBody text."),
    "end_with": ("That is all. Done here.", "Done here."),
    "postscript": ("Main text. P.S. One more thing.", "Main text. PS one more thing."),
    "no_commas": ("Commas, here.", "Commas, commas, commas, here."),
    "no_digits": ("2 apples.", "22 apples and 333 pears."),
    "placeholders": ("Dear [name], see you.", "Dear friend, see you."),
    "highlights": ("This is *key* only.", "This is key only."),
}


def test_the_library_has_at_least_15_kinds_and_every_kind_is_tested():
    assert len(KINDS) >= 15
    assert set(CASES) == set(KINDS) == set(NEAR_MISSES)


@pytest.mark.parametrize("kind", sorted(CASES))
def test_a_near_miss_earns_more_than_a_far_one_and_less_than_half_a_pass(kind):
    parameters, right, _ = CASES[kind]
    near, far = NEAR_MISSES[kind]
    constraint = Constraint(kind, parameters)
    assert constraint.credit(right) == 1.0
    assert 0.0 <= constraint.credit(far) < constraint.credit(near) <= NEAR_MISS_CREDIT
    for response in MALFORMED:
        assert 0.0 <= constraint.credit(response) <= 1.0


def test_partial_credit_is_the_mean_credit():
    constraints = [Constraint("no_commas"), Constraint("bullet_points", {"n": 2}), Constraint("max_words", {"n": 2})]
    answer = "- one, two\n- three"
    assert fraction_met(constraints, answer) == (1 / 3, [False, True, False])
    assert partial_credit(constraints, answer) == pytest.approx((0.5 * 0.9 + 1.0 + 0.5 * 2 / 3) / 3)


@pytest.mark.parametrize("kind", sorted(CASES))
def test_right_response_meets_the_constraint(kind):
    parameters, right, _ = CASES[kind]
    assert Constraint(kind, parameters).check(right)


@pytest.mark.parametrize("kind", sorted(CASES))
def test_wrong_response_fails_the_constraint(kind):
    parameters, _, wrong = CASES[kind]
    assert not Constraint(kind, parameters).check(wrong)


@pytest.mark.parametrize("kind", sorted(set(CASES) - {"max_words", "forbidden_words", "no_commas", "no_digits"}))
def test_malformed_responses_fail_the_constraint(kind):
    parameters = CASES[kind][0]
    for response in MALFORMED:
        assert not Constraint(kind, parameters).check(response), repr(response)


@pytest.mark.parametrize("kind", ["max_words", "forbidden_words", "no_commas", "no_digits"])
def test_malformed_responses_do_not_crash_permissive_checkers(kind):
    """Negative constraints hold vacuously for some junk; the checkers must still return a bool, and
    an empty answer never meets them except a word limit."""
    parameters = CASES[kind][0]
    for response in MALFORMED:
        assert isinstance(Constraint(kind, parameters).check(response), bool)
    assert Constraint(kind, parameters).check("") is (kind == "max_words")


def test_instructions_show_the_parameters():
    assert Constraint("include_keywords", {"words": ["river", "window"]}).instruction == \
        "Include the words 'river', 'window'."
    assert "3" in Constraint("bullet_points", {"n": 3}).instruction


def test_sampling_is_seeded_and_never_draws_conflicting_kinds():
    for seed in range(300):
        count = 1 + seed % 3
        drawn = sample_constraints(random.Random(seed), count)
        assert drawn == sample_constraints(random.Random(seed), count)
        assert len(drawn) == count
        kinds = [KINDS[c.kind] for c in drawn]
        assert all(compatible(kind, kinds[:i]) for i, kind in enumerate(kinds))
    assert not compatible(KINDS["all_lowercase"], [KINDS["all_uppercase"]])
    assert not compatible(KINDS["title"], [KINDS["json_output"]])


def test_fraction_met():
    constraints = [Constraint("all_lowercase"), Constraint("no_commas"), Constraint("max_words", {"n": 2})]
    assert fraction_met(constraints, "short, sweet") == (2 / 3, [True, False, True])


def play(*moves, seed=0, **kwargs):
    env = lsp_env.make("ConstrainedInstructions-v0", **kwargs)
    env.reset(seed=seed)
    for move in moves:
        env.step(move)
    return env


def test_constraints_are_attached_to_the_task_and_seeded():
    env = play("Describe a harbor at night.", seed=3)
    observation = env.observe("solver")
    assert observation.startswith("Describe a harbor at night.")
    assert all(c.instruction in observation for c in env.constraints)
    assert 1 <= len(env.constraints) <= 3
    assert play("x y z", seed=3).constraints == env.constraints
    assert len({repr(play("task words", seed=s).constraints) for s in range(20)}) > 10


def test_reward_is_the_fraction_met_and_zero_sum_without_a_judge():
    env = play("Describe a harbor at night.", seed=3)
    answer = "a quiet harbor. boats sleep."
    met, results = fraction_met(env.constraints, answer)
    env.step(answer)
    assert env.rewards == {"solver": met, "challenger": -met}
    assert env.infos["solver"]["met"] == results and env.infos["solver"]["reward"] == met


def test_with_partial_credit_the_reward_credits_near_misses_and_passed_stays_strict():
    strict, partial = play("Describe a harbor.", seed=5), play("Describe a harbor.", seed=5, partial_credit=True)
    answer = "A quiet harbor, boats asleep, 3 lights."
    for env in (strict, partial):
        env.step(answer)
    passed, _ = fraction_met(partial.constraints, answer)
    credit = partial_credit(partial.constraints, answer)
    assert credit > passed
    assert partial.rewards == {"solver": credit, "challenger": -credit}
    assert partial.infos["solver"]["reward"] == credit and partial.infos["solver"]["passed"] == passed
    assert strict.infos["solver"]["reward"] == strict.infos["solver"]["passed"] == passed


def test_optional_quality_judge_adds_to_both_roles():
    judge = FunctionJudge(lambda query, answer: 0.5)
    env = play("Describe a harbor at night.", seed=3, quality_judge=judge)
    met, _ = fraction_met(env.constraints, "a quiet harbor")
    env.step("a quiet harbor")
    assert env.rewards == {"solver": met + 0.5, "challenger": -met + 0.5}
    assert env.infos["challenger"]["quality"] == 0.5


def test_a_quality_judge_that_is_a_plain_function_is_rejected():
    with pytest.raises(TypeError, match="FunctionJudge"):
        lsp_env.make("ConstrainedInstructions-v0", quality_judge=lambda query, answer: 0.5)


def test_json_answers_are_not_mistaken_for_code():
    env = lsp_env.make("ConstrainedInstructions-v0")
    env.reset(seed=0)
    env.constraints = [Constraint("json_output")]
    env.step("List three rivers of Europe.")
    env.step(json.dumps({"rivers": ["Danube", "Rhine", "Seine"]}, indent=2))
    assert env.rewards["solver"] == 1.0 and env.infos["solver"]["guards"] == {}


def test_topics_give_the_challenger_a_short_seeded_ask_and_leave_the_constraints_as_they_were():
    from lsp_env.games.constrained_instructions import CHALLENGER_PROMPT, TOPICS

    plain, topical = play(seed=4), play(seed=4, topics=True)
    assert plain.observe("challenger") == CHALLENGER_PROMPT
    ask = topical.observe("challenger")
    assert ask.startswith("Ask me one question about ") and topical.topic in TOPICS and topical.topic in ask
    assert topical.constraints == plain.constraints
    assert play(seed=4, topics=True).observe("challenger") == ask
    assert len({play(seed=s, topics=True).topic for s in range(30)}) > 10
    topical.step("Why is the sea salty?")
    assert topical.observe("solver").startswith("Why is the sea salty?\n\nFollow these rules")


def test_v1_is_v0_with_topics_and_partial_credit():
    v0, v1 = lsp_env.make("ConstrainedInstructions-v0"), lsp_env.make("ConstrainedInstructions-v1")
    assert type(v0) is type(v1)
    assert (v0.topics, v0.partial_credit, v1.topics, v1.partial_credit) == (False, False, True, True)
    assert not lsp_env.make("ConstrainedInstructions-v1", partial_credit=False).partial_credit


def test_v2_is_v1_with_the_wide_vocabulary_and_mixed_rule_layouts():
    from lsp_env.constraints import NARROW, WIDE

    v1, v2 = lsp_env.make("ConstrainedInstructions-v1"), lsp_env.make("ConstrainedInstructions-v2")
    assert (v1.vocabulary, v1.rule_layout, v2.vocabulary, v2.rule_layout) == (NARROW, "list", WIDE, "mixed")
    assert v2.topics and v2.partial_credit


def test_the_narrow_vocabulary_draws_what_it_always_drew():
    """v0 and v1 episodes are those of the runs recorded in benchmarks/RESULTS.md."""
    drawn = [c.instruction for seed in range(3) for c in sample_constraints(random.Random(seed), 3)]
    assert drawn == ["Start your answer with the word 'Yes'.", "Answer in at least 50 words.",
                     "End with a postscript that starts with 'P.S.'.", "Do not use the words 'important', 'basically'.",
                     "Include at least 1 placeholders in square brackets, like [name].", "Use at most 3 sentences.",
                     "Answer in at least 50 words.", "Include at least 2 placeholders in square brackets, like [name].",
                     "Wrap your whole answer in double quotation marks."]


def test_the_wide_vocabulary_draws_words_and_numbers_the_narrow_one_never_does():
    from lsp_env.constraints import NARROW, WIDE

    def drawn(vocabulary):
        rng = random.Random(0)
        return [c.parameters for _ in range(400) for c in sample_constraints(rng, 3, vocabulary)]

    def values(parameters):
        return {str(v) for p in parameters for value in p.values() for v in (value if isinstance(value, list) else [value])}

    narrow, wide = values(drawn(NARROW)), values(drawn(WIDE))
    assert len(wide) > 3 * len(narrow)
    assert {"15", "75", "4"} <= wide and not {"15", "75"} & narrow
    assert set(WIDE.keywords) > set(NARROW.keywords) and set(WIDE.closers) > set(NARROW.closers)


def test_mixed_rule_layout_states_the_rules_inline_in_about_half_of_the_episodes():
    layouts = []
    for seed in range(40):
        env = play(seed=seed, rule_layout="mixed")
        env.step("Why is the sea salty?")
        seen, rules = env.observe("solver"), [c.instruction for c in env.constraints]
        inline = " ".join(["Why is the sea salty?", *rules])
        assert seen == inline or seen.startswith("Why is the sea salty?\n\nFollow these rules in your answer:\n- ")
        layouts.append(seen == inline)
    assert 10 < sum(layouts) < 30
    again = play(seed=3, rule_layout="mixed")
    assert again.inline_rules == layouts[3]


def test_a_wrong_vocabulary_or_layout_is_refused():
    with pytest.raises(ValueError, match="vocabulary"):
        lsp_env.make("ConstrainedInstructions-v0", vocabulary="huge")
    with pytest.raises(ValueError, match="rule_layout"):
        lsp_env.make("ConstrainedInstructions-v0", rule_layout="table")
