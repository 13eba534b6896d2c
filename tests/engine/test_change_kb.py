"""Change requests with a real tiny knowledge base: descriptions are retrieved for both crops,
each block's prompter gets its own crop's, and the evidence says which crop it came from."""

from __future__ import annotations

from engine.engine import validate_request
from tests.engine.test_engine_with_kb import _engine, kb_dir  # noqa: F401
from tests.engine.tiny import one_torch_thread, random_image  # noqa: F401

AFTER = random_image(200, 300, seed=41)
BEFORE = random_image(200, 300, seed=42)


def test_both_crops_are_retrieved_and_each_block_gets_its_own(kb_dir, one_torch_thread):  # noqa: F811
    engine = _engine("paper", kb_dir, top_k=2)
    answer = engine.run(AFTER, "change_caption", before=BEFORE)
    after = [e for e in answer.evidence if e.metadata["image"] == "after"]
    before = [e for e in answer.evidence if e.metadata["image"] == "before"]
    assert [e.text for e in after] == [
        e.text for e in engine.retriever.retrieve_for_image(AFTER, 2)
    ]
    assert [e.text for e in before] == [
        e.text for e in engine.retriever.retrieve_for_image(BEFORE, 2)
    ]
    assert answer.evidence == (*after, *before)  # the after crop's first
    request = validate_request(AFTER, "change_caption", before=BEFORE)
    images = engine.vlm.backbone.preprocess(request.images).grouped([2])
    sample = engine._sample(request, answer.evidence, images, 0)
    assert sample.image_semantic_texts == (
        tuple(e.text for e in before),
        tuple(e.text for e in after),
    )


def test_zero_shot_lists_both_crops_descriptions_in_the_prompt(kb_dir, one_torch_thread):  # noqa: F811
    engine = _engine("qwen2.5-vl", kb_dir, top_k=2)
    answer = engine.run(AFTER, "change_ask", "What changed?", before=BEFORE)
    request = validate_request(AFTER, "change_ask", "What changed?", before=BEFORE)
    images = engine.vlm.backbone.preprocess(request.images).grouped([2])
    sample = engine._sample(request, answer.evidence, images, 0)
    assert all(f"- {e.text}" in sample.user_text for e in answer.evidence)
    assert sample.image_semantic_texts == ()
