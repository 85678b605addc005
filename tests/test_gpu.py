"""CUDA paths (skipped without a GPU): LoRA training of BC, ILQL and PPO on 4-bit, 8-bit and bf16 bases, and
Lightning's bitsandbytes precision plugin; on CPU the plugin is refused with a clear message."""
from __future__ import annotations

import lightning as L
import pytest
import torch

from hf_models import save_tiny_model
from lmrl_lightning.algorithms import BC, ILQL, PPO, ILQLValueLearning, Optimisation, Rollouts, Updates
from lmrl_lightning.data.datamodule import EpisodeDataModule
from lmrl_lightning.errors import LMRLError
from lmrl_lightning.models.backbone import BackboneConfig, bitsandbytes_precision
from lmrl_lightning.models.lora import LoraSettings
from lmrl_lightning.models.tokenizer import train_bpe_tokenizer
from lmrl_lightning.policies import Decoding
from word_choice import BAD, GOOD, PROMPT, bc_checkpoint

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
pytestmark = [pytest.mark.filterwarnings("ignore:.*IterableDataset.*"), pytest.mark.filterwarnings("ignore:.*MatMul.*")]
QUIET = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
FAST = Optimisation(lr=1e-2)


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpu")
    bc_checkpoint(root)
    tokenizer = train_bpe_tokenizer([PROMPT, GOOD, BAD] * 8, 300)
    return {"root": root, **{a: save_tiny_model(a, tokenizer, root / a) for a in ("gpt2", "llama")}}


def words(dirs):
    return EpisodeDataModule(str(dirs["root"] / "words.jsonl"), window="all", batch_size=8, val_fraction=0.0)


class RecordDevice(L.Callback):
    def __init__(self):
        self.seen = []

    def on_train_batch_start(self, trainer, module, *args):
        self.seen += [p.device for n, p in module.named_parameters() if "lora_" in n][:1]


def adapters_moved(module, before) -> bool:
    now = dict(module.named_parameters())
    moved = {n for n, v in before.items() if not torch.equal(v, now[n].detach().cpu())}
    return bool(moved) and all("lora_" in n or not n.startswith("model.") for n in moved)


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize("quantization,precision", [("4bit", "32-true"), ("8bit", "32-true"), (None, "bf16-mixed")])
def test_lora_bc_ilql_ppo_on_cuda(dirs, arch, quantization, precision):
    backbone = BackboneConfig(str(dirs[arch]), lora=LoraSettings(r=4), quantization=quantization)
    for module, fit in (
        (BC(backbone, optim=FAST), lambda t, m: t.fit(m, words(dirs))),
        (ILQL(backbone=backbone, optim=FAST), lambda t, m: t.fit(m, words(dirs))),
        (PPO(backbone=backbone, optim=FAST, rollouts=Rollouts("word_choice", episodes_per_round=8, decoding=Decoding("rerank")),
             updates=Updates(4)),
         lambda t, m: t.fit(m)),
    ):
        before = {n: p.detach().cpu().clone() for n, p in module.named_parameters()}
        devices = RecordDevice()
        trainer = L.Trainer(accelerator="gpu", devices=1, precision=precision, max_steps=2, max_epochs=2,
                            callbacks=[devices], **QUIET)
        fit(trainer, module)
        assert devices.seen and all(d.type == "cuda" for d in devices.seen)  # Lightning moves it back afterwards
        assert adapters_moved(module, before), type(module).__name__


@pytest.mark.gpu
@cuda
def test_lightning_bitsandbytes_plugin_quantizes_the_base_only(dirs):
    import bitsandbytes as bnb

    module = BC(BackboneConfig(str(dirs["llama"]), lora=LoraSettings(r=4)), optim=FAST)
    before = {n: p.detach().cpu().clone() for n, p in module.named_parameters()}
    trainer = L.Trainer(accelerator="gpu", devices=1, max_steps=2, plugins=[bitsandbytes_precision(module)], **QUIET)
    trainer.fit(module, words(dirs))
    quantized = [n for n, m in module.named_modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert quantized and not any("lora_" in n for n in quantized)
    assert adapters_moved(module, {k: v for k, v in before.items() if "lora_" in k})


def test_bitsandbytes_plugin_is_refused_without_cuda(dirs, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(LMRLError, match="needs a CUDA GPU"):
        bitsandbytes_precision(BC(BackboneConfig(str(dirs["llama"]), lora=LoraSettings(r=4))))
