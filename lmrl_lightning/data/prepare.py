"""`lmrl data`: generate a task's offline dataset and train the tokenizer that preset models use with it.

A dataset directory is written whole: everything (train.jsonl, stats.json, tokenizer/, manifest.json) goes into
a hidden temporary sibling, `.NAME.incomplete-XXXX`, which is renamed into place only once the manifest is
written; an exception or Ctrl-C removes it. An existing dataset is replaced only with `overwrite=True`: it is
renamed aside, the new one renamed in, then the old one deleted; nothing else in the parent is touched.

The manifest names the task (and where it came from: `registry.task_origin`), variant, seed, episode count and
statistics, and the size, modification time and sha256 of train.jsonl and of the tokenizer files, so that `fit`
can refuse a directory whose files no longer belong together (see `check_dataset_manifest`).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from lmrl_lightning.atomic import atomic_write_json, make_staging_directory, promoted_on_success
from lmrl_lightning.data.generation import TRAIN_FILE, RunningTable1Stats
from lmrl_lightning.data.jsonl import iter_episodes
from lmrl_lightning.data.original import write_original_dataset
from lmrl_lightning.errors import LMRLError
from lmrl_lightning.models.tokenizer import save_tokenizer, train_bpe_tokenizer
from lmrl_lightning.registry import get_task, task_origin

TOKENIZER_DIR = "tokenizer"
MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = "lmrl-dataset"
MANIFEST_VERSION = 1

# Generators stream episodes to disk, so the bound is about time (maze: ~1k episodes/s on one core), not memory.
MAX_EPISODES = 100_000_000
# Byte-level BPE: the 256 byte symbols and the two special tokens come before any merge.
MIN_VOCAB_SIZE = 258
# Below this, `fit` hashes train.jsonl to compare with the manifest; above, size and mtime are compared and
# the file is hashed only when they disagree.
ALWAYS_HASH_BYTES = 64 << 20

PathLike = Union[str, os.PathLike]


def prepare_task_data(
    task: str,
    variant: Optional[str],
    out_dir: PathLike,
    n_episodes: Optional[int] = None,
    seed: int = 0,
    vocab_size: int = 512,
    progress: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write the dataset directory `out_dir` (see the module docstring); returns the generator's statistics.

    Every argument is checked, and the output place made ready, before any episode is generated.
    """
    spec = get_task(task)
    variant = spec.check_variant(variant or spec.variants[0])
    if spec.generate_dataset is None:
        raise LMRLError(f"task {task!r} has no dataset generator")
    check_episode_count(n_episodes)
    check_vocab_size(vocab_size)
    out = check_out_dir(out_dir, overwrite)
    kwargs: dict[str, Any] = {"variant": variant, "seed": seed, "progress": progress}
    if n_episodes is not None:
        kwargs["n_episodes"] = n_episodes
    # Ctrl-C included, a failure leaves no half-written directory; an existing dataset is replaced only at the end.
    with promoted_on_success(make_temporary_sibling(out), out, replace=True) as tmp:
        stats = spec.generate_dataset(tmp, **kwargs)
        count = train_dataset_tokenizer(tmp, spec.candidate_actions, vocab_size)
        config = {"task": spec.name, "task_origin": task_origin(spec.name), "variant": variant, "seed": seed,
                  "episodes": count, "vocab_size": vocab_size}
        write_manifest(tmp, config, stats)
    return stats


def import_original_data(
    task: str,
    variant: Optional[str],
    source: PathLike,
    out_dir: PathLike,
    vocab_size: int = 512,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write the dataset directory `out_dir` from `source`, a data file of the original LMRL-Gym project, read by
    the task's `read_original` (see `data.original`); returns the statistics beside the paper's Table 1."""
    spec = get_task(task)
    variant = spec.check_variant(variant or spec.variants[0])
    if spec.read_original is None:
        raise LMRLError(f"task {task!r} cannot read the original project's data files (it has no read_original)")
    source = Path(source)
    if not source.is_file():
        raise LMRLError(f"--from-original: {source}: no such file")
    check_vocab_size(vocab_size)
    out = check_out_dir(out_dir, overwrite)
    with promoted_on_success(make_temporary_sibling(out), out, replace=True) as tmp:
        config = {"task": spec.name, "variant": variant, "source": str(source.resolve()),
                  "source_sha256": sha256_file(source)}
        stats = write_original_dataset(source, tmp, spec.read_original, RunningTable1Stats(spec.table1), config)
        count = train_dataset_tokenizer(tmp, spec.candidate_actions, vocab_size)
        write_manifest(tmp, {**config, "task_origin": task_origin(spec.name), "episodes": count,
                             "vocab_size": vocab_size}, stats)
    return stats


def train_dataset_tokenizer(directory: Path, candidate_actions: Optional[Sequence[str]], vocab_size: int) -> int:
    """Train the BPE tokenizer on every text of `directory`'s train.jsonl (and the task's candidate actions) and
    save it to `directory/tokenizer`; returns the number of episodes."""
    texts, count = set(candidate_actions or ()), 0
    for episode in iter_episodes(directory / TRAIN_FILE):
        texts.update(t.text for t in episode.turns)
        count += 1
    save_tokenizer(train_bpe_tokenizer(sorted(texts), vocab_size), directory / TOKENIZER_DIR)
    return count


def check_episode_count(n_episodes: Optional[int]) -> None:
    if n_episodes is None:
        return
    if n_episodes < 1:
        raise LMRLError(f"--episodes must be at least 1, got {n_episodes}")
    if n_episodes > MAX_EPISODES:
        raise LMRLError(
            f"--episodes must be at most {MAX_EPISODES:,} (generation time grows with it), got {n_episodes}"
        )


def check_vocab_size(vocab_size: int) -> None:
    if vocab_size < MIN_VOCAB_SIZE:
        raise LMRLError(
            f"--vocab-size must be at least {MIN_VOCAB_SIZE}, got {vocab_size} (the 256 byte symbols and 2 special "
            "tokens come before any merge)"
        )


def is_dataset_dir(path: Path) -> bool:
    """A directory that `lmrl data` wrote (a manifest; or train.jsonl, from versions before manifests)."""
    return (path / MANIFEST_FILE).is_file() or (path / TRAIN_FILE).is_file()


def check_out_dir(out_dir: PathLike, overwrite: bool) -> Path:
    """The absolute output path, refused with one line when it cannot or must not become the dataset."""
    if not str(out_dir).strip():
        raise LMRLError("--out is empty; name the dataset directory to write")
    out = Path(os.path.abspath(out_dir))
    if out.is_symlink():
        raise LMRLError(f"--out {out_dir} is a symbolic link; name the directory itself")
    if out.exists() and not out.is_dir():
        raise LMRLError(f"--out {out_dir} is an existing file, not a directory")
    if out == Path(out.anchor) or out == Path.cwd() or out in Path.cwd().parents:
        raise LMRLError(f"--out {out_dir} is the working directory or above it; name a new directory")
    if out.is_dir() and any(out.iterdir()):
        if not is_dataset_dir(out):
            raise LMRLError(f"--out {out_dir} is a non-empty directory that holds no dataset; it is never replaced")
        if not overwrite:
            raise LMRLError(f"--out {out_dir} already holds a dataset; pass --overwrite to replace it")
    return out


def make_temporary_sibling(out: Path) -> Path:
    """A hidden, clearly incomplete directory beside `out` (same filesystem, so that the rename is atomic)."""
    try:
        return make_staging_directory(out)
    except OSError as e:
        raise LMRLError(f"--out {out}: cannot write in {out.parent} ({e.strerror or e})") from None


# ---- manifest ----------------------------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def sha256_dir(directory: Path) -> str:
    """One hash over every file's relative path and contents, in sorted order."""
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        digest.update(path.relative_to(directory).as_posix().encode() + b"\0")
        digest.update(bytes.fromhex(sha256_file(path)))
    return digest.hexdigest()


def write_manifest(directory: Path, config: dict[str, Any], stats: dict[str, Any]) -> None:
    train = directory / TRAIN_FILE
    info = train.stat()
    manifest = {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        **config,
        "files": {TRAIN_FILE: {"bytes": info.st_size, "mtime_ns": info.st_mtime_ns, "sha256": sha256_file(train)}},
        "tokenizer": {"dir": TOKENIZER_DIR, "sha256": sha256_dir(directory / TOKENIZER_DIR)},
        "stats": stats,
    }
    atomic_write_json(directory / MANIFEST_FILE, manifest)


def read_manifest(directory: Path) -> Optional[dict[str, Any]]:
    """The directory's manifest, None without one; an unreadable manifest is an error."""
    path = directory / MANIFEST_FILE
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise LMRLError(f"{path}: unreadable dataset manifest ({e}); regenerate with lmrl data --overwrite") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise LMRLError(f"{path}: not an lmrl dataset manifest; regenerate with lmrl data --overwrite")
    if manifest.get("version") != MANIFEST_VERSION:
        raise LMRLError(f"{path}: manifest version {manifest.get('version')!r}, this lmrl reads {MANIFEST_VERSION}")
    return manifest


def check_dataset_manifest(
    data_path: PathLike, task: Optional[str], variant: Optional[str], model_tokenizer: Optional[PathLike]
) -> None:
    """Refuse a dataset directory whose files do not belong together or do not match the config.

    Checks, when `data_path` sits beside a manifest: the task and variant (when given); the data file against
    its recorded size, then its mtime, and its sha256 when the mtime differs (a copy) or the file is small, so
    that a 1 GB file is not hashed on every fit; and, when the model's tokenizer is the dataset's tokenizer
    directory, the tokenizer files' hash. A directory without a manifest (hand-made data) is not checked.
    """
    data_path = Path(data_path)
    manifest = read_manifest(data_path.parent)
    if manifest is None:
        return
    where = data_path.parent / MANIFEST_FILE
    for field, wanted in (("task", task), ("variant", variant)):
        if wanted is not None and manifest.get(field) != wanted:
            raise LMRLError(
                f"{where}: the dataset is {field} {manifest.get(field)!r}, but data.{field} is {wanted!r}"
            )
    recorded = manifest.get("files", {}).get(data_path.name)
    if recorded is not None and not _file_matches(data_path, recorded):
        raise LMRLError(
            f"{data_path}: not the file the manifest records ({where}); the directory mixes two datasets: "
            "regenerate it with lmrl data --overwrite"
        )
    tokenizer_dir = data_path.parent / manifest.get("tokenizer", {}).get("dir", TOKENIZER_DIR)
    if model_tokenizer is not None and Path(model_tokenizer).resolve() == tokenizer_dir.resolve():
        if sha256_dir(tokenizer_dir) != manifest.get("tokenizer", {}).get("sha256"):
            raise LMRLError(
                f"{tokenizer_dir}: not the tokenizer this dataset was written with ({where}); the directory mixes "
                "two datasets: regenerate it with lmrl data --overwrite"
            )


def _file_matches(path: Path, recorded: dict[str, Any]) -> bool:
    info = path.stat()
    if info.st_size != recorded.get("bytes"):
        return False
    if info.st_mtime_ns == recorded.get("mtime_ns") and info.st_size > ALWAYS_HASH_BYTES:
        return True
    return sha256_file(path) == recorded.get("sha256")
