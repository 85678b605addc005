"""Dataset directories (`lmrl data`): written whole with a manifest, replaced only with --overwrite, nothing left
behind on failure or Ctrl-C, bad arguments refused before any work; and `fit`'s check that the data file, the
tokenizer and the config belong to the same dataset."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from lmrl_lightning.cli import main
from lmrl_lightning.data import prepare
from lmrl_lightning.data.datamodule import EpisodeDataModule
from lmrl_lightning.data.prepare import MANIFEST_FILE, TOKENIZER_DIR, TRAIN_FILE, prepare_task_data
from lmrl_lightning.errors import LMRLError
from lmrl_lightning.models.backbone import BackboneConfig, load_tokenizer
from lmrl_lightning.models.tokenizer import save_tokenizer, train_bpe_tokenizer
from lmrl_lightning.registry import get_task


def _prepare(out: Path, **kwargs) -> dict:
    kwargs.setdefault("n_episodes", 20)
    return prepare_task_data("maze", "fo", out, vocab_size=300, progress=False, **kwargs)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """A 20-episode maze FO dataset directory; tests that change it work on a copy."""
    out = tmp_path_factory.mktemp("data") / "maze_fo"
    _prepare(out)
    return out


def _copy(dataset: Path, tmp_path: Path, keep_times: bool = True) -> Path:
    copy = shutil.copy2 if keep_times else shutil.copy
    return Path(shutil.copytree(dataset, tmp_path / "maze_fo", copy_function=copy))


def _failing_generator(monkeypatch, error: BaseException) -> list:
    """Make the maze generator write part of a file and raise `error`; returns the list of calls."""
    calls = []

    def generate(out_dir, **kwargs):
        calls.append(out_dir)
        (Path(out_dir) / TRAIN_FILE).write_text('{"turns": [', encoding="utf-8")
        raise error

    spec = dataclasses.replace(get_task("maze"), generate_dataset=generate)
    monkeypatch.setattr(prepare, "get_task", lambda name: spec)
    return calls


# ----------------------------------------------------------------------------------------------------------
# Writing


def test_dataset_directory_holds_a_manifest(dataset):
    assert sorted(p.name for p in dataset.iterdir()) == [MANIFEST_FILE, "stats.json", TOKENIZER_DIR, TRAIN_FILE]
    assert [p.name for p in dataset.parent.iterdir()] == [dataset.name]  # no temporary directory left
    manifest = json.loads((dataset / MANIFEST_FILE).read_text())
    assert {k: manifest[k] for k in ("format", "version", "task", "variant", "seed", "episodes", "vocab_size")} == {
        "format": "lmrl-dataset", "version": 1, "task": "maze", "variant": "fo", "seed": 0, "episodes": 20,
        "vocab_size": 300,
    }
    train = manifest["files"][TRAIN_FILE]
    assert train["sha256"] == hashlib.sha256((dataset / TRAIN_FILE).read_bytes()).hexdigest()
    assert train["bytes"] == (dataset / TRAIN_FILE).stat().st_size
    assert manifest["tokenizer"]["sha256"] == prepare.sha256_dir(dataset / TOKENIZER_DIR)
    assert manifest["stats"]["n_episodes"]["ours"] == 20


def test_existing_dataset_is_replaced_only_with_overwrite(dataset, tmp_path):
    out = _copy(dataset, tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    before = (out / TRAIN_FILE).read_bytes()
    with pytest.raises(LMRLError, match="already holds a dataset; pass --overwrite to replace it"):
        _prepare(out, seed=1)
    assert (out / TRAIN_FILE).read_bytes() == before
    (out / "extra.txt").write_text("left from before")
    _prepare(out, seed=1, overwrite=True)
    assert (out / TRAIN_FILE).read_bytes() != before
    assert json.loads((out / MANIFEST_FILE).read_text())["seed"] == 1
    assert not (out / "extra.txt").exists()  # the directory is replaced whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["maze_fo", "notes.txt"]


def test_a_directory_that_is_not_a_dataset_is_never_replaced(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("years of work")
    with pytest.raises(LMRLError, match="holds no dataset; it is never replaced"):
        _prepare(tmp_path / "mine", overwrite=True)
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "years of work"


def test_an_empty_directory_is_used(tmp_path):
    (tmp_path / "d").mkdir()
    _prepare(tmp_path / "d", n_episodes=3)
    assert (tmp_path / "d" / MANIFEST_FILE).is_file()


@pytest.mark.parametrize("error", [KeyboardInterrupt(), RuntimeError("generator died")])
def test_interrupted_generation_leaves_nothing_and_keeps_the_old_dataset(dataset, tmp_path, monkeypatch, error):
    out = _copy(dataset, tmp_path)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    calls = _failing_generator(monkeypatch, error)
    with pytest.raises(type(error)):
        _prepare(out, overwrite=True)
    assert calls and not Path(calls[0]).exists()
    assert [p.name for p in tmp_path.iterdir()] == ["maze_fo"]
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


@pytest.mark.parametrize("make_out, message", [
    (lambda root: root / "file.txt", "is an existing file, not a directory"),
    (lambda root: "", "--out is empty"),
    (lambda root: "  ", "--out is empty"),
    (lambda root: root / "file.txt" / "sub", "cannot write in"),
    (lambda root: ".", "is the working directory or above it"),
    (lambda root: "/", "is the working directory or above it"),
    (lambda root: (root / "link").symlink_to(root / "file.txt") or root / "link", "is a symbolic link"),
])
def test_bad_out_is_refused_before_any_work(tmp_path, monkeypatch, make_out, message):
    (tmp_path / "file.txt").write_text("keep me")
    calls = _failing_generator(monkeypatch, RuntimeError("must not run"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(LMRLError, match=message):
        _prepare(make_out(tmp_path))
    assert calls == []
    assert sorted(p.name for p in tmp_path.iterdir()) in (["file.txt"], ["file.txt", "link"])


@pytest.mark.parametrize("kwargs, message", [
    ({"n_episodes": 0}, "--episodes must be at least 1, got 0"),
    ({"n_episodes": -5}, "--episodes must be at least 1, got -5"),
    ({"n_episodes": 10**12}, "--episodes must be at most 100,000,000"),
    ({"vocab_size": 0}, "--vocab-size must be at least 258"),
    ({"vocab_size": -1}, "--vocab-size must be at least 258"),
    ({"vocab_size": 100}, "--vocab-size must be at least 258"),
])
def test_bad_counts_are_refused_before_any_work(tmp_path, monkeypatch, kwargs, message):
    calls = _failing_generator(monkeypatch, RuntimeError("must not run"))
    with pytest.raises(LMRLError, match=message):
        prepare_task_data("maze", "fo", tmp_path / "d", progress=False, **kwargs)
    assert calls == [] and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv, needle", [
    (["--out", "{file}"], "is an existing file"),
    (["--out", ""], "--out is empty"),
    (["--out", "{root}/d", "--vocab-size", "-1"], "--vocab-size must be at least 258, got -1"),
    (["--out", "{root}/d", "--episodes", str(10**12)], "--episodes must be at most"),
    (["--out", "{dataset}"], "pass --overwrite"),
])
def test_cli_data_errors_are_one_line(capsys, tmp_path, dataset, argv, needle):
    (tmp_path / "f").write_text("")
    values = {"file": tmp_path / "f", "root": tmp_path, "dataset": dataset}
    code = main(["data", "maze", *[a.format(**values) for a in argv]])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("lmrl: error: ") and needle in err, err


def test_cli_data_overwrite(capsys, dataset, tmp_path):
    out = _copy(dataset, tmp_path)
    argv = ["data", "maze", "--out", str(out), "--episodes", "5", "--vocab-size", "300", "--overwrite"]
    assert main(argv) == 0
    assert "manifest.json" in capsys.readouterr().out
    assert json.loads((out / MANIFEST_FILE).read_text())["episodes"] == 5


# ----------------------------------------------------------------------------------------------------------
# `fit`'s check of the manifest


def _setup(data_dir: Path, model_tokenizer: Path | None = None, **kwargs) -> EpisodeDataModule:
    """Set the DataModule up as `fit` does, for a model whose tokenizer directory is `model_tokenizer`."""
    tokenizer_dir = model_tokenizer or data_dir / TOKENIZER_DIR
    tokenizer = load_tokenizer(BackboneConfig("tiny", tokenizer=str(tokenizer_dir)))
    module = SimpleNamespace(tokenizer=tokenizer, backbone_config=BackboneConfig("tiny", tokenizer=str(tokenizer_dir)))
    kwargs.setdefault("window", 1)
    dm = EpisodeDataModule(str(data_dir / TRAIN_FILE), max_length=2048, val_fraction=0.0, **kwargs)
    dm.trainer = SimpleNamespace(lightning_module=module)
    dm.setup("fit")
    return dm


def test_fit_accepts_its_own_dataset(dataset):
    assert len(_setup(dataset, task="maze", variant="fo").train_chunks) > 0
    assert len(_setup(dataset, task="maze").train_chunks) > 0  # the default variant is fo


def test_fit_gives_every_chunk_of_a_cut_episode_the_state_at_its_cut(dataset):
    """The generator cuts most episodes at their horizon (done=false): each of their windowed chunks, not only the
    last, carries the context after the final move (MC Returns bootstraps from it); a done episode's carry none."""
    dm = _setup(dataset, task="maze")
    episodes: dict[str, list] = {}
    for chunk in dm.train_chunks:
        episodes.setdefault(chunk.source, []).append(chunk)
    cut = [chunks for chunks in episodes.values() if not chunks[-1].done]
    assert len(cut) < len(episodes) and any(len(chunks) > 1 for chunks in cut)
    for chunks in episodes.values():
        state = None if chunks[-1].done else chunks[-1].next_state_ids or chunks[-1].input_ids
        assert [c.cut_state_ids for c in chunks] == [state] * len(chunks)
    batch = next(iter(dm._loader(dm.train_chunks, shuffle=False)))
    rows = [dm.train_chunks[i] for i in range(len(batch["dones"]))]
    assert batch["episode_cut"].tolist() == [c.episode_cut for c in rows]
    assert batch["cut_state_mask"].sum(1).tolist() == [len(c.cut_state_ids or ()) for c in rows]


@pytest.mark.parametrize("kwargs, message", [
    ({"task": "wordle"}, "the dataset is task 'maze', but data.task is 'wordle'"),
    ({"task": "maze", "variant": "po"}, "the dataset is variant 'fo', but data.variant is 'po'"),
])
def test_fit_refuses_another_task_or_variant(dataset, kwargs, message):
    with pytest.raises(LMRLError, match=message):
        _setup(dataset, **kwargs)


def test_fit_refuses_new_data_beside_an_old_tokenizer(dataset, tmp_path):
    """What a SIGKILL in the old writer left: another task's data written over train.jsonl, the old tokenizer."""
    out = _copy(dataset, tmp_path)
    get_task("wordle").generate_dataset(tmp_path / "wordle", n_episodes=20, progress=False)
    shutil.copy(tmp_path / "wordle" / TRAIN_FILE, out / TRAIN_FILE)
    with pytest.raises(LMRLError) as info:
        _setup(out)
    assert "mixes two datasets" in str(info.value) and "\n" not in str(info.value)


def test_fit_refuses_a_changed_file_of_the_same_size(dataset, tmp_path):
    out = _copy(dataset, tmp_path)
    text = (out / TRAIN_FILE).read_text()
    (out / TRAIN_FILE).write_text(text.replace("move up", "move dn", 1))
    with pytest.raises(LMRLError, match="not the file the manifest records"):
        _setup(out)


def test_fit_accepts_a_copied_dataset(dataset, tmp_path):
    """A copy has new modification times: the file is hashed, and matches."""
    out = _copy(dataset, tmp_path, keep_times=False)
    assert (out / TRAIN_FILE).stat().st_mtime_ns != (dataset / TRAIN_FILE).stat().st_mtime_ns
    assert len(_setup(out, task="maze").train_chunks) > 0


def test_fit_does_not_hash_a_large_unchanged_file(dataset, tmp_path, monkeypatch):
    """Above ALWAYS_HASH_BYTES an unchanged size and mtime is enough; a changed mtime makes it hash."""
    out = _copy(dataset, tmp_path)
    monkeypatch.setattr(prepare, "ALWAYS_HASH_BYTES", 0)
    hashed = []
    sha256_file = prepare.sha256_file
    monkeypatch.setattr(prepare, "sha256_file", lambda p: hashed.append(Path(p).name) or sha256_file(p))
    _setup(out)
    assert TRAIN_FILE not in hashed
    os.utime(out / TRAIN_FILE)
    _setup(out)
    assert TRAIN_FILE in hashed


def test_fit_refuses_another_tokenizer_in_the_dataset_directory(dataset, tmp_path):
    out = _copy(dataset, tmp_path)
    texts = [t for t in (out / TRAIN_FILE).read_text().split('"') if t.endswith("\\n")]
    shutil.rmtree(out / TOKENIZER_DIR)
    save_tokenizer(train_bpe_tokenizer(texts + ["something else\n"], 280), out / TOKENIZER_DIR)
    with pytest.raises(LMRLError, match="not the tokenizer this dataset was written with"):
        _setup(out)
    # a model whose tokenizer lives elsewhere is not compared with the dataset's
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(out / TOKENIZER_DIR, elsewhere)
    assert len(_setup(out, model_tokenizer=elsewhere).train_chunks) > 0


def test_fit_loads_a_dataset_without_manifest(dataset, tmp_path):
    out = _copy(dataset, tmp_path)
    (out / MANIFEST_FILE).unlink()
    (out / TRAIN_FILE).write_text((out / TRAIN_FILE).read_text().replace("move up", "move dn"))
    assert len(_setup(out, task="maze").train_chunks) > 0


def test_fit_refuses_a_truncated_manifest(dataset, tmp_path):
    out = _copy(dataset, tmp_path)
    (out / MANIFEST_FILE).write_text((out / MANIFEST_FILE).read_text()[:50])
    with pytest.raises(LMRLError) as info:
        _setup(out)
    assert "unreadable dataset manifest" in str(info.value) and "\n" not in str(info.value)


def test_maze_generator_streams_in_blocks_without_changing_the_data(tmp_path, monkeypatch):
    """Memory stays flat for any --episodes: the maze is played and written a block at a time, same bytes."""
    from lmrl_lightning.data import generation
    from lmrl_lightning.tasks.maze import datagen

    datagen.generate_dataset(tmp_path / "one_block", n_episodes=30, seed=4, progress=False)
    monkeypatch.setattr(generation, "BLOCK", 7)
    datagen.generate_dataset(tmp_path / "blocks", n_episodes=30, seed=4, progress=False)
    for name in (TRAIN_FILE, "stats.json"):
        assert (tmp_path / "blocks" / name).read_bytes() == (tmp_path / "one_block" / name).read_bytes()
