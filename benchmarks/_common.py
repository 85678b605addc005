"""Shared helpers of the benchmark scripts: machine info, timing statistics, a quick model, JSON output."""
from __future__ import annotations

import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any, Optional

import torch

from lmrl_lightning.atomic import atomic_write_json

RESULTS_DIR = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parent.parent


def resolve_revision(ref: str) -> str:
    """`ref` as the full id of a commit of this branch's own history (an ancestor of HEAD). Benchmarks resolve
    `--before-ref` when they start and record the id: a relative ref such as HEAD~1 read later, after a commit,
    would name another revision."""
    if ref.startswith("-"):  # git would read it as an option
        raise SystemExit(f"--before-ref {ref!r}: not a git revision")
    commit = subprocess.run(["git", "rev-parse", "--verify", f"{ref}^{{commit}}"], cwd=REPO, capture_output=True,
                            text=True).stdout.strip()
    if not commit or subprocess.run(["git", "merge-base", "--is-ancestor", commit, "HEAD"], cwd=REPO).returncode:
        raise SystemExit(f"--before-ref {ref!r}: not a commit in this branch's history (an ancestor of HEAD)")
    return commit


def modules_at_revision(ref: str, paths: list[str]) -> dict[str, types.ModuleType]:
    """The package modules at `paths` as they are at git revision `ref` (read with `git show`), by file stem, so
    that the code before a change runs beside it in one process. Each module imports the earlier ones of `paths`
    as they are at `ref` (list a module before its importers) and the rest of the package as it is now; a path the
    revision does not have is left out (nothing there imports it).

    This runs code from git history, so `ref` must be a commit of this branch's own history (an ancestor of HEAD):
    code this checkout already contains and runs, never a file or a fetched ref of unknown origin."""
    commit = resolve_revision(ref)
    loaded, old_by_name = {}, {}
    for name in paths:
        shown = subprocess.run(["git", "show", f"{commit}:{name}"], cwd=REPO, capture_output=True, text=True)
        if shown.returncode:
            if not (REPO / name).is_file():  # a wrong path, not a module added since `ref`: say so, run nothing
                raise SystemExit(f"--before-ref: no module {name} here or at {commit}")
            continue
        module = types.ModuleType(f"_at_{commit}_{Path(name).stem}")
        sys.modules[module.__name__] = module  # dataclasses look their module up
        current = {dotted: sys.modules.get(dotted) for dotted in old_by_name}
        sys.modules.update(old_by_name)  # its imports of the earlier paths find their old versions
        try:
            exec(compile(shown.stdout, f"{commit}:{name}", "exec"), module.__dict__)
        finally:
            for dotted, now in current.items():
                if now is None:
                    sys.modules.pop(dotted, None)
                else:
                    sys.modules[dotted] = now
        old_by_name[name.removesuffix(".py").replace("/", ".")] = module
        loaded[Path(name).stem] = module
    return loaded


def quickstart_bc(out: Path, episodes: int, seed: int) -> tuple[Path, Path, list[dict]]:
    """The quickstart's FO-Maze dataset and its 800-step BC checkpoint under `out`, made (and the BC evaluated on
    `episodes`) unless already there: (data directory, checkpoint, the BC row or nothing)."""
    from lmrl_lightning.quickstart import prepare_maze_data, run_algorithms

    data_dir = out / "data" / "maze_fo"
    prepare_maze_data(data_dir, "fo", seed)
    bc = out / "checkpoints" / "bc.ckpt"
    return data_dir, bc, [] if bc.is_file() else run_algorithms(["BC"], out, "fo", episodes, 800, 0, seed)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> Optional[list[float]]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def machine_info() -> dict[str, Any]:
    import lightning
    import transformers

    return {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "lightning": lightning.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cuda_available": torch.cuda.is_available(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "load_average_at_start": load_average(),
    }


def command_line() -> str:
    return "python " + " ".join(shlex.quote(a) for a in sys.argv)


def median(xs: list[float]) -> float:
    return float(statistics.median(xs))


def paired_steps(repeats: list[dict], before: str, after: str) -> dict:
    """Summary of two arms' training steps timed alternately (`repeats`: per repeat, each arm's `s_per_step` and
    `first_loss`): each arm's median seconds per step, the median of the per-repeat ratios before / after, and both
    arms' first loss (the same function: they must agree)."""
    return {f"{before}_s_per_step": median(r[before]["s_per_step"] for r in repeats),
            f"{after}_s_per_step": median(r[after]["s_per_step"] for r in repeats),
            "speedup": median(r[before]["s_per_step"] / r[after]["s_per_step"] for r in repeats),
            "first_loss": {arm: repeats[0][arm]["first_loss"] for arm in (before, after)}, "repeats": repeats}


def quiet_libraries() -> None:
    """Silence the usual start-up chatter (HF offline mode, Lightning tips) so the tables stay readable."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import logging
    import warnings

    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "lightning.pytorch.utilities.rank_zero",
                 "lightning.fabric.utilities.rank_zero", "transformers"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*GPU available but not used.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
    except Exception:  # pragma: no cover - only cosmetics
        pass


def lightning_trainer(max_steps: int, callbacks: Optional[list] = None):
    import lightning as L

    return L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=max_steps,
        max_epochs=-1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=callbacks or [],
    )


def write_json(path: Path, payload: dict[str, Any]) -> Path:
    """A result file, written whole or not at all (an interrupted benchmark keeps the previous result)."""
    atomic_write_json(path, payload)
    return path


def markdown_table(headers: list[str], rows: list[list[Any]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for r in rows:
        out.append("| " + " | ".join(str(x) for x in r) + " |")
    return "\n".join(out)


class Stopwatch:
    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start
        return False
