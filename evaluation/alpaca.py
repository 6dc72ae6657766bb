"""AlpacaEval-format files, so that AlpacaEval's own tooling can judge our outputs too.

- prompts: a JSON list of records with an `instruction` (JSON Lines also read;
  other fields, e.g. `dataset`, are kept);
- outputs: a JSON list of `{"instruction", "output", "generator", ...}`, one
  file per model (`alpaca_eval --model_outputs A.json --reference_outputs B.json`);
- annotations: `{"instruction", "output_1", "generator_1", "output_2",
  "generator_2", "annotator", "preference"}`, with preference 1 (output_1 is
  better), 2 (output_2 is better) or 1.5 (a tie).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

HELDOUT_PROMPTS = str(Path(__file__).parent / "data" / "heldout_prompts.json")


def read_records(path: str | Path) -> list[dict]:
    """The records of a JSON list (or a JSON Lines file), each checked to hold an `instruction`."""
    text = Path(path).read_text(encoding="utf-8")
    try:
        records = json.loads(text)
    except json.JSONDecodeError:
        records = [json.loads(line) for line in text.splitlines() if line.strip()]
    if not isinstance(records, list) or not records:
        raise ValueError(f"{path}: expected a non-empty JSON list of records")
    for number, record in enumerate(records):
        if not isinstance(record, dict):
            raise ValueError(f"{path}: record {number} is not an object")
        record.setdefault("instruction", record.get("prompt"))
        if not isinstance(record["instruction"], str) or not record["instruction"].strip():
            raise ValueError(f"{path}: record {number} has no non-empty 'instruction' field")
    return records


def read_instructions(path: str | Path) -> list[str]:
    return [record["instruction"] for record in read_records(path)]


def output_records(prompts: Sequence[dict], outputs: Sequence[str], generator: str) -> list[dict]:
    """AlpacaEval output records: each prompt record with its `output` and the `generator` name."""
    if len(prompts) != len(outputs):
        raise ValueError(f"{len(prompts)} prompts but {len(outputs)} outputs")
    return [{**{k: v for k, v in prompt.items() if k != "prompt"}, "output": output, "generator": generator}
            for prompt, output in zip(prompts, outputs)]


def annotation_record(instruction: str, first: tuple[str, str], second: tuple[str, str], annotator: str,
                      first_score: float) -> dict:
    """One judgement in AlpacaEval's annotation format; `first` and `second` are (generator, output)
    and `first_score` is 1 (first better), 0.5 (tie) or 0 (second better)."""
    return {"instruction": instruction, "output_1": first[1], "generator_1": first[0],
            "output_2": second[1], "generator_2": second[0], "annotator": annotator,
            "preference": 2.0 - first_score}


def write_json(path: str | Path, records) -> Path:
    path = Path(path)
    path.write_text(json.dumps(records, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path
