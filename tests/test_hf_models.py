"""Real-model paths on tiny local GPT-2, Llama and Qwen2 directories: loading with their own tokenizer, LoRA on the
right modules, 4-bit and 8-bit bases (bitsandbytes on CPU), one step of BC and ILQL and a rollout-then-train PPO
cycle each, with the base never receiving a gradient; bad model directories are one-line errors."""
from __future__ import annotations

import lightning as L
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from hf_models import ARCHITECTURES, save_tiny_model
from lmrl_lightning.algorithms import BC, ILQL, PPO, ILQLValueLearning, Optimisation, Rollouts, Updates
from lmrl_lightning.data.datamodule import EpisodeDataModule
from lmrl_lightning.env import Text
from lmrl_lightning.errors import LMRLError
from lmrl_lightning.models.backbone import BackboneConfig, BackboneError, build_backbone, load_tokenizer
from lmrl_lightning.models.lora import POLICY_ADAPTER, LoraSettings, adapter_parameters
from lmrl_lightning.models.tokenizer import end_of_turn_id, train_bpe_tokenizer
from lmrl_lightning.policies import Decoding
from word_choice import BAD, GOOD, PROMPT, bc_checkpoint

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*MatMul8bitLt.*"),
    pytest.mark.filterwarnings("ignore:.*IterableDataset.*"),
    pytest.mark.filterwarnings("ignore:.*val_dataloader.*"),
]
FAST = Optimisation(lr=1e-2)
QUIET = dict(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
             enable_model_summary=False)


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    tokenizer = train_bpe_tokenizer([PROMPT, GOOD, BAD] * 8, 300)
    bc_checkpoint(root)  # writes root / "words.jsonl"
    dirs = {arch: save_tiny_model(arch, tokenizer, root / arch) for arch in ARCHITECTURES}
    return {"root": root, **dirs}


def snapshot(module, keep) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone().float() for n, p in module.named_parameters() if keep(n)} | {
        n: b.detach().clone().float() for n, b in module.named_buffers() if keep(n)
    }


def changed(before, module) -> set[str]:
    now = dict(module.named_parameters()) | dict(module.named_buffers())
    return {n for n, v in before.items() if not torch.equal(v, now[n].detach().float())}


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_loads_each_architecture_with_its_tokenizer(model_dirs, arch):
    config = BackboneConfig(str(model_dirs[arch]))
    tokenizer = load_tokenizer(config)
    model = build_backbone(config, tokenizer)
    assert model.config.model_type == arch
    assert all(m.training for m in model.modules())  # from_pretrained's eval mode would switch dropout off
    assert tokenizer.decode([end_of_turn_id(tokenizer)]) == "\n"
    ids = torch.tensor([tokenizer.encode(PROMPT + GOOD)])
    assert model(input_ids=ids).logits.shape == (1, ids.shape[1], len(tokenizer))


@pytest.mark.parametrize("preset, model_type", [("tiny", "gpt2"), ("tiny-rope", "llama"), ("small-rope", "llama")])
def test_presets_build_their_architecture_and_decode(model_dirs, preset, model_type):
    """Presets are built from config over the task tokenizer: GPT-2 blocks, or Llama blocks with rotary positions
    at the same size (about the same parameter count), and either decodes through the cached policy."""
    module = BC(backbone=BackboneConfig(preset, tokenizer=str(model_dirs["gpt2"]), max_positions=64, dropout=0.1))
    assert module.model.config.model_type == model_type and module.model.training
    width = 256 if preset.startswith("small") else 128
    assert module.model.get_input_embeddings().weight.shape[1] == width
    policy = module.policy(Decoding("greedy", max_new_tokens=4))
    (history,) = policy.act([(Text(PROMPT, False),)], seeds=[0])
    assert history[-1].is_action and history[-1].text.endswith("\n")


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize("quantization", [None, "4bit", "8bit"])
def test_lora_bc_ilql_and_ppo_train_adapters_only(model_dirs, arch, quantization):
    import bitsandbytes as bnb

    # On the CPU even where a GPU exists (the CUDA run of these paths is in test_gpu.py).
    backbone = BackboneConfig(str(model_dirs[arch]), lora=LoraSettings(r=4), quantization=quantization,
                              quantized_device="cpu")
    data = lambda: EpisodeDataModule(str(model_dirs["root"] / "words.jsonl"), window="all", batch_size=8,  # noqa: E731
                                     val_fraction=0.0)
    is_base = lambda n: n.startswith("model.") and "lora_" not in n  # noqa: E731

    bc = BC(backbone, optim=FAST)
    kind = {"4bit": bnb.nn.Linear4bit, "8bit": bnb.nn.Linear8bitLt}.get(quantization)
    if kind is not None:
        assert any(isinstance(m, kind) for m in bc.model.modules())
    trainable = {n for n, p in bc.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    before = snapshot(bc, lambda n: True)
    L.Trainer(max_steps=2, **QUIET).fit(bc, data())
    moved = changed(before, bc)
    assert moved and all("lora_" in n for n in moved)
    assert all(p.grad is None for n, p in bc.named_parameters() if is_base(n))

    ilql = ILQL(backbone=backbone, optim=FAST, value=ILQLValueLearning(polyak=0.5))
    assert {n for n, p in ilql.named_parameters() if p.requires_grad and n.startswith("model.")} == {
        f"model.{n}" for n, _ in adapter_parameters(ilql.model, "value")
    }
    before = snapshot(ilql, lambda n: True)
    L.Trainer(max_steps=2, **QUIET).fit(ilql, data())
    moved = changed(before, ilql)
    assert not any(is_base(n) or f".{POLICY_ADAPTER}." in n for n in moved)  # base and pi_beta frozen
    assert any(".value." in n for n in moved) and any(".target." in n for n in moved)
    assert any(n.startswith("q1.") for n in moved)

    rollouts = Rollouts("word_choice", episodes_per_round=8, batch_size=8, decoding=Decoding("rerank"))
    ppo = PPO(backbone=backbone, optim=FAST, rollouts=rollouts, updates=Updates(4))
    before = snapshot(ppo, lambda n: True)
    L.Trainer(max_epochs=2, **QUIET).fit(ppo)  # rollout, train, rollout, train
    assert len(ppo.round_history) == 2
    moved = changed(before, ppo)
    assert moved and not any(is_base(n) for n in moved) and any("lora_" in n for n in moved)


def test_lora_targets_per_architecture(model_dirs):
    gpt2 = BC(BackboneConfig(str(model_dirs["gpt2"]), lora=LoraSettings()))
    llama = BC(BackboneConfig(str(model_dirs["llama"]), lora=LoraSettings()))
    assert set(gpt2.peft.peft_config["default"].target_modules) == {"c_attn", "c_proj", "c_fc"}
    assert gpt2.peft.peft_config["default"].fan_in_fan_out  # Conv1D weights are stored transposed
    assert set(llama.peft.peft_config["default"].target_modules) == {
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"
    }
    assert not llama.peft.peft_config["default"].fan_in_fan_out
    only_q = BC(BackboneConfig(str(model_dirs["llama"]), lora=LoraSettings(target_modules=["q_proj"])))
    assert {n.split(".lora_")[0].rsplit(".", 1)[-1] for n, _ in adapter_parameters(only_q.model, "default")} == {"q_proj"}


def test_lora_checkpoint_holds_adapters_and_heads_only(model_dirs, tmp_path):
    """The state dict has no base weight; it reloads (base from the directory) to the same values."""
    from lmrl_lightning.algorithms.base import load_module

    module = ILQL(backbone=BackboneConfig(str(model_dirs["qwen2"]), lora=LoraSettings(r=4)), optim=FAST)
    trainer = L.Trainer(max_steps=1, **QUIET)
    trainer.fit(module, EpisodeDataModule(str(model_dirs["root"] / "words.jsonl"), window="all", batch_size=8,
                                          val_fraction=0.0))
    state = module.state_dict()
    assert state and all("lora_" in k or not k.startswith("model.") for k in state)
    trainer.save_checkpoint(tmp_path / "ilql.ckpt")
    loaded, _ = load_module(tmp_path / "ilql.ckpt")
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in state.items())


def test_bad_model_directories_are_one_line_errors(model_dirs, tmp_path):
    with pytest.raises(BackboneError, match="model directory '/nonexistent/model' does not exist"):
        BC(BackboneConfig("/nonexistent/model"))
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.json").write_text((model_dirs["gpt2"] / "config.json").read_text())
    with pytest.raises(BackboneError, match="holds no tokenizer"):
        BC(BackboneConfig(str(bare)))
    with pytest.raises(BackboneError, match="needs backbone.lora"):
        BackboneConfig(str(model_dirs["gpt2"]), quantization="4bit")
    with pytest.raises(BackboneError, match="needs a model directory"):
        BackboneConfig("tiny", lora=LoraSettings(), quantization="8bit")


def test_tokenizer_without_a_newline_token_is_rejected(model_dirs, tmp_path):
    words = Tokenizer(models.WordLevel({"[UNK]": 0, "say": 1, "a": 2, "word": 3}, unk_token="[UNK]"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=words, unk_token="[UNK]", pad_token="[UNK]")
    tokenizer.save_pretrained(str(tmp_path))
    with pytest.raises(LMRLError, match="does not encode a newline as one token"):
        load_tokenizer(BackboneConfig(str(model_dirs["gpt2"]), tokenizer=str(tmp_path)))
