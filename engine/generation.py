"""Greedy generation with a KV cache, incremental detokenization and stream events.

We run our own loop (instead of ``model.generate``) so that token roles are set at every step
(generated tokens are text), so that time-to-first-token and decode time are measured where they
happen, and so that text can be streamed piece by piece. Each LLM call runs under
``torch.inference_mode()``.

Events for a streaming UI (:meth:`engine.Engine.stream`): :class:`TextDelta` pieces, a
:class:`Reset` when an out-of-memory retry discards text already streamed, and one :class:`Final`
with the complete :class:`engine.types.Answer` (its text is authoritative).

Token probabilities: at every step the loop also records, per row, the probability the model gave
the token it chose (softmax of that step's logits at the argmax: ``exp(max - logsumexp)``, one
reduction per step). The :class:`IncrementalDecoder` records which characters of the text each
token produced, and :func:`token_trace` pairs both as a :class:`engine.boxes.TokenTrace`, from
which the box parsers score each box (:meth:`engine.boxes.BoxConvention.parse`). The streaming
path (:meth:`engine.Engine.stream`) and the batch path (:func:`generate`) build the trace with the
same decoder, so the same crop gets the same scores either way.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from engine.boxes import TokenTrace
from engine.types import Answer

__all__ = [
    "Final",
    "GenerationResult",
    "IncrementalDecoder",
    "Reset",
    "Step",
    "StreamEvent",
    "TextDelta",
    "final_answer",
    "generate",
    "greedy_steps",
    "greedy_steps_with_probs",
    "token_trace",
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

    ``spans[i]`` is the ``(start, end)`` character range of the released text that token ``i``
    helped produce: tokens released together (a character split over byte tokens, a held-back
    piece) share one range; a token that produced no text (a special token) gets an empty range.
    Ranges index ``released``, the concatenation of every piece returned so far.
    """

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.prefix_offset = 0
        self.read_offset = 0
        self.spans: list[tuple[int, int]] = []
        self.released = ""

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
            held = self.read_offset
            self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
            return self._release(current[len(prefix) :], held)
        return ""

    def finish(self) -> str:
        """Whatever is still held back at the end."""
        prefix = self._decode(self.ids[self.prefix_offset : self.read_offset])
        current = self._decode(self.ids[self.prefix_offset :])
        held = self.read_offset
        self.read_offset = len(self.ids)
        return self._release(current[len(prefix) :] if current.startswith(prefix) else "", held)

    def _release(self, piece: str, first_token: int) -> str:
        """Record that tokens ``first_token..`` (not yet spanned) produced ``piece``."""
        start = len(self.released)
        self.released += piece
        # the tokens held back until now (from first_token on) share the piece's characters
        self.spans.extend([(start, len(self.released))] * (len(self.ids) - first_token))
        return piece

    @property
    def text(self) -> str:
        """The full decoded text so far."""
        return self._decode(self.ids)


def token_trace(
    decoder: IncrementalDecoder, probs: Sequence[float], text: str
) -> TokenTrace | None:
    """The :class:`TokenTrace` of a finished ``decoder`` (``finish`` called) whose tokens had
    ``probs``; None when the released pieces do not add up to the answer ``text`` (a tokenizer
    whose piecewise decoding differs from its full decoding: positions would be wrong, so boxes
    stay unscored rather than scored from the wrong tokens)."""
    if decoder.released != text or not len(decoder.spans) == len(decoder.ids) == len(probs):
        return None
    return TokenTrace(tuple(float(p) for p in probs), tuple(decoder.spans))


@dataclass(frozen=True)
class Step:
    """One decoding step: per row, the chosen token id (None once the row stopped) and the
    probability the model gave it (None likewise)."""

    tokens: list[int | None]
    probs: list[float | None]


def greedy_steps(
    vlm, batch, max_new_tokens: int, stop_ids: tuple[int, ...], pad_id: int
) -> Iterator[list[int | None]]:
    """Greedy decoding; yields, per step, each row's new token id, or None once the row stopped.

    A row stops at its first stop token (not yielded) or after ``max_new_tokens``.
    """
    for step in greedy_steps_with_probs(vlm, batch, max_new_tokens, stop_ids, pad_id):
        yield step.tokens


def greedy_steps_with_probs(
    vlm, batch, max_new_tokens: int, stop_ids: tuple[int, ...], pad_id: int
) -> Iterator[Step]:
    """:func:`greedy_steps` that also yields each chosen token's probability (a :class:`Step`)."""
    device = vlm.backbone.device
    cache = vlm.backbone.new_cache()
    with torch.inference_mode():
        logits, positions = vlm.prefill(batch, cache)  # (B, V), (B,)
    attention_mask = batch.attention_mask.to(device)
    stop = torch.tensor(stop_ids, dtype=torch.long, device=device)
    done = torch.zeros(len(batch), dtype=torch.bool, device=device)
    for step in range(max_new_tokens):
        top, tokens = logits.float().max(dim=-1)  # (B,), (B,)
        probs = torch.exp(top - torch.logsumexp(logits.float(), dim=-1)).tolist()  # (B,)
        newly_done = torch.isin(tokens, stop) & ~done
        emitted = tokens.masked_fill(done | newly_done, -1).tolist()
        done |= newly_done
        yield Step(
            [t if t >= 0 else None for t in emitted],
            [p if t >= 0 else None for t, p in zip(emitted, probs)],
        )
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
    token_probs: tuple[tuple[float, ...], ...]  # probability of each chosen token, per row
    traces: tuple[TokenTrace | None, ...]  # per row: see :func:`token_trace`
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
    """Run :func:`greedy_steps_with_probs` to the end for every row (no streaming)."""
    start = time.perf_counter() if start is None else start
    ids: list[list[int]] = [[] for _ in range(len(batch))]
    probs: list[list[float]] = [[] for _ in range(len(batch))]
    first = None
    for step in greedy_steps_with_probs(vlm, batch, max_new_tokens, stop_ids, pad_id):
        first = first if first is not None else time.perf_counter()
        for row, (token, prob) in enumerate(zip(step.tokens, step.probs)):
            if token is not None:
                ids[row].append(token)
                probs[row].append(prob)
    end = time.perf_counter()
    first = first if first is not None else end
    tok = vlm.backbone.tokenizer
    texts, traces = [], []
    for row_ids, row_probs in zip(ids, probs):
        decoder = IncrementalDecoder(tok)  # the streaming path's decoder: same spans
        for token in row_ids:
            decoder.push(token)
        decoder.finish()
        texts.append(decoder.text)
        traces.append(token_trace(decoder, row_probs, decoder.text))
    return GenerationResult(
        tuple(texts),
        tuple(tuple(r) for r in ids),
        tuple(tuple(p) for p in probs),
        tuple(traces),
        first - start,
        end - first,
        sum(map(len, ids)),
    )
