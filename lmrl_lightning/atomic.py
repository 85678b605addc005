"""Files and directories that appear whole or not at all.

Everything is written beside its target under a hidden temporary name and renamed over it at the end (a rename
within a directory is atomic), so a crash or Ctrl-C never leaves half a file where a reader would look; an
exception, KeyboardInterrupt included, removes the temporary file or directory.
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator, Union

PathLike = Union[str, os.PathLike]


def partial_path(path: Path) -> Path:
    """The hidden sibling a write of `path` goes to first; the process id keeps concurrent writers (DDP ranks)
    from sharing one."""
    return path.with_name(f".{path.name}.{os.getpid()}.partial")


@contextmanager
def atomic_open(path: PathLike, mode: str = "w", fsync: bool = False) -> Iterator[IO]:
    """Open a temporary sibling of `path` for writing ("w": UTF-8 text, "wb": bytes) and rename it over `path`
    when the block ends without an exception. `fsync=True` flushes it to disk first (checkpoints: the rename
    must not reach the disk before the data)."""
    if mode not in ("w", "wb"):
        raise ValueError(f"mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_path(path)
    try:
        with open(partial, mode, encoding="utf-8" if mode == "w" else None) as f:
            yield f
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def atomic_write_text(path: PathLike, text: str, fsync: bool = False) -> None:
    with atomic_open(path, "w", fsync) as f:
        f.write(text)


def atomic_write_bytes(path: PathLike, data: bytes, fsync: bool = False) -> None:
    with atomic_open(path, "wb", fsync) as f:
        f.write(data)


def atomic_write_json(path: PathLike, data: Any) -> None:
    """`data` as indented JSON with a final newline (every JSON file the project writes)."""
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def make_staging_directory(out: Path) -> Path:
    """A new, empty, hidden directory beside `out` (same filesystem, so that moving it into place is a rename)."""
    staging = out.with_name(f".{out.name}.incomplete-{uuid.uuid4().hex[:8]}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging.mkdir()
    except OSError as e:  # report the path the person named, not the hidden staging name
        raise OSError(e.errno, f"cannot create a directory here ({e.strerror})", str(out)) from None
    return staging


@contextmanager
def promoted_on_success(staging: Path, out: Path, replace: bool = False) -> Iterator[Path]:
    """Yield `staging`; move it to `out` when the block succeeds, delete it when the block raises."""
    try:
        yield staging
        move_into_place(staging, out, replace)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


@contextmanager
def atomic_directory(out: PathLike, replace: bool = False) -> Iterator[Path]:
    """Yield an empty staging directory to fill; it becomes `out` when the block ends without an exception.

    `out` may be missing or an empty directory; a non-empty one is replaced only with `replace=True` (see
    `move_into_place`), otherwise the final rename fails and `out` is left as it was."""
    out = Path(out)
    with promoted_on_success(make_staging_directory(out), out, replace) as staging:
        yield staging


def move_into_place(staging: Path, out: Path, replace: bool = False) -> None:
    """Rename `staging` to `out`. A non-empty `out` is refused (OSError) unless `replace`; then it is renamed
    aside first and deleted only once `staging` is in place, so a failure at any point leaves one of the two."""
    if not replace or not out.is_dir() or not any(out.iterdir()):
        os.replace(staging, out)  # onto a new name or an empty directory: one atomic rename
        return
    old = out.with_name(f".{out.name}.replaced-{uuid.uuid4().hex[:8]}")
    os.rename(out, old)
    try:
        os.rename(staging, out)
    except BaseException:
        os.rename(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)
