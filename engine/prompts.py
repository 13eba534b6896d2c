"""Prompt templates per backbone and mode, loaded from ``assets/prompts/<backbone>.json``.

Each file holds one or more *modes*: ``zero_shot`` (the pretrained backbone without an adapter;
retrieved descriptions go into the text as ``$context``) and ``adapter`` (the paper's modules are
attached; descriptions go to the prompter). A mode has one ``string.Template`` per task, the
system prompt and the box convention (:mod:`engine.boxes`) used both for the region given to
the model and for the boxes it answers with. Placeholders: ``$question``, ``$labels``,
``$region``, ``$context``. The training CLI renders prompts with the same :class:`PromptSet`.

Change tasks (``change_caption``, ``change_ground``, ``change_ask``) show the model two images in
one user turn; a mode's ``pair_labels`` are the texts placed before the before image's block and
before the after image's block (e.g. ``"Image 1 (before): "`` and ``"\nImage 2 (after): "``);
the task text follows the after block.
"""

from __future__ import annotations

import json
import string
from dataclasses import dataclass, field
from pathlib import Path

from engine.boxes import ALIASES, BOX_CONVENTIONS, BoxConvention, box_convention
from engine.config import BACKBONE_NAMES
from engine.errors import ConfigError, InputError
from engine.types import Task

__all__ = ["MODES", "PROMPTS_DIR", "PromptSet", "load_prompt_set", "prompt_mode"]

PROMPTS_DIR = Path(__file__).resolve().parents[1] / "assets" / "prompts"
MODES = ("zero_shot", "adapter")
PLACEHOLDERS = frozenset({"question", "labels", "region", "context"})
REQUIRED = {
    Task.ASK: {"question"},
    Task.GROUND: {"question"},
    Task.CLASSIFY: {"labels"},
    Task.REGION: {"region"},
    Task.CHANGE_GROUND: {"question"},
    Task.CHANGE_ASK: {"question"},
}
DEFAULT_PAIR_LABELS = ("Image 1 (before): ", "\nImage 2 (after): ")


def prompt_mode(has_adapter_modules: bool) -> str:
    """``adapter`` when the paper's modules are attached, else ``zero_shot``."""
    return "adapter" if has_adapter_modules else "zero_shot"


@dataclass(frozen=True)
class PromptSet:
    """The templates of one backbone in one mode."""

    backbone: str
    mode: str
    system: str | None
    box_format_name: str
    templates: dict[Task, string.Template] = field(compare=False)
    context_header: str = ""
    context_item: str = ""
    context_footer: str = ""
    default_questions: dict[Task, str] = field(default_factory=dict, compare=False)
    pair_labels: tuple[str, str] = DEFAULT_PAIR_LABELS  # texts before the before / after image

    def __post_init__(self) -> None:
        if len(self.pair_labels) != 2 or not all(isinstance(t, str) for t in self.pair_labels):
            raise ConfigError(
                f"prompt set {self.backbone}/{self.mode}: pair_labels must be two strings "
                f"(the texts before the before and the after image), got {self.pair_labels!r}"
            )
        missing = [t.value for t in Task if t not in self.templates]
        if missing:
            raise ConfigError(
                f"prompt set {self.backbone}/{self.mode} lacks templates for {missing}"
            )
        if ALIASES.get(self.box_format_name, self.box_format_name) not in BOX_CONVENTIONS:
            raise ConfigError(
                f"prompt set {self.backbone}/{self.mode}: "
                f"unknown box_format {self.box_format_name!r}; "
                f"known: {', '.join([*BOX_CONVENTIONS, *ALIASES])}"
            )
        for task, template in self.templates.items():
            where = f"{self.backbone}/{self.mode}/{task.value}"
            names = set(template.get_identifiers())
            if not template.is_valid() or names - PLACEHOLDERS:
                raise ConfigError(
                    f"template {where} uses {sorted(names - PLACEHOLDERS)}; "
                    f"allowed: {sorted(PLACEHOLDERS)}"
                )
            if REQUIRED.get(task, set()) - names:
                raise ConfigError(f"template {where} must use ${min(REQUIRED[task])}")

    @property
    def box_format(self) -> BoxConvention:
        """The box convention of this mode (registry: :data:`engine.boxes.BOX_CONVENTIONS`)."""
        return box_convention(self.box_format_name)

    def render(
        self,
        task: Task,
        question: str | None = None,
        labels: tuple[str, ...] = (),
        region_text: str = "",
        context_texts: tuple[str, ...] = (),
    ) -> str:
        """The user text for one request. Raises :class:`InputError` for a missing question."""
        question = (question or "").strip() or self.default_questions.get(task, "")
        if "question" in REQUIRED.get(task, set()) and not question:
            raise InputError(
                f"task {task.value!r} needs a question (got {question!r}); type what to ask or find"
            )
        return self.templates[task].substitute(
            question=question,
            labels=", ".join(labels),
            region=region_text,
            context=self.context(context_texts),
        )

    def context(self, texts: tuple[str, ...]) -> str:
        """The ``$context`` block for retrieved descriptions ('' when there are none)."""
        if not texts or not self.context_item:
            return ""
        items = "".join(
            string.Template(self.context_item).substitute(text=t.strip()) for t in texts
        )
        return self.context_header + items + self.context_footer


def load_prompt_set(backbone: str, mode: str, prompts_dir: Path = PROMPTS_DIR) -> PromptSet:
    """The :class:`PromptSet` for ``backbone`` (registry: ``BACKBONE_NAMES``) in ``mode``."""
    if backbone not in BACKBONE_NAMES:
        raise ConfigError(
            f"no prompts for backbone {backbone!r}; known: {', '.join(BACKBONE_NAMES)}"
        )
    if mode not in MODES:
        raise ConfigError(f"unknown prompt mode {mode!r}; use one of {', '.join(MODES)}")
    path = prompts_dir / f"{backbone}.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(f"cannot read prompt templates {str(path)!r}: {err}") from err
    modes = data.get("modes", {})
    if mode not in modes:
        raise ConfigError(
            f"{str(path)!r} has no {mode!r} prompts (has: {', '.join(modes) or 'none'}); "
            + (
                "the paper backbone always runs with its adapter modules"
                if backbone == "paper"
                else ""
            )
        )
    spec = modes[mode]
    context = spec.get("context", {})
    try:
        return PromptSet(
            backbone=backbone,
            mode=mode,
            system=spec.get("system"),
            box_format_name=spec["box_format"],
            templates={Task(k): string.Template(v) for k, v in spec["tasks"].items()},
            context_header=context.get("header", ""),
            context_item=context.get("item", ""),
            context_footer=context.get("footer", ""),
            default_questions={Task(k): v for k, v in spec.get("default_questions", {}).items()},
            pair_labels=tuple(spec.get("pair_labels", DEFAULT_PAIR_LABELS)),
        )
    except (KeyError, ValueError) as err:
        raise ConfigError(f"bad prompt file {str(path)!r} ({backbone}/{mode}): {err!r}") from err
