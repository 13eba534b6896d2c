"""The demo build pipeline on a miniature recipe: tokenizer, base, CLIP + knowledge base, training
with engine.train, export (fp16) and demo.json, then the engine loaded from the manifest."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from engine.errors import ConfigError, WeightsNotFoundError
from lab.demo.base import DemoArch
from lab.demo.recipe import (
    ContinueStage,
    DemoRecipe,
    continue_config,
    scale_steps,
    train_config,
)
from lab.demo.tokenizer import SPECIAL_TOKENS, build_tokenizer, train_tokenizer_json
from tests.engine.tiny import one_torch_thread, random_image  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MINI = DemoRecipe(
    n_scenes=3,
    crop_px=96,
    test_scenes=1,
    vocab_size=400,
    arch=DemoArch(
        image_px=96,
        patch_px=16,
        vision_width=32,
        vision_layers=3,
        vision_heads=2,
        llm_width=32,
        llm_layers=4,
        llm_heads=2,
        llm_kv_heads=1,
        llm_mlp=64,
    ),
    prompter_tokens=2,
    expert_rank=4,
    steps=3,
    continue_stages=(
        ContinueStage(2, 5e-4),
        ContinueStage(1, 2e-4, vision_lr=1e-3),  # the tower trains too
    ),
    batch_size=4,
    warmup_steps=1,
    clip_steps=2,
    clip_batch_size=4,
    vision_pretrain_steps=2,
)


def test_tokenizer_has_one_token_per_grid_integer_and_the_qwen_special_tokens():
    texts = ["the red-roofed building [322, 138, 528, 344]", "Is there a road? yes no"] * 20
    tok = build_tokenizer(train_tokenizer_json(texts, vocab_size=300))
    pieces = tok.convert_ids_to_tokens(tok("[322, 1000, 7]", add_special_tokens=False)["input_ids"])
    assert [p for p in pieces if p.strip("Ġ").isdigit()] == ["322", "1000", "7"]
    beyond = tok.convert_ids_to_tokens(tok("12345", add_special_tokens=False)["input_ids"])
    assert "".join(beyond) == "12345" and len(beyond) == 2  # leftmost-longest: "123", "45"
    assert all(tok.convert_tokens_to_ids(t) != tok.unk_token_id for t in SPECIAL_TOKENS)
    assert tok.decode(tok("[322, 138]", add_special_tokens=False)["input_ids"]) == "[322, 138]"
    chat = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert chat.endswith("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
    digits = build_tokenizer(train_tokenizer_json(texts, vocab_size=300, max_number_token=None))
    split = digits.convert_ids_to_tokens(digits("[322]", add_special_tokens=False)["input_ids"])
    assert [p for p in split if p.isdigit()] == ["3", "2", "2"]


def test_snap_box_answers_rounds_grounding_boxes_only(tmp_path):
    from lab.demo.build import snap_box_answers

    rows = [
        {"task": "ground", "answer": "[218, 664, 388, 831]"},
        {"task": "ground", "answer": "[0, 406, 1000, 703, 37]"},  # oriented: angle kept
        {"task": "ask", "answer": "[218, 664, 388, 831]"},
    ]
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert snap_box_answers(path, 10) == 2
    got = [json.loads(line)["answer"] for line in path.read_text().splitlines()]
    assert got == ["[220, 660, 390, 830]", "[0, 410, 1000, 700, 37]", "[218, 664, 388, 831]"]


def test_recipe_variants_differ_only_where_the_ablation_says(tmp_path):
    full = train_config(MINI, "full", tmp_path)
    no_ret = train_config(MINI, "no_retrieval", tmp_path)
    no_exp = train_config(MINI, "no_experts", tmp_path)
    assert full.retrieval is not None and no_ret.retrieval is None
    assert "experts" in full.group_lr and "experts" not in no_exp.group_lr
    assert no_exp.model.engine.experts.layer_indices(MINI.arch.llm_layers) == ()
    assert full.optim.max_steps == no_ret.optim.max_steps == no_exp.optim.max_steps
    assert set(full.group_lr) == {"llm", "projector", "prompter", "experts"}  # tower frozen
    with pytest.raises(ConfigError, match="unknown demo variant"):
        train_config(MINI, "no_prompter", tmp_path)
    with pytest.raises(ConfigError, match="must equal the vision input"):
        dataclasses.replace(MINI, crop_px=128)


def test_later_stages_continue_the_stage_before_at_their_own_settings(tmp_path):
    first = train_config(MINI, "no_experts", tmp_path)
    final = first.output_dir / "final"
    second = continue_config(MINI, first, final)
    assert second.model.engine.model_path == final / "base"
    assert second.model.init_adapter == final / "adapter"
    assert second.output_dir == tmp_path / "runs" / "no_experts_cont"
    assert second.optim.max_steps == 2
    assert set(second.group_lr) == set(first.group_lr)  # same groups, lower rate
    assert all(lr == 5e-4 for lr in second.group_lr.values())
    assert second.retrieval == first.retrieval
    assert second.model.engine.experts == first.model.engine.experts
    third = continue_config(MINI, first, second.output_dir / "final", index=1)
    assert third.model.init_adapter == tmp_path / "runs" / "no_experts_cont" / "final" / "adapter"
    assert third.output_dir == tmp_path / "runs" / "no_experts_cont3"
    assert third.optim.max_steps == 1
    assert third.group_lr == {**dict.fromkeys(second.group_lr, 2e-4), "vision": 1e-3}
    with pytest.raises(ConfigError, match="continue stage 2 does not exist"):
        continue_config(MINI, first, final, index=2)
    with pytest.raises(ConfigError, match="steps > 0"):
        ContinueStage(0, 1e-3)
    with pytest.raises(ConfigError, match="vision_lr >= 0"):
        ContinueStage(2, 1e-3, vision_lr=-1e-4)


def test_scale_steps_lengthens_every_training_stage_and_nothing_else(tmp_path):
    recipe = dataclasses.replace(MINI, ablation_steps=3)
    long = scale_steps(recipe, 20)
    assert long.steps == 60 and long.ablation_steps == 60
    assert [s.steps for s in long.continue_stages] == [40, 20]
    assert [dataclasses.replace(s, steps=1) for s in long.continue_stages] == [
        dataclasses.replace(s, steps=1) for s in recipe.continue_stages
    ]  # rates and vision_lr kept
    unchanged = ("clip_steps", "vision_pretrain_steps", "warmup_steps", "lr", "n_scenes")
    assert all(getattr(long, k) == getattr(recipe, k) for k in unchanged)
    assert scale_steps(MINI, 0.1).steps == 1  # at least one step
    first = train_config(long, "full", tmp_path)
    assert first.optim.max_steps == 60
    assert continue_config(long, first, first.output_dir / "final", 1).optim.max_steps == 20
    for bad in (0, -2.0, float("nan")):
        with pytest.raises(ConfigError, match="steps scale must be > 0"):
            scale_steps(MINI, bad)


def test_train_device_sets_where_and_in_which_precision_the_runs_train(tmp_path):
    cpu = train_config(MINI, "full", tmp_path)
    assert (cpu.model.engine.device, cpu.optim.precision) == ("cpu", "fp32")
    gpu = dataclasses.replace(MINI, train_device="cuda")
    first = train_config(gpu, "no_experts", tmp_path)
    assert (first.model.engine.device, first.optim.precision) == ("cuda", "auto")  # bf16 autocast
    later = continue_config(gpu, first, first.output_dir / "final", 1)
    assert (later.model.engine.device, later.optim.precision) == ("cuda", "auto")
    for bad in ("gpu", "cuda:0", "mps"):
        with pytest.raises(ConfigError, match="use 'cpu' or 'cuda'"):
            dataclasses.replace(MINI, train_device=bad)


def test_a_work_folder_refuses_another_recipe_but_not_another_device(tmp_path):
    from lab.demo.build import check_work_recipe

    check_work_recipe(MINI, tmp_path)  # first use: recorded
    assert json.loads((tmp_path / "recipe.json").read_text())["steps"] == MINI.steps
    check_work_recipe(MINI, tmp_path)
    check_work_recipe(dataclasses.replace(MINI, train_device="cuda"), tmp_path)  # resumable
    with pytest.raises(ConfigError, match=r"differs in: continue_stages, steps\); pass a new"):
        check_work_recipe(scale_steps(MINI, 2), tmp_path)
    with pytest.raises(ConfigError, match=r"differs in: n_scenes\)"):
        check_work_recipe(dataclasses.replace(MINI, n_scenes=4), tmp_path)


@pytest.mark.parametrize(
    "recorded, accepted",
    [
        ({"number_sigma": 0.0, "image_positions": None, "image_attention": None}, True),
        ({"number_sigma": 10.0}, False),
        ({"image_attention": "bidirectional"}, False),
    ],
    ids=["defaults", "soft-numbers", "bidirectional"],
)
def test_a_work_folder_from_before_the_experiment_options_were_removed(
    tmp_path, recorded, accepted
):
    """A recipe.json with the removed stage options at their defaults is the current recipe."""
    from lab.demo.build import check_work_recipe

    old = json.loads(json.dumps(MINI.to_json()))
    for stage in old["continue_stages"]:
        stage.update(recorded)
    (tmp_path / "recipe.json").write_text(json.dumps(old))
    if accepted:
        check_work_recipe(MINI, tmp_path)
    else:
        with pytest.raises(ConfigError, match=r"differs in: continue_stages\)"):
            check_work_recipe(MINI, tmp_path)


def _mini_build(tmp_path, recipe):
    from lab.demo.build import build_demo

    out, work = tmp_path / "demo", tmp_path / "work"
    return build_demo(out, work, recipe, ablations=False), work


@pytest.mark.gpu
def test_mini_build_trains_on_cuda(tmp_path):
    from engine.demo.manifest import read_demo_manifest

    manifest_path, work = _mini_build(tmp_path, dataclasses.replace(MINI, train_device="cuda"))
    data = json.loads(manifest_path.read_text())
    assert data["training"]["full_cont3"]["step"] == 1
    assert (
        json.loads((work / "runs" / "full" / "train_config.json").read_text())["model"]["device"]
        == "cuda"
    )
    read_demo_manifest(manifest_path)


def test_mini_build_exports_a_demo_the_engine_loads(tmp_path):
    from lab.demo.build import build_demo
    from engine.demo.manifest import load_demo_engine, read_demo_manifest

    out = tmp_path / "demo"
    manifest_path, work = _mini_build(tmp_path, MINI)
    data = json.loads(manifest_path.read_text())
    assert (
        data["label"].startswith("GeoLens demo model") and "not for real imagery" in data["label"]
    )
    assert set(data["metrics"]["full"]) >= {
        "presence_accuracy",
        "count_accuracy",
        "scene_accuracy",
        "grounding_acc50",
    }
    assert data["training"]["full"]["step"] == 3
    assert data["training"]["full_cont"]["step"] == 2  # stage 2 ran from stage 1's weights
    assert data["training"]["full_cont3"]["step"] == 1  # stage 3 from stage 2's
    manifest = read_demo_manifest(manifest_path)
    from safetensors import safe_open

    with safe_open(str(manifest.model_dir / "llm" / "model.safetensors"), "pt") as fh:
        assert all(str(fh.get_tensor(k).dtype) == "torch.float16" for k in fh.keys())  # noqa: SIM118
    tower = "vision/model.safetensors"
    with (
        safe_open(str(manifest.model_dir / tower), "pt") as shipped,
        safe_open(str(work / "base" / tower), "pt") as pretrained,
    ):
        moved = [
            k
            for k in pretrained.keys()  # noqa: SIM118
            if not torch.equal(shipped.get_tensor(k), pretrained.get_tensor(k).half())
        ]
    assert moved  # stage 3 trained the tower (vision_lr), and the export carries it
    engine = load_demo_engine(manifest_path, device="cpu")
    answer = engine.run(random_image(96, 96), "ask", question="Is there a road?")
    assert len(answer.evidence) == MINI.top_k  # the demo retriever is wired in
    with pytest.raises(WeightsNotFoundError, match="build the demo"):
        read_demo_manifest(tmp_path / "missing.json")
    with pytest.raises(ConfigError, match="built with another recipe"):  # before any step runs
        build_demo(out, work, scale_steps(MINI, 2), ablations=False)
