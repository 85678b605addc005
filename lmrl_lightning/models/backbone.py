"""Backbone factory: a tiny GPT-2 built from config with the task's tokenizer, a local HF directory, or a hub id."""
from __future__ import annotations

import contextlib
import functools
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Literal, Optional

import torch
from safetensors import SafetensorError
from transformers import (
    AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, PreTrainedModel,
)

from lmrl_lightning.errors import LMRLError
from lmrl_lightning.models.lora import LoraSettings
from lmrl_lightning.models.tokenizer import end_of_turn_id


@dataclass(frozen=True)
class Preset:
    """A model built from config and trained from scratch: GPT-2 blocks (learned absolute positions) or Llama blocks
    (rotary positions, RMSNorm, SwiGLU), `layers` x `width` with `heads` heads and a 4 x `width` MLP."""

    architecture: Literal["gpt2", "llama"]
    layers: int
    width: int
    heads: int


# Sizes for CPU training. The rotary ("-rope") presets learn position-aligned rules faster: Wordle's feedback
# sits at fixed offsets from the letters it grades (benchmarks/learning_capacity.py).
TINY_PRESETS: dict[str, Preset] = {
    "tiny": Preset("gpt2", layers=2, width=128, heads=4),
    "small": Preset("gpt2", layers=4, width=256, heads=4),
    "tiny-rope": Preset("llama", layers=2, width=128, heads=4),
    "small-rope": Preset("llama", layers=4, width=256, heads=4),
}


DTYPES = ("float32", "bfloat16", "float16")
# The shortest context a model may have: one observation plus one generated turn (policies generate up to 16
# tokens a turn), so that a rollout never runs past the position embeddings.
MIN_POSITIONS = 32

# A directory holds a tokenizer when it has one of these (fast, slow SentencePiece, or BPE vocabulary files).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


class BackboneError(LMRLError):
    """A model or tokenizer that cannot be loaded; the message says what to pass instead."""


@dataclass
class BackboneConfig:
    """Which language model to train.

    Args:
        name_or_path: a preset built from config (``tiny``, ``small``: GPT-2; ``tiny-rope``, ``small-rope``: the
            same sizes with Llama blocks and rotary positions; see `TINY_PRESETS`), a local Hugging Face model directory,
            or a hub id (only when it is already in the local cache: these machines have no network).
        tokenizer: tokenizer directory; required for presets (``lmrl data`` writes one beside the data),
            defaults to the model directory otherwise.
        max_positions: context length of a preset model.
        dropout: dropout of a preset model (residual, attention, embedding; the rotary presets: attention only).
        dtype: parameter dtype of the backbone (``float32``, ``bfloat16``, ``float16``).
        trust_remote_code: allow a model directory to run its own code (off unless you trust it).
        lora: train LoRA adapters (peft) instead of every weight; the base stays frozen.
        quantization: load the base in ``4bit`` (NF4) or ``8bit`` through bitsandbytes (needs lora and a model
            directory: quantized weights are not trained).
        gradient_checkpointing: recompute activations in the backward pass (less memory, slower).
        quantized_device: where a 4/8-bit base is loaded (bitsandbytes quantizes it there and it stays): default
            the current CUDA device when there is one, else the CPU. Other bases are placed by the Trainer.
    """

    name_or_path: str = "tiny"
    tokenizer: Optional[str] = None
    max_positions: int = 512
    dropout: float = 0.0
    dtype: str = "float32"
    trust_remote_code: bool = False
    lora: Optional[LoraSettings] = None
    quantization: Optional[Literal["4bit", "8bit"]] = None
    gradient_checkpointing: bool = False
    quantized_device: Optional[str] = None

    def __post_init__(self) -> None:
        if isinstance(self.lora, dict):  # as stored in a checkpoint's hyper-parameters
            try:
                self.lora = LoraSettings(**self.lora)
            except TypeError as e:
                raise BackboneError(f"backbone.lora: {e}") from None
        self._check_fields()
        if self.quantization not in (None, "4bit", "8bit"):
            raise BackboneError(f"backbone.quantization {self.quantization!r}: valid: 4bit, 8bit (or none)")
        if self.quantization and self.lora is None:
            raise BackboneError(
                f"backbone.quantization {self.quantization!r} needs backbone.lora: 4/8-bit weights are not trained"
            )
        if self.quantization and self.is_preset:
            raise BackboneError(
                f"backbone.quantization needs a model directory, not the preset {self.name_or_path!r} "
                "(save it with save_pretrained first)"
            )

    def _check_fields(self) -> None:
        # Checked here, not only by the CLI's type hints: configs also come from files (checkpoints, exports).
        for field, optional in (("name_or_path", False), ("tokenizer", True), ("quantized_device", True)):
            value = getattr(self, field)
            if not (isinstance(value, str) and value) and not (optional and value is None):
                raise BackboneError(f"backbone.{field} must be a non-empty string, got {value!r}")
        for field in ("trust_remote_code", "gradient_checkpointing"):
            if not isinstance(getattr(self, field), bool):
                raise BackboneError(f"backbone.{field} must be true or false, got {getattr(self, field)!r}")
        positions = self.max_positions
        if not isinstance(positions, int) or isinstance(positions, bool) or positions < MIN_POSITIONS:
            raise BackboneError(
                f"backbone.max_positions must be an integer of at least {MIN_POSITIONS} (one observation and one "
                f"generated turn), got {positions!r}"
            )
        dropout = self.dropout
        if not isinstance(dropout, (int, float)) or isinstance(dropout, bool) or not 0 <= dropout < 1:
            raise BackboneError(f"backbone.dropout must be in [0, 1), got {dropout!r}")
        if self.dtype not in DTYPES:
            raise BackboneError(f"backbone.dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.lora is not None and not isinstance(self.lora, LoraSettings):
            raise BackboneError(f"backbone.lora must be LoRA settings (r, alpha, ...) or null, got {self.lora!r}")

    @property
    def is_preset(self) -> bool:
        return self.name_or_path in TINY_PRESETS


def load_tokenizer(config: BackboneConfig):
    """Load the tokenizer and check that a newline (end of turn) is a single token."""
    source = config.tokenizer or (None if config.is_preset else config.name_or_path)
    if source is None:
        raise BackboneError(
            f"preset model {config.name_or_path!r} needs backbone.tokenizer: the tokenizer directory written by "
            "`lmrl data` beside the dataset"
        )
    if not Path(source).is_dir() and (config.tokenizer is not None or _looks_like_path(source)):
        what = "tokenizer" if config.tokenizer is not None else "model"
        raise BackboneError(f"{what} directory {source!r} does not exist")
    if Path(source).is_dir() and not any((Path(source) / f).is_file() for f in TOKENIZER_FILES):
        raise BackboneError(
            f"directory {source!r} holds no tokenizer ({', '.join(TOKENIZER_FILES)}); save one there or pass "
            "backbone.tokenizer"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            source, local_files_only=True, trust_remote_code=config.trust_remote_code
        )
    except (OSError, ValueError) as e:
        _refuse_remote_code(source, e)
        raise BackboneError(f"cannot load a tokenizer from {source!r}: {_one_line(e)}") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    end_of_turn_id(tokenizer)
    return tokenizer


def build_backbone(config: BackboneConfig, tokenizer) -> PreTrainedModel:
    """Build a preset from config or load a causal LM from a local directory / the local hub cache, quantized and
    prepared for k-bit training when asked (LoRA adapters are added by the algorithm module)."""
    model = _load_model(config, tokenizer)
    if config.quantization:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=config.gradient_checkpointing)
        _keep_4bit_weights_trainable_on_cpu(model)
    elif config.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    # from_pretrained returns eval mode and Lightning keeps module modes: a pretrained model would train without
    # its dropout. Training mode, as a preset starts; evaluation and rollouts switch to eval mode themselves.
    return model.train()


def _keep_4bit_weights_trainable_on_cpu(model: PreTrainedModel) -> None:
    # On CPUs with AVX512-BF16 a Linear4bit run in eval mode repacks its weight, and the next training forward
    # fails ("a view of a leaf Variable ... in-place operation"): the rollout-then-train cycle. See stack-notes.
    try:
        import bitsandbytes as bnb
    except ImportError:
        return
    for m in model.modules():
        if isinstance(m, bnb.nn.Linear4bit):
            m.support_avx512bf16_for_cpu = False


def _quantized_loading_arguments(config: BackboneConfig, dtype: torch.dtype) -> dict:
    # A quantized model is placed while it loads: all of it on one device (the current GPU by default).
    quantization_config = _quantization_config(config, dtype)
    device = config.quantized_device
    if device is None:
        device = f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu"
    return {"quantization_config": quantization_config, "device_map": {"": device}}


def _quantization_config(config: BackboneConfig, dtype: torch.dtype):
    from transformers import BitsAndBytesConfig

    if config.quantization == "4bit":
        return BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype, bnb_4bit_use_double_quant=True
        )
    return BitsAndBytesConfig(load_in_8bit=True)


def _load_model(config: BackboneConfig, tokenizer) -> PreTrainedModel:
    dtype = getattr(torch, config.dtype)
    if config.is_preset:
        return _preset_model(config, tokenizer).to(dtype)
    return _load_local_model(config, dtype)


def _preset_model(config: BackboneConfig, tokenizer) -> PreTrainedModel:
    """A randomly initialised model of the preset's architecture and size over the task tokenizer's vocabulary."""
    preset = TINY_PRESETS[config.name_or_path]
    ids = dict(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    if preset.architecture == "llama":  # Llama blocks have attention dropout only
        return LlamaForCausalLM(LlamaConfig(
            hidden_size=preset.width, num_hidden_layers=preset.layers, num_attention_heads=preset.heads,
            intermediate_size=4 * preset.width, max_position_embeddings=config.max_positions,
            attention_dropout=config.dropout, tie_word_embeddings=True, **ids,
        ))
    return GPT2LMHeadModel(GPT2Config(
        n_layer=preset.layers, n_embd=preset.width, n_head=preset.heads, n_positions=config.max_positions,
        resid_pdrop=config.dropout, embd_pdrop=config.dropout, attn_pdrop=config.dropout,
        # the fused tanh-GELU: same function as GPT-2's "gelu_new", several times faster on CPU
        activation_function="gelu_pytorch_tanh", **ids,
    ))


def _load_local_model(config: BackboneConfig, dtype: torch.dtype) -> PreTrainedModel:
    """A model directory (never a download), quantized when configured; failures are one-line `BackboneError`s."""
    if _looks_like_path(config.name_or_path) and not Path(config.name_or_path).is_dir():
        raise BackboneError(f"model directory {config.name_or_path!r} does not exist")
    try:
        extra = _quantized_loading_arguments(config, dtype) if config.quantization else {}
        with quiet_weight_loading():
            return AutoModelForCausalLM.from_pretrained(
                config.name_or_path,
                local_files_only=True,
                dtype=dtype,
                trust_remote_code=config.trust_remote_code,
                **extra,
            )
    except SafetensorError as e:
        raise BackboneError(
            f"the weights of model {config.name_or_path!r} cannot be read ({e}); the file may be truncated"
        ) from None
    except (OSError, ValueError) as e:
        _refuse_remote_code(config.name_or_path, e)
        raise BackboneError(
            f"model {config.name_or_path!r} cannot be loaded locally ({_one_line(e)}); pass a local model "
            f"directory or a preset ({', '.join(TINY_PRESETS)})"
        ) from None


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())[:200] or type(error).__name__


def _refuse_remote_code(source: str, error: Exception) -> None:
    """transformers' refusal to run a directory's own code (auto_map), as a one-line error saying who may allow it."""
    if "trust_remote_code" in str(error) or "custom code" in str(error):
        raise BackboneError(
            f"{source!r} needs to run its own Python code (auto_map), which is off: allow it only if you trust that "
            "code, with --trust-remote-code (lmrl eval/export) or backbone.trust_remote_code in your config"
        ) from None


@contextlib.contextmanager
def quiet_weight_loading() -> Iterator[None]:
    # transformers draws a "Loading weights" bar on stderr, which would come before `lmrl`'s one-line errors.
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def _looks_like_path(name: str) -> bool:
    # A hub id is "name" or "org/name"; anything else is meant as a local directory.
    return name.startswith((".", "/", "~")) or name.count("/") > 1


def bitsandbytes_precision(module: torch.nn.Module, mode: str = "nf4-dq", dtype: Optional[torch.dtype] = None):
    """Lightning's `BitsandbytesPrecision` plugin for an lmrl module (CUDA only): it quantizes the frozen base's
    `nn.Linear` layers when the Trainer sets up, never a LoRA adapter or a head. (GPT-2's blocks are Conv1D, which
    the plugin leaves alone: load such models with `backbone.quantization` instead, which works on CPU too.)

        Trainer(plugins=[bitsandbytes_precision(module)], accelerator="gpu")
    """
    if not torch.cuda.is_available():
        raise LMRLError(
            "Lightning's bitsandbytes precision plugin needs a CUDA GPU; on CPU set backbone.quantization (4bit/8bit)"
        )
    from lightning.pytorch.plugins import BitsandbytesPrecision

    keep = {
        name for name, m in module.named_modules()
        if isinstance(m, torch.nn.Linear) and ("lora_" in name or not name.startswith("model."))
    }
    return BitsandbytesPrecision(mode, dtype, ignore_modules=keep)


@functools.cache
def _cache_argument() -> str:
    # Read off one model class: wrappers (peft, adapter views) take **kwargs, so their signatures cannot say.
    return "cache" if "cache" in inspect.signature(GPT2LMHeadModel.forward).parameters else "past_key_values"


def forward_with_cache(model: torch.nn.Module, cache: Any, **inputs) -> tuple[Any, Any]:
    """`model(**inputs)` continuing from the KV `cache` (None: none yet); returns the output and the new cache.

    transformers 5.2x renamed the forward's `past_key_values` argument and output to `cache`; this takes either,
    so the kit runs on the version a GPU image ships as well as on our pin.
    """
    out = model(**inputs, **{_cache_argument(): cache}, use_cache=True)
    # Not out.get("cache", out.get(...)): reading the old key logs a deprecation warning on the new versions.
    return out, out["cache"] if "cache" in out else out.get("past_key_values")
