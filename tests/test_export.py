"""`lmrl export`: the directory evaluates like the checkpoint (same returns for the same seeds), plain
transformers/peft load its policy with the same logits; bad checkpoints are one-line errors."""
from __future__ import annotations

import json

import lightning as L
import pytest
import torch
from transformers import AutoModelForCausalLM

from hf_models import save_tiny_model
from lmrl_lightning.algorithms import BC, ILQL, PPO, Optimisation, Rollouts
from lmrl_lightning.algorithms.base import load_module
from lmrl_lightning.export import load_export
from lmrl_lightning.cli import main
from lmrl_lightning.data.datamodule import EpisodeDataModule
from lmrl_lightning.models.backbone import BackboneConfig
from lmrl_lightning.models.lora import LoraSettings
from lmrl_lightning.models.tokenizer import train_bpe_tokenizer
from word_choice import BAD, GOOD, PROMPT, bc_checkpoint

pytestmark = [pytest.mark.filterwarnings("ignore:.*IterableDataset.*")]
FAST = Optimisation(lr=1e-2)
QUIET = dict(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
             enable_model_summary=False)


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    bc = bc_checkpoint(root)
    gpt2 = save_tiny_model("gpt2", train_bpe_tokenizer([PROMPT, GOOD, BAD] * 8, 300), root / "gpt2")
    return {"root": root, "bc": str(bc), "gpt2": str(gpt2)}


def train(module, assets, name: str, steps: int = 3) -> str:
    data = EpisodeDataModule(str(assets["root"] / "words.jsonl"), task="word_choice", window="all", batch_size=8,
                             val_fraction=0.0)
    trainer = L.Trainer(max_steps=steps, **QUIET)
    trainer.fit(module, data)
    path = assets["root"] / f"{name}.ckpt"
    trainer.save_checkpoint(path)
    return str(path)


def returns(capsys, source: str, tmp_path, name: str) -> list[float]:
    out = tmp_path / f"{name}.json"
    assert main(["eval", source, "--task", "word_choice", "--decoding", "sample", "--episodes", "24",
                 "--out", str(out)]) == 0
    capsys.readouterr()
    return json.loads(out.read_text())["returns"]


def policy_logits(module, ids):
    with torch.no_grad():
        module.eval()
        return module.model(input_ids=ids).logits


@pytest.mark.parametrize("case", ["ilql_full", "ilql_lora", "bc_lora_merged", "ppo_lora"])
def test_export_round_trip(assets, tmp_path, capsys, case):
    lora = BackboneConfig(assets["gpt2"], lora=LoraSettings(r=4))
    if case == "ilql_full":
        module = ILQL(init_from=assets["bc"], optim=FAST)
    elif case == "ilql_lora":
        module = ILQL(backbone=lora, optim=FAST)
    elif case == "bc_lora_merged":
        module = BC(lora, optim=FAST)
    else:
        module = PPO(backbone=lora, optim=FAST, rollouts=Rollouts("word_choice", episodes_per_round=8))
    if case == "ppo_lora":
        trainer = L.Trainer(max_epochs=1, **QUIET)
        trainer.fit(module)
        ckpt = str(assets["root"] / "ppo.ckpt")
        trainer.save_checkpoint(ckpt)
    else:
        ckpt = train(module, assets, case)
    export = tmp_path / "export"
    assert main(["export", ckpt, "--out", str(export)] + (["--merge"] if case == "bc_lora_merged" else [])) == 0
    assert (export / "lmrl.json").is_file() and (export / "heads.safetensors").is_file()

    assert returns(capsys, str(export), tmp_path, "export") == returns(capsys, ckpt, tmp_path, "ckpt")
    if case != "bc_lora_merged":  # the same weights as the checkpoint's, trunk and heads included
        exported, from_ckpt = load_export(export)[0].state_dict(), load_module(ckpt)[0].state_dict()
        # Training-only copies are rebuilt, not exported: ILQL's target trunk, PPO's reference.
        compared = [k for k in from_ckpt if not k.startswith(("reference.", "target_trunk.")) and ".target." not in k]
        assert any(k.startswith(("q1.", "value_head.")) for k in compared)
        if case.startswith("ilql"):
            assert any(".value." in k or k.startswith("trunk.") for k in compared)
        for key in compared:
            torch.testing.assert_close(exported[key], from_ckpt[key], rtol=0, atol=0, msg=key)

    ids = torch.tensor([module.tokenizer.encode(PROMPT + GOOD)])
    if case in ("ilql_lora", "ppo_lora"):
        from peft import PeftModel

        assert (export / "adapter_config.json").is_file()
        plain = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(assets["gpt2"]), str(export))
    else:
        assert (export / "config.json").is_file()
        plain = AutoModelForCausalLM.from_pretrained(str(export))
    plain.eval()
    with torch.no_grad():
        torch.testing.assert_close(plain(input_ids=ids).logits, policy_logits(module, ids), rtol=1e-5, atol=1e-5)


def test_resuming_from_another_algorithms_checkpoint_is_one_line(assets, tmp_path):
    from lmrl_lightning.errors import LMRLError

    module = ILQL(init_from=assets["bc"])
    data = EpisodeDataModule(str(assets["root"] / "words.jsonl"), window="all", batch_size=8, val_fraction=0.0)
    with pytest.raises(LMRLError, match="cannot resume ILQL from a checkpoint written by .*bc.BC"):
        L.Trainer(max_steps=1, **QUIET).fit(module, data, ckpt_path=assets["bc"])


def test_export_refuses_a_non_empty_directory_and_a_pointless_merge(assets, tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    assert main(["export", assets["bc"], "--out", str(tmp_path / "taken")]) == 2
    assert "is not empty" in capsys.readouterr().err
    assert main(["export", assets["bc"], "--out", str(tmp_path / "new"), "--merge"]) == 2
    assert "nothing to merge" in capsys.readouterr().err
