"""Training data: datasets -> weighted, deterministic sample order -> tokenized model batches.

* :func:`load_samples` reads the configured datasets (``engine.data.load_dataset``) and keeps the
  stage's tasks.
* :class:`SampleOrder` decides which samples each optimizer step sees. Epoch ``e`` is a fixed
  permutation (seeded by ``(seed, e)``) of every sample repeated by its weight (fractional
  weights keep a seeded random share), so the order is a pure function of the position: a
  resumed run sees exactly the batches the uninterrupted run would have seen.
* :class:`BatchMaker` renders a dataset sample with the backbone's prompt templates (the same
  :class:`engine.prompts.PromptSet` the engine answers with), attaches retrieved descriptions,
  and builds the left-padded :class:`engine.model.inputs.VLMBatch` with labels on the answer.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from engine.boxes import BOX_CONVENTIONS
from engine.data.formats import load_dataset
from engine.data.instructions import Sample
from engine.errors import ConfigError, DataFormatError
from engine.model.inputs import Sample as ModelSample
from engine.model.inputs import VLMBatch, build_batch, prompt_sample
from engine.prompts import PromptSet
from engine.types import Task

__all__ = ["BatchMaker", "SampleOrder", "load_samples", "sample_weight", "source_of"]

logger = logging.getLogger(__name__)


def load_samples(sources, tasks: Sequence[str] | None) -> list[Sample]:
    """Samples of every :class:`~engine.training.config.DataSource`, filtered to ``tasks``."""
    samples: list[Sample] = []
    for source in sources:
        if not source.path.exists():
            raise DataFormatError(
                f"training data {str(source.path)!r} not found; fix data.train/val in the config"
            )
        found = load_dataset(source.format, source.path, **source.options)
        samples.extend(found[: source.limit] if source.limit else found)
    if tasks is not None:
        keep = {Task.parse(t) for t in tasks}
        samples = [s for s in samples if s.task in keep]
    return samples


def sample_weight(sample: Sample, weights: dict) -> float:
    """Sampling weight: ``weights[question_type]``, else ``weights[task]``, else 1."""
    if sample.question_type is not None and sample.question_type in weights:
        return float(weights[sample.question_type])
    return float(weights.get(sample.task.value, 1.0))


def source_of(sample: Sample) -> str:
    """The provenance key of a sample's image: the id up to its last ':'-part but two
    (``synthetic:<seed>`` for ``synthetic:<seed>:<row>_<col>:<task>``), else the id."""
    parts = sample.id.split(":")
    return ":".join(parts[:2]) if len(parts) >= 3 else sample.id


@dataclass(frozen=True)
class SampleOrder:
    """Deterministic weighted order over ``n`` samples; see the module docstring."""

    weights: tuple[float, ...]
    seed: int
    global_batch: int

    def __post_init__(self) -> None:
        if self.steps_per_epoch < 1:
            raise ConfigError(
                f"{len(self.epoch(0))} weighted training samples are fewer than one optimizer "
                f"step's {self.global_batch} (batch_size x grad_accum); add data or lower them"
            )

    def epoch(self, epoch: int) -> np.ndarray:
        """Sample indices of ``epoch`` in order (int64)."""
        rng = np.random.default_rng([self.seed, epoch])
        w = np.asarray(self.weights, dtype=np.float64)
        whole = np.floor(w).astype(np.int64)
        extra = rng.random(len(w)) < (w - whole)
        counts = whole + extra
        return rng.permutation(np.repeat(np.arange(len(w)), counts))

    @property
    def steps_per_epoch(self) -> int:
        expected = int(np.floor(np.asarray(self.weights)).sum())
        return expected // self.global_batch

    def step_indices(self, step: int) -> np.ndarray:
        """Indices for optimizer step ``step`` (0-based): ``global_batch`` of them."""
        epoch, offset = divmod(step, self.steps_per_epoch)
        order = self.epoch(epoch)
        start = offset * self.global_batch
        return order[start : start + self.global_batch]

    def total_steps(self, epochs: float) -> int:
        return max(1, math.ceil(epochs * self.steps_per_epoch))


class BatchMaker:
    """Dataset samples -> tokenized :class:`VLMBatch` (labels on the answers) for one model."""

    def __init__(self, vlm, prompts: PromptSet, retrieved: dict[str, tuple[str, ...]] | None):
        self.vlm = vlm
        self.prompts = prompts
        self.retrieved = retrieved or {}

    def __call__(self, samples: Sequence[Sample]) -> VLMBatch:
        bb = self.vlm.backbone
        per_sample = [s.load_images() for s in samples]  # [before, after] for change samples
        images = bb.preprocess([im for ims in per_sample for im in ims])
        images = images.grouped([len(ims) for ims in per_sample])
        rows = [
            self.model_sample(
                s,
                images.crop_sizes_px[images.grid_index(i)],
                images.model_sizes_px[images.grid_index(i)],
            )
            for i, s in enumerate(samples)
        ]
        pc = self.vlm.prompter_config
        limits = (
            {"max_query_tokens": pc.max_query_tokens, "max_semantic_tokens": pc.max_semantic_tokens}
            if pc is not None
            else {}
        )
        return build_batch(bb, images, rows, self.vlm.num_semantic_tokens, **limits)

    def model_sample(self, sample: Sample, crop_size, model_size) -> ModelSample:
        """The rendered prompt, query, retrieved texts and target of one sample."""
        bb, prompts = self.vlm.backbone, self.prompts
        region_text = ""
        if sample.region_px is not None:
            region_text = prompts.box_format.encode(sample.region_px.xyxy, crop_size, model_size)
        return prompt_sample(
            bb,
            prompts,
            sample.task,
            to_prompter=self.vlm.has_adapter_modules,
            question=sample.question,
            labels=sample.labels,
            region_text=region_text,
            texts=self.retrieved.get(retrieval_key(sample), ()),
            answer=target_text(sample, prompts, crop_size, model_size),
            before_texts=(
                self.retrieved.get(before_retrieval_key(sample), ())
                if sample.task.is_change
                else ()
            ),
        )


def retrieval_key(sample: Sample) -> str:
    """Key of a sample's image in the retrieval cache (its path, else its id)."""
    return sample.image_path or sample.id


def before_retrieval_key(sample: Sample) -> str:
    """Key of a change sample's before image in the retrieval cache (its path, else id:before)."""
    return sample.before_image_path or f"{sample.id}:before"


def target_text(sample: Sample, prompts: PromptSet, crop_size, model_size) -> str:
    """The answer the model learns: grounding boxes in the prompt set's box convention
    (datasets store the 0-1000 grid, which is the ``paper`` convention as is), else the sample's
    answer."""
    if sample.task.has_boxes and prompts.box_format is not BOX_CONVENTIONS["paper"]:
        return prompts.box_format.format_answer(list(sample.boxes_px), crop_size, model_size)
    return sample.answer
