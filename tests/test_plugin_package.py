"""Tasks and algorithms from an installed package (issue 13, items 6 and 9): examples/plugin is copied to a temporary
directory, pip-installed into this venv (no dependencies, no build isolation) and found by `lmrl` through its entry
points only: `lmrl data guess_number` -> `lmrl fit -c examples/plugin/guess_number_awbc.yaml` (AWBC) -> `lmrl eval`
-> `lmrl play`, all in-process through `lmrl_lightning.cli.main`. Checkpoints and dataset manifests record where the
task came from, and `lmrl eval` names that package when the task is missing. The package is uninstalled at the end.
"""
from __future__ import annotations

import importlib
import io
import json
import os
import shutil
import subprocess
import sys
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
import torch

from lmrl_lightning import registry
from lmrl_lightning.cli import main

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
DISTRIBUTION = "lmrl-plugin-example"
ORIGIN = {
    "entry_point": "guess_number = lmrl_plugin_example.guess_number:TASK",
    "distribution": DISTRIBUTION,
    "version": "0.1.0",
}


def _pip(*args: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet", *args],
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.fixture(scope="module")
def plugin(tmp_path_factory):
    """examples/plugin installed from a temporary copy; uninstalled afterwards."""
    source = tmp_path_factory.mktemp("plugin") / "plugin"
    shutil.copytree(REPO / "examples" / "plugin", source,
                    ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    _pip("install", "--no-deps", "--no-build-isolation", "--no-index", str(source))
    importlib.invalidate_caches()
    try:
        yield
    finally:
        _pip("uninstall", "--yes", DISTRIBUTION)


@pytest.fixture(scope="module")
def workdir(plugin, tmp_path_factory) -> Path:
    """A working directory holding `lmrl data guess_number`'s dataset where the example config expects it."""
    root = tmp_path_factory.mktemp("work")
    out = root / "data" / "guess_number"
    assert main(["data", "guess_number", "--out", str(out), "--episodes", "200", "--vocab-size", "300"]) == 0
    return root


@pytest.fixture(scope="module")
def fitted(workdir) -> tuple[Path, str]:
    """`lmrl fit -c examples/plugin/guess_number_awbc.yaml` (the package's algorithm) for 2 steps, with its
    end-of-fit evaluation: the checkpoint and what the command printed."""
    argv = [
        "fit", "-c", str(REPO / "examples" / "plugin" / "guess_number_awbc.yaml"), "--data.batch_size", "8",
        "--trainer.accelerator", "cpu", "--trainer.max_steps", "2", "--trainer.limit_val_batches", "0",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
    ]
    capture, cwd = io.StringIO(), os.getcwd()
    stdout, sys.stdout = sys.stdout, capture
    os.chdir(workdir)  # the config's paths are relative: data/guess_number, runs/guess_number_awbc
    try:
        assert main(argv) == 0
    finally:
        sys.stdout = stdout
        os.chdir(cwd)
    return workdir / "runs" / "guess_number_awbc" / "checkpoints" / "last.ckpt", capture.getvalue()


def test_data_records_the_task_package(workdir):
    manifest = json.loads((workdir / "data" / "guess_number" / "manifest.json").read_text())
    assert manifest["task"] == "guess_number" and manifest["task_origin"] == ORIGIN


def test_fit_trains_the_package_algorithm_and_prints_its_evaluation(fitted):
    checkpoint, printed = fitted
    meta = torch.load(checkpoint, map_location="cpu", weights_only=True)["lmrl"]
    assert meta["algorithm"] == "lmrl_plugin_example.awbc.AWBC"
    assert meta["task"] == "guess_number" and meta["task_origin"] == ORIGIN
    assert "evaluation of guess_number-default at step 2 (64 episodes): mean return" in printed


def test_fit_model_takes_the_entry_point_name(plugin):
    from lmrl_lightning.cli import _resolve_model_args

    assert _resolve_model_args(["--model", "awbc"]) == ["--model", "lmrl_plugin_example.awbc.AWBC"]


def test_eval_finds_the_task_from_the_checkpoint(fitted, workdir, capsys, monkeypatch):
    monkeypatch.chdir(workdir)  # the checkpoint's tokenizer path is relative, as the config gave it
    assert main(["eval", str(fitted[0]), "--episodes", "8"]) == 0
    stdout = capsys.readouterr().out
    summary = json.loads(stdout[stdout.index("\n{") + 1:])
    assert summary["task"] == "guess_number" and summary["n_episodes"] == 8
    assert -4.0 <= summary["mean_return"] <= 0.0


def test_export_of_the_package_algorithm_evaluates(fitted, workdir, capsys, monkeypatch):
    """`lmrl export` writes AWBC's value head with the policy; `lmrl eval` rebuilds it through the entry point."""
    monkeypatch.chdir(workdir)
    assert main(["export", str(fitted[0]), "--out", "exported"]) == 0
    assert main(["eval", "exported", "--episodes", "8"]) == 0
    stdout = capsys.readouterr().out
    assert json.loads(stdout[stdout.index("\n{") + 1:])["task"] == "guess_number"


def test_eval_names_the_package_when_the_task_is_missing(fitted, workdir, capsys, monkeypatch):
    """Without the task's entry point, the recorded origin says what to install (it is never imported)."""
    monkeypatch.chdir(workdir)
    monkeypatch.delitem(registry._TASKS, "guess_number")
    real_entry_points = registry.entry_points
    monkeypatch.setattr(registry, "entry_points", lambda group: [] if group == registry.TASK_ENTRY_POINTS
                        else real_entry_points(group=group))
    assert main(["eval", str(fitted[0])]) == 2
    assert capsys.readouterr().err == (
        f"lmrl: error: {fitted[0]} was trained on task 'guess_number', which is not installed here; it came from the "
        "package lmrl-plugin-example==0.1.0 (entry point guess_number = lmrl_plugin_example.guess_number:TASK): "
        "install that, or name another task with --task\n"
    )


def test_play_from_stdin(plugin, capsys, monkeypatch):
    from lmrl_plugin_example.guess_number import GuessNumberEnv

    env = GuessNumberEnv()
    env.reset(seed=3)  # `lmrl play --seed 3` hides the same number
    monkeypatch.setattr(sys, "stdin", io.StringIO(f"nine\n{env.secret}\n"))
    assert main(["play", "guess_number", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "not a number from 1 to 8" in out and "correct" in out
    assert f"the number was {env.secret}" in out and "episode over: return -1" in out


def test_the_example_task_keeps_the_env_contract_and_its_constants(plugin):
    """The fuzzed TextEnv contract (tests/env_fuzzing.py); the normalisation's dataset average and expert return
    recomputed from the generator and from bisection."""
    from env_fuzzing import fuzz_env
    from lmrl_lightning.env import PerEpisodePolicy
    from lmrl_lightning.rollout import rollout
    from lmrl_plugin_example import guess_number as game

    result = fuzz_env("guess_number", "default", n_actions=400, seed=0, time_limit=20)
    assert not result.undocumented_exceptions and not result.violations, result.examples
    assert set(result.rewards) <= {game.WRONG_GUESS_REWARD, game.RIGHT_GUESS_REWARD}
    bisection = rollout(game.GuessNumberEnv(), PerEpisodePolicy(game.BisectingPlayer(1.0)),
                        game.eval_episodes("default", 8))
    assert all(e.success for e in bisection)
    assert sum(e.total_reward for e in bisection) / len(bisection) == game.EXPERT_RETURN


def test_the_dataset_average_matches_the_generator(plugin, tmp_path):
    from lmrl_plugin_example import guess_number as game

    stats = game.generate_dataset(str(tmp_path), n_episodes=2000, seed=0)
    assert stats["mean_return"] == pytest.approx(game.DATASET_AVERAGE_RETURN)


def test_awbc_loss_weights_actions_by_advantage(plugin):
    from lmrl_plugin_example.awbc import awbc_loss

    logits, actions = torch.randn(4, 7), torch.tensor([0, 1, 2, 3])
    cross_entropy = torch.nn.functional.cross_entropy(logits, actions, reduction="none")
    returns = torch.tensor([1.0, 0.0, -1.0, 50.0])
    values = torch.zeros(4, requires_grad=True)
    loss, metrics = awbc_loss(logits, actions, returns, values, temperature=1.0, max_weight=20.0, value_coef=0.5)
    weights = torch.tensor([torch.e, 1.0, 1 / torch.e, 20.0])  # exp(advantage), clipped at max_weight
    value_loss = 0.5 * (returns**2).mean()
    assert loss.item() == pytest.approx(((weights * cross_entropy).mean() + 0.5 * value_loss).item(), rel=1e-5)
    assert metrics["mean_weight"].item() == pytest.approx(weights.mean().item(), rel=1e-5)
    loss.backward()  # the value gets gradient from its regression only (the weights are detached)
    assert torch.allclose(values.grad, 0.5 * (values - returns).detach() / len(values))


def test_a_broken_or_unknown_entry_point_breaks_only_its_own_name(monkeypatch):
    """Entry points are matched by name before anything is loaded: the built-ins work beside a broken package,
    whose task fails with one line naming it; a name that matches nothing imports nothing."""
    broken = EntryPoint(name="broken", value="lmrl_no_such_module:TASK", group=registry.TASK_ENTRY_POINTS)
    monkeypatch.setattr(registry, "entry_points", lambda group: [broken] if group == registry.TASK_ENTRY_POINTS else [])
    assert registry.get_task("maze").name == "maze"
    assert "broken" in registry.task_names()
    with pytest.raises(registry.LMRLError, match="task 'broken' from .* failed to load: ModuleNotFoundError"):
        registry.get_task("broken")
    modules = set(sys.modules)
    assert registry.find_task("json.decoder") is None and registry.find_task("lmrl_no_such_module") is None
    assert set(sys.modules) == modules
