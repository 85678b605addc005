"""A language-model simulator: greedy, batched text completion by a local Hugging Face model directory.

The dialogue tasks (Twenty Questions, Guess My City, Car Dealer) answer the agent with a knowledge base or rules by
default; the paper used fine-tuned FLAN-T5-XL / GPT-2-XL models instead. `LanguageModelOracle` is the one place
that loads such a model and completes prompts with it: each task builds its own prompts (the original's) and parses
the completions, and a task's batched environment step gathers every live episode's prompt and calls `complete`
once, so a whole batch of episodes is answered in `ceil(n / batch_size)` generate calls.

Seq2seq models (T5, FLAN-T5, BART) and causal models (GPT-2, Llama, Qwen2, ...) both work: the choice follows the
directory's `config.json` (`is_encoder_decoder`). Causal prompts are left-padded so that every completion starts
right after its prompt. Models load only from a local directory and never run the directory's own code.
"""
from __future__ import annotations

import functools
import os
import re
from collections.abc import Sequence
from pathlib import Path

import torch

from lmrl_lightning.errors import LMRLError
from lmrl_lightning.models.backbone import quiet_weight_loading

__all__ = ["LanguageModelOracle", "shared_oracle"]

FLOAT_DTYPES = ("float32", "bfloat16", "float16")


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")

class LanguageModelOracle:
    """Greedy, batched text completion by a local Hugging Face model directory (seq2seq or causal LM).

    Args:
        model_dir: a directory holding `config.json`, the weights and a tokenizer (as `save_pretrained` writes).
        device: where the model runs ("cpu", "cuda", "cuda:1", ...).
        max_new_tokens: the longest completion, in tokens (the original 20Q oracle used 4, free-form answers ~128).
        batch_size: prompts per `generate` call.
        dtype: the weights' dtype once loaded ("float32", "bfloat16", "float16"); bfloat16 halves a GPU's memory.
    """

    def __init__(
        self,
        model_dir: str | os.PathLike,
        *,
        device: str = "cpu",
        max_new_tokens: int = 32,
        batch_size: int = 32,
        dtype: str = "float32",
    ) -> None:
        if max_new_tokens < 1 or batch_size < 1:
            raise LMRLError(
                f"language-model oracle: max_new_tokens ({max_new_tokens}) and batch_size ({batch_size}) must be >= 1"
            )
        if dtype not in FLOAT_DTYPES:
            raise LMRLError(f"language-model oracle: dtype {dtype!r} is not one of {', '.join(FLOAT_DTYPES)}")
        directory = Path(model_dir)
        if not directory.is_dir():
            raise LMRLError(
                f"language-model oracle: model directory {str(model_dir)!r} does not exist; pass a local directory "
                "written by save_pretrained (models are never downloaded)"
            )
        if not (directory / "config.json").is_file():
            raise LMRLError(f"language-model oracle: {str(directory)!r} holds no config.json; it is not a model directory")
        self.model_dir = directory
        self.device = torch.device(device)
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.tokenizer, self.model = _load(directory, self.device, getattr(torch, dtype))
        self.is_encoder_decoder = bool(self.model.config.is_encoder_decoder)

    def complete(self, prompts: Sequence[str]) -> list[str]:
        """One greedy completion per prompt, in order: the generated text only (never the prompt), special tokens
        dropped and surrounding whitespace stripped. `batch_size` prompts go to each `generate` call."""
        # Tokenizers refuse text that is not valid Unicode (a lone surrogate in an agent's question): such characters
        # become U+FFFD, so any text an agent writes gets an answer.
        prompts = [_LONE_SURROGATE.sub("\ufffd", p) for p in prompts]
        completions: list[str] = []
        for start in range(0, len(prompts), self.batch_size):
            completions.extend(self._complete_batch(prompts[start:start + self.batch_size]))
        return completions

    @torch.inference_mode()
    def _complete_batch(self, prompts: list[str]) -> list[str]:
        encoded = self.tokenizer(prompts, return_tensors="pt", padding=True).to(self.device)
        generated = self.model.generate(**encoded, generation_config=self._generation_config)
        # A causal model returns prompt + completion (prompts left-padded to one length); a seq2seq model returns
        # the decoder's output only, which starts with its decoder-start token (dropped with the special tokens).
        new_tokens = generated if self.is_encoder_decoder else generated[:, encoded["input_ids"].shape[1]:]
        return [text.strip() for text in self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]

    @property
    def _generation_config(self):
        from transformers import GenerationConfig

        # A fresh greedy config: the directory's own generation_config.json may ask for sampling or beams.
        saved = self.model.generation_config
        return GenerationConfig(
            max_new_tokens=self.max_new_tokens,
            do_sample=False,
            num_beams=1,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=saved.eos_token_id if saved.eos_token_id is not None else self.tokenizer.eos_token_id,
            bos_token_id=saved.bos_token_id,
            decoder_start_token_id=saved.decoder_start_token_id,
        )


@functools.lru_cache(maxsize=4)
def shared_oracle(model_dir: str, device: str = "cpu", dtype: str = "float32", batch_size: int = 32,
                  max_new_tokens: int = 32) -> LanguageModelOracle:
    """The oracle of these settings, loaded once per process: every environment, online round and evaluation that
    asks for the same model shares it (and its memory), and a task's batched step answers all of them in one call."""
    return LanguageModelOracle(str(model_dir), device=device, dtype=dtype, batch_size=batch_size,
                               max_new_tokens=max_new_tokens)


def _load(directory: Path, device: torch.device, dtype: torch.dtype):
    """The tokenizer and the model (eval mode, on `device`), loaded locally without remote code; any failure is a
    one-line `LMRLError`."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    source = str(directory)
    try:
        with quiet_weight_loading():
            config = AutoConfig.from_pretrained(source, local_files_only=True, trust_remote_code=False)
            tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True, trust_remote_code=False)
            model_class = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
            model = model_class.from_pretrained(source, local_files_only=True, trust_remote_code=False, dtype=dtype)
    except (OSError, ValueError, KeyError) as error:
        message = " ".join(str(error).split())[:200] or type(error).__name__
        if "trust_remote_code" in message or "custom code" in message:
            message = "it needs to run its own Python code (auto_map), which the oracle never allows"
        raise LMRLError(f"language-model oracle: cannot load {source!r}: {message}") from None
    if tokenizer.pad_token_id is None:  # GPT-2-style tokenizers have no pad token; padding is masked anyway
        if tokenizer.eos_token is None:
            raise LMRLError(f"language-model oracle: the tokenizer in {source!r} has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    # Causal completions must start right after the prompt, so padding goes on the left; an encoder ignores it.
    tokenizer.padding_side = "right" if config.is_encoder_decoder else "left"
    return tokenizer, model.to(device).eval()
