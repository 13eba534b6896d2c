"""Engine + a real tiny knowledge base (engine.retrieval with a tiny random open_clip model).

Zero-shot Qwen2.5-VL puts the retrieved descriptions into the prompt text; the paper backbone
(adapter mode) feeds them to the prompter as semantic tokens. Both return them as evidence.
"""

from __future__ import annotations

import json

import pytest

from engine import Engine, EngineConfig, GenerationConfig, RetrievalConfig
from engine.engine import validate_request
from tests.engine.tiny import cached_tiny_model_dir, one_torch_thread, random_image  # noqa: F401

pytest.importorskip("open_clip", reason="open_clip_torch is not installed")
pytest.importorskip("faiss", reason="faiss-cpu is not installed")

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ARCH = "geolens-tiny-engine-test"
CAPTIONS = [
    "many boats are docked in a harbor next to storage tanks",
    "a dense residential area with red roofs and narrow roads",
    "green farmland with a river and scattered houses",
    "an airport with two runways and parked airplanes",
    "a stadium surrounded by parking lots",
]
IMAGE = random_image(200, 300)


@pytest.fixture(scope="module")
def kb_dir(tmp_path_factory):
    import open_clip

    from engine.retrieval import ClipEmbedder, Description, KnowledgeBase
    from tests.engine.retrieval_helpers import tiny_clip_config

    configs = tmp_path_factory.mktemp("open_clip_configs")
    (configs / f"{ARCH}.json").write_text(json.dumps(tiny_clip_config()), encoding="utf-8")
    open_clip.add_model_config(configs)  # register the tiny architecture like a built-in name
    embedder = ClipEmbedder.from_pretrained(ARCH, None, "cpu")  # seeded random weights
    out = tmp_path_factory.mktemp("kb") / "kb"
    descriptions = [Description(text, "captions.txt", "scene") for text in CAPTIONS]
    KnowledgeBase.build(descriptions, embedder, out).close()
    return out


def _engine(name: str, kb_dir, top_k: int = 2) -> Engine:
    return Engine.from_config(
        EngineConfig(
            backbone=name,
            model_path=cached_tiny_model_dir(name),
            device="cpu",
            retrieval=RetrievalConfig(
                kb_dir=kb_dir, clip_arch=ARCH, clip_checkpoint=None, top_k=top_k
            ),
            generation=GenerationConfig(max_new_tokens=8),
        )
    )


def test_zero_shot_qwen_puts_evidence_in_the_prompt(kb_dir):
    engine = _engine("qwen2.5-vl", kb_dir)
    answer = engine.run(IMAGE, "ask", question="What is in this image?")
    assert len(answer.evidence) == 2 and all(e.text in CAPTIONS for e in answer.evidence)
    assert answer.evidence[0].score >= answer.evidence[1].score
    assert answer.timing.retrieval_s > 0
    images = engine.vlm.backbone.preprocess([IMAGE])
    sample = engine._sample(
        validate_request(IMAGE, "ask", "What is in this image?"), answer.evidence, images, 0
    )
    assert all(f"- {e.text}" in sample.user_text for e in answer.evidence)
    assert sample.semantic_texts == ()


def test_paper_backbone_feeds_evidence_to_the_prompter(kb_dir):
    engine = _engine("paper", kb_dir, top_k=3)
    answer = engine.run(IMAGE, "caption")
    assert len(answer.evidence) == 3
    images = engine.vlm.backbone.preprocess([IMAGE])
    sample = engine._sample(validate_request(IMAGE, "caption"), answer.evidence, images, 0)
    assert sample.semantic_texts == tuple(e.text for e in answer.evidence)
    assert not any(e.text in sample.user_text for e in answer.evidence)


def test_an_injected_retriever_is_used(kb_dir):
    from engine.retrieval import ClipEmbedder, KnowledgeBase, Retriever

    embedder = ClipEmbedder.from_pretrained(ARCH, None, "cpu")
    retriever = Retriever(KnowledgeBase.load(kb_dir, embedder), embedder)
    cfg = EngineConfig(
        model_path=cached_tiny_model_dir("qwen2.5-vl"),
        device="cpu",
        generation=GenerationConfig(max_new_tokens=4),
    )
    engine = Engine.from_config(cfg, retriever=retriever)
    answer = engine.run(IMAGE, "caption")
    assert len(answer.evidence) == cfg.retrieval.top_k
    assert answer.evidence == tuple(retriever.retrieve_for_image(IMAGE, cfg.retrieval.top_k))


def test_embedder_from_a_saved_directory_or_the_manifest(tmp_path):
    """A KB built with a saved (config-built) embedder loads by directory or from its manifest."""
    from engine.retrieval import ClipEmbedder, Description, KnowledgeBase
    from tests.engine.retrieval_helpers import tiny_clip_config

    embedder = ClipEmbedder.from_config(tiny_clip_config(), device="cpu", seed=3)
    saved = embedder.save(tmp_path / "clip")
    kb = tmp_path / "kb"
    KnowledgeBase.build([Description(t, "captions.txt", "scene") for t in CAPTIONS], embedder, kb).close()
    for retrieval in (
        RetrievalConfig(kb_dir=kb, clip_embedder_dir=saved, top_k=2),
        RetrievalConfig(kb_dir=kb, top_k=2),  # no embedder given: the manifest's is rebuilt
    ):
        engine = Engine.from_config(
            EngineConfig(
                backbone="paper",
                model_path=cached_tiny_model_dir("paper"),
                device="cpu",
                retrieval=retrieval,
                generation=GenerationConfig(max_new_tokens=4),
            )
        )
        answer = engine.run(IMAGE, "caption")
        assert [e.text in CAPTIONS for e in answer.evidence] == [True, True]
