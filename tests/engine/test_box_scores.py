"""Box scores from token probabilities, and the adaptive batch of Engine.run_batch.

The scores: each box's score is the geometric mean of the probabilities of the tokens that wrote
its four coordinate numbers. Tests steer the real tiny models' logits so that the generated tokens
and their probabilities are known (the real prefill and decode steps run; their logits are
replaced), or keep the model's own logits and only raise the scripted token to the top, so the
probabilities come from the model and must agree between ``run`` and ``run_batch``.
"""

from __future__ import annotations

import math

import pytest
import torch

from engine import Engine, EngineConfig, GenerationConfig
from engine.boxes import BOX_CONVENTIONS, TokenTrace
from engine.generation import IncrementalDecoder, token_trace
from engine.types import Task
from tests.engine.tiny import (  # noqa: F401
    cached_tiny_model_dir,
    make_tiny_tokenizer,
    one_torch_thread,
    random_image,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TOKENIZER = make_tiny_tokenizer()
IMAGE = random_image(200, 300, seed=4)
PAPER_TEXT = "tank: [120, 340, 560, 780]\nship: [10, 20, 300, 400]"
JSON_TEXT = (
    '[{"bbox_2d": [12, 34, 56, 78], "label": "tank"}, {"bbox_2d": [5, 6, 70, 80], "label": "ship"}]'
)


def _trace(text: str, prob_of) -> TokenTrace:
    """The trace of ``text`` tokenized by the tiny tokenizer, token i having ``prob_of(i, s)``
    (``s``: the decoded text before token i, the token's own text)."""
    ids = TOKENIZER.encode(text, add_special_tokens=False)
    decoder = IncrementalDecoder(TOKENIZER)
    for i in ids:
        decoder.push(i)
    decoder.finish()
    probs = [prob_of(*_context(ids, i)) for i in range(len(ids))]
    trace = token_trace(decoder, probs, text)
    assert trace is not None
    return trace


def _context(ids, i) -> tuple[str, str]:
    before = TOKENIZER.decode(ids[:i], skip_special_tokens=True)
    own = TOKENIZER.decode(ids[: i + 1], skip_special_tokens=True)[len(before) :]
    return before, own


def _line_prob(split_at: int):
    """0.5 for digit tokens before character ``split_at``, 0.8 for digit tokens after it, 0.95
    for every other token: coordinates are all digits, so box 1 scores 0.5 and box 2 0.8."""

    def prob(before: str, own: str) -> float:
        if not any(c.isdigit() for c in own):
            return 0.95
        return 0.5 if len(before) < split_at else 0.8

    return prob


@pytest.mark.parametrize(
    "convention,text,split",
    [
        ("paper", PAPER_TEXT, PAPER_TEXT.index("\n")),
        ("qwen2.5-vl", JSON_TEXT, JSON_TEXT.index("}")),
        ("qwen3-vl", JSON_TEXT, JSON_TEXT.index("}")),
    ],
)
def test_a_box_scores_the_geometric_mean_of_its_coordinate_tokens(convention, text, split):
    trace = _trace(text, _line_prob(split))
    boxes = BOX_CONVENTIONS[convention].parse(text, (1000, 1000), (1000, 1000), trace=trace)
    assert [b.score for b in boxes] == pytest.approx([0.5, 0.8], abs=1e-9)
    assert [b.label for b in boxes] == ["tank", "ship"]


def test_only_the_coordinate_tokens_count_not_the_label_or_the_angle():
    text = "tank: [120, 340, 560, 780, 45]"
    angle_at = text.index("45")

    def prob(before: str, own: str) -> float:
        if len(before) + len(own) > angle_at:  # the angle's tokens (and anything after)
            return 0.01
        return 0.6 if any(c.isdigit() for c in own) else 0.02  # label, brackets, commas: low

    [box] = BOX_CONVENTIONS["paper"].parse(
        text, (1000, 1000), (1000, 1000), trace=_trace(text, prob)
    )
    assert box.angle_deg == 45 and box.score == pytest.approx(0.6)


def test_without_a_trace_a_score_written_in_json_is_kept_else_none():
    text = '[{"bbox_2d": [1, 2, 30, 40], "label": "a", "score": 0.25}, {"bbox_2d": [1, 2, 3, 4]}]'
    boxes = BOX_CONVENTIONS["qwen3-vl"].parse(text, (1000, 1000), (1000, 1000))
    assert [b.score for b in boxes] == [0.25, None]


def test_a_decoder_that_does_not_add_up_to_the_text_gives_no_trace():
    decoder = IncrementalDecoder(TOKENIZER)
    for i in TOKENIZER.encode("[1, 2, 3, 4]", add_special_tokens=False):
        decoder.push(i)
    decoder.finish()
    assert token_trace(decoder, [0.5] * len(decoder.ids), "[1, 2, 3, 5]") is None
    assert token_trace(decoder, [0.5], "[1, 2, 3, 4]") is None  # wrong count


# --- through the engine -------------------------------------------------------------------------


def _engine(backbone: str, max_new_tokens: int = 64) -> Engine:
    return Engine.from_config(
        EngineConfig(
            backbone=backbone,
            model_path=cached_tiny_model_dir(backbone),
            device="cpu",
            generation=GenerationConfig(max_new_tokens=max_new_tokens),
        )
    )


@pytest.fixture(scope="module", params=("paper", "qwen2.5-vl"))
def engine(request) -> Engine:
    return _engine(request.param)


def _steer(engine: Engine, monkeypatch, text: str, logits_for) -> None:
    """Make the model say ``text`` then <|im_end|> (every row of a batch the same tokens, once
    per request); ``logits_for(real_logits (B, V), target_id)`` gives the step's logits."""
    backbone = engine.vlm.backbone
    ids = [
        *backbone.tokenizer.encode(text, add_special_tokens=False),
        backbone.token_id("<|im_end|>"),
    ]
    state = {"script": iter(())}
    prefill, decode_step = engine.vlm.prefill, engine.vlm.decode_step

    def steered_prefill(*args):
        state["script"] = iter(ids)  # a new request (or batch) starts the text again
        logits, positions = prefill(*args)
        return logits_for(logits, next(state["script"])), positions

    def steered_decode(*args):
        return logits_for(decode_step(*args), next(state["script"], ids[-1]))

    monkeypatch.setattr(engine.vlm, "prefill", steered_prefill)
    monkeypatch.setattr(engine.vlm, "decode_step", steered_decode)


def _known_probs(prob_of_token):
    """Logits giving the target token exactly ``prob_of_token(id)``, the rest spread evenly."""

    def logits_for(real, target):
        p = prob_of_token(target)
        vocab = real.shape[-1]
        out = torch.full_like(real, math.log((1 - p) / (vocab - 1)))
        out[:, target] = math.log(p)
        return out

    return logits_for


def _raised(real, target):
    """The model's own logits with the target raised just above the best: its probability is
    the model's (it depends on the image and on the path the crop took)."""
    out = real.clone()
    out[:, target] = real.max(dim=-1).values + 0.5
    return out


def test_the_engine_gives_the_known_score_of_steered_tokens(engine, monkeypatch):
    tok = engine.vlm.backbone.tokenizer
    convention = engine.prompts.box_format
    text = (
        "tank: [120, 340, 560, 780]"
        if convention.name == "paper"
        else '[{"bbox_2d": [12, 34, 56, 78], "label": "tank"}]'
    )
    digit_ids = {
        i
        for i in tok.encode(text, add_special_tokens=False)
        if any(c.isdigit() for c in tok.decode([i]))
    }
    _steer(engine, monkeypatch, text, _known_probs(lambda t: 0.3 if t in digit_ids else 0.9))
    answer = engine.run(IMAGE, Task.GROUND, question="tank")
    assert answer.text == text
    [box] = answer.boxes_px
    assert box.score == pytest.approx(0.3, abs=1e-5)


def test_scores_are_in_0_1_and_equal_between_stream_and_run_batch(engine, monkeypatch):
    convention = engine.prompts.box_format
    text = (
        "tank: [120, 340, 560, 780]\nship: [10, 20, 300, 400]"
        if convention.name == "paper"
        else '[{"bbox_2d": [12, 34, 56, 78], "label": "tank"}, {"bbox_2d": [5, 6, 70, 80]}]'
    )
    _steer(engine, monkeypatch, text, _raised)
    other = random_image(150, 150, seed=9)
    alone = engine.run(IMAGE, Task.GROUND, question="tank")
    streamed = [e for e in engine.stream(IMAGE, Task.GROUND, question="tank")][-1].answer
    batched = engine.run_batch([IMAGE, other], Task.GROUND, question="tank")
    scores = [b.score for b in alone.boxes_px]
    assert len(scores) == 2 and all(0 < s < 1 for s in scores)
    assert scores == [b.score for b in streamed.boxes_px]
    assert scores == pytest.approx([b.score for b in batched[0].boxes_px], rel=1e-4)
    other_scores = [b.score for b in batched[1].boxes_px]
    assert all(0 < s < 1 for s in other_scores) and other_scores != pytest.approx(scores)


def test_engine_serve_sends_the_scores(engine, monkeypatch):
    from engine.serve.protocol import geolens_extra

    _steer(
        engine,
        monkeypatch,
        "[1, 2, 300, 400]"
        if engine.prompts.box_format.name == "paper"
        else '[{"bbox_2d": [1, 2, 30, 40]}]',
        _raised,
    )
    answer = engine.run(IMAGE, Task.GROUND, question="tank")
    [sent] = geolens_extra(answer)["boxes_px"]
    assert sent["score"] == answer.boxes_px[0].score and 0 < sent["score"] < 1


# --- adaptive batch ----------------------------------------------------------------------------


def _oom_above(module: torch.nn.Module, limit: int, seen: list[int]):
    """Fault injection on torch: ``module``'s forward raises CUDA's OutOfMemoryError when its
    input batch (first tensor argument) is larger than ``limit``; records every batch size."""

    def hook(_module, args, kwargs):
        [first] = [a for a in (*args, *kwargs.values()) if torch.is_tensor(a)][:1]
        seen.append(first.shape[0])
        if first.shape[0] > limit:
            raise torch.OutOfMemoryError(f"injected: batch {first.shape[0]} > {limit}")

    return module.register_forward_pre_hook(hook, with_kwargs=True)


def test_run_batch_halves_on_oom_and_answers_every_crop_as_batch_one():
    engine = _engine("paper", max_new_tokens=8)
    images = [random_image(100 + 10 * i, 120, seed=20 + i) for i in range(5)]
    one_by_one = [engine.run_batch([im], Task.GROUND, question="tank")[0] for im in images]
    vision = engine.vlm.backbone.vision_tower  # SigLIP: one image per batch row
    seen: list[int] = []
    handle = _oom_above(vision, 2, seen)
    try:
        answers = engine.run_batch(images, Task.GROUND, question="tank")
    finally:
        handle.remove()
    assert engine.batch_limit == 2  # 5 -> OOM -> 2 (fits) ... and remembered
    assert seen[0] == 5 and max(seen[1:]) == 2
    assert [a.text for a in answers] == [a.text for a in one_by_one]
    assert [a.image_size_px for a in answers] == [a.image_size_px for a in one_by_one]
    # a later call starts at the remembered size: no OOM, no batch above 2
    seen.clear()
    handle = _oom_above(vision, 2, seen)
    try:
        again = engine.run_batch(images[:3], Task.GROUND, question="tank")
    finally:
        handle.remove()
    assert max(seen) == 2 and [a.text for a in again] == [a.text for a in one_by_one[:3]]


def test_run_batch_goes_down_to_one_then_to_the_smaller_image():
    engine = _engine("qwen2.5-vl", max_new_tokens=6)
    images = [random_image(120, 160, seed=30 + i) for i in range(3)]
    full = engine.vlm.backbone.preprocess(images[:1]).pixel_values.numel()  # one crop, scale 1
    vision_inputs: list[int] = []

    def hook(_module, args):
        vision_inputs.append(args[0].numel())
        if args[0].numel() >= full:  # one full-size crop (or more) does not fit
            raise torch.OutOfMemoryError("injected")

    handle = engine.vlm.backbone.vision_tower.register_forward_pre_hook(hook)
    try:
        answers = engine.run_batch(images, Task.CAPTION)
    finally:
        handle.remove()
    assert engine.batch_limit == 1 and len(answers) == 3
    assert all(a.timing.new_tokens > 0 for a in answers)
    # 3 crops -> OOM -> 1 crop -> OOM -> the smaller pixel budget for it and the 2 others
    assert vision_inputs[:2] == [3 * full, full] and len(vision_inputs) == 5
    assert all(n < full for n in vision_inputs[2:])


def test_make_model_say_still_scores_one(monkeypatch):
    """The shared steering helper forces probability ~1: boxes score 1.0 (what app.scan assumed
    for unscored boxes), so older steered tests keep their meaning."""
    from tests.engine.tiny import make_model_say

    engine = _engine("paper", max_new_tokens=8)
    make_model_say(engine, monkeypatch, "tank: [1, 2, 300, 400]")
    [box] = engine.run(IMAGE, Task.GROUND, question="tank").boxes_px
    assert box.score == pytest.approx(1.0)
