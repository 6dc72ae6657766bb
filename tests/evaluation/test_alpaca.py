"""AlpacaEval-format prompts, outputs and annotations."""
import json

import pytest

from evaluation import alpaca


def test_outputs_round_trip_in_alpacaeval_format(tmp_path):
    prompts = [{"instruction": "Name a colour.", "dataset": "demo"}, {"instruction": "Say hi."}]
    path = alpaca.write_json(tmp_path / "prompts.json", prompts)
    records = alpaca.read_records(path)
    assert records == prompts

    outputs = alpaca.output_records(records, ["Blue.", "Hi!"], generator="my-model")
    out_path = alpaca.write_json(tmp_path / "model_outputs.json", outputs)
    raw = json.loads(out_path.read_text())
    assert raw == [{"instruction": "Name a colour.", "dataset": "demo", "output": "Blue.", "generator": "my-model"},
                   {"instruction": "Say hi.", "output": "Hi!", "generator": "my-model"}]
    assert alpaca.read_records(out_path) == raw  # outputs are valid prompt files too
    assert alpaca.read_instructions(out_path) == ["Name a colour.", "Say hi."]


def test_json_lines_and_prompt_fields_are_read(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text('{"prompt": "First?"}\n\n{"instruction": "Second?"}\n')
    assert alpaca.read_instructions(path) == ["First?", "Second?"]
    assert "prompt" not in alpaca.output_records(alpaca.read_records(path), ["a", "b"], "g")[0]


def test_annotations_use_alpacaeval_preferences():
    first, second = ("model", "A"), ("reference", "B")
    assert alpaca.annotation_record("q", first, second, "judge", 1.0)["preference"] == 1.0
    assert alpaca.annotation_record("q", first, second, "judge", 0.5)["preference"] == 1.5
    record = alpaca.annotation_record("q", first, second, "judge", 0.0)
    assert record == {"instruction": "q", "output_1": "A", "generator_1": "model", "output_2": "B",
                      "generator_2": "reference", "annotator": "judge", "preference": 2.0}


@pytest.mark.parametrize("content", ['[]', '[{"output": "no instruction"}]', '[{"instruction": "  "}]', '["text"]'])
def test_bad_prompt_files_are_rejected(tmp_path, content):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ValueError):
        alpaca.read_records(path)


def test_the_bundled_heldout_prompts_are_distinct_from_the_training_sample():
    from algorithms.config import SAMPLE_PROMPTS

    heldout = alpaca.read_instructions(alpaca.HELDOUT_PROMPTS)
    training = alpaca.read_instructions(SAMPLE_PROMPTS)
    assert len(heldout) == len(set(heldout)) >= 30
    assert not set(heldout) & set(training)
