"""Incremental detokenization and the greedy loop (stop tokens, limits, batch rows)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.config import EngineConfig, ExpertConfig, PrompterConfig
from engine.generation import (
    IncrementalDecoder,
    generate,
    greedy_steps,
    greedy_steps_with_probs,
)
from engine.model import Sample, SemanticVLM, build_batch, load_backbone, resolve_placement
from tests.engine.tiny import (  # noqa: F401
    cached_tiny_model_dir,
    make_tiny_tokenizer,
    one_torch_thread,
    random_image,
)

TOKENIZER = make_tiny_tokenizer()


def _stream(text: str) -> tuple[list[str], str, str]:
    ids = TOKENIZER(text, add_special_tokens=False)["input_ids"]
    decoder = IncrementalDecoder(TOKENIZER)
    pieces = [decoder.push(i) for i in ids]
    pieces.append(decoder.finish())
    return pieces, decoder.text, TOKENIZER.decode(ids, skip_special_tokens=True)


def test_multibyte_characters_are_released_whole():
    text = "Große Häfen: 港口 🚢 and a café."
    assert len(TOKENIZER("🚢", add_special_tokens=False)["input_ids"]) > 1  # split over byte tokens
    pieces, full, reference = _stream(text)
    assert "".join(pieces) == full == reference == text
    assert not any("\ufffd" in p for p in pieces)


def test_special_tokens_are_not_shown():
    decoder = IncrementalDecoder(TOKENIZER)
    ids = TOKENIZER("yes<|im_end|>", add_special_tokens=False)["input_ids"]
    assert "".join(decoder.push(i) for i in ids) + decoder.finish() == "yes"


@given(st.text(max_size=60))
@settings(max_examples=150, deadline=None)
def test_pieces_always_join_to_the_full_decode(text):
    pieces, full, reference = _stream(text)
    assert "".join(pieces) == full == reference


@given(st.text(max_size=60))
@settings(max_examples=100, deadline=None)
def test_token_spans_tile_the_text_and_end_where_their_tokens_end(text):
    ids = TOKENIZER(text, add_special_tokens=False)["input_ids"]
    decoder = IncrementalDecoder(TOKENIZER)
    for i in ids:
        decoder.push(i)
    decoder.finish()
    assert decoder.released == decoder.text == text and len(decoder.spans) == len(ids)
    end = 0
    for i, (start, stop) in enumerate(decoder.spans):
        assert start == end or (start, stop) == decoder.spans[i - 1]  # contiguous or shared
        end = stop
        last_of_group = i + 1 == len(ids) or decoder.spans[i + 1] != (start, stop)
        if last_of_group:  # the text up to this token ends where its span ends
            assert len(TOKENIZER.decode(ids[: i + 1], skip_special_tokens=True)) == stop
    assert end == len(text)


@pytest.fixture(scope="module")
def qwen_vlm():
    cfg = EngineConfig(
        backbone="qwen2.5-vl", model_path=cached_tiny_model_dir("qwen2.5-vl"), device="cpu"
    )
    backbone = load_backbone(cfg, resolve_placement("cpu", cfg.quant))
    return SemanticVLM.with_adapter_modules(
        backbone, PrompterConfig(num_tokens=4), ExpertConfig(rank=8), None, torch.float32
    ).eval()


def _batch(vlm, n: int = 1):
    images = [random_image(100 + 40 * i, 140, seed=i) for i in range(n)]
    samples = [Sample(user_text=f"Describe image {i}.", query_text="Describe.") for i in range(n)]
    return build_batch(
        vlm.backbone, vlm.backbone.preprocess(images), samples, vlm.num_semantic_tokens
    )


@pytest.mark.usefixtures("one_torch_thread")
def test_max_new_tokens_and_stop_tokens(qwen_vlm):
    pad = qwen_vlm.backbone.tokenizer.pad_token_id
    free = [
        step[0] for step in greedy_steps(qwen_vlm, _batch(qwen_vlm), 12, stop_ids=(), pad_id=pad)
    ]
    assert len(free) == 12 and None not in free
    stop_at = free[4]
    first = free.index(stop_at)
    stopped = [
        step[0]
        for step in greedy_steps(qwen_vlm, _batch(qwen_vlm), 12, stop_ids=(stop_at,), pad_id=pad)
    ]
    assert stopped == free[:first] + [None]  # the stop token itself is not emitted


@pytest.mark.usefixtures("one_torch_thread")
def test_batch_rows_stop_independently(qwen_vlm):
    pad = qwen_vlm.backbone.tokenizer.pad_token_id
    batch = _batch(qwen_vlm, 2)
    free = list(greedy_steps(qwen_vlm, batch, 10, stop_ids=(), pad_id=pad))
    rows = [[s[r] for s in free] for r in range(2)]
    stop = rows[0][3]
    expected = [row[: row.index(stop)] + [None] if stop in row else row for row in rows]
    stepped = list(greedy_steps(qwen_vlm, batch, 10, stop_ids=(stop,), pad_id=pad))
    assert len(stepped) == max(len(e) for e in expected)
    for r, want in enumerate(expected):
        got = [s[r] for s in stepped]
        assert got[: len(want)] == want and all(t is None for t in got[len(want) :])
    result = generate(qwen_vlm, batch, 10, stop_ids=(stop,), pad_id=pad)
    assert [list(ids) for ids in result.token_ids] == [
        [t for t in e if t is not None] for e in expected
    ]
    assert result.new_tokens == sum(len(t) for t in result.token_ids)
    assert result.first_token_s > 0 and result.decode_s >= 0


@pytest.mark.usefixtures("one_torch_thread")
def test_greedy_loop_matches_the_library_generate_for_zero_shot_qwen():
    """Our KV-cached loop (positions continued after M-RoPE prefill) == model.generate."""
    cfg = EngineConfig(
        backbone="qwen2.5-vl", model_path=cached_tiny_model_dir("qwen2.5-vl"), device="cpu"
    )
    backbone = load_backbone(cfg, resolve_placement("cpu", cfg.quant))
    vlm = SemanticVLM(backbone).eval()
    image = random_image(333, 500)
    sample = Sample(user_text="Describe this image.", query_text="Describe this image.")
    batch = build_batch(backbone, backbone.preprocess([image]), [sample], 0)
    ours = [
        s[0]
        for s in greedy_steps(vlm, batch, 12, stop_ids=(), pad_id=backbone.tokenizer.pad_token_id)
    ]
    text = backbone.chat_prompt(
        None, "<|vision_start|><|image_pad|><|vision_end|>Describe this image."
    )
    inputs = backbone.processor(text=[text], images=[image], return_tensors="pt")
    with torch.no_grad():
        out = backbone.model.generate(
            **inputs, max_new_tokens=12, min_new_tokens=12, do_sample=False
        )
    assert ours == out[0, inputs["input_ids"].shape[1] :].tolist()


@pytest.mark.usefixtures("one_torch_thread")
def test_batched_generation_matches_single_requests(qwen_vlm):
    images = [random_image(333, 500, seed=5), random_image(120, 200, seed=6)]
    samples = [
        Sample(
            user_text="Describe the scene.", query_text="Describe.", semantic_texts=("A harbor.",)
        ),
        Sample(user_text="Where are the ships?", query_text="Ships?"),
    ]
    pad = qwen_vlm.backbone.tokenizer.pad_token_id

    def run(imgs, smps):
        batch = build_batch(
            qwen_vlm.backbone,
            qwen_vlm.backbone.preprocess(imgs),
            smps,
            qwen_vlm.num_semantic_tokens,
        )
        return generate(qwen_vlm, batch, 10, stop_ids=(), pad_id=pad).token_ids

    joint = run(images, samples)
    single = tuple(run([im], [s])[0] for im, s in zip(images, samples))
    assert joint == single


@pytest.mark.usefixtures("one_torch_thread")
def test_step_probabilities_are_the_softmax_of_the_chosen_token(qwen_vlm):
    pad = qwen_vlm.backbone.tokenizer.pad_token_id
    batch = _batch(qwen_vlm, 2)
    with torch.inference_mode():
        logits, _ = qwen_vlm.prefill(batch, qwen_vlm.backbone.new_cache())  # (B, V)
    expected = torch.softmax(logits.float(), dim=-1).max(dim=-1).values.tolist()
    steps = list(greedy_steps_with_probs(qwen_vlm, batch, 6, stop_ids=(), pad_id=pad))
    assert steps[0].probs == pytest.approx(expected, rel=1e-5)
    assert [s.tokens for s in steps] == list(greedy_steps(qwen_vlm, batch, 6, (), pad))
    assert all(0 < p <= 1 for s in steps for p in s.probs)
    result = generate(qwen_vlm, batch, 6, stop_ids=(), pad_id=pad)
    assert [list(p) for p in result.token_probs] == [[s.probs[r] for s in steps] for r in (0, 1)]
    assert all(t is not None and len(t.probs) == 6 for t in result.traces)
