"""Change requests (two crops, before and after) on the tiny models: validation, the two image
blocks of the prompt, the prompter per block, boxes on the after grid, and training on pairs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from engine import Engine, EngineConfig, GenerationConfig
from engine.data.instructions import Sample, read_jsonl, write_jsonl
from engine.engine import validate_request
from engine.errors import InputError
from engine.model import SemanticVLM, build_batch
from engine.model.inputs import prompt_sample
from engine.prompts import load_prompt_set
from engine.training import TrainConfig, Trainer
from engine.training.data import BatchMaker
from engine.types import BoxPx, Task
from tests.engine.tiny import (  # noqa: F401
    cached_tiny_model_dir,
    make_model_say,
    one_torch_thread,
    random_image,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

AFTER = random_image(333, 500, seed=11)
BEFORE = random_image(333, 500, seed=12)
CHANGE_REQUESTS = {
    Task.CHANGE_CAPTION: {},
    Task.CHANGE_GROUND: {"question": "new building"},
    Task.CHANGE_ASK: {"question": "Was a road built?"},
}


@pytest.fixture(scope="module", params=("paper", "qwen2.5-vl"))
def engine(request) -> Engine:
    cfg = EngineConfig(
        backbone=request.param,
        model_path=cached_tiny_model_dir(request.param),
        device="cpu",
        generation=GenerationConfig(max_new_tokens=8),
    )
    return Engine.from_config(cfg)


@pytest.fixture(scope="module")
def paper_engine() -> Engine:
    cfg = EngineConfig(
        backbone="paper",
        model_path=cached_tiny_model_dir("paper"),
        device="cpu",
        generation=GenerationConfig(max_new_tokens=8),
    )
    return Engine.from_config(cfg)


# --- end to end -------------------------------------------------------------------------------
@pytest.mark.parametrize("task", sorted(CHANGE_REQUESTS, key=lambda t: t.value))
def test_every_change_task_runs_end_to_end(engine, task):
    answer = engine.run(AFTER, task, before=BEFORE, **CHANGE_REQUESTS[task])
    assert answer.task is task and answer.image_size_px == (500, 333)
    assert 0 < answer.timing.new_tokens <= 8
    events = list(engine.stream(AFTER, task.value, before=BEFORE, **CHANGE_REQUESTS[task]))
    assert events[-1].answer.text == answer.text  # greedy: stream and run agree


def test_the_before_image_changes_the_answer(paper_engine):
    """The model sees the before crop: another before image gives other first-token logits."""
    vlm, bb = paper_engine.vlm, paper_engine.vlm.backbone

    def first_logits(before):
        request = validate_request(AFTER, Task.CHANGE_CAPTION, before=before)
        images = bb.preprocess(request.images).grouped([2])
        batch = paper_engine._batch(images, [paper_engine._sample(request, (), images, 0)])
        with torch.no_grad():
            return vlm.prefill(batch, bb.new_cache())[0]

    a, b, again = (
        first_logits(BEFORE),
        first_logits(random_image(333, 500, 99)),
        first_logits(BEFORE),
    )
    torch.testing.assert_close(a, again)
    assert not torch.allclose(a, b, atol=1e-4)


# --- the prompt: two blocks, labels, semantic slots -----------------------------------------------
def test_a_change_prompt_has_two_labelled_image_blocks_with_their_semantic_slots(paper_engine):
    vlm, bb = paper_engine.vlm, paper_engine.vlm.backbone
    request = validate_request(AFTER, Task.CHANGE_GROUND, "new building", before=BEFORE)
    images = bb.preprocess(request.images).grouped([2])
    batch = paper_engine._batch(images, [paper_engine._sample(request, (), images, 0)])
    ids = batch.input_ids[0]
    n_img = images.num_image_tokens[0]
    assert images.num_image_tokens == (n_img, n_img) and len(batch) == 1
    assert int((ids == bb.image_token_id).sum()) == 2 * n_img
    assert int((ids == bb.semantic_token_id).sum()) == 2 * vlm.num_semantic_tokens
    assert batch.query_ids.shape[0] == 2  # one prompter pass per image block
    text = bb.tokenizer.decode(ids)
    before_at, after_at = text.index("Image 1 (before): "), text.index("Image 2 (after): ")
    starts = [i for i in range(len(text)) if text.startswith("<|vision_start|>", i)]
    assert len(starts) == 2 and before_at < starts[0] < after_at < starts[1]
    assert text.index("[change_ground]") > starts[1]
    # roles: both blocks' image tokens are IMAGE, and both carry level-major semantic roles
    _, roles = vlm.embed(batch)
    from engine.model.roles import IMAGE, SEMANTIC

    assert int((roles == IMAGE).sum()) == 2 * n_img
    semantic_roles = roles[0][ids == bb.semantic_token_id]
    half = vlm.num_semantic_tokens
    assert torch.equal(semantic_roles[:half], semantic_roles[half:])
    assert int(semantic_roles.min()) == SEMANTIC


def test_each_image_block_gets_its_own_descriptions_and_semantic_tokens(paper_engine):
    vlm, bb = paper_engine.vlm, paper_engine.vlm.backbone
    prompts = paper_engine.prompts
    sample = prompt_sample(
        bb,
        prompts,
        Task.CHANGE_CAPTION,
        to_prompter=True,
        texts=("A new warehouse stands here.",),
        before_texts=("An empty field.",),
    )
    assert sample.image_prefixes == prompts.pair_labels
    assert sample.image_semantic_texts == (("An empty field.",), ("A new warehouse stands here.",))
    images = bb.preprocess([BEFORE, AFTER]).grouped([2])
    batch = build_batch(bb, images, [sample], vlm.num_semantic_tokens)
    tok = bb.tokenizer
    rows = [tok.decode(r[m]) for r, m in zip(batch.semantic_ids, batch.semantic_mask)]
    assert rows == ["An empty field.", "A new warehouse stands here."]
    # the semantic tokens placed in the two blocks differ (own image levels, own descriptions)
    embeds, _ = vlm.embed(batch)
    slots = batch.input_ids[0] == bb.semantic_token_id
    placed = embeds[0][slots]
    half = vlm.num_semantic_tokens
    assert not torch.allclose(placed[:half], placed[half:])


def test_zero_shot_change_prompt_lists_both_images_descriptions_once():
    prompts = load_prompt_set("qwen2.5-vl", "zero_shot")
    bb_like = type("B", (), {"strip_special_tokens": staticmethod(lambda t: t)})()
    sample = prompt_sample(
        bb_like,
        prompts,
        Task.CHANGE_ASK,
        to_prompter=False,
        question="What changed?",
        texts=("After text.", "Shared."),
        before_texts=("Shared.", "Before text."),
    )
    assert sample.user_text.count("Shared.") == 1
    assert sample.user_text.index("After text.") < sample.user_text.index("Before text.")
    assert sample.semantic_texts == () and sample.image_semantic_texts == ()


# --- boxes in the after crop's pixels ----------------------------------------------------------------
def test_change_ground_boxes_land_in_the_after_crop_pixels(engine, monkeypatch):
    model_w, model_h = engine.vlm.backbone.preprocess([AFTER]).model_sizes_px[0]
    if engine.config.backbone == "paper":
        text = "[100, 200, 500, 600]"
        expected = (50.0, 66.6, 250.0, 199.8)  # x / 1000 * 500, y / 1000 * 333
    else:
        box = [round(f * s) for f, s in zip((0.1, 0.2, 0.5, 0.6), (model_w, model_h) * 2)]
        text = json.dumps([{"bbox_2d": box, "label": "new building"}])
        sx, sy = 500 / model_w, 333 / model_h
        expected = (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)
    make_model_say(engine, monkeypatch, text)
    answer = engine.run(AFTER, Task.CHANGE_GROUND, "new building", before=BEFORE)
    [found] = answer.boxes_px
    assert found.xyxy == pytest.approx(expected, abs=1e-6) and found.label == "new building"
    assert answer.image_size_px == (500, 333)


def test_change_caption_and_ask_give_no_boxes(paper_engine, monkeypatch):
    make_model_say(paper_engine, monkeypatch, "[100, 200, 500, 600]")
    answer = paper_engine.run(AFTER, Task.CHANGE_CAPTION, before=BEFORE)
    assert answer.text == "[100, 200, 500, 600]" and answer.boxes_px == ()


# --- validation ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "task, kwargs, message",
    [
        (Task.CHANGE_CAPTION, {}, "needs before="),
        (Task.CHANGE_GROUND, {"before": None}, "earlier crop"),
        (Task.CAPTION, {"before": BEFORE}, "only for the change tasks"),
        (Task.GROUND, {"before": BEFORE, "question": "x"}, "change_caption, change_ground"),
        (Task.CHANGE_CAPTION, {"before": BEFORE[:300]}, "500x300 pixels but the after image"),
        (Task.CHANGE_CAPTION, {"before": BEFORE.astype(np.float32)}, "before must be uint8"),
        (Task.CHANGE_CAPTION, {"before": BEFORE[..., :2]}, r"before must be RGB"),
        (Task.CHANGE_CAPTION, {"before": BEFORE.tolist()}, "before must be a numpy array"),
        (Task.CHANGE_ASK, {"before": BEFORE}, "needs a question"),
    ],
)
def test_bad_change_requests_fail_before_any_work(paper_engine, task, kwargs, message):
    with pytest.raises(InputError, match=message):
        paper_engine.run(AFTER, task, **kwargs)


def test_run_batch_points_change_tasks_to_run(paper_engine):
    with pytest.raises(InputError, match="before=before"):
        paper_engine.run_batch([AFTER], Task.CHANGE_CAPTION)


def test_an_after_image_of_the_wrong_type_is_named_as_the_after_image():
    with pytest.raises(InputError, match="after image must be uint8"):
        validate_request(AFTER.astype(np.int16), "change_caption", before=BEFORE)


# --- training on pairs -----------------------------------------------------------------------------
def _write_pairs(folder, n: int = 4) -> list[Sample]:
    samples = []
    for i in range(n):
        before = np.full((64, 64, 3), 90, np.uint8)
        after = before.copy()
        after[8 + i : 30 + i, 10:40] = (200, 40, 40)  # a new red roof
        Image.fromarray(before).save(folder / f"{i}_before.png")
        Image.fromarray(after).save(folder / f"{i}_after.png")
        common = {"image_path": str(folder / f"{i}_after.png"), "source": "test"}
        common["before_image_path"] = str(folder / f"{i}_before.png")
        box = BoxPx(10, 8 + i, 40, 30 + i, label="new building")
        samples.append(
            Sample(
                id=f"pair:{i}:cap",
                task="change_caption",
                question="",
                answer="A new building was built.",
                **common,
            )
        )
        samples.append(
            Sample(
                id=f"pair:{i}:ground",
                task="change_ground",
                question="new building",
                answer="[156, 125, 625, 469]",
                image_size_px=(64, 64),
                boxes_px=(box,),
                **common,
            )
        )
    return samples


def test_change_samples_round_trip_through_jsonl_with_relative_paths(tmp_path):
    samples = _write_pairs(tmp_path)
    write_jsonl(samples, tmp_path / "pairs.jsonl")
    row = json.loads((tmp_path / "pairs.jsonl").read_text().splitlines()[0])
    assert row["before_image_path"] == "0_before.png" and row["image_path"] == "0_after.png"
    back = read_jsonl(tmp_path / "pairs.jsonl")
    assert back == samples
    assert [im.shape for im in back[1].load_images()] == [(64, 64, 3), (64, 64, 3)]
    assert back[1].load_images()[0].mean() == 90  # before first


def test_a_change_sample_needs_its_before_image_and_others_refuse_one(tmp_path):
    with pytest.raises(ValueError, match="needs the earlier image"):
        Sample(id="a", task="change_caption", question="", answer="x", image_path="a.png")
    with pytest.raises(ValueError, match="only for change tasks"):
        Sample(
            id="b",
            task="caption",
            question="",
            answer="x",
            image_path="a.png",
            before_image_path="b.png",
        )


def test_a_training_batch_of_pairs_has_two_blocks_per_row_and_learns(tmp_path):
    """BatchMaker renders pairs like the engine does; one optimizer step lowers the loss of the
    answer, and gradients reach the prompter through both image blocks."""
    from engine.config import ExpertConfig, PrompterConfig
    from engine.model import load_backbone, resolve_placement

    cfg = EngineConfig(backbone="paper", model_path=cached_tiny_model_dir("paper"), device="cpu")
    backbone = load_backbone(cfg, resolve_placement("cpu", cfg.quant))
    vlm = SemanticVLM.with_adapter_modules(
        backbone, PrompterConfig(num_tokens=4), ExpertConfig(rank=8), None, torch.float32
    )
    vlm.set_trainable(["prompter", "projector"])
    samples = _write_pairs(tmp_path, n=2)
    maker = BatchMaker(vlm, load_prompt_set("paper", "adapter"), None)
    batch = maker(samples)
    n_img = batch.images.num_image_tokens[0]
    assert batch.images.images_per_sample == (2, 2, 2, 2)
    assert ((batch.input_ids == backbone.image_token_id).sum(1) == 2 * n_img).all()
    tok = backbone.tokenizer
    kept = batch.labels[1][batch.labels[1] != -100]
    assert tok.decode(kept) == "[156, 125, 625, 469]<|im_end|>"
    opt = torch.optim.SGD([p for p in vlm.parameters() if p.requires_grad], lr=0.5)
    losses = []
    for _ in range(3):
        loss = vlm(batch).loss
        opt.zero_grad()
        loss.backward()
        assert vlm.prompter.tokens.grad.abs().sum() > 0
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]


def test_the_trainer_runs_on_change_pairs_from_jsonl(tmp_path):
    samples = _write_pairs(tmp_path, n=4)
    write_jsonl(samples, tmp_path / "pairs.jsonl")
    raw = {
        "output_dir": str(tmp_path / "run"),
        "model": {
            "backbone": "paper",
            "model_path": str(cached_tiny_model_dir("paper")),
            "device": "cpu",
            "prompter": {"num_tokens": 4, "width": 32},
            "experts": {"rank": 8},
            "lora": {"rank": 4, "alpha": 8, "dropout": 0.0},
        },
        "data": {
            "train": [{"path": str(tmp_path / "pairs.jsonl")}],
            "val": [{"path": str(tmp_path / "pairs.jsonl"), "limit": 2}],
            "tasks": ["change_caption", "change_ground"],
        },
        "optim": {
            "lr": {"prompter": 3e-3, "projector": 3e-3, "experts": 3e-3, "lora": 3e-3},
            "batch_size": 2,
            "grad_accum": 1,
            "max_steps": 2,
            "warmup_steps": 0,
            "log_every": 1,
            "seed": 1,
        },
    }
    config = TrainConfig.from_dict(raw, stage="instruct")
    result = Trainer(config).run()
    assert len(result.losses) == 2 and all(np.isfinite(result.losses))
    adapter = EngineConfig(
        backbone="paper",
        model_path=cached_tiny_model_dir("paper"),
        adapter_path=result.final_dir / "adapter",
        device="cpu",
        generation=GenerationConfig(max_new_tokens=4),
    )
    answer = Engine.from_config(adapter).run(
        np.asarray(Image.open(tmp_path / "0_after.png")),
        "change_caption",
        before=np.asarray(Image.open(tmp_path / "0_before.png")),
    )
    assert answer.task is Task.CHANGE_CAPTION


@pytest.mark.parametrize("name", ["paper", "qwen2.5-vl"])
def test_a_batch_mixing_a_pair_and_a_single_image_matches_single_requests(name):
    """Training batches mix change pairs with one-image samples: with adapter modules (prompter
    per block, experts, M-RoPE for Qwen), the left-padded mixed batch gives each row's logits."""
    from engine.config import ExpertConfig, PrompterConfig
    from engine.model import load_backbone, resolve_placement

    cfg = EngineConfig(backbone=name, model_path=cached_tiny_model_dir(name), device="cpu")
    backbone = load_backbone(cfg, resolve_placement("cpu", cfg.quant))
    vlm = SemanticVLM.with_adapter_modules(
        backbone, PrompterConfig(num_tokens=4), ExpertConfig(rank=8), None, torch.float32
    ).eval()
    prompts = load_prompt_set(name, "adapter")
    pair = prompt_sample(
        backbone,
        prompts,
        Task.CHANGE_CAPTION,
        to_prompter=True,
        texts=("a new house",),
        before_texts=("an empty field",),
    )
    single = prompt_sample(backbone, prompts, Task.CAPTION, to_prompter=True, texts=("a harbor",))
    small = random_image(90, 120, seed=5)
    both = backbone.preprocess([BEFORE, AFTER, small]).grouped([2, 1])
    with torch.no_grad():
        joint, _ = vlm.prefill(
            build_batch(backbone, both, [pair, single], vlm.num_semantic_tokens),
            backbone.new_cache(),
        )
        alone = [
            vlm.prefill(
                build_batch(
                    backbone,
                    backbone.preprocess(ims).grouped([len(ims)]),
                    [s],
                    vlm.num_semantic_tokens,
                ),
                backbone.new_cache(),
            )[0]
            for ims, s in (([BEFORE, AFTER], pair), ([small], single))
        ]
    torch.testing.assert_close(joint, torch.cat(alone), rtol=1e-4, atol=1e-4)
