"""Greedy generation with a KV cache, incremental detokenization and stream events.

We run our own loop (instead of ``model.generate``) so that token roles are set at every step
(generated tokens are text), so that time-to-first-token and decode time are measured where they
happen, and so that text can be streamed piece by piece. Each LLM call runs under
``torch.inference_mode()``.

Events for a streaming UI (:meth:`engine.Engine.stream`): :class:`TextDelta` pieces, a
:class:`Reset` when an out-of-memory retry discards text already streamed, and one :class:`Final`
with the complete :class:`engine.types.Answer` (its text is authoritative).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from engine.types import Answer

__all__ = [
    "Final",
    "GenerationResult",
    "IncrementalDecoder",
    "Reset",
    "StreamEvent",
    "TextDelta",
    "final_answer",
    "generate",
    "greedy_steps",
]


@dataclass(frozen=True)
class TextDelta:
    """A new piece of answer text."""

    text: str


@dataclass(frozen=True)
class Reset:
    """Discard the text streamed so far (the request is being retried)."""

    reason: str


@dataclass(frozen=True)
class Final:
    """The finished answer; always the last event."""

    answer: Answer


def final_answer(events) -> Answer | None:
    """The answer of a stream of events (its ``Final``), or None when the stream ends without one."""
    for event in events:
        if isinstance(event, Final):
            return event.answer
    return None


StreamEvent = TextDelta | Reset | Final


class IncrementalDecoder:
    """Token ids -> text pieces that are safe to show.

    Decodes a short window (from ``prefix_offset``) so each step costs O(1) tokens. A piece is
    released only when it does not end in U+FFFD, i.e. when a multi-byte character split over
    several byte-level tokens is complete; merged tokens and leading spaces are handled because the
    window keeps the preceding tokens as context.
    """

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.prefix_offset = 0
        self.read_offset = 0

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(
            ids, skip_special_tokens=True, clean_up_tokenization_spaces=False
        )

    def push(self, token_id: int) -> str:
        """Add one token; returns the newly completed text ('' if none yet)."""
        self.ids.append(token_id)
        prefix = self._decode(self.ids[self.prefix_offset : self.read_offset])
        current = self._decode(self.ids[self.prefix_offset :])
        if (
            len(current) > len(prefix)
            and not current.endswith("\ufffd")
            and current.startswith(prefix)
        ):
            self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
            return current[len(prefix) :]
        return ""

    def finish(self) -> str:
        """Whatever is still held back at the end."""
        prefix = self._decode(self.ids[self.prefix_offset : self.read_offset])
        current = self._decode(self.ids[self.prefix_offset :])
        self.read_offset = len(self.ids)
        return current[len(prefix) :] if current.startswith(prefix) else ""

    @property
    def text(self) -> str:
        """The full decoded text so far."""
        return self._decode(self.ids)


def greedy_steps(
    vlm, batch, max_new_tokens: int, stop_ids: tuple[int, ...], pad_id: int
) -> Iterator[list[int | None]]:
    """Greedy decoding; yields, per step, each row's new token id, or None once the row stopped.

    A row stops at its first stop token (not yielded) or after ``max_new_tokens``.
    """
    device = vlm.backbone.device
    cache = vlm.backbone.new_cache()
    with torch.inference_mode():
        logits, positions = vlm.prefill(batch, cache)  # (B, V), (B,)
    attention_mask = batch.attention_mask.to(device)
    stop = torch.tensor(stop_ids, dtype=torch.long, device=device)
    done = torch.zeros(len(batch), dtype=torch.bool, device=device)
    for step in range(max_new_tokens):
        tokens = logits.argmax(dim=-1)  # (B,)
        newly_done = torch.isin(tokens, stop) & ~done
        emitted = tokens.masked_fill(done | newly_done, -1).tolist()
        done |= newly_done
        yield [t if t >= 0 else None for t in emitted]
        if bool(done.all()) or step == max_new_tokens - 1:
            return
        tokens = tokens.masked_fill(done, pad_id)  # finished rows feed padding (outputs ignored)
        attention_mask = torch.cat(
            [attention_mask, attention_mask.new_ones((len(batch), 1))], dim=1
        )
        with torch.inference_mode():
            logits = vlm.decode_step(tokens, attention_mask, positions, cache)
        positions = positions + 1


@dataclass(frozen=True)
class GenerationResult:
    """Texts of a batch and the timing of the whole batch."""

    texts: tuple[str, ...]
    token_ids: tuple[tuple[int, ...], ...]
    first_token_s: float  # from the call to the first generated token
    decode_s: float  # from the first token to the end
    new_tokens: int  # generated tokens summed over rows


def generate(
    vlm,
    batch,
    max_new_tokens: int,
    stop_ids: tuple[int, ...],
    pad_id: int,
    start: float | None = None,
) -> GenerationResult:
    """Run :func:`greedy_steps` to the end for every row (no streaming)."""
    start = time.perf_counter() if start is None else start
    ids: list[list[int]] = [[] for _ in range(len(batch))]
    first = None
    for step in greedy_steps(vlm, batch, max_new_tokens, stop_ids, pad_id):
        first = first if first is not None else time.perf_counter()
        for row, token in enumerate(step):
            if token is not None:
                ids[row].append(token)
    end = time.perf_counter()
    first = first if first is not None else end
    tok = vlm.backbone.tokenizer
    texts = tuple(
        tok.decode(r, skip_special_tokens=True, clean_up_tokenization_spaces=False) for r in ids
    )
    return GenerationResult(
        texts, tuple(tuple(r) for r in ids), first - start, end - first, sum(map(len, ids))
    )
