"""`lmrl export`: a trained module as a directory that plain transformers/peft load, and `lmrl eval` too.

Layout of the directory:
  lmrl.json                 task, variant, algorithm and its hyper-parameters (decoding settings included)
  tokenizer files           the model's tokenizer
  the policy                with LoRA: its adapter (adapter_config.json + adapter_model.safetensors, loadable with
                            `PeftModel.from_pretrained(base, DIR)`), or with `merge`: the merged full model; without
                            LoRA: the full model (config.json + model.safetensors, `AutoModelForCausalLM`)
  <sub-model>/              each of the module's `exported_submodels` (MC/ILQL: trunk/, the value trunk): its
                            adapter (LoRA) or a full model directory
  heads.safetensors         every other weight: the Q/V heads (and target heads, PPO's value head, PPO's KL
                            coefficient)
What only training needs, the module's `rebuilt_submodels` (ILQL's target trunk, PPO's frozen reference), is not
exported: loading rebuilds them as copies, exactly as a fresh module does.

The directory is data, never code: `lmrl.json` cannot grant `trust_remote_code` (only the person's
`--trust-remote-code` can) nor name a module to import (only registered algorithms, or `--algorithm`).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional, Union

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from transformers import PreTrainedModel

from lmrl_lightning.algorithms.base import (
    LMRLModule, backbone_from_file, build_from_hparams, import_algorithm, load_module,
)
from lmrl_lightning.atomic import atomic_directory, atomic_write_json
from lmrl_lightning.errors import LMRLError
from lmrl_lightning.models.heads import polyak_update
from lmrl_lightning.models.lora import POLICY_ADAPTER, AdapterView

EXPORT_FORMAT = 1
HEADS_FILE = "heads.safetensors"
META_FILE = "lmrl.json"


def submodel_names(module: LMRLModule) -> tuple[str, ...]:
    """The policy and every sub-model the module declares, exported or rebuilt: none of them goes to the heads."""
    return ("model", *module.exported_submodels, *module.rebuilt_submodels)


def head_state(module: LMRLModule) -> dict[str, torch.Tensor]:
    """Every weight outside the policy and the declared sub-models (heads, buffers such as PPO's KL coefficient)."""
    prefixes = tuple(f"{name}." for name in submodel_names(module))
    return {k: v.detach().contiguous() for k, v in module.state_dict().items() if not k.startswith(prefixes)}


def check_declared_submodels(module: LMRLModule) -> None:
    """Refuse, before writing anything, a backbone-sized sub-model the module does not declare (its weights cannot
    go to heads.safetensors: they would share the policy's tied embeddings or be the whole model again)."""
    declared = set(submodel_names(module))
    for name, child in module.named_children():
        if name not in declared and isinstance(child, (PreTrainedModel, AdapterView)):
            raise LMRLError(
                f"cannot export {type(module).__name__}: its sub-model {name!r} is not declared; list it in the "
                "class's `exported_submodels` (exported) or `rebuilt_submodels` (rebuilt on load)"
            )


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
    check_declared_submodels(module)
    check_mergeable(module, merge)
    with atomic_directory(out) as staging:  # replaces an empty directory too; refuses one filled in the meantime
        write_export(module, meta, staging, merge)
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
    if module.exported_submodels:
        raise LMRLError(
            f"--merge applies to a policy adapter alone; {type(module).__name__} keeps its "
            f"{', '.join(module.exported_submodels)} adapter separate"
        )


def write_export(module: LMRLModule, meta: dict, out: Path, merge: bool) -> None:
    """The files of an export directory (module docstring) into the existing directory `out`."""
    hparams = {k: v for k, v in module.hparams.items() if k not in ("_class_path", "_instantiator")}
    if module.peft is not None and merge:
        module.peft.merge_and_unload().save_pretrained(str(out))
        hparams["backbone"] = {**hparams["backbone"], "name_or_path": ".", "lora": None, "quantization": None}
    elif module.peft is not None:
        module.peft.save_pretrained(str(out), selected_adapters=[POLICY_ADAPTER])
    else:
        module.model.save_pretrained(str(out))
        hparams["backbone"] = {**hparams["backbone"], "name_or_path": "."}
    for name in module.exported_submodels:
        write_submodel(module, name, out / name)
    module.tokenizer.save_pretrained(str(out))
    hparams["backbone"] = {**hparams["backbone"], "tokenizer": "."}
    save_file(head_state(module), str(out / HEADS_FILE))
    atomic_write_json(out / META_FILE, {
        "format": EXPORT_FORMAT, "algorithm": meta["algorithm"], "task": meta.get("task"),
        "variant": meta.get("variant"), "hparams": hparams,
    })


def write_submodel(module: LMRLModule, name: str, directory: Path) -> None:
    """Sub-model `name` into `directory`: with LoRA its adapter (in a sub-directory named after the adapter, as
    peft writes a non-default one), else the whole model."""
    if module.peft is not None:
        module.peft.save_pretrained(str(directory), selected_adapters=[submodel_adapter(module, name)])
    else:
        getattr(module, name).save_pretrained(str(directory))


def submodel_adapter(module: LMRLModule, name: str) -> str:
    """The LoRA adapter that sub-model `name` of a LoRA module is a view of (see `LMRLModule.copy_of_policy`)."""
    submodel = getattr(module, name)
    if not isinstance(submodel, AdapterView) or submodel.adapter is None:
        raise LMRLError(f"{type(module).__name__}.{name} is not a LoRA adapter of the policy's base; make it with "
                        "copy_of_policy so that it can be exported")
    return submodel.adapter


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
    for name in module.exported_submodels:
        load_submodel(module, name, directory / name)
    _, unexpected = module.load_state_dict(read_safetensors(directory / HEADS_FILE), strict=False)
    if unexpected:
        raise LMRLError(f"{directory / HEADS_FILE}: unexpected weight {unexpected[0]!r} for {type(module).__name__}")
    for name, source in module.rebuilt_submodels.items():
        if source is not None:  # a copy of an exported sub-model: copy it again, now that that one is loaded
            polyak_update(getattr(module, name), getattr(module, source), 1.0)


def load_submodel(module: LMRLModule, name: str, directory: Path) -> None:
    """Sub-model `name` from `directory`, as `write_submodel` wrote it."""
    from peft import set_peft_model_state_dict

    if module.peft is not None:
        adapter = submodel_adapter(module, name)
        weights = read_safetensors(directory / adapter / "adapter_model.safetensors")
        set_peft_model_state_dict(module.peft, weights, adapter)
        return
    weights_file = directory / "model.safetensors"
    _, unexpected = getattr(module, name).load_state_dict(read_safetensors(weights_file), strict=False)
    if unexpected:
        raise LMRLError(f"{weights_file}: unexpected weight {unexpected[0]!r}")


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file of an export; a missing or damaged file is one line."""
    if not path.is_file():
        raise LMRLError(f"{path} does not exist: the export directory is incomplete")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise LMRLError(f"{path} cannot be read ({str(e)[:120]}); it may be truncated") from None
