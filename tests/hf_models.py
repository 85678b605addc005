"""Tiny randomly initialised GPT-2, Llama and Qwen2 models saved as local Hugging Face directories (model + the
task tokenizer), standing in for pretrained checkpoints that cannot be downloaded here."""
from __future__ import annotations

from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

ARCHITECTURES = ("gpt2", "llama", "qwen2")


def save_tiny_model(architecture: str, tokenizer, directory: Path) -> Path:
    """A 2-layer model of `architecture` with `tokenizer`'s vocabulary, saved with the tokenizer to `directory`."""
    torch.manual_seed(0)
    ids = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
               pad_token_id=tokenizer.pad_token_id, vocab_size=len(tokenizer))
    if architecture == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=64, n_head=2, n_positions=256, **ids))
    else:
        cls, config = (LlamaForCausalLM, LlamaConfig) if architecture == "llama" else (Qwen2ForCausalLM, Qwen2Config)
        model = cls(config(num_hidden_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=4,
                           num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=False, **ids))
    model.save_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory))
    return directory
