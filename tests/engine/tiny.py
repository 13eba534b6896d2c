"""Tiny random models of both GeoLens backbones, saved the way real checkpoints are laid out.

Used by the engine tests, the CPU mode of ``benchmarks/bench_engine.py`` and the app tests:

* :func:`make_tiny_paper_model_dir` writes ``<dir>/llm`` (a 8-layer, 64-wide ``Qwen2ForCausalLM``
  with the tokenizer) and ``<dir>/vision`` (a 3-layer, 32-wide ``SiglipVisionModel`` at 56 px with
  its image processor): the layout ``EngineConfig(backbone="paper", model_path=dir)`` loads.
* :func:`make_tiny_qwen25vl_model_dir` writes one directory with a tiny
  ``Qwen2_5_VLForConditionalGeneration`` (4 vision blocks 32 wide, 8 decoder layers 64 wide) and a
  ``Qwen2_5_VLProcessor`` (image processor + tokenizer + chat template) built in code.

The tokenizer is a byte-level BPE trained here on a few sentences, wrapped in
``PreTrainedTokenizerFast`` with the special tokens and a Qwen-style chat template. Nothing is
downloaded. Both builders take well under a few seconds and are deterministic (fixed seeds).
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import pytest

from lab.demo.tokenizer import CHAT_TEMPLATE, build_tokenizer
from lab.demo.tokenizer import SPECIAL_TOKENS as QWEN_SPECIAL_TOKENS

__all__ = [
    "CHAT_TEMPLATE",
    "QWEN_SPECIAL_TOKENS",
    "cached_tiny_model_dir",
    "make_tiny_paper_model_dir",
    "make_tiny_qwen25vl_model_dir",
    "make_tiny_tokenizer",
    "one_torch_thread",
    "random_image",
]

_CORPUS = (
    "An aerial image of a harbor with many boats and storage tanks near the water.",
    "A dense residential area with buildings, roads and trees seen from above.",
    "Farmland with green fields, a river and a few scattered houses.",
    "The airport has two runways, a terminal and several airplanes parked.",
    "Where are the storage tanks? Describe this remote sensing image in detail.",
    "Classify this scene. Choose one of: harbor, farmland, airport, residential.",
    "tank: [120, 340, 560, 780]; ship: [0, 0, 1000, 1000] bbox_2d label",
    '[{"bbox_2d": [12, 34, 56, 78], "label": "tank"}] yes no 0 1 2 3 4 5 6 7 8 9',
    "Große Häfen, château, naïve café, 港口 and 🚢 appear in multilingual captions.",
)

VOCAB_SIZE = 480
# Wider than the usual 0.02 so a 64-wide random LLM has peaked next-token distributions (closer to
# a trained model), which lets the tiny adapter tests overfit an answer in a few steps.
INIT_RANGE = 0.2


@functools.lru_cache(maxsize=1)
def _tokenizer_json() -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE - len(QWEN_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS, trainer=trainer)
    return tok.to_str()


def make_tiny_tokenizer():
    """A ``PreTrainedTokenizerFast`` (byte-level BPE, Qwen special tokens, chat template)."""
    return build_tokenizer(_tokenizer_json())


def _token_ids(tokenizer) -> dict[str, int]:
    return {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}


def make_tiny_paper_model_dir(path: str | Path, *, llm_layers: int = 8) -> Path:
    """Save a tiny ``paper`` backbone (``llm/`` + ``vision/``) under ``path``; returns ``path``.

    ``llm_layers`` changes the LLM depth (a different base, for adapter-mismatch tests).
    """
    import torch
    from transformers import (
        Qwen2Config,
        Qwen2ForCausalLM,
        SiglipImageProcessor,
        SiglipVisionConfig,
        SiglipVisionModel,
    )

    root = Path(path)
    tokenizer = make_tiny_tokenizer()
    ids = _token_ids(tokenizer)
    torch.manual_seed(0)
    llm_config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=llm_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
        tie_word_embeddings=False,
        initializer_range=INIT_RANGE,
    )
    Qwen2ForCausalLM(llm_config).save_pretrained(root / "llm")
    tokenizer.save_pretrained(root / "llm")
    vision_config = SiglipVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=2,
        image_size=56,
        patch_size=14,
    )
    SiglipVisionModel(vision_config).save_pretrained(root / "vision")
    SiglipImageProcessor(size={"height": 56, "width": 56}).save_pretrained(root / "vision")
    return root


def make_tiny_qwen25vl_model_dir(path: str | Path, max_pixels: int = 112 * 112) -> Path:
    """Save a tiny ``Qwen2_5_VLForConditionalGeneration`` + processor under ``path``.

    ``max_pixels`` bounds the processor's resize (default 112x112 = 16 merged image tokens), so
    most test crops are resized down, as real crops are by the real processor.
    """
    import torch
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
    )
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    root = Path(path)
    tokenizer = make_tiny_tokenizer()
    ids = _token_ids(tokenizer)
    torch.manual_seed(0)
    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 8,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 4096,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 1e6,
                "mrope_section": [2, 3, 3],
            },
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
            "initializer_range": INIT_RANGE,
        },
        vision_config={
            "depth": 4,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "out_hidden_size": 64,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 56,
            "fullatt_block_indexes": [1, 3],
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
        initializer_range=INIT_RANGE,
    )
    Qwen2_5_VLForConditionalGeneration(config).save_pretrained(root)
    size = {"shortest_edge": 56 * 56, "longest_edge": max_pixels}
    processor = Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(size=size),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(size=size),
        chat_template=CHAT_TEMPLATE,
    )
    processor.save_pretrained(root)
    return root


@functools.cache
def cached_tiny_model_dir(backbone: str) -> Path:
    """Build a tiny model directory once per process (in a temp dir) and reuse it."""
    root = Path(tempfile.mkdtemp(prefix=f"geolens-tiny-{backbone}-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    if backbone == "paper":
        return make_tiny_paper_model_dir(root)
    if backbone == "qwen2.5-vl":
        return make_tiny_qwen25vl_model_dir(root)
    raise ValueError(f"unknown tiny backbone {backbone!r}; use 'paper' or 'qwen2.5-vl'")


def random_image(height: int, width: int, seed: int = 0):
    """A reproducible random RGB uint8 image (height, width, 3)."""
    import numpy as np

    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.fixture
def one_torch_thread():
    """Run a test with one torch CPU thread: tiny models are faster that way, and OpenMP
    spin-waiting on a shared 2-core machine slows small ops by orders of magnitude."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_model_say(engine, monkeypatch, text: str, *, repeat: bool = False, max_new_tokens: int = 96) -> None:
    """Make the (random) model of ``engine`` say ``text`` then <|im_end|>: the real prefill and
    decode steps run, and their logits are replaced by ones whose argmax is the next scripted
    token. ``repeat``: say it again on every request (servers answering several requests)."""
    import dataclasses
    import itertools

    import torch

    from engine.config import GenerationConfig

    backbone = engine.vlm.backbone
    ids = [*backbone.tokenizer.encode(text, add_special_tokens=False), backbone.token_id("<|im_end|>")]
    script = itertools.cycle(ids) if repeat else iter(ids)
    prefill, decode_step = engine.vlm.prefill, engine.vlm.decode_step

    def forced(logits):
        out = torch.full_like(logits, -1e4)  # (B, V)
        out[:, next(script)] = 0.0
        return out

    def forced_prefill(*args):
        logits, positions = prefill(*args)
        return forced(logits), positions

    monkeypatch.setattr(engine.vlm, "prefill", forced_prefill)
    monkeypatch.setattr(engine.vlm, "decode_step", lambda *args: forced(decode_step(*args)))
    longer = GenerationConfig(max_new_tokens=max_new_tokens)
    monkeypatch.setattr(engine, "config", dataclasses.replace(engine.config, generation=longer))


def tiny_paper_engine(max_new_tokens: int = 12, prompter_tokens: int | None = 8):
    """An :class:`engine.Engine` on the tiny ``paper`` model (CPU, greedy, ``max_new_tokens``;
    the visual prompter with ``prompter_tokens`` tokens, or its default when None)."""
    from engine import Engine, EngineConfig, GenerationConfig, PrompterConfig

    extra = {} if prompter_tokens is None else {"prompter": PrompterConfig(num_tokens=prompter_tokens)}
    return Engine.from_config(EngineConfig(
        backbone="paper", model_path=cached_tiny_model_dir("paper"), device="cpu",
        generation=GenerationConfig(max_new_tokens=max_new_tokens), **extra))


def png_data_uri(image, fmt: str = "PNG") -> str:
    """``image`` (H, W, 3) uint8 as a ``data:`` URI (PNG or JPEG), as OpenAI-style clients send it."""
    import base64
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format=fmt)
    mime = "png" if fmt == "PNG" else "jpeg"
    return f"data:image/{mime};base64,{base64.b64encode(buf.getvalue()).decode()}"
