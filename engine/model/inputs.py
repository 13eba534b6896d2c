"""Tokenized batches for the VLM: chat prompt with image/semantic slots, prompter texts, labels.

A :class:`Sample` is one request after prompt rendering (:mod:`engine.prompts`): the user text,
the query the prompter attends to, the retrieved descriptions and, for training, the answer.
:func:`build_batch` turns samples plus an :class:`ImageBatch` into a left-padded
:class:`VLMBatch`. Prompt and answer are tokenized separately and concatenated, so the labels
(-100 everywhere except the answer and its ``<|im_end|>``) line up exactly with the answer tokens.

Two-image samples (change tasks): the user turn is ``label_1 <block before> label_2 <block after>
user_text`` with the labels of the prompt set (``pair_labels``). The prompter runs once per image
block, so the query and semantic rows of a :class:`VLMBatch` are one per *image* (the sample's
query repeated, and each image's own retrieved descriptions).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.model.backbones.base import Backbone, ImageBatch

__all__ = ["IGNORE_INDEX", "Sample", "VLMBatch", "build_batch"]

IGNORE_INDEX = -100
TURN_END = "<|im_end|>"


@dataclass(frozen=True)
class Sample:
    """One request: texts are plain strings (special tokens already stripped from user input)."""

    user_text: str  # the user message after the image block
    query_text: str  # the user's query, for the prompter's self-attention
    semantic_texts: tuple[str, ...] = ()  # retrieved descriptions, for the prompter
    system: str | None = None
    answer: str | None = None  # training target; None at inference
    # Multi-image samples: the text before each image block ("Image 1 (before): ", ...), and
    # per image the retrieved descriptions for the prompter (empty: ``semantic_texts`` for all).
    image_prefixes: tuple[str, ...] = ()
    image_semantic_texts: tuple[tuple[str, ...], ...] = ()


def prompt_sample(
    backbone: Backbone,
    prompts,
    task,
    *,
    to_prompter: bool,
    question: str | None = None,
    labels=(),
    region_text: str = "",
    texts: tuple[str, ...] = (),
    answer: str | None = None,
    before_texts: tuple[str, ...] = (),
) -> Sample:
    """The :class:`Sample` of one request, the same at training and at inference.

    ``prompts``: the :class:`engine.prompts.PromptSet`; ``texts``: retrieved descriptions, which go
    to the prompter when ``to_prompter`` (a model with adapter modules) and into the prompt text
    otherwise (zero-shot). User text has the model's special tokens stripped.

    Change tasks (two images, before then after): the prompt set's ``pair_labels`` go before the
    two image blocks; ``texts`` are the after image's descriptions and ``before_texts`` the before
    image's, each given to its own image's prompter (zero-shot: both lists in the prompt text,
    the after image's first, without repeats).
    """
    from engine.types import Task

    change = Task.parse(task).is_change
    context = tuple(dict.fromkeys((*texts, *before_texts))) if change else texts
    user = prompts.render(
        task,
        question=backbone.strip_special_tokens(question) if question else None,
        labels=tuple(backbone.strip_special_tokens(label) for label in labels or ()),
        region_text=region_text,
        context_texts=() if to_prompter else context,
    )
    per_image = (before_texts, texts) if change and to_prompter else ()
    return Sample(
        user_text=user,
        query_text=user,
        semantic_texts=texts if to_prompter else (),
        system=prompts.system,
        answer=answer,
        image_prefixes=tuple(prompts.pair_labels) if change else (),
        image_semantic_texts=per_image,
    )


@dataclass(frozen=True)
class VLMBatch:
    """A left-padded batch. Masks are bool (True = real token) except ``attention_mask`` (int64)."""

    input_ids: torch.Tensor  # (B, T)
    attention_mask: torch.Tensor  # (B, T)
    images: ImageBatch
    query_ids: torch.Tensor  # (N_images, Q): one row per image (= per sample with one image each)
    query_mask: torch.Tensor  # (N_images, Q)
    semantic_ids: torch.Tensor  # (N_images, S), S may be 0
    semantic_mask: torch.Tensor  # (N_images, S)
    labels: torch.Tensor | None = None  # (B, T), IGNORE_INDEX outside answers

    def __len__(self) -> int:
        return self.input_ids.shape[0]


def build_batch(
    backbone: Backbone,
    images: ImageBatch,
    samples: list[Sample],
    num_semantic_tokens: int,
    max_query_tokens: int = 64,
    max_semantic_tokens: int = 384,
) -> VLMBatch:
    """Tokenize ``samples`` (one per sample of ``images``: see ``ImageBatch.images_per_sample``)
    into a :class:`VLMBatch`.

    ``num_semantic_tokens`` is L * N_a per image block when the VLM has a prompter, else 0 (no
    semantic slots).
    """
    if len(samples) != images.num_samples:
        raise ValueError(f"{len(samples)} samples for {images.num_samples} image samples")
    tok = backbone.tokenizer
    rows, label_rows = [], []
    query_rows, semantic_rows = [], []
    for index, sample in enumerate(samples):
        image_indices = images.sample_images(index)
        prefixes = sample.image_prefixes or ("",) * len(image_indices)
        per_image = sample.image_semantic_texts or (sample.semantic_texts,) * len(image_indices)
        if len(prefixes) != len(image_indices) or len(per_image) != len(image_indices):
            raise ValueError(
                f"sample {index} has {len(prefixes)} image labels and {len(per_image)} "
                f"description lists for {len(image_indices)} images"
            )
        blocks = "".join(
            prefix + backbone.image_block(images.num_image_tokens[j], num_semantic_tokens)
            for prefix, j in zip(prefixes, image_indices)
        )
        user = blocks + sample.user_text
        query = _ids(tok, sample.query_text)[:max_query_tokens]
        for texts in per_image:
            text = "\n".join(texts)
            query_rows.append(query)
            semantic_rows.append(_ids(tok, text)[:max_semantic_tokens] if text else [])
        prompt_ids = _ids(tok, backbone.chat_prompt(sample.system, user))
        answer_ids = _ids(tok, sample.answer + TURN_END) if sample.answer is not None else []
        rows.append(prompt_ids + answer_ids)
        label_rows.append([IGNORE_INDEX] * len(prompt_ids) + answer_ids)
    input_ids, attention_mask = _pad_left(rows, tok.pad_token_id)
    labels = None
    if any(s.answer is not None for s in samples):
        labels, _ = _pad_left(label_rows, IGNORE_INDEX)
    query_ids, query_mask = _pad_right(query_rows, tok.pad_token_id)
    semantic_ids, semantic_mask = _pad_right(semantic_rows, tok.pad_token_id)
    return VLMBatch(
        input_ids=input_ids,
        attention_mask=attention_mask,
        images=images,
        query_ids=query_ids,
        query_mask=query_mask.bool(),
        semantic_ids=semantic_ids,
        semantic_mask=semantic_mask.bool(),
        labels=labels,
    )


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _pad_left(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
            mask[i, width - len(row) :] = 1
    return ids, mask


def _pad_right(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max((len(r) for r in rows), default=0)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            mask[i, : len(row)] = 1
    return ids, mask
