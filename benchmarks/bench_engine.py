"""Engine speed and memory: NF4 vs bf16, with vs without the paper's modules (expert overhead).

On CUDA it builds full-size Qwen2.5-VL-3B and -7B models with *random* weights from configs
written out below (speed and memory do not depend on the weight values; nothing is downloaded),
saves each once under ``.bench-cache/`` and loads it through the engine's own loader
(``load_backbone`` with the real ``BitsAndBytesConfig``). On CPU it runs the tiny test configs
(``tests/engine/tiny.py``) through the same code. For every model it reports, in one run:

* weights (MiB of parameters + buffers) and, on CUDA, peak VRAM of a request;
* time to first token (preprocess + vision + prompter + prefill) and decode tokens/s for one
  448x448 crop, greedy, a fixed number of new tokens (no early stop);
* the same with prompter + experts (untrained experts cost the same as trained ones), then with
  LoRA added as well: ratios against the no-adapter baseline measured in the same run;
* a batch of 8 448x448 tiles (grounding prompt): TTFT and total decode tokens/s.

``--models qwen3vl-8b`` adds Qwen3-VL-8B-Instruct at its published config (random weights, built
the same way; zero-shot rows only, as the qwen3-vl backbone runs without the paper's modules);
``--crop-px`` sets the crop (the issue's comparison is at 1024 px).

Usage::

    python benchmarks/bench_engine.py                  # auto: CUDA if available, else CPU tiny
    python benchmarks/bench_engine.py --models 7b --new-tokens 64 --repeats 3 --json out.json
    python benchmarks/bench_engine.py --models 7b,qwen3vl-8b --crop-px 1024 --batch 0  # GPU
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np
import torch

from engine.config import (
    EngineConfig,
    ExpertConfig,
    ImageConfig,
    LoraConfig,
    PrompterConfig,
    QuantConfig,
)
from engine.generation import greedy_steps
from engine.model import Sample, SemanticVLM, build_batch, load_backbone, resolve_placement
from engine.model.lora import attach_lora
from engine.prompts import load_prompt_set
from engine.types import Task

CACHE = REPO / ".bench-cache"

# Qwen2.5-VL-{3B,7B}-Instruct architectures (values from their published config.json files).
_VISION = {
    "depth": 32,
    "hidden_size": 1280,
    "intermediate_size": 3420,
    "num_heads": 16,
    "patch_size": 14,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
    "window_size": 112,
    "tokens_per_second": 2,
    "fullatt_block_indexes": [7, 15, 23, 31],
    "hidden_act": "silu",
}
FULL_SIZE = {
    "3b": {
        "hidden_size": 2048,
        "intermediate_size": 11008,
        "num_hidden_layers": 36,
        "num_attention_heads": 16,
        "num_key_value_heads": 2,
        "vocab_size": 151936,
        "tie_word_embeddings": True,
    },
    "7b": {
        "hidden_size": 3584,
        "intermediate_size": 18944,
        "num_hidden_layers": 28,
        "num_attention_heads": 28,
        "num_key_value_heads": 4,
        "vocab_size": 152064,
        "tie_word_embeddings": False,
    },
}


# Qwen3-VL-8B-Instruct (values from its published config.json; DeepStack after ViT blocks 8/16/24).
QWEN3VL_FULL_SIZE = {
    "qwen3vl-8b": {
        "text": {
            "hidden_size": 4096,
            "intermediate_size": 12288,
            "num_hidden_layers": 36,
            "num_attention_heads": 32,
            "num_key_value_heads": 8,
            "head_dim": 128,
            "vocab_size": 151936,
            "max_position_embeddings": 262144,
            "rms_norm_eps": 1e-6,
            "hidden_act": "silu",
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 5e6,
                "mrope_section": [24, 20, 20],
                "mrope_interleaved": True,
            },
        },
        "vision": {
            "depth": 27,
            "hidden_size": 1152,
            "intermediate_size": 4304,
            "num_heads": 16,
            "out_hidden_size": 4096,
            "patch_size": 16,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "num_position_embeddings": 2304,
            "deepstack_visual_indexes": [8, 16, 24],
            "hidden_act": "gelu_pytorch_tanh",
        },
    },
}


def _backbone_of(name: str) -> str:
    return "qwen3-vl" if name in QWEN3VL_FULL_SIZE else "qwen2.5-vl"


_DTYPE_NAMES = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}


@dataclass(frozen=True)
class Row:
    model: str
    weights: str  # bf16 / fp32 / nf4
    adapter: str  # none / prompter+experts / +lora
    weights_mib: float
    peak_mib: float | None
    ttft_s: float
    decode_tok_s: float
    batch: int = 1


def main() -> None:
    args = _parse()
    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but torch sees no CUDA GPU; use --device cpu")
    if device == "cpu":
        torch.set_num_threads(args.threads)
    rows: list[Row] = []
    specs = (
        _tiny_specs() if device == "cpu" else [(name, _full_size_dir(name)) for name in args.models]
    )
    for name, model_dir in specs:
        for quant in ("none", "nf4"):
            rows += _bench_model(name, model_dir, device, quant, args)
            gc.collect()
            if device == "cuda":
                torch.cuda.empty_cache()
    _print(rows, device, args.crop_px)
    if args.json:
        Path(args.json).write_text(json.dumps([r.__dict__ for r in rows], indent=2))


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    p.add_argument(
        "--models",
        default="3b,7b",
        type=lambda s: [m for m in s.split(",") if m],
        help="full-size models on CUDA: 3b,7b (Qwen2.5-VL), qwen3vl-8b (Qwen3-VL-8B)",
    )
    p.add_argument("--crop-px", type=int, default=448, help="crop side in pixels (default 448)")
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--batch", type=int, default=8, help="tiles in the batched grounding run (0 = skip)"
    )
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (CPU mode)")
    p.add_argument("--json", help="also write the rows to this JSON file")
    return p.parse_args()


# --- model directories -----------------------------------------------------------------------
def _tiny_specs() -> list[tuple[str, Path]]:
    from tests.engine.tiny import cached_tiny_model_dir

    return [("tiny qwen2.5-vl", cached_tiny_model_dir("qwen2.5-vl"))]


def _full_size_dir(name: str) -> Path:
    """A saved random-weight Qwen2.5-VL of the named size (built once, then reused)."""
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
    )
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    from tests.engine.tiny import CHAT_TEMPLATE, make_tiny_tokenizer

    if name in QWEN3VL_FULL_SIZE:
        return _qwen3vl_dir(name)
    if name not in FULL_SIZE:
        raise SystemExit(f"unknown model {name!r}; use {', '.join([*FULL_SIZE, *QWEN3VL_FULL_SIZE])}")
    out = CACHE / f"qwen2.5-vl-{name}-random"
    if (out / "config.json").is_file():
        return out
    tokenizer = make_tiny_tokenizer()  # ids only matter for the special tokens below
    ids = {
        t: tokenizer.convert_tokens_to_ids(t)
        for t in ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")
    }
    text = dict(FULL_SIZE[name])
    tie = text.pop("tie_word_embeddings")
    config = Qwen2_5_VLConfig(
        text_config={
            **text,
            "max_position_embeddings": 128000,
            "rms_norm_eps": 1e-6,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 1e6,
                "mrope_section": [16, 24, 24],
            },
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={**_VISION, "out_hidden_size": text["hidden_size"]},
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=tie,
    )
    print(f"building random Qwen2.5-VL-{name} in {out} (once)", flush=True)
    with torch.device("cuda"):
        model = Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(out)
    processor = Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(),
        chat_template=CHAT_TEMPLATE,
    )
    processor.save_pretrained(out)
    del model
    torch.cuda.empty_cache()
    return out


def _qwen3vl_config(name: str, tokenizer):
    """The ``Qwen3VLConfig`` of a :data:`QWEN3VL_FULL_SIZE` model (special token ids of ours)."""
    from transformers import Qwen3VLConfig

    spec = QWEN3VL_FULL_SIZE[name]
    ids = {
        t: tokenizer.convert_tokens_to_ids(t)
        for t in ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")
    }
    return Qwen3VLConfig(
        text_config={**spec["text"], "pad_token_id": tokenizer.pad_token_id,
                     "eos_token_id": tokenizer.eos_token_id},
        vision_config=dict(spec["vision"]),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )


def _qwen3vl_dir(name: str) -> Path:
    """A saved random-weight Qwen3-VL of the named size with its processor (built once)."""
    from transformers import (
        Qwen2VLImageProcessor,
        Qwen3VLForConditionalGeneration,
        Qwen3VLProcessor,
        Qwen3VLVideoProcessor,
    )

    from tests.engine.test_qwen3vl import QWEN3_CHAT_TEMPLATE
    from tests.engine.tiny import make_tiny_tokenizer

    out = CACHE / f"{name}-random"
    if (out / "config.json").is_file():
        return out
    tokenizer = make_tiny_tokenizer()  # ids only matter for the special tokens
    tokenizer.chat_template = QWEN3_CHAT_TEMPLATE
    config = _qwen3vl_config(name, tokenizer)
    print(f"building random {name} in {out} (once)", flush=True)
    with torch.device("cuda"):
        model = Qwen3VLForConditionalGeneration._from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(out)
    size = {"shortest_edge": 65536, "longest_edge": 16777216}  # the published preprocessor's
    image = Qwen2VLImageProcessor(
        size=size, patch_size=16, merge_size=2, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )
    Qwen3VLProcessor(
        image_processor=image,
        tokenizer=tokenizer,
        video_processor=Qwen3VLVideoProcessor(size=size, patch_size=16, merge_size=2),
        chat_template=QWEN3_CHAT_TEMPLATE,
    ).save_pretrained(out)
    del model
    torch.cuda.empty_cache()
    return out


# --- measurements ----------------------------------------------------------------------------
def _bench_model(name: str, model_dir: Path, device: str, quant: str, args) -> list[Row]:
    cfg = EngineConfig(
        backbone=_backbone_of(name),
        model_path=model_dir,
        device=device,
        quant=QuantConfig(mode=quant),
        image=ImageConfig(max_pixels=args.crop_px * args.crop_px),
    )
    placement = resolve_placement(cfg.device, cfg.quant)
    weights = "nf4" if placement.quantize else _DTYPE_NAMES[placement.base_dtype]
    backbone = load_backbone(cfg, placement)
    rows = []
    vlm = SemanticVLM(backbone).eval()
    rows.append(_measure(vlm, name, weights, "none", args, device))
    if cfg.backbone == "qwen3-vl":  # zero-shot only: no adapter modules for this family
        del vlm, backbone
        return rows
    prompter = PrompterConfig()  # N_a = 144 per level, width = D (paper defaults)
    vlm = SemanticVLM.with_adapter_modules(
        backbone, prompter, ExpertConfig(), None, placement.module_dtype
    ).eval()
    rows.append(_measure(vlm, name, weights, "prompter+experts", args, device))
    attach_lora(backbone.decoder, LoraConfig(), placement.module_dtype)
    rows.append(_measure(vlm, name, weights, "+lora", args, device))
    if args.batch:
        rows.append(_measure(vlm, name, weights, "+lora", args, device, batch=args.batch))
    del vlm, backbone
    return rows


def _measure(vlm, name: str, weights: str, adapter: str, args, device: str, batch: int = 1) -> Row:
    rng = np.random.default_rng(0)
    crop = args.crop_px
    images = [rng.integers(0, 256, (crop, crop, 3), dtype=np.uint8) for _ in range(batch)]
    prompts = load_prompt_set(
        _backbone_of(name), "adapter" if vlm.has_adapter_modules else "zero_shot"
    )
    user = prompts.render(Task.GROUND, question="storage tank")
    sample = Sample(
        user_text=user, query_text=user, semantic_texts=("A harbor with storage tanks.",) * 3
    )
    _run(vlm, images, sample, min(4, args.new_tokens))  # warm-up
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    ttfts, rates = [], []
    for _ in range(args.repeats):
        ttft, decode_s = _run(vlm, images, sample, args.new_tokens)
        ttfts.append(ttft)
        rates.append(batch * (args.new_tokens - 1) / decode_s)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None
    size = sum(t.numel() * t.element_size() for t in [*vlm.parameters(), *vlm.buffers()]) / 2**20
    row = Row(
        name, weights, adapter, size, peak, float(np.median(ttfts)), float(np.median(rates)), batch
    )
    print(row, flush=True)
    return row


def _run(vlm, images, sample: Sample, new_tokens: int) -> tuple[float, float]:
    """(time to first token, decode seconds) of one greedy request without early stop."""
    start = time.perf_counter()
    bb = vlm.backbone
    batch = build_batch(bb, bb.preprocess(images), [sample] * len(images), vlm.num_semantic_tokens)
    steps = greedy_steps(vlm, batch, new_tokens, stop_ids=(), pad_id=bb.tokenizer.pad_token_id)
    next(steps)  # .tolist() inside synchronises with the device
    first = time.perf_counter()
    for _ in steps:
        pass
    return first - start, time.perf_counter() - first


def _print(rows: list[Row], device: str, crop_px: int) -> None:
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    print(f"\n## engine benchmark ({device}: {name}, {crop_px}x{crop_px} crop)\n")
    print(
        "| model | weights | adapter | batch | weights MiB | peak VRAM MiB | TTFT s | decode tok/s "
        "| TTFT x | decode x |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    base = {(r.model, r.weights): r for r in rows if r.adapter == "none"}
    for r in rows:
        b = base[(r.model, r.weights)]
        peak = f"{r.peak_mib:.0f}" if r.peak_mib is not None else "n/a"
        ratio_t = r.ttft_s / b.ttft_s
        ratio_d = (r.decode_tok_s / r.batch) / b.decode_tok_s
        print(
            f"| {r.model} | {r.weights} | {r.adapter} | {r.batch} | {r.weights_mib:.0f} | {peak} | "
            f"{r.ttft_s:.3f} | {r.decode_tok_s:.1f} | {ratio_t:.2f} | {ratio_d:.2f} |"
        )
    print(
        "\nTTFT x / decode x: ratio to the same model and weights without adapter (decode x per "
        "sequence; > 1 faster). Expert overhead on decode = 1 - (decode x of prompter+experts)."
    )


if __name__ == "__main__":
    main()
