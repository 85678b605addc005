"""Checkpoint files written atomically and read safely, and the random-number state that a resumed run needs.

`AtomicCheckpointIO` writes a hidden `<path>` sibling, flushes it to disk and renames it over `<path>` (a rename within a
directory is atomic), so a run killed in the middle of a save leaves the previous checkpoint whole. Every lmrl
module installs it on its trainer's strategy in `setup` (unless a custom CheckpointIO is configured).

Checkpoints are data, never code: they are read from local files only (Lightning would download a URL and
unpickle it with `weights_only=False`) and always with `weights_only=True`, which refuses any pickled object
other than tensors and plain containers.
"""
from __future__ import annotations

import pickle
import random
import re
from pathlib import Path
from typing import Any, Optional

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from lmrl_lightning.atomic import atomic_open
from lmrl_lightning.errors import LMRLError

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


class AtomicCheckpointIO(TorchCheckpointIO):
    """TorchCheckpointIO whose saves replace the target file only once the new one is complete, and whose loads
    (Lightning's resume) read local files only, with `weights_only=True` whatever the caller asks."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Optional[Any] = None) -> None:
        with atomic_open(path, "wb", fsync=True) as f:
            torch.save(checkpoint, f)

    def load_checkpoint(self, path, map_location: Optional[Any] = None, weights_only: Optional[bool] = None) -> dict:
        # map_location None keeps each tensor on the device it was saved from, as Lightning's default does.
        return load_local_checkpoint(path, "checkpoint", map_location)


def local_checkpoint_path(path, what: str = "checkpoint") -> Path:
    """`path` as a local file; a URL (any `scheme://`), a missing path or a directory is refused with one line."""
    if _URL.match(str(path)):
        raise LMRLError(f"{what} {str(path)!r} is a URL; checkpoints are loaded from local files only (download it "
                        "yourself if you trust it)")
    path = Path(path)
    if not path.exists():
        raise LMRLError(f"{what} {str(path)!r} does not exist")
    if not path.is_file():
        raise LMRLError(f"{what} {str(path)!r} is not a file")
    return path


def load_local_checkpoint(path, what: str = "checkpoint", map_location: Any = "cpu") -> dict:
    """The dict saved in the local file `path`, read with `weights_only=True`; one-line errors otherwise."""
    path = local_checkpoint_path(path, what)
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:  # not a pickle, or one naming a class or function (code) to load
        lines = [line.strip() for line in str(e).splitlines()]
        detail = next((line for line in lines if "nsupported" in line), lines[0] if lines else "")[:120]
        raise LMRLError(
            f"{what} {str(path)!r} cannot be read with weights_only=True ({detail}): it is not a checkpoint, or "
            "it holds pickled objects other than weights, which are never loaded"
        ) from None
    except Exception as e:  # empty or truncated file, not a zip, ...
        detail = " ".join(str(e).split())[:120]
        raise LMRLError(
            f"{what} {str(path)!r} cannot be read ({type(e).__name__}: {detail}); "
            "it may be truncated or not a Lightning checkpoint"
        ) from None
    if not isinstance(checkpoint, dict):
        raise LMRLError(f"{what} {str(path)!r} holds a {type(checkpoint).__name__}, not a Lightning checkpoint")
    return checkpoint


def check_local_checkpoint(path, what: str = "checkpoint") -> dict:
    """A checkpoint written by an lmrl-lightning module (`lmrl fit --ckpt_path`, `init_from`, `lmrl eval`): local,
    loaded with weights_only=True, carrying its lmrl metadata and hyper-parameters; one-line errors otherwise."""
    checkpoint = load_local_checkpoint(path, what)
    meta = checkpoint.get("lmrl")
    if not isinstance(meta, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise LMRLError(f"{what} {str(path)!r} was not written by an lmrl-lightning algorithm module")
    if not isinstance(meta.get("algorithm"), str) or not meta["algorithm"]:
        raise LMRLError(
            f"{what} {str(path)!r}: field lmrl.algorithm must be a class path, got {meta.get('algorithm')!r}"
        )
    hparams = checkpoint.get("hyper_parameters")
    if not isinstance(hparams, dict) or not isinstance(hparams.get("backbone"), dict):
        raise LMRLError(f"{what} {str(path)!r} has no hyper_parameters.backbone: not an lmrl module's checkpoint")
    return checkpoint


def rng_state() -> dict[str, Any]:
    """torch's and Python's global generator states (plain types: loadable with weights_only=True)."""
    return {"torch": torch.get_rng_state(), "python": _to_lists(random.getstate())}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def _to_lists(x):
    return [_to_lists(v) for v in x] if isinstance(x, tuple) else x
