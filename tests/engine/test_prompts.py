"""Prompt templates in assets/prompts: every task renders, bad files and inputs are clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.config import BACKBONE_NAMES
from engine.errors import ConfigError, InputError
from engine.prompts import PROMPTS_DIR, load_prompt_set, prompt_mode
from engine.types import Task

SETS = [("paper", "adapter"), ("qwen2.5-vl", "zero_shot"), ("qwen2.5-vl", "adapter")]


@pytest.mark.parametrize("backbone,mode", SETS)
def test_every_task_renders(backbone, mode):
    prompts = load_prompt_set(backbone, mode)
    texts = {
        Task.ASK: prompts.render(Task.ASK, question="How many ships?"),
        Task.CAPTION: prompts.render(Task.CAPTION),
        Task.GROUND: prompts.render(Task.GROUND, question="storage tank"),
        Task.CLASSIFY: prompts.render(Task.CLASSIFY, labels=("harbor", "farmland")),
        Task.REGION: prompts.render(Task.REGION, region_text="[1, 2, 3, 4]"),
    }
    assert "How many ships?" in texts[Task.ASK]
    assert "storage tank" in texts[Task.GROUND]
    assert "harbor, farmland" in texts[Task.CLASSIFY]
    assert (
        "[1, 2, 3, 4]" in texts[Task.REGION] and "Describe" in texts[Task.REGION]
    )  # default question
    assert all("$" not in t for t in texts.values())


def test_box_conventions_per_mode():
    assert load_prompt_set("qwen2.5-vl", "zero_shot").box_format.name == "qwen2.5-vl"
    assert load_prompt_set("qwen2.5-vl", "adapter").box_format.name == "paper"
    assert load_prompt_set("paper", "adapter").box_format.name == "paper"
    assert prompt_mode(True) == "adapter" and prompt_mode(False) == "zero_shot"


def test_zero_shot_context_carries_retrieved_descriptions_and_adapter_does_not():
    zero = load_prompt_set("qwen2.5-vl", "zero_shot")
    text = zero.render(
        Task.ASK, question="What is this?", context_texts=("A harbor with boats.", "Tanks.")
    )
    assert "- A harbor with boats.\n- Tanks.\n" in text and text.index("Tanks.") < text.index(
        "What is this?"
    )
    assert "Descriptions" not in zero.render(Task.ASK, question="What is this?")
    adapter = load_prompt_set("qwen2.5-vl", "adapter")
    assert "harbor" not in adapter.render(Task.ASK, question="What?", context_texts=("A harbor.",))


@pytest.mark.parametrize("task", [Task.ASK, Task.GROUND])
def test_missing_question_is_an_input_error(task):
    with pytest.raises(InputError, match="needs a question"):
        load_prompt_set("qwen2.5-vl", "zero_shot").render(task, question="  ")


def test_unknown_backbone_mode_and_missing_mode():
    with pytest.raises(ConfigError, match="qwen2.5-vl"):
        load_prompt_set("llava", "adapter")
    with pytest.raises(ConfigError, match="zero_shot"):
        load_prompt_set("paper", "few_shot")
    with pytest.raises(ConfigError, match="always runs with its adapter"):
        load_prompt_set("paper", "zero_shot")


def _write(tmp_path: Path, tasks: dict, box_format: str = "grid1000") -> Path:
    spec = {"modes": {"adapter": {"system": None, "box_format": box_format, "tasks": tasks}}}
    (tmp_path / "paper.json").write_text(json.dumps(spec), encoding="utf-8")
    return tmp_path


GOOD = {
    "ask": "$question",
    "caption": "c",
    "ground": "$question",
    "classify": "$labels",
    "region": "$region $question",
    "change_caption": "what changed",
    "change_ground": "$question",
    "change_ask": "$question",
}


@pytest.mark.parametrize(
    "tasks,box_format,message",
    [
        ({k: v for k, v in GOOD.items() if k != "region"}, "grid1000", "lacks templates"),
        ({**GOOD, "ask": "$question $colour"}, "grid1000", "colour"),
        ({**GOOD, "classify": "pick one"}, "grid1000", "must use \\$labels"),
        ({**GOOD, "change_ask": "what?"}, "grid1000", "change_ask must use \\$question"),
        (GOOD, "polygons", "unknown box_format"),
        ({**GOOD, "zoom": "x"}, "grid1000", "bad prompt file"),
    ],
)
def test_bad_prompt_files_are_config_errors(tmp_path, tasks, box_format, message):
    with pytest.raises(ConfigError, match=message):
        load_prompt_set("paper", "adapter", _write(tmp_path, tasks, box_format))


def test_every_backbone_has_a_prompt_file():
    for name in BACKBONE_NAMES:
        assert (PROMPTS_DIR / f"{name}.json").is_file()
