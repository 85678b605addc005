"""LoRA adapters through peft, several on one frozen (possibly quantized) base.

The policy is the adapter named ``default`` (so that a saved adapter directory loads with plain
`PeftModel.from_pretrained`). A value method's trunk is a second adapter on the same base (``value``, and ILQL's
target trunk ``target``), so the base is held in memory once; PPO's reference policy is the base with adapters
disabled. `AdapterView` makes one adapter of the shared model look like a separate model (what a deep copy is
without LoRA): calling it, or its `base_model`, runs the shared model with that adapter active, and its
`parameters()` are that adapter's weights only, so Polyak averaging and `requires_grad_` act on the adapter.

Switching adapters sets each LoRA layer's active adapter directly: peft's `set_adapter` would also mark the
active adapter trainable and the others frozen, and the frozen BC adapter must stay frozen.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator, Optional

import torch
from torch import nn

from lmrl_lightning.errors import LMRLError

POLICY_ADAPTER = "default"


@dataclass
class LoraSettings:
    """LoRA hyper-parameters.

    Args:
        r: rank of the update.
        alpha: scaling numerator (the update is scaled by alpha / r).
        dropout: dropout on the adapter's input.
        target_modules: module names to adapt; default: every linear (or GPT-2 Conv1D) layer inside the
            transformer blocks (attention and MLP), never the output embedding.
    """

    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: Optional[list[str]] = None

    def __post_init__(self) -> None:
        # Checked here because settings also come from files (a checkpoint's or an export's hyper-parameters).
        if not _is_int(self.r) or self.r < 1:
            raise LMRLError(f"backbone.lora.r must be an integer of at least 1, got {self.r!r}")
        if not _is_number(self.alpha) or not 0 < self.alpha < float("inf"):
            raise LMRLError(f"backbone.lora.alpha must be a positive number, got {self.alpha!r}")
        if not _is_number(self.dropout) or not 0 <= self.dropout < 1:
            raise LMRLError(f"backbone.lora.dropout must be in [0, 1), got {self.dropout!r}")
        targets = self.target_modules
        if targets is not None and (not isinstance(targets, list) or not all(isinstance(t, str) for t in targets)):
            raise LMRLError(f"backbone.lora.target_modules must be a list of module names, got {targets!r}")


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _is_conv1d(module: nn.Module) -> bool:
    return type(module).__name__ == "Conv1D"


def default_target_modules(model: nn.Module) -> list[str]:
    """Names (last component) of the linear layers of the transformer blocks: GPT-2's Conv1D c_attn/c_proj/c_fc,
    Llama/Qwen/Mistral's q/k/v/o and gate/up/down projections. 4/8-bit layers subclass nn.Linear."""
    output = model.get_output_embeddings()
    names = {
        name.rsplit(".", 1)[-1]
        for name, m in model.named_modules()
        if (isinstance(m, nn.Linear) or _is_conv1d(m)) and m is not output and "." in name
    }
    if not names:
        raise LMRLError(f"no linear layer to adapt in {type(model).__name__}; set backbone.lora.target_modules")
    return sorted(names)


def lora_config(model: nn.Module, settings: LoraSettings):
    from peft import LoraConfig

    targets = settings.target_modules or default_target_modules(model)
    # GPT-2's Conv1D stores its weight transposed (fan_in x fan_out); quantized, it is a Linear again.
    conv1d = any(_is_conv1d(m) and name.rsplit(".", 1)[-1] in targets for name, m in model.named_modules())
    return LoraConfig(
        r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout, target_modules=targets,
        fan_in_fan_out=conv1d, bias="none",
    )


def add_lora(model: nn.Module, settings: LoraSettings):
    """Inject the policy adapter into `model` in place (base frozen, adapter trainable); returns the PeftModel."""
    from peft import get_peft_model

    return get_peft_model(model, lora_config(model, settings), adapter_name=POLICY_ADAPTER)


def adapter_parameters(model: nn.Module, adapter: str) -> list[tuple[str, nn.Parameter]]:
    """(name, parameter) of one adapter's weights, in module order."""
    marker = f".{adapter}."
    return [(n, p) for n, p in model.named_parameters() if "lora_" in n and marker in n]


def copy_adapter(peft_model, source: str, name: str, trainable: bool) -> None:
    """Add adapter `name` to the shared model with the weights of adapter `source`."""
    peft_model.add_adapter(name, peft_model.peft_config[source])
    src = dict(adapter_parameters(peft_model.base_model.model, source))
    with torch.no_grad():
        for n, p in adapter_parameters(peft_model.base_model.model, name):
            p.copy_(src[n.replace(f".{name}.", f".{source}.")])
            p.requires_grad_(trainable)


def _lora_layers(model: nn.Module) -> list[nn.Module]:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [m for m in model.modules() if isinstance(m, BaseTunerLayer)]


@contextlib.contextmanager
def use_adapter(model: nn.Module, adapter: Optional[str]) -> Iterator[None]:
    """Run `model` with only `adapter` active (None: every adapter off, the base model); gradients flags untouched."""
    layers = getattr(model, "_lmrl_lora_layers", None)
    if layers is None:
        layers = _lora_layers(model)
        object.__setattr__(model, "_lmrl_lora_layers", layers)
    saved = [(m._active_adapter, m._disable_adapters) for m in layers]
    for m in layers:
        if adapter is None:
            m._disable_adapters = True
        else:
            m._active_adapter, m._disable_adapters = [adapter], False
    try:
        yield
    finally:
        for m, (active, disabled) in zip(layers, saved):
            m._active_adapter, m._disable_adapters = active, disabled


class _Switched:
    def __init__(self, fn, model, adapter):
        self.fn, self.model, self.adapter = fn, model, adapter

    def __call__(self, *args, **kwargs):
        with use_adapter(self.model, self.adapter):
            return self.fn(*args, **kwargs)


class AdapterView(nn.Module):
    """One adapter of a shared LoRA model, used as if it were a model of its own (adapter None: the base)."""

    def __init__(self, shared: nn.Module, adapter: Optional[str]):
        super().__init__()
        object.__setattr__(self, "_shared", shared)  # not a submodule: its weights belong to the owner
        self.adapter = adapter

    def forward(self, *args, **kwargs):
        return _Switched(self._shared, self._shared, self.adapter)(*args, **kwargs)

    @property
    def base_model(self) -> _Switched:
        return _Switched(self._shared.base_model, self._shared, self.adapter)

    @property
    def config(self):
        return self._shared.config

    def get_input_embeddings(self) -> nn.Module:
        return self._shared.get_input_embeddings()

    def get_output_embeddings(self) -> nn.Module:
        return self._shared.get_output_embeddings()

    def named_parameters(self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True):
        if self.adapter is None:
            return iter(())
        return iter(adapter_parameters(self._shared, self.adapter))

    def parameters(self, recurse: bool = True):
        return (p for _, p in self.named_parameters())
