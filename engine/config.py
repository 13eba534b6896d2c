"""Typed engine configuration, built once at the edge (``launch.py``, CLIs) and passed down.

Every value the seed paper lost in its text extraction (expert rank r, LoRA rank/alpha/dropout,
top-k, the encoder layers that give the level features) is a field here with a documented default,
never a constant in model code. All configs are frozen dataclasses validated in ``__post_init__``;
errors are :class:`engine.errors.ConfigError` naming the field, the bad value and what is allowed.

Nothing here imports torch: ``import engine`` stays cheap.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from engine.errors import ConfigError
from engine.types import Task

__all__ = [
    "BACKBONE_NAMES",
    "DEFAULT_MODEL_PATHS",
    "EngineConfig",
    "ExpertConfig",
    "GenerationConfig",
    "ImageConfig",
    "LoraConfig",
    "PrompterConfig",
    "QuantConfig",
    "RetrievalConfig",
    "build_config",
]

# Registry of backbone names (implementations live in engine.model.backbones, imported lazily).
BACKBONE_NAMES = ("paper", "qwen2.5-vl", "qwen3-vl")

# Default weights per backbone: names resolve through the normal from_pretrained cache.
DEFAULT_MODEL_PATHS = {
    "qwen2.5-vl": ("Qwen/Qwen2.5-VL-3B-Instruct", None),
    "qwen3-vl": ("Qwen/Qwen3-VL-4B-Instruct", None),
    "paper": ("Qwen/Qwen2.5-7B-Instruct", "google/siglip2-so400m-patch14-384"),
}

DEVICES = ("auto", "cuda", "cpu")
QUANT_MODES = ("auto", "nf4", "none")
COMPUTE_DTYPES = ("bfloat16", "float16", "float32")
EXPERT_ACTIVATIONS = ("gelu", "silu", "identity")
LLM_LINEAR_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _need(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _positive_int(name: str, value: object) -> None:
    _need(
        isinstance(value, int) and not isinstance(value, bool) and value > 0,
        f"{name} must be a positive integer, got {value!r}",
    )


def _choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
    _need(value in allowed, f"{name}={value!r} is not supported; use one of: {', '.join(allowed)}")


def build_config(cls, data: object, where: str):
    """``cls(**data)`` for a parsed file's mapping, unknown and missing keys reported by name."""
    _need(isinstance(data, Mapping), f"{where} must be a mapping, got {type(data).__name__}")
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    _need(not unknown, f"unknown key(s) {unknown} in {where}; known keys: {sorted(names)}")
    try:
        return cls(**data)
    except TypeError as err:
        raise ConfigError(f"{where}: {err}") from None


@dataclass(frozen=True)
class PrompterConfig:
    """Multi-level visual prompter (paper III-A2).

    ``num_tokens`` is N_a, the aggregation tokens per level (paper Table VII: 144), so the LLM sees
    ``L * num_tokens`` semantic-augmented tokens. ``width`` is the internal width (``None`` = the
    LLM hidden size D, as in the paper); a smaller width adds in/out projections and shrinks the
    prompter: about ``5 * (4 + 2 * mlp_ratio) * width**2`` weights in its five transformer blocks
    plus ``width * (2 D + L D_l + D)`` in projections (width = D = 3584 for 7B: ~0.51 B; width =
    1024: ~0.06 B). ``num_heads`` ``None`` picks width // 128 (at least 1, dividing width).
    """

    num_tokens: int = 144
    width: int | None = None
    num_heads: int | None = None
    mlp_ratio: float = 2.0
    max_query_tokens: int = 64
    max_semantic_tokens: int = 384
    dropout: float = 0.0

    def __post_init__(self) -> None:
        _positive_int("prompter.num_tokens", self.num_tokens)
        if self.width is not None:
            _positive_int("prompter.width", self.width)
        if self.num_heads is not None:
            _positive_int("prompter.num_heads", self.num_heads)
            if self.width is not None:
                _need(
                    self.width % self.num_heads == 0,
                    f"prompter.width={self.width} must be divisible by prompter.num_heads="
                    f"{self.num_heads}",
                )
        _need(self.mlp_ratio > 0, f"prompter.mlp_ratio must be > 0, got {self.mlp_ratio!r}")
        _positive_int("prompter.max_query_tokens", self.max_query_tokens)
        _positive_int("prompter.max_semantic_tokens", self.max_semantic_tokens)
        _need(
            0.0 <= self.dropout < 1.0, f"prompter.dropout must be in [0, 1), got {self.dropout!r}"
        )

    def heads_for(self, width: int) -> int:
        """Attention heads for the given internal width."""
        if self.num_heads is not None:
            _need(
                width % self.num_heads == 0, f"prompter width {width} is not divisible by num_heads"
            )
            return self.num_heads
        heads = max(1, width // 128)
        while width % heads:
            heads -= 1
        return heads


@dataclass(frozen=True)
class ExpertConfig:
    """Semantic experts (paper III-B): L low-rank experts D -> r -> D beside the decoder FFN.

    ``rank`` r: the paper's value was lost in the text; 64 is our default (2 * D * r = 458,752
    weights per expert for the 7B LLM, D = 3584). Experts sit in every ``every``-th decoder layer,
    i.e. 0-based layers ``every-1, 2*every-1, ...`` (3, 7, 11, ... for 4), unless ``layers`` lists
    0-based indices explicitly. ``activation`` sits between the two projections.
    """

    rank: int = 64
    every: int = 4
    layers: tuple[int, ...] | None = None
    activation: str = "gelu"

    def __post_init__(self) -> None:
        _positive_int("experts.rank", self.rank)
        _positive_int("experts.every", self.every)
        if self.layers is not None:
            object.__setattr__(self, "layers", tuple(self.layers))
            _need(len(self.layers) > 0, "experts.layers must not be empty (use None for 'every')")
            for i in self.layers:
                _need(
                    isinstance(i, int) and i >= 0, f"experts.layers must be >= 0, got {self.layers}"
                )
            _need(
                len(set(self.layers)) == len(self.layers), f"duplicate experts.layers {self.layers}"
            )
        _choice("experts.activation", self.activation, EXPERT_ACTIVATIONS)

    def layer_indices(self, num_layers: int) -> tuple[int, ...]:
        """0-based decoder layers that get experts, for an LLM with ``num_layers`` layers."""
        if self.layers is None:
            return tuple(range(self.every - 1, num_layers, self.every))
        bad = [i for i in self.layers if i >= num_layers]
        _need(not bad, f"experts.layers {bad} out of range for an LLM with {num_layers} layers")
        return tuple(sorted(self.layers))


@dataclass(frozen=True)
class LoraConfig:
    """LoRA (peft) on the LLM's attention and MLP linears (paper IV-A3; its values were lost).

    Defaults: rank 64, alpha 128 (scale 2), dropout 0.05.

    ``tasks``: the task names (``engine.types.Task`` values) the LoRA runs for; every other
    request runs with the LoRA layers disabled, i.e. exactly the model without LoRA (a
    *task-routed* LoRA, docs/DESIGN.md). ``None`` (the default, and what adapters written before
    this field load as): the LoRA runs for every task.
    """

    rank: int = 64
    alpha: int = 128
    dropout: float = 0.05
    target_modules: tuple[str, ...] = LLM_LINEAR_NAMES
    tasks: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        _positive_int("lora.rank", self.rank)
        _positive_int("lora.alpha", self.alpha)
        _need(0.0 <= self.dropout < 1.0, f"lora.dropout must be in [0, 1), got {self.dropout!r}")
        object.__setattr__(self, "target_modules", tuple(self.target_modules))
        for name in self.target_modules:
            _choice("lora.target_modules entry", name, LLM_LINEAR_NAMES)
        if self.tasks is not None:
            if isinstance(self.tasks, str) or not self.tasks:
                raise ConfigError(
                    f"lora.tasks must be a non-empty list of task names or null (LoRA on every "
                    f"task), got {self.tasks!r}"
                )
            object.__setattr__(self, "tasks", tuple(self.tasks))
            for name in self.tasks:
                _choice("lora.tasks entry", name, tuple(t.value for t in Task))


@dataclass(frozen=True)
class QuantConfig:
    """Weight quantization of the LLM (and optionally the vision tower) with bitsandbytes.

    ``mode``: ``auto`` = 4-bit NF4 on CUDA, unquantized on CPU; ``nf4`` = always NF4 (also on
    CPU, which bitsandbytes >= 0.49 supports); ``none`` = never. ``compute_dtype`` ``None`` means
    bfloat16 on CUDA and float32 on CPU.
    """

    mode: str = "auto"
    double_quant: bool = True
    compute_dtype: str | None = None
    quantize_vision: bool = False

    def __post_init__(self) -> None:
        _choice("quant.mode", self.mode, QUANT_MODES)
        if self.compute_dtype is not None:
            _choice("quant.compute_dtype", self.compute_dtype, COMPUTE_DTYPES)


@dataclass(frozen=True)
class RetrievalConfig:
    """Semantic retriever (paper III-A1): a knowledge base built by ``engine.retrieval``.

    ``kb_dir`` ``None`` disables retrieval. ``top_k``: the paper's k was lost; 3 by default.
    The CLIP embedder is, in order of precedence: a directory saved by ``ClipEmbedder.save``
    (``clip_embedder_dir``), an open_clip architecture + local checkpoint file (``clip_arch`` +
    ``clip_checkpoint``, e.g. RemoteCLIP ``ViT-B-32``), else the embedder recorded in the knowledge
    base's manifest.
    """

    kb_dir: Path | None = None
    clip_arch: str = "ViT-B-32"
    clip_checkpoint: str | None = None
    clip_embedder_dir: Path | None = None
    top_k: int = 3

    def __post_init__(self) -> None:
        if self.kb_dir is not None:
            object.__setattr__(self, "kb_dir", Path(self.kb_dir))
        if self.clip_embedder_dir is not None:
            object.__setattr__(self, "clip_embedder_dir", Path(self.clip_embedder_dir))
        _need(bool(self.clip_arch), "retrieval.clip_arch must be a non-empty open_clip name")
        _positive_int("retrieval.top_k", self.top_k)


@dataclass(frozen=True)
class GenerationConfig:
    """Greedy decoding limits."""

    max_new_tokens: int = 256

    def __post_init__(self) -> None:
        _positive_int("generation.max_new_tokens", self.max_new_tokens)


@dataclass(frozen=True)
class ImageConfig:
    """Image sizing. ``max_pixels``/``min_pixels`` bound the Qwen-VL resize (``None`` = the
    processor's own); the paper backbone uses its vision tower's fixed size. On CUDA OOM the
    request is retried once with the pixel budget multiplied by ``oom_retry_scale``.
    """

    max_pixels: int | None = None
    min_pixels: int | None = None
    oom_retry_scale: float = 0.5

    def __post_init__(self) -> None:
        if self.max_pixels is not None:
            _positive_int("image.max_pixels", self.max_pixels)
        if self.min_pixels is not None:
            _positive_int("image.min_pixels", self.min_pixels)
        if self.max_pixels is not None and self.min_pixels is not None:
            _need(self.min_pixels <= self.max_pixels, f"image.min_pixels > max_pixels: {self}")
        _need(
            0.0 < self.oom_retry_scale < 1.0,
            f"image.oom_retry_scale must be in (0, 1), got {self.oom_retry_scale!r}",
        )


@dataclass(frozen=True)
class EngineConfig:
    """Everything needed to build an :class:`engine.Engine`.

    ``model_path``: a local directory or a hub name resolved through the from_pretrained cache;
    ``None`` picks the backbone's default (``DEFAULT_MODEL_PATHS``). For ``paper`` it is the
    Qwen2.5-Instruct LLM and ``vision_path`` the SigLIP tower; when ``vision_path`` is ``None`` and
    ``model_path`` is a local directory, the directory must hold ``llm/`` and ``vision/``.
    ``level_layers``: 1-based vision encoder blocks whose outputs are the L level features
    (``None`` = about 1/3, 2/3 and the last block). ``adapter_path``: a directory written by
    :func:`engine.model.adapter.save_adapter`; ``None`` runs the backbone zero-shot. ``lora``:
    the LoRA a training run adds to the LLM (``None``: none; a saved adapter brings its own).
    :meth:`from_dict` reads the same fields from a parsed file.
    """

    backbone: str = "qwen2.5-vl"
    model_path: str | Path | None = None
    vision_path: str | Path | None = None
    adapter_path: Path | None = None
    device: str = "auto"
    level_layers: tuple[int, ...] | None = None
    prompter: PrompterConfig = field(default_factory=PrompterConfig)
    experts: ExpertConfig = field(default_factory=ExpertConfig)
    lora: LoraConfig | None = field(default_factory=LoraConfig)
    quant: QuantConfig = field(default_factory=QuantConfig)
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    image: ImageConfig = field(default_factory=ImageConfig)

    def __post_init__(self) -> None:
        _choice("backbone", self.backbone, BACKBONE_NAMES)
        _choice("device", self.device, DEVICES)
        default_model, default_vision = DEFAULT_MODEL_PATHS[self.backbone]
        if self.model_path is None:
            object.__setattr__(self, "model_path", default_model)
            if self.vision_path is None:
                object.__setattr__(self, "vision_path", default_vision)
        _need(str(self.model_path).strip() != "", "model_path must not be empty")
        if self.vision_path is not None and self.backbone != "paper":
            raise ConfigError(
                f"vision_path={str(self.vision_path)!r} only applies to backbone 'paper', "
                f"not {self.backbone!r}; remove it"
            )
        if self.adapter_path is not None:
            object.__setattr__(self, "adapter_path", Path(self.adapter_path))
        if self.level_layers is not None:
            object.__setattr__(self, "level_layers", tuple(self.level_layers))
            _need(len(self.level_layers) >= 1, "level_layers must name at least one encoder block")
            for i in self.level_layers:
                _need(
                    isinstance(i, int) and i >= 1,
                    f"level_layers are 1-based encoder blocks, got {self.level_layers}",
                )
        for name, kind in _SECTIONS.items():
            value = getattr(self, name)
            _need(
                isinstance(value, kind) or (name == "lora" and value is None),
                f"{name} must be a {kind.__name__}, got {type(value).__name__}",
            )

    @classmethod
    def from_dict(cls, data: Mapping, where: str = "engine config") -> EngineConfig:
        """Build from a parsed file (sections as mappings, ``lora: null`` for no LoRA); unknown
        keys are errors that list the known ones."""
        _need(isinstance(data, Mapping), f"{where} must be a mapping, got {type(data).__name__}")
        data = dict(data)
        for name, kind in _SECTIONS.items():
            if isinstance(data.get(name), Mapping):
                data[name] = build_config(kind, data[name], f"{where}.{name}")
        return build_config(cls, data, where)

    def to_dict(self) -> dict:
        """JSON-ready dict (paths as strings); :meth:`from_dict` reads it back."""
        return _jsonable(asdict(self))


# the nested sections of EngineConfig and their types
_SECTIONS = {
    "prompter": PrompterConfig,
    "experts": ExpertConfig,
    "lora": LoraConfig,
    "quant": QuantConfig,
    "retrieval": RetrievalConfig,
    "generation": GenerationConfig,
    "image": ImageConfig,
}


def default_level_layers(num_blocks: int, num_levels: int = 3) -> tuple[int, ...]:
    """1-based encoder blocks at about k/L of the depth, the last one included (27 -> 9, 18, 27)."""
    layers = tuple(
        max(1, math.floor(num_blocks * (k + 1) / num_levels + 0.5)) for k in range(num_levels)
    )
    if len(set(layers)) != len(layers):
        raise ConfigError(
            f"{num_blocks} encoder blocks are too few for {num_levels} distinct levels"
        )
    return layers


def _jsonable(value: object) -> object:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value
