"""Shrink shipped weights: rewrite a safetensors file with its float tensors in float16."""

from __future__ import annotations

from pathlib import Path

__all__ = ["copy_safetensors_fp16"]


def copy_safetensors_fp16(src: Path, dst: Path) -> Path:
    """Write ``src``'s tensors to ``dst`` with every floating tensor cast to float16.

    Loading casts them back to the model's dtype (``from_pretrained(dtype=...)``, the adapter
    loader's ``copy_``), so only the storage precision changes.
    """
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    tensors, metadata = {}, None
    with safe_open(str(src), framework="pt") as fh:
        metadata = fh.metadata()
        for key in fh.keys():  # noqa: SIM118 (a safe_open handle, not a dict)
            tensor = fh.get_tensor(key)
            tensors[key] = tensor.to(torch.float16) if tensor.is_floating_point() else tensor
    dst.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(dst), metadata=metadata)
    return dst
