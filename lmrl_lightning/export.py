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

The directory is data, never code: `lmrl.json` cannot grant `trust_remote_code` (only the person's
`--trust-remote-code` can) nor name a module to import (only registered algorithms, or `--algorithm`).
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Optional, Union

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from lmrl_lightning.algorithms.base import (
    LMRLModule, backbone_from_file, build_from_hparams, import_algorithm, load_module,
)
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


def export_module(
    checkpoint: Union[str, Path], out: Union[str, Path], merge: bool = False, trust_remote_code: bool = False,
    algorithm: Optional[str] = None,
) -> Path:
    """Write the export directory of `checkpoint` to `out` (see the module docstring).

    It is written into a temporary sibling directory and renamed into place at the end, so an interrupted
    export leaves no half directory at `out`."""
    out = Path(out)
    check_new_directory(out, "export directory")
    module, meta = load_module(checkpoint, trust_remote_code, algorithm)
    check_mergeable(module, merge)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.partial")
    try:
        staging.mkdir()
        write_export(module, meta, staging, merge)
        os.replace(staging, out)  # replaces an empty directory too; refuses one filled in the meantime
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def check_new_directory(out: Path, what: str) -> None:
    """Refuse, before any work, an output directory that cannot be created or would mix with other files."""
    if not str(out) or str(out) == ".":
        raise LMRLError(f"{what} must be a new directory, got {str(out)!r}")
    if out.exists() and not out.is_dir():
        raise LMRLError(f"{what} {str(out)!r} is an existing file; choose a new directory")
    if out.is_dir() and any(out.iterdir()):
        raise LMRLError(f"{what} {str(out)!r} is not empty; choose a new one")
    ancestor = out.absolute().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise LMRLError(f"{what} {str(out)!r}: {str(ancestor)!r} is a file, not a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise LMRLError(f"{what} {str(out)!r}: cannot write in {str(ancestor)!r}")


def check_mergeable(module: LMRLModule, merge: bool) -> None:
    if not merge:
        return
    if module.peft is None:
        raise LMRLError("--merge merges a LoRA adapter; this checkpoint trained every weight (nothing to merge)")
    if module.backbone_config.quantization:
        raise LMRLError("--merge cannot fold an adapter into a 4/8-bit base; export the adapter instead")
    if hasattr(module, "trunk"):
        raise LMRLError("--merge applies to a policy adapter alone; MC/ILQL keep their value adapter separate")


def write_export(module: LMRLModule, meta: dict, out: Path, merge: bool) -> None:
    """The files of an export directory (module docstring) into the existing directory `out`."""
    hparams = {k: v for k, v in module.hparams.items() if k not in ("_class_path", "_instantiator")}
    if module.peft is not None and merge:
        module.peft.merge_and_unload().save_pretrained(str(out))
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


def _resolve(directory: Path, path):
    return str(directory) if path == "." else path


def load_export(
    directory: Union[str, Path], trust_remote_code: bool = False, algorithm: Optional[str] = None
) -> tuple[LMRLModule, dict]:
    """Rebuild the module of an export directory (the base model of a LoRA export from its recorded path).

    `lmrl.json` is data: the algorithm it names must be registered (or named by the person, `algorithm`), and
    remote code runs only if the person passes `trust_remote_code`, whatever the file records."""
    directory = Path(directory)
    meta = read_export_meta(directory)
    source = str(directory / META_FILE)
    cls = import_algorithm(meta["algorithm"], source, algorithm)
    hparams = {k: v for k, v in meta["hparams"].items() if k not in ("_class_path", "_instantiator")}
    backbone = dict(hparams["backbone"])
    backbone["name_or_path"] = _resolve(directory, backbone.get("name_or_path"))
    backbone["tokenizer"] = _resolve(directory, backbone.get("tokenizer"))
    hparams["backbone"] = backbone_from_file(backbone, source, trust_remote_code)
    module = build_from_hparams(cls, hparams, source)
    try:
        load_exported_weights(module, directory)
    except RuntimeError as e:  # a weight of another shape than the module's
        detail = " ".join(str(e).split())[:200]
        raise LMRLError(f"{directory}: weights do not match {cls.__name__} ({detail})") from None
    module.eval()
    return module, {"algorithm": meta["algorithm"], "task": meta.get("task"), "variant": meta.get("variant")}


def read_export_meta(directory: Path) -> dict:
    """`lmrl.json`, its fields checked: one line naming the file and field otherwise."""
    meta_path = directory / META_FILE
    if not meta_path.is_file():
        raise LMRLError(f"{str(directory)!r} is not an lmrl export directory (no {META_FILE})")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as e:  # truncated, not JSON, not UTF-8, nested too deep
        raise LMRLError(f"{meta_path}: not valid JSON ({str(e)[:120]})") from None
    if not isinstance(meta, dict):
        raise LMRLError(f"{meta_path}: must hold a JSON object, got {type(meta).__name__}")
    if meta.get("format") != EXPORT_FORMAT:
        raise LMRLError(f"{meta_path}: field 'format': {meta.get('format')!r}, this version reads {EXPORT_FORMAT}")
    for field, kind in (("algorithm", str), ("hparams", dict)):
        if field not in meta:
            raise LMRLError(f"{meta_path}: missing field {field!r}")
        if not isinstance(meta[field], kind):
            raise LMRLError(f"{meta_path}: field {field!r} must be a {_KIND[kind]}, got {type(meta[field]).__name__}")
    if not isinstance(meta["hparams"].get("backbone"), dict):
        raise LMRLError(f"{meta_path}: field 'hparams.backbone' must be a {_KIND[dict]}")
    return meta


_KIND = {str: "string", dict: "JSON object"}


def load_exported_weights(module: LMRLModule, directory: Path) -> None:
    """Adapters, trunk and heads of the export in `directory` into `module` (built from its lmrl.json)."""
    from peft import set_peft_model_state_dict

    if module.peft is not None:
        policy = read_safetensors(directory / "adapter_model.safetensors")
        set_peft_model_state_dict(module.peft, policy, POLICY_ADAPTER)
        if hasattr(module, "trunk"):
            trunk = read_safetensors(directory / TRUNK_DIR / "value" / "adapter_model.safetensors")
            set_peft_model_state_dict(module.peft, trunk, "value")
    elif hasattr(module, "trunk"):
        trunk_file = directory / TRUNK_DIR / "model.safetensors"
        _, unexpected = module.trunk.load_state_dict(read_safetensors(trunk_file), strict=False)
        if unexpected:
            raise LMRLError(f"{trunk_file}: unexpected weight {unexpected[0]!r}")
    _, unexpected = module.load_state_dict(read_safetensors(directory / HEADS_FILE), strict=False)
    if unexpected:
        raise LMRLError(f"{directory / HEADS_FILE}: unexpected weight {unexpected[0]!r} for {type(module).__name__}")
    if hasattr(module, "target_trunk"):  # rebuilt as a copy of the loaded trunk
        polyak_update(module.target_trunk, module.trunk, 1.0)


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file of an export; a missing or damaged file is one line."""
    if not path.is_file():
        raise LMRLError(f"{path} does not exist: the export directory is incomplete")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise LMRLError(f"{path} cannot be read ({str(e)[:120]}); it may be truncated") from None
