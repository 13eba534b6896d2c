"""CLIP embeddings for the knowledge base: open_clip text tower for texts, image tower for crops.

Both towers return L2-normalised float32 vectors, so cosine similarity is the inner product the
faiss index computes. Any open_clip architecture works with a *local* checkpoint file; nothing
is ever downloaded.

Remote-sensing CLIPs ship open_clip-format checkpoints; pass the architecture they were trained
with and the file you downloaded yourself::

    # RemoteCLIP (huggingface.co/chendelong/RemoteCLIP): RN50, ViT-B-32, ViT-L-14
    ClipEmbedder.from_pretrained("ViT-B-32", "checkpoints/RemoteCLIP-ViT-B-32.pt")
    # GeoRSCLIP (huggingface.co/Zilun/GeoRSCLIP): ViT-B-32, ViT-L-14, ViT-H-14
    ClipEmbedder.from_pretrained("ViT-B-32", "checkpoints/RS5M_ViT-B-32.pt")
    # the same from the command line
    python -m engine.retrieval build --model ViT-B-32 --checkpoint RemoteCLIP-ViT-B-32.pt ...

A checkpoint that does not fit the architecture raises :class:`~engine.errors.ConfigError` with
open_clip's first mismatch. ``checkpoint=None`` builds a *randomly initialised* model from a
fixed seed (tests, timing); its retrievals are meaningless and a warning says so.

:meth:`ClipEmbedder.save` / :meth:`ClipEmbedder.load` store a model built from a config dict
(a tiny CLIP trained by the project, the demo model) as ``open_clip_config.json`` +
``open_clip_model.safetensors``, the layout open_clip itself reads with ``local-dir:``.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import ConfigError, InputError, WeightsNotFoundError
from engine.retrieval._deps import import_open_clip, import_torch
from engine.retrieval._fs import atomic_directory, sha256_file
from engine.retrieval._open_clip import (
    check_arch,
    existing_checkpoint,
    jsonable,
    mismatch_error,
    model_from_config,
    preprocess_cfg_for,
    seeded,
    tokenizer_for,
    weights_digest,
)

__all__ = ["ClipEmbedder"]

log = logging.getLogger(__name__)

CONFIG_FILE = "open_clip_config.json"
WEIGHTS_FILE = "open_clip_model.safetensors"
RANDOM_INIT_WARNING = (
    "using a RANDOMLY INITIALISED CLIP ({what}): embeddings carry no meaning and retrieved "
    "descriptions are arbitrary; pass a real checkpoint (e.g. RemoteCLIP-ViT-B-32.pt) for real use"
)


class ClipEmbedder:
    """An open_clip model with its tokenizer and image preprocess; build it with a classmethod."""

    def __init__(
        self,
        model: Any,
        tokenizer: Callable[[list[str]], Any],
        preprocess: Callable[[Any], Any],
        name: str,
        *,
        spec: dict | None = None,
        model_cfg: dict | None = None,
    ) -> None:
        if not (hasattr(model, "encode_text") and hasattr(model, "encode_image")):
            raise ConfigError(
                f"ClipEmbedder needs an open_clip CLIP-like model, got {type(model).__name__}"
            )
        if not name:
            raise ConfigError("ClipEmbedder needs a non-empty name identifying the embedding model")
        self.model = model  # left in its train/eval mode; embedding runs in eval mode
        self.tokenizer = tokenizer
        self.preprocess = preprocess
        self.name = name
        self.spec = spec or {"kind": "model", "name": name}  # how the CLI can rebuild it
        self._model_cfg = copy.deepcopy(model_cfg)
        self.dim = self._probe_dim()

    def __repr__(self) -> str:
        return f"ClipEmbedder(name={self.name!r}, dim={self.dim})"

    @property
    def device(self) -> str:
        return str(next(self.model.parameters()).device)

    # ----------------------------------------------------------------------------- constructors

    @classmethod
    def from_pretrained(
        cls, arch: str, checkpoint: str | Path | None, device: str = "cpu", *, seed: int = 0
    ) -> ClipEmbedder:
        """open_clip architecture ``arch`` (e.g. ``"ViT-B-32"``) with weights from a local file.

        ``checkpoint=None`` gives a random init from ``seed`` (deterministic, so a KB built with
        it can be queried again). Name: ``arch@sha256-prefix`` of the checkpoint file.
        """
        open_clip = import_open_clip()
        check_arch(open_clip, arch)
        if checkpoint is None:
            log.warning(RANDOM_INIT_WARNING.format(what=arch))
            with seeded(seed):
                model, _, preprocess = open_clip.create_model_and_transforms(
                    arch,
                    pretrained=None,
                    device=device,
                    pretrained_image=False,
                    pretrained_text=False,
                )
            name = f"{arch}@random-seed{seed}-{weights_digest(model)[:12]}"
            spec = {"kind": "open_clip", "arch": arch, "checkpoint": None, "seed": seed}
        else:
            path = existing_checkpoint(checkpoint)
            try:
                model, _, preprocess = open_clip.create_model_and_transforms(
                    arch, pretrained=str(path), device=device
                )
            except RuntimeError as exc:
                raise mismatch_error(path, arch, exc) from exc
            except OSError as exc:  # e.g. an HF text tower whose config is not in the local cache
                raise ConfigError(f"open_clip could not build {arch} offline: {exc}") from exc
            name = f"{arch}@{sha256_file(path)[:12]}"
            spec = {
                "kind": "open_clip",
                "arch": arch,
                "checkpoint": str(path.resolve()),
                "seed": seed,
            }
        return cls(model, open_clip.get_tokenizer(arch), preprocess, name, spec=spec)

    @classmethod
    def from_model(
        cls,
        model: Any,
        tokenizer: Callable,
        preprocess: Callable,
        name: str,
        *,
        model_cfg: dict | None = None,
    ) -> ClipEmbedder:
        """Wrap a built open_clip ``CLIP``/``CustomTextCLIP``; ``model_cfg`` allows :meth:`save`."""
        return cls(model, tokenizer, preprocess, name, model_cfg=model_cfg)

    @classmethod
    def from_config(
        cls,
        model_cfg: dict,
        *,
        state_dict: dict | None = None,
        checkpoint: str | Path | None = None,
        name: str | None = None,
        preprocess_cfg: dict | None = None,
        device: str = "cpu",
        seed: int = 0,
    ) -> ClipEmbedder:
        """A CLIP from an open_clip model config dict (``embed_dim``, ``vision_cfg``, ``text_cfg``).

        Weights: ``state_dict``, else a ``checkpoint`` file, else a random init from ``seed``.
        Default name: ``config@`` + digest of config and weights.
        """
        open_clip = import_open_clip()
        model = model_from_config(open_clip, model_cfg, seed).to(device)
        if state_dict is not None:
            model.load_state_dict(state_dict, strict=True)
        elif checkpoint is not None:
            path = existing_checkpoint(checkpoint)
            try:
                open_clip.load_checkpoint(model, str(path), strict=True)
            except RuntimeError as exc:
                raise mismatch_error(path, "the given model config", exc) from exc
        else:
            log.warning(RANDOM_INIT_WARNING.format(what="model config"))
        preprocess_cfg = preprocess_cfg_for(open_clip, model, preprocess_cfg)
        from open_clip.transform import PreprocessCfg, image_transform_v2

        preprocess = image_transform_v2(PreprocessCfg(**preprocess_cfg), is_train=False)
        digest = hashlib.sha256(
            json.dumps(model_cfg, sort_keys=True).encode() + weights_digest(model).encode()
        )
        name = name or f"config@{digest.hexdigest()[:12]}"
        spec = {
            "kind": "config",
            "model_cfg": model_cfg,
            "checkpoint": None if checkpoint is None else str(Path(checkpoint).resolve()),
            "seed": seed,
        }
        if state_dict is not None:
            spec = {"kind": "model", "name": name}  # in-memory weights: the CLI cannot rebuild it
        return cls(
            model,
            tokenizer_for(open_clip, model_cfg),
            preprocess,
            name,
            spec=spec,
            model_cfg=model_cfg,
        )

    @classmethod
    def load(cls, directory: str | Path, device: str = "cpu") -> ClipEmbedder:
        """An embedder written by :meth:`save` (config JSON + safetensors weights)."""
        directory = Path(directory)
        config_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
        for path in (config_path, weights_path):
            if not path.is_file():
                raise WeightsNotFoundError(
                    f"no {path.name} in {directory}; save an embedder there with ClipEmbedder.save"
                )
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
            model_cfg, name = config["model_cfg"], config["geolens"]["name"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ConfigError(
                f"{config_path} is not a GeoLens embedder config ({exc}); save it again"
            ) from exc
        from safetensors.torch import load_file

        embedder = cls.from_config(
            model_cfg,
            state_dict=load_file(str(weights_path), device=device),
            name=name,
            preprocess_cfg=config.get("preprocess_cfg"),
            device=device,
        )
        embedder.spec = {"kind": "saved", "path": str(directory.resolve())}
        return embedder

    @classmethod
    def from_spec(cls, spec: dict, device: str = "cpu") -> ClipEmbedder:
        """Rebuild the embedder a knowledge-base manifest recorded (see :attr:`spec`)."""
        kind = spec.get("kind")
        if kind == "open_clip":
            return cls.from_pretrained(
                spec["arch"], spec["checkpoint"], device, seed=spec.get("seed", 0)
            )
        if kind == "config":
            return cls.from_config(
                spec["model_cfg"], checkpoint=spec["checkpoint"], device=device, seed=spec["seed"]
            )
        if kind == "saved":
            return cls.load(spec["path"], device)
        raise ConfigError(
            f"the embedder recorded as {spec!r} was built in memory and cannot be rebuilt; "
            "pass --model/--model-config/--embedder explicitly"
        )

    def save(self, directory: str | Path) -> Path:
        """Write config + weights to ``directory`` (atomically); needs a config-built model."""
        if self._model_cfg is None:
            raise ConfigError(
                f"embedder {self.name!r} has no model config, so it cannot be saved; build it with "
                "ClipEmbedder.from_config or pass model_cfg= to from_model"
            )
        from open_clip import get_model_preprocess_cfg
        from safetensors.torch import save_file

        config = {
            "model_cfg": self._model_cfg,
            "preprocess_cfg": jsonable(get_model_preprocess_cfg(self.model)),
            "geolens": {"name": self.name, "format": 1},
        }
        weights = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        with atomic_directory(Path(directory), replace=True, marker=CONFIG_FILE) as tmp:
            (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2), encoding="utf-8")
            save_file(weights, str(tmp / WEIGHTS_FILE))
        return Path(directory)

    # ------------------------------------------------------------------------------- embedding

    def embed_texts(
        self, texts: Sequence[str], batch_size: int = 256, progress: bool = False
    ) -> np.ndarray:
        """(N, dim) float32 L2-normalised text-tower embeddings of ``texts``."""
        torch = import_torch()
        chunks = [np.zeros((0, self.dim), dtype=np.float32)]
        with _eval_mode(self.model), torch.inference_mode(), _progress(len(texts), progress) as bar:
            for start in range(0, len(texts), batch_size):
                tokens = self.tokenizer(list(texts[start : start + batch_size])).to(
                    self.device
                )  # (B, ctx)
                chunks.append(self._normalised(self.model.encode_text(tokens)))  # (B, dim)
                bar.update(len(chunks[-1]))
        return np.concatenate(chunks, axis=0)

    def _probe_dim(self) -> int:
        torch = import_torch()
        with _eval_mode(self.model), torch.inference_mode():
            return int(self.model.encode_text(self.tokenizer(["a"]).to(self.device)).shape[-1])

    def embed_images(self, images: Sequence[np.ndarray], batch_size: int = 32) -> np.ndarray:
        """(N, dim) float32 L2-normalised image-tower embeddings of RGB uint8 HxWx3 arrays."""
        from PIL import Image

        torch = import_torch()
        for i, image in enumerate(images):
            _check_image(i, image)
        chunks = [np.zeros((0, self.dim), dtype=np.float32)]
        with _eval_mode(self.model), torch.inference_mode():
            for start in range(0, len(images), batch_size):
                pixels = [
                    self.preprocess(Image.fromarray(img))
                    for img in images[start : start + batch_size]
                ]
                batch = torch.stack(pixels).to(self.device)  # (B, 3, S, S)
                chunks.append(self._normalised(self.model.encode_image(batch)))
        return np.concatenate(chunks, axis=0)

    @staticmethod
    def _normalised(features: Any) -> np.ndarray:
        import torch.nn.functional as F

        return F.normalize(features.float(), dim=-1).cpu().numpy().astype(np.float32, copy=False)


# --------------------------------------------------------------------------------------- helpers


def _progress(total: int, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, unit=" texts", disable=not enabled, desc="embedding", leave=False)


@contextlib.contextmanager
def _eval_mode(model: Any) -> Iterator[None]:
    """``model.eval()`` for the block, then back to its previous mode (a model may be training)."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _check_image(i: int, image: np.ndarray) -> None:
    if (
        not isinstance(image, np.ndarray)
        or image.dtype != np.uint8
        or image.ndim != 3
        or image.shape[2] != 3
    ):
        shape, dtype = np.shape(image), getattr(image, "dtype", "no dtype")
        seen = f"{type(image).__name__} of shape {shape} and dtype {dtype}"
        raise InputError(
            f"image {i} must be an RGB uint8 array of shape (H, W, 3), got {seen}; convert it first"
        )
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise InputError(f"image {i} is empty (shape {image.shape})")
