"""Checkpoint files written atomically, and the random-number state that a resumed run needs.

`AtomicCheckpointIO` writes `<path>.partial`, flushes it to disk and renames it over `<path>` (a rename within a
directory is atomic), so a run killed in the middle of a save leaves the previous checkpoint whole. Every lmrl
module installs it on its trainer's strategy in `setup` (unless a custom CheckpointIO is configured).
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any, Optional

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO


class AtomicCheckpointIO(TorchCheckpointIO):
    """TorchCheckpointIO whose saves replace the target file only once the new one is complete."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Optional[Any] = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        try:
            with open(partial, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(partial, path)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise


def rng_state() -> dict[str, Any]:
    """torch's and Python's global generator states (plain types: loadable with weights_only=True)."""
    return {"torch": torch.get_rng_state(), "python": _to_lists(random.getstate())}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def _to_lists(x):
    return [_to_lists(v) for v in x] if isinstance(x, tuple) else x
