"""A module declares its exported parts (issue 13, item 7): a BC policy trained together with a value backbone named
`critic` (not `trunk`) made by the base's `copy_of_policy` and regressed on `returns_to_go`, exported and evaluated
from the export exactly as from its checkpoint, with and without LoRA; an undeclared backbone is refused in one line,
before anything is written."""
from __future__ import annotations

import json

import lightning as L
import pytest
import torch

from hf_models import save_tiny_model
from lmrl_lightning.algorithms import BC, Optimisation
from lmrl_lightning.algorithms.base import load_module
from lmrl_lightning.algorithms.mc_returns import returns_to_go
from lmrl_lightning.cli import main
from lmrl_lightning.data.datamodule import EpisodeDataModule
from lmrl_lightning.export import load_export
from lmrl_lightning.models.backbone import BackboneConfig
from lmrl_lightning.models.heads import make_v_head
from lmrl_lightning.models.lora import LoraSettings
from lmrl_lightning.models.tokenizer import train_bpe_tokenizer
from word_choice import BAD, GOOD, PROMPT, bc_checkpoint

pytestmark = [pytest.mark.filterwarnings("ignore:.*IterableDataset.*")]


class CriticBC(BC):
    """BC plus a critic: a trainable copy of the policy with a V head, regressed on the undiscounted return."""

    exported_submodels = ("critic",)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.critic = self.copy_of_policy("critic", trainable=True)
        self.critic_head = make_v_head("linear", self.model.get_input_embeddings().weight.shape[1])

    def training_step(self, batch, batch_idx):
        mask = batch["action_mask"]
        hidden = self.critic.base_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        values = self.critic_head(hidden.last_hidden_state[:, :-1][mask]).squeeze(-1)
        value_loss = 0.5 * ((values - returns_to_go(batch, 1.0, "turn")[mask]) ** 2).mean()
        return super().training_step(batch, batch_idx) + value_loss


class UndeclaredCriticBC(CriticBC):
    exported_submodels = ()


def dotted(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("export_parts")
    bc_checkpoint(root)  # writes the word_choice episodes and tokenizer
    save_tiny_model("gpt2", train_bpe_tokenizer([PROMPT, GOOD, BAD] * 8, 300), root / "gpt2")
    return root


def trained_checkpoint(cls: type, backbone: BackboneConfig, root, name: str) -> str:
    L.seed_everything(0)
    module = cls(backbone=backbone, optim=Optimisation(lr=1e-2))
    data = EpisodeDataModule(str(root / "words.jsonl"), task="word_choice", window="all", batch_size=8,
                             val_fraction=0.0)
    trainer = L.Trainer(max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, data)
    path = root / f"{name}.ckpt"
    trainer.save_checkpoint(path)
    return str(path)


def eval_returns(capsys, source: str, out) -> list[float]:
    assert main(["eval", source, "--algorithm", dotted(CriticBC), "--task", "word_choice", "--decoding", "sample",
                 "--episodes", "8", "--out", str(out)]) == 0
    capsys.readouterr()
    return json.loads(out.read_text())["returns"]


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_a_renamed_value_backbone_exports_and_evaluates_like_the_checkpoint(root, tmp_path, capsys, lora):
    backbone = (BackboneConfig(str(root / "gpt2"), lora=LoraSettings(r=4)) if lora
                else BackboneConfig("tiny", tokenizer=str(root / "tok")))
    ckpt = trained_checkpoint(CriticBC, backbone, root, f"critic_{lora}")
    export = tmp_path / "export"
    assert main(["export", ckpt, "--out", str(export), "--algorithm", dotted(CriticBC)]) == 0
    assert (export / "critic" / ("critic/adapter_model.safetensors" if lora else "model.safetensors")).is_file()

    exported = load_export(export, algorithm=dotted(CriticBC))[0].state_dict()
    from_ckpt = load_module(ckpt, algorithm=dotted(CriticBC))[0].state_dict()
    critic_keys = [k for k in from_ckpt if k.startswith("critic_head.") or ".critic." in k or k.startswith("critic.")]
    assert len(critic_keys) > 2 and exported.keys() == from_ckpt.keys()
    for key in from_ckpt:
        torch.testing.assert_close(exported[key], from_ckpt[key], rtol=0, atol=0, msg=key)
    # both trained: the critic moved away from the policy it was copied from
    policy_key = next(k for k in from_ckpt if k.startswith("model.") and ("lora_A.default" in k or not lora))
    critic_key = policy_key.replace("default", "critic") if lora else policy_key.replace("model.", "critic.", 1)
    assert not torch.equal(from_ckpt[policy_key], from_ckpt[critic_key])

    assert eval_returns(capsys, str(export), tmp_path / "a.json") == eval_returns(capsys, ckpt, tmp_path / "b.json")


def test_an_undeclared_backbone_is_refused_before_anything_is_written(root, tmp_path, capsys):
    backbone = BackboneConfig("tiny", tokenizer=str(root / "tok"))
    ckpt = trained_checkpoint(UndeclaredCriticBC, backbone, root, "undeclared")
    export = tmp_path / "export"
    assert main(["export", ckpt, "--out", str(export), "--algorithm", dotted(UndeclaredCriticBC)]) == 2
    error = capsys.readouterr().err
    assert "sub-model 'critic' is not declared" in error and "exported_submodels" in error
    assert "Traceback" not in error and len(error.strip().splitlines()) == 1
    assert not export.exists() and list(tmp_path.iterdir()) == []
