"""ClipEmbedder on tiny random open_clip towers: shapes, normalisation, checkpoints, save/load."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engine.errors import ConfigError, InputError, WeightsNotFoundError
from engine.retrieval import ClipEmbedder
from tests.engine.retrieval_helpers import tiny_clip_config

TEXTS = [
    "many planes are parked next to a long building in an airport .",
    "a river",
    "a dense residential area",
]


@pytest.fixture(scope="module")
def embedder() -> ClipEmbedder:
    return ClipEmbedder.from_config(tiny_clip_config(), seed=0)


@pytest.fixture(scope="module")
def tiny_arch(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Register the tiny config as an open_clip architecture, like a built-in name."""
    import open_clip

    folder = tmp_path_factory.mktemp("open_clip_configs")
    (folder / "geolens-tiny-test.json").write_text(json.dumps(tiny_clip_config()), encoding="utf-8")
    open_clip.add_model_config(folder)
    return "geolens-tiny-test"


def _images(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (40 + 7 * i, 56, 3), dtype=np.uint8) for i in range(n)]


def test_text_and_image_embeddings_are_unit_float32(embedder: ClipEmbedder) -> None:
    texts = embedder.embed_texts(TEXTS, batch_size=2)
    images = embedder.embed_images(_images(3), batch_size=2)
    assert embedder.dim == 32
    for vectors in (texts, images):
        assert vectors.shape == (3, 32) and vectors.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    assert embedder.embed_texts([]).shape == (0, 32)
    assert embedder.embed_images([]).shape == (0, 32)


def test_batching_does_not_change_embeddings(embedder: ClipEmbedder) -> None:
    np.testing.assert_allclose(
        embedder.embed_texts(TEXTS, batch_size=1),
        embedder.embed_texts(TEXTS, batch_size=64),
        atol=1e-5,
    )
    images = _images(3)
    np.testing.assert_allclose(
        embedder.embed_images(images, batch_size=1), embedder.embed_images(images), atol=1e-5
    )


def test_image_embedding_uses_the_model_preprocess(embedder: ClipEmbedder) -> None:
    import torch
    from PIL import Image

    image = _images(1)[0]
    with torch.inference_mode():
        expected = embedder.model.encode_image(
            embedder.preprocess(Image.fromarray(image))[None], normalize=True
        )
    np.testing.assert_allclose(embedder.embed_images([image])[0], expected[0].numpy(), atol=1e-5)


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((8, 8), np.uint8),
        np.zeros((8, 8, 4), np.uint8),
        np.zeros((8, 8, 3), np.float32),
        np.zeros((0, 8, 3), np.uint8),
    ],
)
def test_bad_images_are_rejected(embedder: ClipEmbedder, bad: np.ndarray) -> None:
    with pytest.raises(InputError, match="image 0"):
        embedder.embed_images([bad])


def test_random_init_is_seeded_and_named_by_its_weights() -> None:
    a = ClipEmbedder.from_config(tiny_clip_config(), seed=0)
    b = ClipEmbedder.from_config(tiny_clip_config(), seed=0)
    c = ClipEmbedder.from_config(tiny_clip_config(), seed=1)
    assert a.name == b.name != c.name
    np.testing.assert_array_equal(a.embed_texts(TEXTS), b.embed_texts(TEXTS))


def test_save_load_round_trip(embedder: ClipEmbedder, tmp_path: Path) -> None:
    embedder.save(tmp_path / "emb")
    assert sorted(p.name for p in (tmp_path / "emb").iterdir()) == [
        "open_clip_config.json",
        "open_clip_model.safetensors",
    ]
    loaded = ClipEmbedder.load(tmp_path / "emb")
    assert loaded.name == embedder.name and loaded.dim == embedder.dim
    assert loaded.spec == {"kind": "saved", "path": str((tmp_path / "emb").resolve())}
    np.testing.assert_allclose(loaded.embed_texts(TEXTS), embedder.embed_texts(TEXTS), atol=1e-6)
    images = _images(2)
    np.testing.assert_allclose(
        loaded.embed_images(images), embedder.embed_images(images), atol=1e-6
    )


def test_saved_embedder_is_readable_by_open_clip_local_dir(
    embedder: ClipEmbedder, tmp_path: Path
) -> None:
    import open_clip
    import torch

    embedder.save(tmp_path / "emb")
    model, _, _ = open_clip.create_model_and_transforms(f"local-dir:{tmp_path / 'emb'}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{tmp_path / 'emb'}")
    with torch.inference_mode():
        vectors = model.eval().encode_text(tokenizer(TEXTS), normalize=True).numpy()
    np.testing.assert_allclose(vectors, embedder.embed_texts(TEXTS), atol=1e-5)


def test_from_model_wraps_any_clip_and_saves_only_with_config(tmp_path: Path) -> None:
    import open_clip
    from open_clip.transform import PreprocessCfg, image_transform_v2

    model = open_clip.CLIP(**tiny_clip_config())
    preprocess = image_transform_v2(PreprocessCfg(size=32), is_train=False)
    tokenizer = open_clip.SimpleTokenizer(context_length=32)
    wrapped = ClipEmbedder.from_model(model, tokenizer, preprocess, name="demo-clip")
    assert (wrapped.name, wrapped.dim) == ("demo-clip", 32)
    with pytest.raises(ConfigError, match="no model config"):
        wrapped.save(tmp_path / "x")
    with_cfg = ClipEmbedder.from_model(
        model, tokenizer, preprocess, name="demo-clip", model_cfg=tiny_clip_config()
    )
    with_cfg.save(tmp_path / "demo")
    np.testing.assert_allclose(
        ClipEmbedder.load(tmp_path / "demo").embed_texts(TEXTS),
        wrapped.embed_texts(TEXTS),
        atol=1e-6,
    )


def test_from_pretrained_with_a_local_checkpoint(
    tiny_arch: str, embedder: ClipEmbedder, tmp_path: Path
) -> None:
    import torch

    checkpoint = tmp_path / "tiny.pt"
    torch.save(embedder.model.state_dict(), checkpoint)
    loaded = ClipEmbedder.from_pretrained(tiny_arch, checkpoint)
    assert loaded.name.startswith(f"{tiny_arch}@") and len(loaded.name) == len(tiny_arch) + 13
    assert loaded.spec["checkpoint"] == str(checkpoint.resolve())
    np.testing.assert_allclose(loaded.embed_texts(TEXTS), embedder.embed_texts(TEXTS), atol=1e-6)
    random_a = ClipEmbedder.from_pretrained(tiny_arch, None)
    assert (
        "random-seed0" in random_a.name
        and random_a.name == ClipEmbedder.from_pretrained(tiny_arch, None).name
    )


def test_from_pretrained_errors(tiny_arch: str, tmp_path: Path) -> None:
    import torch

    with pytest.raises(WeightsNotFoundError, match="checkpoint file .*missing.pt not found"):
        ClipEmbedder.from_pretrained(tiny_arch, tmp_path / "missing.pt")
    with pytest.raises(ConfigError, match="unknown open_clip architecture 'ViT-B-33'.*ViT-B-32"):
        ClipEmbedder.from_pretrained("ViT-B-33", None)
    with pytest.raises(ConfigError, match="never does"):
        ClipEmbedder.from_pretrained("hf-hub:chendelong/RemoteCLIP", None)
    other = tiny_clip_config(embed_dim=16)
    import open_clip

    torch.save(open_clip.CLIP(**other).state_dict(), tmp_path / "other.pt")
    with pytest.raises(ConfigError, match="does not fit geolens-tiny-test"):
        ClipEmbedder.from_pretrained(tiny_arch, tmp_path / "other.pt")


def test_from_config_errors() -> None:
    with pytest.raises(ConfigError, match="lacks \\['vision_cfg'"):
        ClipEmbedder.from_config({"embed_dim": 8, "text_cfg": {}})
    with pytest.raises(
        WeightsNotFoundError, match="no open_clip_config.json in /nonexistent/embedder"
    ):
        ClipEmbedder.load(Path("/nonexistent/embedder"))


def test_wrapping_a_model_in_training_keeps_its_mode(embedder: ClipEmbedder) -> None:
    import open_clip
    from open_clip.transform import PreprocessCfg, image_transform_v2

    model = open_clip.CLIP(**tiny_clip_config()).train()
    preprocess = image_transform_v2(PreprocessCfg(size=32), is_train=False)
    wrapped = ClipEmbedder.from_model(
        model, open_clip.SimpleTokenizer(context_length=32), preprocess, "in-training"
    )
    first = wrapped.embed_texts(TEXTS)
    assert model.training  # embedding ran in eval mode and restored the trainer's mode
    np.testing.assert_array_equal(first, wrapped.embed_texts(TEXTS))
