"""The LightningModule every algorithm extends: backbone + tokenizer, optimiser, evaluation policy.

A new algorithm subclasses `LMRLModule` and implements `training_step` (usually: compute a pure loss function
of the batch and log its metrics). Data, decoding, the evaluation callback and checkpoints are reused.
"""
from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import ClassVar, Iterable, Mapping, Optional, Sequence, Union

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from lmrl_lightning.checkpointing import AtomicCheckpointIO, check_local_checkpoint, rng_state, set_rng_state
from lmrl_lightning.env import BatchedTextPolicy
from lmrl_lightning.errors import LMRLError
from lmrl_lightning.models.backbone import BackboneConfig, build_backbone, load_tokenizer
from lmrl_lightning.models.lora import POLICY_ADAPTER, AdapterView, add_lora, copy_adapter
from lmrl_lightning.policies import Decoding, ValueGuidance, build_policy
from lmrl_lightning.validation import as_settings
from lmrl_lightning.algorithms.settings import Optimisation, settings_as_dicts
from lmrl_lightning.algorithms.packing import batch_hidden


def decay_groups(
    named_parameters: Iterable[tuple[str, torch.nn.Parameter]], weight_decay: float, **options
) -> list[dict]:
    """Two AdamW groups of the trainable parameters: weight decay on matrices, none on biases and norms; `options`
    (e.g. ``lr``) go into both."""
    decay, no_decay = [], []
    for name, p in named_parameters:
        if p.requires_grad:
            (no_decay if p.ndim < 2 or "ln" in name or "norm" in name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay, **options},
            {"params": no_decay, "weight_decay": 0.0, **options}]


class LMRLModule(L.LightningModule):
    """Shared base of the algorithms.

    Args:
        backbone: the language model (preset, local directory or hub id) and its tokenizer.
        init_from: a checkpoint of a trained module (e.g. BC) to start from: its backbone config and weights
            replace `backbone`'s (the RL algorithms start from the BC policy, spec §3.1).
        optim: the optimiser (learning rate, weight decay, warm-up, betas; see `Optimisation`).

    A subclass adds its own settings groups (`lmrl_lightning.algorithms.settings`) and passes these up unchanged;
    every group is saved in the checkpoint as a plain mapping and accepted back as one.

    Sub-models beyond the policy `model` (a value trunk, a critic, a target network...) are declared for
    `lmrl export` in the two class attributes below; an undeclared one makes the export refuse, naming it.
    """

    # Written by `lmrl export` beside the policy, each under a directory of its attribute name (its LoRA adapter, or
    # the whole model without LoRA), and loaded back from there: e.g. MC/ILQL's value trunk ("trunk",).
    exported_submodels: ClassVar[tuple[str, ...]] = ()
    # Left out of an export and rebuilt on load, each mapped to the exported sub-model it is a copy of (None: only
    # training needs it, the constructor's copy stands): ILQL's {"target_trunk": "trunk"}, PPO's {"reference": None}.
    rebuilt_submodels: ClassVar[Mapping[str, Optional[str]]] = {}

    def __init__(
        self,
        backbone: BackboneConfig = BackboneConfig(),
        init_from: Optional[str] = None,
        optim: Optimisation = Optimisation(),
    ):
        super().__init__()
        self.optim = as_settings(optim, Optimisation, "model.optim")
        if isinstance(backbone, dict):  # as stored in a checkpoint's hyper-parameters
            backbone = BackboneConfig(**backbone)
        init_checkpoint = read_checkpoint(init_from, "init_from") if init_from else None
        if init_checkpoint is not None:  # its model, but trust_remote_code from this config, never from the file
            backbone = backbone_from_file(
                init_checkpoint["hyper_parameters"]["backbone"], f"init_from {init_from!r}", backbone.trust_remote_code
            )
        # Plain types only in the checkpoint, so that it loads with weights_only=True.
        self.save_hyperparameters(ignore=["backbone"])
        self.hparams.update(settings_as_dicts({**self.hparams, "backbone": backbone, "optim": self.optim}))
        self.backbone_config = backbone
        self.tokenizer = load_tokenizer(backbone)
        self.model = build_backbone(backbone, self.tokenizer)
        # With LoRA the policy is an adapter injected into `model` in place; `peft` is the handle that adds more
        # adapters (kept off the module tree: its weights are `model`'s). Checkpoints then hold the adapters and
        # heads only: the base is reloaded from `backbone.name_or_path`.
        object.__setattr__(self, "peft", add_lora(self.model, backbone.lora) if backbone.lora else None)
        self.strict_loading = self.peft is None
        self._policy_copies: dict[str, torch.nn.Module] = {}  # by name, the sources of later copies
        if init_checkpoint is not None:
            weights = {k[len("model."):]: v for k, v in init_checkpoint["state_dict"].items() if k.startswith("model.")}
            missing, unexpected = self.model.load_state_dict(weights, strict=self.peft is None)
            if unexpected or (self.peft is not None and any("lora_" in k for k in missing)):
                raise LMRLError(
                    f"checkpoint {init_from!r} does not match this backbone (e.g. {(unexpected or missing)[0]!r}); "
                    "start from a checkpoint of the same model with the same LoRA settings"
                )

    # ---- copies of the policy -----------------------------------------------------------------------------------
    def copy_of_policy(self, name: str, trainable: bool, source: Optional[str] = None) -> torch.nn.Module:
        """A copy named `name` of the policy, or of its earlier copy `source` (e.g. a value trunk, then its target):
        a deep copy, or with LoRA a new adapter `name` on the shared base, seen through an `AdapterView`, so that the
        base is held in memory once. The policy itself keeps its own `requires_grad` flags."""
        if self.peft is None:
            copied = copy.deepcopy(self._policy_copies[source] if source else self.model).requires_grad_(trainable)
        else:
            copy_adapter(self.peft, source or POLICY_ADAPTER, name, trainable)
            copied = AdapterView(self.model, name)
        self._policy_copies[name] = copied
        return copied

    # ---- evaluation -------------------------------------------------------------------------------------------
    def policy(self, decoding: Decoding = Decoding(), candidates: Optional[Sequence[str]] = None) -> BatchedTextPolicy:
        """The batched text policy this module acts with (evaluation, online rollouts), as `decoding` describes;
        `candidates` are the task's fixed actions that the re-ranking kinds choose among."""
        guidance = self.value_guidance(decoding.beta, decoding.value_networks)
        if decoding.beta is not None and guidance is None:
            raise LMRLError(f"decoding.beta weighs value guidance (MC, ILQL); {type(self).__name__} has none")
        if decoding.candidate_value != "sum" and guidance is None:
            raise LMRLError(f"decoding.candidate_value reads value guidance (MC, ILQL); {type(self).__name__} has none")
        if decoding.value_networks != "online" and guidance is None:
            raise LMRLError(f"decoding.value_networks picks the networks of value guidance (ILQL); "
                            f"{type(self).__name__} has none")
        return build_policy(self.model, self.tokenizer, decoding, candidates, guidance)

    def value_guidance(self, beta: Optional[float] = None, networks: str = "online") -> Optional[ValueGuidance]:
        """What decoding adds to the policy's scores, weighted by `beta` (None: the module's own), from its `networks`
        (``online`` or ``target``); None for a module that decodes with its policy alone. Value-based modules
        override it."""
        return None

    # ---- optimisation -----------------------------------------------------------------------------------------
    def optimizer_groups(self) -> list[dict]:
        """AdamW's parameter groups (every trainable parameter, at `optim.lr`); a module that trains some of its
        parameters at a rate of their own overrides it (PPO's `value_lr`)."""
        return decay_groups(self.named_parameters(), self.optim.weight_decay)

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.optimizer_groups(), lr=self.optim.lr, betas=self.optim.betas)
        total = None
        if self.optim.decay != "none":
            total = self.trainer.estimated_stepping_batches
            if not math.isfinite(total):
                raise LMRLError(f"model.optim.decay: {self.optim.decay} decays over the run's steps: give the trainer "
                                "max_steps (its length is unknown here)")
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: self.optim.lr_factor(step, total))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def action_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, action_mask: torch.Tensor):
        """Next-token logits at action positions only, [N, V] (position t predicts token t+1).

        Only these rows go through the output projection: with a 50k-token vocabulary the projection of every
        position costs more than the transformer on short contexts. Repeated rows run once and the padding is
        skipped (`batch_hidden`).
        """
        hidden = batch_hidden(self.model, input_ids, attention_mask)
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
        from lmrl_lightning.registry import task_origin

        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        task = getattr(datamodule, "task", None)
        checkpoint["lmrl"] = {
            "algorithm": f"{type(self).__module__}.{type(self).__qualname__}",
            "task": task,
            "variant": getattr(datamodule, "variant", None),
            # Which package provides the task, so that `lmrl eval` can say what to install (read as text only).
            "task_origin": task_origin(task) if task else None,
        }
        # A resumed run draws the same data order and samples as an uninterrupted one.
        checkpoint["lmrl_rng"] = rng_state()

    def on_before_backward(self, loss: torch.Tensor) -> None:
        # A NaN/inf loss would silently destroy every weight; stop before the update, keeping the saved checkpoints.
        if not torch.isfinite(loss).all():
            raise LMRLError(
                f"the training loss is {loss.item()} at step {self.global_step} (epoch {self.current_epoch}); stopped "
                "before the update: the checkpoints already saved are intact (lower model.lr or check the data)"
            )

    def check_resume_settings(self, checkpoint: dict) -> None:
        """A resumed run trains what the checkpoint trained: the same hyper-parameters (model, algorithm settings)
        and the same task. Data and trainer settings (batch size, max_steps...) apply as the config gives them."""
        saved = comparable_hparams(checkpoint.get("hyper_parameters") or {})
        mine = comparable_hparams(dict(self.hparams))
        changed = [k for k in sorted(saved.keys() | mine.keys()) if saved.get(k) != mine.get(k)]
        if changed:
            key = changed[0]
            raise LMRLError(
                f"cannot resume: model.{key} is {mine.get(key)!r} here but {saved.get(key)!r} in the checkpoint"
                f"{f' (and {len(changed) - 1} more)' if len(changed) > 1 else ''}; resume with the checkpoint's "
                "settings, or start a new run from its weights with --model.init_from"
            )
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        meta = checkpoint.get("lmrl") or {}
        for field in ("task", "variant"):
            mine_value = getattr(datamodule, field, None)
            if mine_value is not None and meta.get(field) is not None and mine_value != meta[field]:
                raise LMRLError(
                    f"cannot resume: data.{field} is {mine_value!r} here but the checkpoint trained on {meta[field]!r}"
                )

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        written_by = (checkpoint.get("lmrl") or {}).get("algorithm")
        mine = f"{type(self).__module__}.{type(self).__qualname__}"
        if written_by != mine:
            raise LMRLError(
                f"cannot resume {type(self).__name__} from a checkpoint written by {written_by or 'another program'}"
            )
        self.check_resume_settings(checkpoint)
        if "lmrl_rng" in checkpoint:
            set_rng_state(checkpoint["lmrl_rng"])


def comparable_hparams(hparams: dict) -> dict:
    """Hyper-parameters as plain JSON values (tuples as lists), without LightningCLI's bookkeeping entries, each
    field of a settings group under its dotted name (``optim.lr``), as the CLI spells it after ``model.``."""
    plain = {k: v for k, v in settings_as_dicts(hparams).items() if k not in ("_class_path", "_instantiator")}
    return _flatten(json.loads(json.dumps(plain, default=str)))


def _flatten(mapping: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in mapping.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def read_checkpoint(path: Union[str, Path], what: str = "checkpoint") -> dict:
    """A checkpoint written by an lmrl-lightning module: a local file read with weights_only=True, carrying its
    lmrl metadata; one-line errors otherwise (see `lmrl_lightning.checkpointing.check_local_checkpoint`)."""
    return check_local_checkpoint(path, what)


def backbone_from_file(stored, source: str, trust_remote_code: bool = False) -> BackboneConfig:
    """The BackboneConfig that a checkpoint or export recorded. A file never grants trust: `trust_remote_code` is
    what the person running this passed (a command-line flag, their own config), whatever the file says."""
    if not isinstance(stored, dict):
        raise LMRLError(f"{source}: hyper-parameter 'backbone' must be a mapping, got {type(stored).__name__}")
    try:
        return BackboneConfig(**{**stored, "trust_remote_code": trust_remote_code})
    except TypeError as e:  # an unknown or missing field
        raise LMRLError(f"{source}: hyper-parameter 'backbone': {e}") from None
    except LMRLError as e:
        raise LMRLError(f"{source}: {e}") from None


def import_algorithm(recorded: str, source: str, explicit: Optional[str] = None) -> type:
    """The LMRLModule class that rebuilds what `source` (a checkpoint or an export) recorded as `recorded`.

    A name read from a file is looked up among registered algorithms only (built-ins and the entry points of
    installed packages): it never causes an import. Any other class is imported only when the person names it
    (`explicit`, from `--algorithm`), and it must be the class the file records."""
    from lmrl_lightning.registry import algorithm_class, class_path, import_algorithm_class

    shown = recorded if len(recorded) <= 200 else recorded[:200] + "..."
    if explicit is None:
        cls = algorithm_class(recorded)
        if cls is None:
            raise LMRLError(
                f"{source} was written by {shown!r}, which is not a registered algorithm; if you trust that code, "
                "name its class explicitly with --algorithm MODULE.CLASS"
            )
        return cls
    cls = algorithm_class(explicit) or import_algorithm_class(explicit)
    if cls is None:
        raise LMRLError(f"--algorithm {explicit!r} is not an importable LMRLModule subclass (module.Class)")
    if class_path(cls) != recorded:
        raise LMRLError(f"--algorithm {explicit!r} is {class_path(cls)}, but {source} was written by {shown!r}")
    return cls


def load_module(
    path: Union[str, Path], trust_remote_code: bool = False, algorithm: Optional[str] = None
) -> tuple[LMRLModule, dict]:
    """Rebuild a trained module from a Lightning checkpoint (a local file read with weights_only=True) and its
    lmrl metadata. `trust_remote_code` and `algorithm` (a class to import) come from the person, never the file."""
    checkpoint = read_checkpoint(path)
    source = f"checkpoint {str(path)!r}"
    meta = checkpoint["lmrl"]
    cls = import_algorithm(meta["algorithm"], source, algorithm)
    # The state dict holds every weight: do not read the checkpoint this one was initialised from. LightningCLI
    # adds its own `_class_path`/`_instantiator` entries to the hyper-parameters; they are not constructor args.
    hparams = {k: v for k, v in checkpoint["hyper_parameters"].items() if k not in ("_class_path", "_instantiator")}
    hparams["backbone"] = backbone_from_file(hparams["backbone"], source, trust_remote_code)
    module = build_from_hparams(cls, hparams, source)
    try:
        missing, unexpected = module.load_state_dict(checkpoint["state_dict"], strict=False)
    except RuntimeError as e:  # a weight of another shape
        raise LMRLError(f"{source} does not match {cls.__name__}'s weights ({_one_line(e)})") from None
    wrong = unexpected + [k for k in missing if not module.is_base_weight(k)]
    if wrong:
        raise LMRLError(f"{source} does not match {cls.__name__}'s weights (e.g. {wrong[0]!r})")
    return module, meta


def build_from_hparams(cls: type, hparams: dict, source: str) -> LMRLModule:
    """`cls(**hparams)` for hyper-parameters read from a file (settings groups as mappings); ones that do not fit
    `cls` are one line."""
    try:
        return cls(**{**hparams, "init_from": None})
    except TypeError as e:  # an unknown keyword, or a value of the wrong type
        raise LMRLError(f"{source}: hyper-parameters do not fit {cls.__name__} ({_one_line(e)})") from None
    except LMRLError as e:
        if not str(e).startswith("model."):
            raise
        raise LMRLError(f"{source}: {e}") from None  # a settings group out of range, or with unknown fields


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())[:240] or type(e).__name__
