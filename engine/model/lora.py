"""LoRA on the LLM decoder through peft's ``inject_adapter_in_model`` (no PeftModel wrapper).

LoRA layers are injected into the decoder stack only (never the vision tower): the target names
(``q_proj`` ... ``down_proj``) match the attention linears and the linears of each layer's
original MLP, also inside an :class:`engine.model.experts.ExpertMLP` wrapper
(``layers.3.mlp.mlp.gate_proj``). Experts are attached first, LoRA second, always in that order, so
parameter names are stable for saving and loading. peft freezes everything but LoRA inside the
decoder; :meth:`engine.model.vlm.SemanticVLM.set_trainable` sets the final trainable groups.

A *task-routed* LoRA (``LoraConfig.tasks``) runs only for those tasks: :func:`route_lora` turns
the injected layers on or off before each request, and a disabled peft LoRA layer computes only
its base layer, so the other tasks get exactly the model without LoRA.
"""

from __future__ import annotations

import torch
from torch import nn

from engine.config import LoraConfig
from engine.errors import MissingDependencyError

__all__ = ["attach_lora", "lora_layers", "lora_parameters", "route_lora"]

LORA_MARKER = "lora_"


def attach_lora(decoder: nn.Module, config: LoraConfig, dtype: torch.dtype) -> None:
    """Inject LoRA (B zero-initialised, so an exact no-op until trained) into ``decoder``."""
    try:
        from peft import LoraConfig as PeftLoraConfig
        from peft import inject_adapter_in_model
    except ImportError as err:
        raise MissingDependencyError("LoRA needs peft: pip install peft==0.21.2") from err
    peft_config = PeftLoraConfig(
        r=config.rank,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=list(config.target_modules),
        bias="none",
    )
    inject_adapter_in_model(peft_config, decoder)
    for param in lora_parameters(decoder).values():
        param.data = param.data.to(dtype)


def lora_parameters(decoder: nn.Module) -> dict[str, nn.Parameter]:
    """LoRA parameters of ``decoder`` by their name relative to it."""
    return {name: p for name, p in decoder.named_parameters() if LORA_MARKER in name}


def lora_layers(decoder: nn.Module) -> list[nn.Module]:
    """The peft LoRA layers injected into ``decoder`` (empty without LoRA)."""
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:
        return []
    return [m for m in decoder.modules() if isinstance(m, LoraLayer)]


def route_lora(decoder: nn.Module, tasks: tuple[str, ...] | None, task: str) -> bool:
    """Enable ``decoder``'s LoRA layers for ``task`` when ``tasks`` is ``None`` or names it,
    disable them otherwise; returns whether LoRA is on. Which parameters train is unchanged
    (peft's ``enable_adapters`` also flips ``requires_grad``; that is undone here)."""
    on = tasks is None or task in tasks
    params = lora_parameters(decoder).values()
    trainable = [p.requires_grad for p in params]
    for layer in lora_layers(decoder):
        if layer.disable_adapters == on:  # only layers in the other state
            layer.enable_adapters(on)
    for param, flag in zip(params, trainable):
        param.requires_grad_(flag)
    return on
