"""The LightningModule every algorithm extends: backbone + tokenizer, optimiser, evaluation policy.

A new algorithm subclasses `LMRLModule` and implements `training_step` (usually: compute a pure loss function
of the batch and log its metrics). Data, decoding, the evaluation callback and checkpoints are reused.
"""
from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path
from typing import Literal, Optional, Sequence, Union

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from lmrl_lightning.checkpointing import AtomicCheckpointIO, rng_state, set_rng_state
from lmrl_lightning.env import BatchedTextPolicy
from lmrl_lightning.errors import LMRLError
from lmrl_lightning.models.backbone import BackboneConfig, build_backbone, load_tokenizer
from lmrl_lightning.models.lora import add_lora
from lmrl_lightning.policies import LMPolicy, RerankPolicy

Decoding = Literal["sample", "greedy", "rerank", "rerank_greedy"]


class LMRLModule(L.LightningModule):
    """Shared base of the algorithms.

    Args:
        backbone: the language model (preset, local directory or hub id) and its tokenizer.
        init_from: a checkpoint of a trained module (e.g. BC) to start from: its backbone config and weights
            replace `backbone`'s (the RL algorithms start from the BC policy, spec §3.1).
        lr: peak learning rate (paper: 1e-4 for BC on every task).
        weight_decay: decoupled weight decay, not applied to biases and norm weights.
        warmup_steps: linear warm-up steps, then a constant learning rate (the paper's schedule in effect).
        betas: AdamW betas (the paper's Adafactor uses momentum 0.9 and decay 0.95).
    """

    def __init__(
        self,
        backbone: BackboneConfig = BackboneConfig(),
        init_from: Optional[str] = None,
        lr: float = 1e-4,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        betas: tuple[float, float] = (0.9, 0.95),
    ):
        super().__init__()
        if isinstance(backbone, dict):  # as stored in a checkpoint's hyper-parameters
            backbone = BackboneConfig(**backbone)
        init_checkpoint = read_checkpoint(init_from) if init_from else None
        if init_checkpoint is not None:
            backbone = BackboneConfig(**init_checkpoint["hyper_parameters"]["backbone"])
        # Plain types only in the checkpoint, so that it loads with weights_only=True.
        self.save_hyperparameters(ignore=["backbone"])
        self.hparams["backbone"] = dataclasses.asdict(backbone)
        self.backbone_config = backbone
        self.tokenizer = load_tokenizer(backbone)
        self.model = build_backbone(backbone, self.tokenizer)
        # With LoRA the policy is an adapter injected into `model` in place; `peft` is the handle that adds more
        # adapters (kept off the module tree: its weights are `model`'s). Checkpoints then hold the adapters and
        # heads only: the base is reloaded from `backbone.name_or_path`.
        object.__setattr__(self, "peft", add_lora(self.model, backbone.lora) if backbone.lora else None)
        self.strict_loading = self.peft is None
        if init_checkpoint is not None:
            weights = {k[len("model."):]: v for k, v in init_checkpoint["state_dict"].items() if k.startswith("model.")}
            missing, unexpected = self.model.load_state_dict(weights, strict=self.peft is None)
            if unexpected or (self.peft is not None and any("lora_" in k for k in missing)):
                raise LMRLError(
                    f"checkpoint {init_from!r} does not match this backbone (e.g. {(unexpected or missing)[0]!r}); "
                    "start from a checkpoint of the same model with the same LoRA settings"
                )

    # ---- evaluation -------------------------------------------------------------------------------------------
    def policy(
        self,
        decoding: Decoding = "sample",
        temperature: float = 1.0,
        candidates: Optional[Sequence[str]] = None,
        max_new_tokens: int = 16,
    ) -> BatchedTextPolicy:
        """The batched text policy this module acts with (evaluation, online rollouts).

        ``sample``/``greedy`` generate a turn token by token; ``rerank``/``rerank_greedy`` choose among the task's
        fixed `candidates` by their log-probability (sampled from the softmax, or the best one).
        """
        if decoding in ("rerank", "rerank_greedy"):
            if not candidates:
                raise LMRLError(f"decoding {decoding!r} needs the task's candidate actions; this task has none")
            return RerankPolicy(self.model, self.tokenizer, candidates, 0.0 if decoding == "rerank_greedy" else temperature)
        if decoding not in ("sample", "greedy"):
            raise LMRLError(f"unknown decoding {decoding!r}; valid: sample, greedy, rerank, rerank_greedy")
        return LMPolicy(self.model, self.tokenizer, 0.0 if decoding == "greedy" else temperature, 0, max_new_tokens)

    # ---- optimisation -----------------------------------------------------------------------------------------
    def configure_optimizers(self):
        decay, no_decay = [], []
        for name, p in self.named_parameters():
            if p.requires_grad:
                (no_decay if p.ndim < 2 or "ln" in name or "norm" in name else decay).append(p)
        groups = [
            {"params": decay, "weight_decay": self.hparams.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        optimizer = torch.optim.AdamW(groups, lr=self.hparams.lr, betas=tuple(self.hparams.betas))
        warmup = max(1, self.hparams.warmup_steps)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def action_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, action_mask: torch.Tensor):
        """Next-token logits at action positions only, [N, V] (position t predicts token t+1).

        Only these rows go through the output projection: with a 50k-token vocabulary the projection of every
        position costs more than the transformer on short contexts.
        """
        hidden = self.model.base_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.model.get_output_embeddings()(hidden[:, :-1][action_mask])

    # ---- checkpoints ------------------------------------------------------------------------------------------
    def is_base_weight(self, key: str) -> bool:
        """A frozen base weight, reloaded from the model directory rather than saved (LoRA only)."""
        return self.peft is not None and key.startswith("model.") and "lora_" not in key

    def state_dict(self, *args, **kwargs):
        state = super().state_dict(*args, **kwargs)
        if self.peft is None:
            return state
        for key in [k for k in state if self.is_base_weight(k)]:
            del state[key]
        return state

    def setup(self, stage: str) -> None:
        strategy = self.trainer.strategy
        if type(strategy.checkpoint_io) is TorchCheckpointIO:  # the default: make its saves atomic
            strategy.checkpoint_io = AtomicCheckpointIO()

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # What `lmrl eval` needs to rebuild this module and its evaluation without the training config.
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        checkpoint["lmrl"] = {
            "algorithm": f"{type(self).__module__}.{type(self).__qualname__}",
            "task": getattr(datamodule, "task", None),
            "variant": getattr(datamodule, "variant", None),
        }
        # A resumed run draws the same data order and samples as an uninterrupted one.
        checkpoint["lmrl_rng"] = rng_state()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        written_by = (checkpoint.get("lmrl") or {}).get("algorithm")
        mine = f"{type(self).__module__}.{type(self).__qualname__}"
        if written_by != mine:
            raise LMRLError(
                f"cannot resume {type(self).__name__} from a checkpoint written by {written_by or 'another program'}"
            )
        if "lmrl_rng" in checkpoint:
            set_rng_state(checkpoint["lmrl_rng"])


def read_checkpoint(path: Union[str, Path]) -> dict:
    """A checkpoint written by an lmrl-lightning module, read with weights_only=True; clear errors otherwise."""
    path = Path(path)
    if not path.is_file():
        raise LMRLError(f"checkpoint {str(path)!r} does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, pickle refusing a non-weight object, ...
        raise LMRLError(
            f"checkpoint {str(path)!r} cannot be read ({type(e).__name__}: {str(e).splitlines()[0][:120]}); "
            "it may be truncated or not a Lightning checkpoint"
        ) from None
    meta = checkpoint.get("lmrl") if isinstance(checkpoint, dict) else None
    if not meta or "state_dict" not in checkpoint:
        raise LMRLError(f"checkpoint {str(path)!r} was not written by an lmrl-lightning algorithm module")
    return checkpoint


def import_algorithm(dotted: str, source: str) -> type:
    """The LMRLModule class at `dotted` (as recorded by a checkpoint or an export from `source`)."""
    module_name, _, class_name = dotted.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError, ValueError):
        raise LMRLError(f"{source} needs algorithm {dotted!r}, which cannot be imported") from None
    if not (isinstance(cls, type) and issubclass(cls, LMRLModule)):
        raise LMRLError(f"{source} names {dotted!r}, which is not an LMRLModule")
    return cls


def load_module(path: Union[str, Path]) -> tuple[LMRLModule, dict]:
    """Rebuild a trained module from a Lightning checkpoint (read with weights_only=True) and its lmrl metadata."""
    checkpoint = read_checkpoint(path)
    meta = checkpoint["lmrl"]
    cls = import_algorithm(meta["algorithm"], f"checkpoint {str(path)!r}")
    class_name = cls.__name__
    # The state dict holds every weight: do not read the checkpoint this one was initialised from. LightningCLI
    # adds its own `_class_path`/`_instantiator` entries to the hyper-parameters; they are not constructor args.
    hparams = {k: v for k, v in checkpoint["hyper_parameters"].items() if k not in ("_class_path", "_instantiator")}
    module = cls(**{**hparams, "init_from": None})
    missing, unexpected = module.load_state_dict(checkpoint["state_dict"], strict=False)
    wrong = unexpected + [k for k in missing if not module.is_base_weight(k)]
    if wrong:
        raise LMRLError(f"checkpoint {str(path)!r} does not match {class_name}'s weights (e.g. {wrong[0]!r})")
    return module, meta
