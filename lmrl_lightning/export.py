"""`lmrl export`: a trained module as a directory that plain transformers/peft load, and `lmrl eval` too.

Layout of the directory:
  lmrl.json                 task, variant, algorithm and its hyper-parameters (decoding settings included)
  tokenizer files           the model's tokenizer
  the policy                with LoRA: its adapter (adapter_config.json + adapter_model.safetensors, loadable with
                            `PeftModel.from_pretrained(base, DIR)`), or with `merge`: the merged full model; without
                            LoRA: the full model (config.json + model.safetensors, `AutoModelForCausalLM`)
  trunk/                    MC/ILQL value trunk: the value adapter (LoRA) or a full model directory
  heads.safetensors         the Q/V heads (and target heads, PPO's value head, PPO's KL coefficient)
What only training needs (ILQL's target trunk, PPO's frozen reference) is not exported: loading rebuilds them as
copies, exactly as a fresh module does.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Union

import torch
from safetensors.torch import load_file, save_file

from lmrl_lightning.algorithms.base import LMRLModule, import_algorithm, load_module
from lmrl_lightning.errors import LMRLError
from lmrl_lightning.models.heads import polyak_update
from lmrl_lightning.models.lora import POLICY_ADAPTER

EXPORT_FORMAT = 1
TRUNK_DIR = "trunk"
HEADS_FILE = "heads.safetensors"
META_FILE = "lmrl.json"
# Submodules rebuilt on load rather than exported.
REBUILT = ("model.", "trunk.", "target_trunk.", "reference.")


def head_state(module: LMRLModule) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous() for k, v in module.state_dict().items() if not k.startswith(REBUILT)}


def export_module(checkpoint: Union[str, Path], out: Union[str, Path], merge: bool = False) -> Path:
    """Write the export directory of `checkpoint` to `out` (see the module docstring)."""
    module, meta = load_module(checkpoint)
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise LMRLError(f"export directory {str(out)!r} is not empty; choose a new one")
    out.mkdir(parents=True, exist_ok=True)
    hparams = {k: v for k, v in module.hparams.items() if k not in ("_class_path", "_instantiator")}
    if merge and module.peft is None:
        raise LMRLError("--merge merges a LoRA adapter; this checkpoint trained every weight (nothing to merge)")
    if module.peft is not None and merge:
        if module.backbone_config.quantization:
            raise LMRLError("--merge cannot fold an adapter into a 4/8-bit base; export the adapter instead")
        if hasattr(module, "trunk"):
            raise LMRLError("--merge applies to a policy adapter alone; MC/ILQL keep their value adapter separate")
        merged = module.peft.merge_and_unload()
        merged.save_pretrained(str(out))
        hparams["backbone"] = {**hparams["backbone"], "name_or_path": ".", "lora": None, "quantization": None}
    elif module.peft is not None:
        module.peft.save_pretrained(str(out), selected_adapters=[POLICY_ADAPTER])
        if hasattr(module, "trunk"):
            module.peft.save_pretrained(str(out / TRUNK_DIR), selected_adapters=["value"])
    else:
        module.model.save_pretrained(str(out))
        hparams["backbone"] = {**hparams["backbone"], "name_or_path": "."}
        if hasattr(module, "trunk"):
            module.trunk.save_pretrained(str(out / TRUNK_DIR))
    module.tokenizer.save_pretrained(str(out))
    hparams["backbone"] = {**hparams["backbone"], "tokenizer": "."}
    save_file(head_state(module), str(out / HEADS_FILE))
    (out / META_FILE).write_text(json.dumps({
        "format": EXPORT_FORMAT, "algorithm": meta["algorithm"], "task": meta.get("task"),
        "variant": meta.get("variant"), "hparams": hparams,
    }, indent=2) + "\n", encoding="utf-8")
    return out


def _resolve(directory: Path, path: str) -> str:
    return str(directory) if path == "." else path


def load_export(directory: Union[str, Path]) -> tuple[LMRLModule, dict]:
    """Rebuild the module of an export directory (the base model of a LoRA export from its recorded path)."""
    from peft import set_peft_model_state_dict

    directory = Path(directory)
    meta_path = directory / META_FILE
    if not meta_path.is_file():
        raise LMRLError(f"{str(directory)!r} is not an lmrl export directory (no {META_FILE})")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if meta.get("format") != EXPORT_FORMAT:
        raise LMRLError(f"{meta_path}: field 'format': {meta.get('format')!r}, this version reads {EXPORT_FORMAT}")
    cls = import_algorithm(meta["algorithm"], str(directory))
    hparams = dict(meta["hparams"])
    backbone = dict(hparams["backbone"])
    backbone["name_or_path"] = _resolve(directory, backbone["name_or_path"])
    backbone["tokenizer"] = _resolve(directory, backbone["tokenizer"])
    module = cls(**{**hparams, "backbone": backbone, "init_from": None})
    if module.peft is not None:
        set_peft_model_state_dict(module.peft, load_file(str(directory / "adapter_model.safetensors")), POLICY_ADAPTER)
        if hasattr(module, "trunk"):
            trunk = load_file(str(directory / TRUNK_DIR / "value" / "adapter_model.safetensors"))
            set_peft_model_state_dict(module.peft, trunk, "value")
    elif hasattr(module, "trunk"):
        trunk_file = directory / TRUNK_DIR / "model.safetensors"
        _, unexpected = module.trunk.load_state_dict(load_file(str(trunk_file)), strict=False)
        if unexpected:
            raise LMRLError(f"{trunk_file}: unexpected weight {unexpected[0]!r}")
    _, unexpected = module.load_state_dict(load_file(str(directory / HEADS_FILE)), strict=False)
    if unexpected:
        raise LMRLError(f"{directory / HEADS_FILE}: unexpected weight {unexpected[0]!r} for {cls.__name__}")
    if hasattr(module, "target_trunk"):  # rebuilt as a copy of the loaded trunk
        polyak_update(module.target_trunk, module.trunk, 1.0)
    module.eval()
    return module, {"algorithm": meta["algorithm"], "task": meta.get("task"), "variant": meta.get("variant")}
