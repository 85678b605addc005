"""The wheel installs `tasks/` and `callbacks/` under the `lmrl_lightning` namespace (DESIGN.md, layout).

Builds a wheel from a copy of the working tree, installs it (no dependencies) into a fresh venv whose only link
to this environment is a .pth line pointing at our site-packages (so torch etc. resolve without a download),
and imports the task and callback packages from there, away from the repository.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
TOP_LEVEL_SKIP = {".venv", ".git", "build", "dist", "runs", "lightning_logs", "data", ".pytest_cache", ".ci"}

CHECK = r"""
import importlib.util, json, sys, sysconfig
import lmrl_lightning
import lmrl_lightning.tasks.maze
import lmrl_lightning.callbacks
from lmrl_lightning.tasks.wordle import answer_words, guess_words
from lmrl_lightning.registry import get_task
import torch
print(json.dumps({
    "prefix": sys.prefix,
    "purelib": sysconfig.get_paths()["purelib"],
    "lmrl": lmrl_lightning.__file__,
    "maze": lmrl_lightning.tasks.maze.__file__,
    "callbacks": lmrl_lightning.callbacks.__file__,
    "top_tasks": importlib.util.find_spec("tasks") is not None,
    "top_callbacks": importlib.util.find_spec("callbacks") is not None,
    "maze_variants": list(get_task("maze").variants),
    "wordle_lists": [len(answer_words()), len(guess_words())],
    "torch": torch.__file__,
}))
"""


def _ignore(directory: str, names: list[str]) -> set[str]:
    skip = {n for n in names if n == "__pycache__" or n.endswith(".egg-info")}
    if Path(directory).resolve() == REPO:
        skip |= TOP_LEVEL_SKIP & set(names)
    return skip


def _run(cmd, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, **kwargs)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"}}
    env.update(PIP_NO_INPUT="1", PIP_DISABLE_PIP_VERSION_CHECK="1", PYTHONNOUSERSITE="1", HF_HUB_OFFLINE="1")
    return env


def test_wheel_installs_tasks_and_callbacks_under_namespace(tmp_path):
    env = _clean_env()
    src = tmp_path / "src"
    shutil.copytree(REPO, src, ignore=_ignore)
    dist = tmp_path / "dist"
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(dist), str(src)],
        cwd=tmp_path,
        env=env,
    )
    (wheel,) = dist.glob("lmrl_lightning-*.whl")

    # The wheel itself: everything under lmrl_lightning/ (and its dist-info), no top-level tasks/ or callbacks/.
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        top = {n.split("/", 1)[0] for n in names}
        (top_level_txt,) = [n for n in names if n.endswith(".dist-info/top_level.txt")]
        assert zf.read(top_level_txt).decode().split() == ["lmrl_lightning"]
    assert {t for t in top if not t.endswith(".dist-info")} == {"lmrl_lightning"}
    for path in (
        "lmrl_lightning/tasks/__init__.py",
        "lmrl_lightning/tasks/maze/env.py",
        "lmrl_lightning/tasks/wordle/wordlists/answers.txt",
        "lmrl_lightning/tasks/wordle/wordlists/guesses.txt",
        "lmrl_lightning/callbacks/__init__.py",
        "lmrl_lightning/data/tokenize.py",
        "lmrl_lightning/models/tokenizer.py",
    ):
        assert path in names, path

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], env=env)
    py = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    _run(
        [sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index", str(wheel)],
        cwd=tmp_path,
        env=env,
    )
    purelib = Path(_run([str(py), "-I", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], env=env).stdout.strip())
    assert purelib.is_dir() and purelib.resolve().is_relative_to(venv.resolve())
    # Dependencies come from this environment's site-packages (a .pth adds it after the venv's own, without
    # processing its .pth files, so the editable install of the repo is not picked up).
    ours = Path(sysconfig.get_paths()["purelib"])
    (purelib / "zz_main_env.pth").write_text(str(ours) + "\n", encoding="utf-8")

    installed = {p.name for p in purelib.iterdir()}
    assert "lmrl_lightning" in installed
    assert "tasks" not in installed and "callbacks" not in installed
    assert (venv / "bin" / "lmrl").is_file() or (venv / "Scripts" / "lmrl.exe").is_file()

    run_dir = tmp_path / "elsewhere"
    run_dir.mkdir()
    out = _run([str(py), "-I", "-c", CHECK], cwd=run_dir, env=env).stdout.strip().splitlines()[-1]
    info = json.loads(out)
    assert Path(info["prefix"]).resolve() == venv.resolve()
    for key in ("lmrl", "maze", "callbacks"):
        module_file = Path(info[key]).resolve()
        assert module_file.is_relative_to(purelib.resolve()), (key, module_file)
        assert not module_file.is_relative_to(REPO), (key, module_file)
    assert Path(info["maze"]).resolve() == (purelib / "lmrl_lightning" / "tasks" / "maze" / "__init__.py").resolve()
    assert Path(info["callbacks"]).resolve() == (purelib / "lmrl_lightning" / "callbacks" / "__init__.py").resolve()
    assert info["top_tasks"] is False
    assert info["top_callbacks"] is False
    assert info["maze_variants"] == ["fo", "po"]
    assert info["wordle_lists"] == [400, 10305]  # the word lists ship as package data
    assert Path(info["torch"]).resolve().is_relative_to(ours.resolve())
