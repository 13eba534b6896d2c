"""The engine: one loaded model answering requests about RGB crops.

``Engine.from_config(cfg)`` loads the model once per process (and the semantic retriever when
``cfg.retrieval.kb_dir`` is set, or takes an injected one). ``Engine.stream`` yields
:class:`~engine.generation.TextDelta` pieces and a final :class:`~engine.generation.Final` with
the :class:`~engine.types.Answer`; ``Engine.run`` returns the answer only; ``Engine.run_batch``
answers several crops in one batched generation (e.g. grounding over tiles).

Per request: validate inputs -> retrieve top-k descriptions -> preprocess the image -> render the
task prompt (region box in the backbone's convention) -> greedy generation -> parse boxes / label.

Change tasks (``change_caption``, ``change_ground``, ``change_ask``) take two crops on one pixel
grid: ``image`` is the later ("after") crop and ``before=`` the earlier one. Both are preprocessed
together (same shape, so the same model size), descriptions are retrieved for each, and the prompt
shows the before block then the after block; boxes come back in the after crop's pixels.
A CUDA out-of-memory error frees the cache and retries once at a smaller image size, then raises
:class:`~engine.errors.OutOfMemoryError`; ``run_batch`` first halves its batch (down to 1) and
remembers the size that fit (``Engine.batch_limit``).

Box scores: a ``ground`` answer's boxes carry ``BoxPx.score`` = the geometric mean of the
probabilities the model gave the tokens that wrote the box's four coordinate numbers (softmax of
the logits at each greedy step; :mod:`engine.boxes`). It is the model's own confidence in the
box's position, not a calibrated detection probability; it ranks the boxes of one model (merging
across tiles), and is the same whether the crop went through ``stream``/``run`` or ``run_batch``. Requests run one at a time (a lock), since the model and
its token-role context are shared.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import math
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from engine.boxes import TokenTrace
from engine.config import EngineConfig, RetrievalConfig
from engine.errors import InputError, OutOfMemoryError
from engine.generation import (
    Final,
    IncrementalDecoder,
    Reset,
    StreamEvent,
    TextDelta,
    final_answer,
    generate,
    greedy_steps_with_probs,
    token_trace,
)
from engine.model.build import build_vlm
from engine.model.inputs import Sample, build_batch, prompt_sample
from engine.model.loading import Placement, resolve_placement
from engine.model.vlm import SemanticVLM
from engine.parsing import match_label
from engine.prompts import load_prompt_set, prompt_mode
from engine.types import Answer, Evidence, Task, Timing

__all__ = ["Engine", "Request", "SemanticRetriever", "validate_request"]

logger = logging.getLogger(__name__)


class SemanticRetriever(Protocol):
    """What the engine needs from a retriever (``engine.retrieval.Retriever`` implements it)."""

    def retrieve_for_image(self, image: np.ndarray, k: int) -> list[Evidence]:
        """Top-``k`` descriptions for an RGB uint8 (H, W, 3) image, best first."""
        ...


@dataclass(frozen=True)
class Request:
    """One validated request."""

    image: np.ndarray = field(compare=False)  # (H, W, 3) uint8, C-contiguous; "after" for change
    task: Task
    question: str | None
    region_px: tuple[float, float, float, float] | None
    labels: tuple[str, ...]
    before: np.ndarray | None = field(default=None, compare=False)  # change tasks: same shape

    @property
    def images(self) -> list[np.ndarray]:
        """The crops in prompt order: ``[before, after]`` for change tasks, else ``[image]``."""
        return [self.image] if self.before is None else [self.before, self.image]


MAX_ASPECT = 200  # Qwen2.5-VL's smart_resize refuses more elongated images


def validate_request(
    image, task, question=None, region_px=None, labels=None, *, before=None
) -> Request:
    """Check a request's inputs; raises :class:`InputError` naming the bad value.

    ``before``: the earlier crop of a change task, on the same pixel grid as ``image`` (the later
    crop): same shape (H, W, 3) uint8. Change tasks need it; single-image tasks refuse it.
    """
    task = Task.parse(task)
    if task.is_change and before is None:
        raise InputError(
            f"task {task.value!r} compares two dates and needs before= (the earlier crop, same "
            "grid and shape as the image); choose a 'before' raster or use a single-image task"
        )
    if before is not None and not task.is_change:
        change = ", ".join(t.value for t in Task if t.is_change)
        raise InputError(
            f"before= is only for the change tasks ({change}), not {task.value!r}; leave it out "
            "or ask a change task"
        )
    if before is not None:
        _check_image(before, "before")
    _check_image(image, "after image" if before is not None else "image")
    if before is not None and before.shape != image.shape:
        raise InputError(
            f"before crop is {before.shape[1]}x{before.shape[0]} pixels but the after image is "
            f"{image.shape[1]}x{image.shape[0]}; read both onto one pixel grid "
            "(tiles.read_crop_pair) so they have the same shape"
        )
    h, w = image.shape[:2]
    if question is not None and not isinstance(question, str):
        raise InputError(f"question must be a string, got {type(question).__name__}")
    return Request(
        image=np.ascontiguousarray(image),
        task=task,
        question=(question.strip() or None) if question is not None else None,
        region_px=_check_region(region_px, task, w, h),
        labels=_check_labels(labels, task),
        before=None if before is None else np.ascontiguousarray(before),
    )


def _check_image(image, name: str) -> None:
    if not isinstance(image, np.ndarray):
        raise InputError(
            f"{name} must be a numpy array (H, W, 3) uint8, got {type(image).__name__}"
        )
    if image.dtype != np.uint8:
        raise InputError(
            f"{name} must be uint8 RGB, got dtype {image.dtype}; "
            "scale it to 0-255 and cast with .astype(np.uint8)"
        )
    if image.ndim != 3 or image.shape[2] != 3:
        raise InputError(
            f"{name} must be RGB with shape (H, W, 3), got {image.shape}; "
            "drop alpha with image[..., :3] or stack a gray band three times"
        )
    h, w = image.shape[:2]
    if h < 1 or w < 1 or max(h, w) / min(h, w) > MAX_ASPECT:
        raise InputError(
            f"{name} of {w}x{h} pixels is empty or more elongated than {MAX_ASPECT}:1; "
            "draw a squarer region"
        )


def _check_region(
    region_px, task: Task, w: int, h: int
) -> tuple[float, float, float, float] | None:
    if region_px is None:
        if task is Task.REGION:
            raise InputError(
                "task 'region' needs region_px = (x0, y0, x1, y1) in crop pixels; "
                "draw a box inside the crop"
            )
        return None
    if task is not Task.REGION:
        raise InputError(
            f"region_px only applies to task 'region', not {task.value!r}; leave it out"
        )
    try:
        box = tuple(float(v) for v in region_px)
    except (TypeError, ValueError):
        raise InputError(
            f"region_px must be 4 numbers (x0, y0, x1, y1), got {region_px!r}"
        ) from None
    if len(box) != 4 or not all(math.isfinite(v) for v in box):
        raise InputError(f"region_px must be 4 finite numbers (x0, y0, x1, y1), got {region_px!r}")
    x0, y0, x1, y1 = box
    if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
        raise InputError(
            f"region_px {box} is not a box inside the {w}x{h} crop "
            f"(need 0 <= x0 < x1 <= {w}, 0 <= y0 < y1 <= {h})"
        )
    return box


def _check_labels(labels, task: Task) -> tuple[str, ...]:
    if labels is None:
        labels = ()
    if (
        isinstance(labels, str)
        or not isinstance(labels, (list, tuple))
        or not all(isinstance(x, str) for x in labels)
    ):
        raise InputError(f"labels must be a list of class names, got {labels!r}")
    labels = tuple(x.strip() for x in labels)
    if task is Task.CLASSIFY and (not labels or not all(labels)):
        raise InputError(
            f"task 'classify' needs a non-empty list of non-empty labels, got {list(labels)!r}"
        )
    return labels


class Engine:
    """A loaded model plus prompts and (optionally) a retriever; see the module docstring."""

    def __init__(
        self,
        config: EngineConfig,
        vlm: SemanticVLM,
        placement: Placement,
        retriever: SemanticRetriever | None = None,
    ) -> None:
        self.config = config
        self.vlm = vlm
        self.placement = placement
        self.retriever = retriever
        self.prompts = load_prompt_set(config.backbone, prompt_mode(vlm.has_adapter_modules))
        self.model_name = f"{config.backbone}:{vlm.backbone.model_name}"
        self.adapter_name = str(config.adapter_path) if config.adapter_path is not None else None
        # Largest run_batch chunk known to fit in memory (None: no OOM seen yet, no limit).
        self.batch_limit: int | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_config(
        cls, config: EngineConfig, retriever: SemanticRetriever | None = None
    ) -> Engine:
        """Load the model (and the retriever, unless one is given) described by ``config``."""
        placement = resolve_placement(config.device, config.quant)
        vlm = build_vlm(config, placement)
        if retriever is None and config.retrieval.kb_dir is not None:
            retriever = _load_retriever(config.retrieval, placement)
        logger.info(
            "engine ready: %s on %s (%s), adapter=%s, retrieval=%s",
            config.backbone,
            placement.device,
            "nf4" if placement.quantize else str(placement.base_dtype),
            config.adapter_path,
            retriever is not None,
        )
        return cls(config, vlm, placement, retriever)

    # --- public API ------------------------------------------------------------------------------
    def run(
        self,
        image: np.ndarray,
        task: Task | str,
        question: str | None = None,
        region_px: Sequence[float] | None = None,
        labels: Sequence[str] | None = None,
        *,
        before: np.ndarray | None = None,
    ) -> Answer:
        """Answer one request; see :meth:`stream` for the arguments."""
        answer = final_answer(self.stream(image, task, question, region_px, labels, before=before))
        if answer is None:  # pragma: no cover
            raise AssertionError("Engine.stream ended without a Final event")
        return answer

    def stream(
        self,
        image: np.ndarray,
        task: Task | str,
        question: str | None = None,
        region_px: Sequence[float] | None = None,
        labels: Sequence[str] | None = None,
        *,
        before: np.ndarray | None = None,
    ) -> Iterator[StreamEvent]:
        """Answer one request as events: ``TextDelta``\\ s, maybe a ``Reset``, one ``Final``.

        ``image``: RGB uint8 (H, W, 3). ``task``: a :class:`Task` or its name. ``question``: the
        question (``ask``, ``region``) or the phrase to find (``ground``). ``region_px``: the
        ``(x0, y0, x1, y1)`` box in crop pixels for ``region``. ``labels``: the classes for
        ``classify``. ``before``: for the change tasks, the earlier crop on the same pixel grid
        as ``image`` (the later crop), same shape; boxes come back in ``image``'s pixels. Bad
        inputs raise :class:`engine.errors.InputError` before any work.
        """
        request = validate_request(image, task, question, region_px, labels, before=before)
        with self._lock:
            start = time.perf_counter()
            evidence, retrieval_s = self._retrieve(request.images)
            evidence = [_pair_evidence(evidence)] if request.before is not None else evidence
            streamed = False
            for attempt, scale in enumerate(self._scales()):
                try:
                    for event in self._stream_once(request, evidence[0], scale, start, retrieval_s):
                        streamed = streamed or isinstance(event, TextDelta)
                        yield event
                    return
                except torch.OutOfMemoryError as err:
                    detail = str(err).splitlines()[0]
                # Outside the except block: the failed attempt's frames (and tensors) are gone.
                self._after_oom(attempt, detail, request.image, scale)
                if streamed:
                    yield Reset("out of GPU memory: retrying at a smaller image size")
                    streamed = False

    def run_batch(
        self,
        images: Sequence[np.ndarray],
        task: Task | str,
        question: str | None = None,
        labels: Sequence[str] | None = None,
    ) -> list[Answer]:
        """Answer the same request for several crops in left-padded batches (no streaming).

        Adaptive batch: the crops go in chunks of at most :attr:`batch_limit` (all at once while
        it is None). A CUDA out-of-memory error halves the chunk (down to 1), remembers it in
        ``batch_limit`` for later calls, and retries the crops not answered yet; only an OOM at
        one crop per chunk falls back to the smaller pixel budget (``image.oom_retry_scale``,
        kept for the rest of the call), then raises :class:`OutOfMemoryError`. Timing in each
        answer is that of its chunk, from the start of the call. Region requests are not batched.
        Change tasks are not batched either (one pair per :meth:`run` with ``before=``).
        """
        if Task.parse(task).is_change:
            raise InputError(
                f"run_batch does not take change tasks ({Task.parse(task).value!r}); answer "
                "each pair with run(after, task, ..., before=before)"
            )
        requests = [validate_request(im, task, question, None, labels) for im in images]
        if not requests:
            return []
        with self._lock:
            start = time.perf_counter()
            evidence, retrieval_s = self._retrieve([r.image for r in requests])
            answers: list[Answer] = []
            size = min(len(requests), self.batch_limit or len(requests))
            attempt = 0  # index into self._scales()
            while len(answers) < len(requests):
                done = len(answers)
                chunk = requests[done : done + size]
                try:
                    answers += self._batch_once(
                        chunk,
                        evidence[done : done + size],
                        self._scales()[attempt],
                        start,
                        retrieval_s,
                    )
                    continue
                except torch.OutOfMemoryError as err:
                    detail = str(err).splitlines()[0]
                # Outside the except block: the failed attempt's frames (and tensors) are gone.
                if len(chunk) > 1:
                    size = self.batch_limit = len(chunk) // 2
                    self._free_memory()
                    logger.warning(
                        "CUDA out of memory at a batch of %d (%s); retrying %d crops in batches "
                        "of %d",
                        len(chunk),
                        detail,
                        len(requests) - done,
                        size,
                    )
                    continue
                self._after_oom(attempt, detail, chunk[0].image, self._scales()[attempt])
                attempt += 1
            return answers

    # --- one attempt --------------------------------------------------------------------------
    def _stream_once(
        self,
        request: Request,
        evidence: tuple[Evidence, ...],
        scale: float,
        start: float,
        retrieval_s: float,
    ) -> Iterator[StreamEvent]:
        bb = self.vlm.backbone
        self.vlm.route_lora(request.task)  # a task-routed LoRA runs for its tasks only
        # (before, after) for change tasks: one sample of two images, boxes on the after grid
        images = bb.preprocess(request.images, scale).grouped([len(request.images)])
        batch = self._batch(images, [self._sample(request, evidence, images, 0)])
        decoder = IncrementalDecoder(bb.tokenizer)
        first = None
        steps = greedy_steps_with_probs(
            self.vlm,
            batch,
            self.config.generation.max_new_tokens,
            bb.stop_token_ids(),
            bb.tokenizer.pad_token_id,
        )
        probs = []
        for step in steps:
            first = first if first is not None else time.perf_counter()
            if step.tokens[0] is not None:
                probs.append(step.probs[0])
                if piece := decoder.push(step.tokens[0]):
                    yield TextDelta(piece)
        if tail := decoder.finish():
            yield TextDelta(tail)
        end = time.perf_counter()
        first = first if first is not None else end
        timing = Timing(retrieval_s, first - start, end - first, end - start, len(decoder.ids))
        yield Final(
            self._answer(
                request,
                decoder.text,
                evidence,
                images.crop_sizes_px[images.grid_index(0)],
                images.model_sizes_px[images.grid_index(0)],
                timing,
                token_trace(decoder, probs, decoder.text),
            )
        )

    def _batch_once(
        self, requests: list[Request], evidence, scale: float, start: float, retrieval_s: float
    ) -> list[Answer]:
        bb = self.vlm.backbone
        self.vlm.route_lora(requests[0].task)  # one task per batch (run_batch)
        images = bb.preprocess([r.image for r in requests], scale)
        samples = [
            self._sample(r, ev, images, i) for i, (r, ev) in enumerate(zip(requests, evidence))
        ]
        result = generate(
            self.vlm,
            self._batch(images, samples),
            self.config.generation.max_new_tokens,
            bb.stop_token_ids(),
            bb.tokenizer.pad_token_id,
            start=start,
        )
        timing = Timing(
            retrieval_s,
            result.first_token_s,
            result.decode_s,
            time.perf_counter() - start,
            result.new_tokens,
        )
        return [
            self._answer(
                r, text, ev, images.crop_sizes_px[i], images.model_sizes_px[i], timing, trace
            )
            for i, (r, text, ev, trace) in enumerate(
                zip(requests, result.texts, evidence, result.traces)
            )
        ]

    # --- pieces -------------------------------------------------------------------------------
    def _retrieve(self, images: list[np.ndarray]) -> tuple[list[tuple[Evidence, ...]], float]:
        if self.retriever is None:
            return [() for _ in images], 0.0
        t0 = time.perf_counter()
        k = self.config.retrieval.top_k
        found = [tuple(self.retriever.retrieve_for_image(im, k)) for im in images]
        return found, time.perf_counter() - t0

    def _sample(
        self, request: Request, evidence: tuple[Evidence, ...], images, index: int
    ) -> Sample:
        bb, prompts = self.vlm.backbone, self.prompts
        region_text = ""
        if request.region_px is not None:
            region_text = prompts.box_format.encode(
                request.region_px,
                images.crop_sizes_px[images.grid_index(index)],
                images.model_sizes_px[images.grid_index(index)],
            )
        before_texts = tuple(e.text for e in evidence if e.metadata.get("image") == "before")
        return prompt_sample(
            bb,
            prompts,
            request.task,
            to_prompter=self.vlm.has_adapter_modules,  # else descriptions go into the prompt text
            question=request.question,
            labels=request.labels,
            region_text=region_text,
            texts=tuple(e.text for e in evidence if e.metadata.get("image") != "before"),
            before_texts=before_texts,
        )

    def _batch(self, images, samples: list[Sample]):
        pc = self.vlm.prompter_config
        limits = (
            {"max_query_tokens": pc.max_query_tokens, "max_semantic_tokens": pc.max_semantic_tokens}
            if pc
            else {}
        )
        return build_batch(
            self.vlm.backbone, images, samples, self.vlm.num_semantic_tokens, **limits
        )

    def _answer(
        self,
        request: Request,
        text: str,
        evidence,
        crop_size,
        model_size,
        timing: Timing,
        trace: TokenTrace | None = None,
    ) -> Answer:
        boxes = ()
        if request.task.has_boxes:  # ground, change_ground (after-crop pixels)
            boxes = self.prompts.box_format.parse(
                text, crop_size, model_size, default_label=request.question, trace=trace
            )
        label = match_label(text, request.labels) if request.task is Task.CLASSIFY else None
        return Answer(
            text=text,
            task=request.task,
            boxes_px=boxes,
            evidence=evidence,
            timing=timing,
            model=self.model_name,
            adapter=self.adapter_name,
            image_size_px=crop_size,
            label=label,
        )

    def _free_memory(self) -> None:
        gc.collect()
        if self.placement.device.type == "cuda":
            torch.cuda.empty_cache()

    def _scales(self) -> tuple[float, float]:
        """Pixel-budget scales of the first attempt and of the one retry after an OOM."""
        return (1.0, self.config.image.oom_retry_scale)

    def _after_oom(
        self, attempt: int, detail: str, image: np.ndarray, scale: float, batch: int = 1
    ) -> None:
        """Free cached GPU memory; raise :class:`OutOfMemoryError` after the retry failed too."""
        self._free_memory()
        if attempt + 1 >= len(self._scales()):
            raise OutOfMemoryError(_oom_message(image, scale, batch) + f" ({detail})")
        logger.warning(
            "CUDA out of memory (%s); retrying with the pixel budget x%s",
            detail,
            self._scales()[attempt + 1],
        )


def _pair_evidence(found: list[tuple[Evidence, ...]]) -> tuple[Evidence, ...]:
    """The evidence of a change request: the after crop's descriptions, then the before crop's,
    each marked ``metadata["image"]`` = "after" / "before" (the before block's prompter gets the
    before ones, the after block's the after ones)."""
    before, after = found
    mark = lambda e, which: dataclasses.replace(e, metadata={**e.metadata, "image": which})
    return tuple(mark(e, "after") for e in after) + tuple(mark(e, "before") for e in before)


def _oom_message(image: np.ndarray, scale: float, batch: int = 1) -> str:
    h, w = image.shape[:2]
    return (
        f"out of GPU memory for a {w}x{h} crop (batch {batch}) even at {scale:.2f}x the pixel "
        "budget; draw a smaller region, lower --max-pixels, or close other GPU programs"
    )


def _load_retriever(config: RetrievalConfig, placement: Placement) -> SemanticRetriever:
    from engine.retrieval import ClipEmbedder, KnowledgeBase, Retriever
    from engine.retrieval.manifest import read_manifest

    device = str(placement.device)
    if config.clip_embedder_dir is not None:
        embedder = ClipEmbedder.load(config.clip_embedder_dir, device)
    elif config.clip_checkpoint is not None:
        embedder = ClipEmbedder.from_pretrained(config.clip_arch, config.clip_checkpoint, device)
    else:  # the embedder the knowledge base was built with
        embedder = ClipEmbedder.from_spec(read_manifest(config.kb_dir).embedder, device)
    return Retriever(KnowledgeBase.load(config.kb_dir, embedder), embedder)
