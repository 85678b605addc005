"""The language-model oracle's plumbing on a tiny seq2seq (T5) and a tiny causal (GPT-2) model built here from config
over a locally trained tokenizer: the architecture follows config.json, a batched padded call gives exactly what a
hand-written greedy loop over each unpadded prompt gives, the prompt never appears in the completion, batches are
split at batch_size, and bad directories are one-line errors."""
from __future__ import annotations

import json

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, T5Config, T5ForConditionalGeneration

from lmrl_lightning.errors import LMRLError
from lmrl_lightning.lm_oracle import LanguageModelOracle
from lmrl_lightning.models.tokenizer import train_bpe_tokenizer

PROMPTS = [
    "Answer the question about the object truthfully.\nobject: (Basketball)\nquestion: Is it alive?\nanswer (yes or no): ",
    "Answer the question about the object truthfully.\nobject: (Airplane, Plane)\nquestion: Does it fly?\nanswer (yes or no): ",
    "question: Is it edible?\nanswer: ",
    "Answer the question about the city truthfully.\nobject: jakarta,indonesia\nquestion: What language do people speak?\nanswer: ",
    "Yes.",
]
NEW_TOKENS = 6


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("oracles")
    tokenizer = train_bpe_tokenizer(PROMPTS * 4 + ["Yes. No. yes no"], 320)
    ids = dict(vocab_size=len(tokenizer), eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    t5 = T5ForConditionalGeneration(T5Config(
        d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, decoder_start_token_id=tokenizer.pad_token_id, **ids
    ))
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=4, n_positions=128,
                                      bos_token_id=tokenizer.eos_token_id, **ids))
    dirs = {}
    for name, model in (("t5", t5), ("gpt2", gpt2)):
        model.save_pretrained(str(root / name))
        tokenizer.save_pretrained(str(root / name))
        dirs[name] = root / name
    return dirs


def greedy_by_hand(oracle: LanguageModelOracle, prompt: str) -> str:
    """Argmax decoding of one unpadded prompt with plain forward passes (no `generate`, no padding)."""
    model, tokenizer = oracle.model, oracle.tokenizer
    prompt_ids = torch.tensor([tokenizer.encode(prompt)])
    eos = model.generation_config.eos_token_id
    with torch.no_grad():
        if oracle.is_encoder_decoder:
            out = torch.tensor([[model.config.decoder_start_token_id]])
            for _ in range(NEW_TOKENS):
                logits = model(input_ids=prompt_ids, decoder_input_ids=out).logits
                out = torch.cat([out, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
                if out[0, -1] == eos:
                    break
            new = out[0, 1:]
        else:
            out = prompt_ids
            for _ in range(NEW_TOKENS):
                out = torch.cat([out, model(input_ids=out).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
                if out[0, -1] == eos:
                    break
            new = out[0, prompt_ids.shape[1]:]
    return tokenizer.decode(new, skip_special_tokens=True).strip()


@pytest.mark.parametrize("arch, seq2seq", [("t5", True), ("gpt2", False)])
def test_picks_the_architecture_from_config(model_dirs, arch, seq2seq):
    oracle = LanguageModelOracle(model_dirs[arch])
    assert oracle.is_encoder_decoder is seq2seq
    assert oracle.model.config.model_type == arch and not oracle.model.training
    # causal completions start right after the prompt only when prompts are padded on the left
    assert oracle.tokenizer.padding_side == ("right" if seq2seq else "left")


@pytest.mark.parametrize("arch", ["t5", "gpt2"])
def test_batched_padded_completions_equal_greedy_decoding_of_each_prompt(model_dirs, arch):
    oracle = LanguageModelOracle(model_dirs[arch], max_new_tokens=NEW_TOKENS, batch_size=len(PROMPTS))
    completions = oracle.complete(PROMPTS)
    expected = [greedy_by_hand(oracle, p) for p in PROMPTS]
    assert completions == expected
    assert any(completions)  # a random model still says something; an empty list would pass trivially otherwise
    for prompt, completion in zip(PROMPTS, completions):
        assert prompt.strip() not in completion  # the prompt is not echoed back


@pytest.mark.parametrize("arch", ["t5", "gpt2"])
def test_prompts_are_split_into_generate_calls_of_batch_size(model_dirs, arch, monkeypatch):
    oracle = LanguageModelOracle(model_dirs[arch], max_new_tokens=NEW_TOKENS, batch_size=2)
    calls = []
    generate = oracle.model.generate

    def counting_generate(**kwargs):
        calls.append(kwargs["input_ids"].shape[0])
        return generate(**kwargs)

    monkeypatch.setattr(oracle.model, "generate", counting_generate)
    one_batch = LanguageModelOracle(model_dirs[arch], max_new_tokens=NEW_TOKENS, batch_size=64).complete(PROMPTS)
    assert oracle.complete(PROMPTS) == one_batch  # grouping prompts differently changes nothing
    assert calls == [2, 2, 1]
    assert oracle.complete([]) == []


def test_saved_sampling_settings_do_not_make_it_sample(model_dirs, tmp_path):
    """A directory whose generation_config.json asks for sampling still answers greedily (the same every call)."""
    oracle = LanguageModelOracle(model_dirs["gpt2"], max_new_tokens=NEW_TOKENS)
    oracle.model.generation_config.do_sample = True
    oracle.model.generation_config.temperature = 5.0
    torch.manual_seed(1)
    first = oracle.complete(PROMPTS)
    torch.manual_seed(2)
    assert oracle.complete(PROMPTS) == first == [greedy_by_hand(oracle, p) for p in PROMPTS]


def test_bad_directories_are_one_line_errors(model_dirs, tmp_path):
    with pytest.raises(LMRLError, match="does not exist") as missing:
        LanguageModelOracle(tmp_path / "nowhere")
    with pytest.raises(LMRLError, match="no config.json"):
        LanguageModelOracle(tmp_path)
    with pytest.raises(LMRLError, match="must be >= 1"):
        LanguageModelOracle(model_dirs["t5"], batch_size=0)
    with pytest.raises(LMRLError, match="is not one of"):
        LanguageModelOracle(model_dirs["t5"], dtype="int")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    with pytest.raises(LMRLError, match="cannot load") as unreadable:
        LanguageModelOracle(broken)
    for error in (missing.value, unreadable.value):
        assert "\n" not in str(error)


def test_never_runs_a_directorys_own_code(model_dirs, tmp_path):
    custom = tmp_path / "custom"
    custom.mkdir()
    config = json.loads((model_dirs["gpt2"] / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "configuration_evil.EvilConfig"}
    config["model_type"] = "evil"
    (custom / "config.json").write_text(json.dumps(config))
    (custom / "configuration_evil.py").write_text("raise SystemExit('remote code ran')\n")
    with pytest.raises(LMRLError, match="cannot load"):
        LanguageModelOracle(custom)


def test_text_that_is_not_valid_unicode_still_gets_an_answer(model_dirs):
    """A lone surrogate (an agent can write one) would make the tokenizer raise; it is answered as U+FFFD."""
    oracle = LanguageModelOracle(model_dirs["gpt2"], max_new_tokens=NEW_TOKENS)
    assert oracle.complete(["Is it alive\ud800?"]) == oracle.complete(["Is it alive\ufffd?"])
