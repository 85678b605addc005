"""The `lmrl` command: one-line errors (exit code 2, no traceback) for bad input, the data -> fit -> eval round
trip on a tiny model, and playing the maze from stdin.

Most commands run in-process through `lmrl_lightning.cli.main` (a fresh interpreter costs ~10 s of imports);
the malformed-dataset run goes through a real subprocess so that its whole stderr is seen.
"""
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lmrl_lightning.cli import main
from lmrl_lightning.data.jsonl import read_episodes
from lmrl_lightning.registry import task_names
from lmrl_lightning.tasks import maze
from lmrl_lightning.tasks.maze import MazeEnv
from lmrl_lightning.tasks.maze.env import apply_move, describe_fo, optimal_moves, optimal_return


def fit_args(data_path: Path, tokenizer: Path, root: Path, steps: int) -> list[str]:
    """`lmrl fit` flags for a tiny BC model on a maze FO dataset, without logger or progress bar."""
    return [
        "fit", "--seed_everything", "0",
        "--model", "lmrl_lightning.algorithms.BC", "--model.backbone.tokenizer", str(tokenizer),
        "--data", "lmrl_lightning.data.datamodule.EpisodeDataModule", "--data.data_path", str(data_path),
        "--data.task", "maze", "--data.variant", "fo", "--data.max_length", "64", "--data.batch_size", "8",
        "--trainer.accelerator", "cpu", "--trainer.max_steps", str(steps), "--trainer.limit_val_batches", "0",
        "--trainer.default_root_dir", str(root), "--trainer.logger", "false",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
    ]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """`lmrl data maze` with 20 episodes."""
    out = tmp_path_factory.mktemp("cli") / "maze_fo"
    assert main(["data", "maze", "--out", str(out), "--episodes", "20", "--vocab-size", "300"]) == 0
    return out


@pytest.fixture(scope="module")
def checkpoint(data_dir, tmp_path_factory) -> Path:
    """`lmrl fit` of BC for 5 steps on `data_dir`; the checkpoint Lightning writes."""
    root = tmp_path_factory.mktemp("fit")
    assert main(fit_args(data_dir / "train.jsonl", data_dir / "tokenizer", root, steps=5)) == 0
    (ckpt,) = (root / "checkpoints").glob("*.ckpt")
    return ckpt


def one_line_error(capsys, argv: list[str]) -> str:
    """Run `lmrl argv`, check exit code 2 and a single `lmrl: error:` line on stderr; return that line."""
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("lmrl: error: "), err
    return err.strip()


@pytest.mark.slow
def test_malformed_dataset_stops_fit_with_one_error_line(data_dir, tmp_path):
    """A bad field on line 2 ends `lmrl fit` with one error line naming file, line and field, and no traceback;
    the rest of stderr is Lightning's start-up log (the command line is not echoed back)."""
    lines = (data_dir / "train.jsonl").read_text().splitlines()
    episode = json.loads(lines[1])
    episode["turns"][1]["is_action"] = "yes"
    lines[1] = json.dumps(episode)
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines) + "\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(
        [sys.executable, "-m", "lmrl_lightning.cli", *fit_args(bad, data_dir / "tokenizer", tmp_path, steps=5)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    stderr = proc.stderr.strip().splitlines()
    assert stderr[-1] == f"lmrl: error: {bad}:2: turns[1].is_action must be true or false, got 'yes'"
    assert sum("lmrl: error" in line for line in stderr) == 1
    assert sum(str(bad) in line for line in stderr) == 1


def valid_tasks() -> str:
    """The registered tasks (maze, and those other tests register, e.g. word_choice)."""
    names = task_names()
    assert "maze" in names
    return ", ".join(names)


@pytest.mark.parametrize("command", [["data", "nope", "--out", "unused"], ["play", "nope"]])
def test_unknown_task_lists_the_valid_ones(capsys, command):
    """`lmrl data` and `lmrl play` with an unknown task name list the registered tasks."""
    assert one_line_error(capsys, command) == f"lmrl: error: unknown task 'nope'; valid tasks: {valid_tasks()}"


@pytest.mark.slow
def test_eval_with_unknown_task_lists_the_valid_ones(capsys, checkpoint):
    """`lmrl eval --task nope` lists the registered tasks."""
    assert one_line_error(capsys, ["eval", str(checkpoint), "--task", "nope"]) == (
        f"lmrl: error: unknown task 'nope'; valid tasks: {valid_tasks()}"
    )


def test_data_with_bad_variant_or_episode_count_is_one_line(capsys, tmp_path):
    """An unknown variant lists the valid ones; a non-positive episode count is refused before generating."""
    out = str(tmp_path / "d")
    assert one_line_error(capsys, ["data", "maze", "--variant", "zz", "--out", out]) == (
        "lmrl: error: task 'maze' has no variant 'zz'; valid: fo, po"
    )
    assert "at least 1, got 0" in one_line_error(capsys, ["data", "maze", "--episodes", "0", "--out", out])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["lmrl_lightning.algorithms.Nope", "nope"])
def test_fit_with_unknown_algorithm_lists_the_valid_ones(capsys, data_dir, tmp_path, name, monkeypatch):
    """`lmrl fit --model` with an algorithm that does not exist ends with one line listing the valid names (the
    built-in ones: no installed package declares any here, although test_plugin_package may install one meanwhile in
    another test worker)."""
    from lmrl_lightning import registry

    real_entry_points = registry.entry_points
    monkeypatch.setattr(registry, "entry_points", lambda group: [] if group == registry.ALGORITHM_ENTRY_POINTS
                        else real_entry_points(group=group))
    argv = fit_args(data_dir / "train.jsonl", data_dir / "tokenizer", tmp_path, steps=1)
    argv[argv.index("lmrl_lightning.algorithms.BC")] = name
    assert one_line_error(capsys, argv) == (
        f"lmrl: error: unknown algorithm {name!r}; valid: bc, mc_returns, ilql, ppo, online_filtered_bc (or the dotted path of an LMRLModule subclass)"
    )


@pytest.mark.slow
def test_eval_with_missing_checkpoint_is_one_line(capsys, tmp_path):
    """A checkpoint path that does not exist is reported as such."""
    missing = tmp_path / "missing.ckpt"
    assert one_line_error(capsys, ["eval", str(missing)]) == f"lmrl: error: checkpoint {str(missing)!r} does not exist"


@pytest.mark.slow
def test_eval_with_truncated_checkpoint_is_one_line(capsys, checkpoint, tmp_path):
    """The first half of a real checkpoint is reported as unreadable, possibly truncated."""
    data = checkpoint.read_bytes()
    half = tmp_path / "half.ckpt"
    half.write_bytes(data[: len(data) // 2])
    message = one_line_error(capsys, ["eval", str(half)])
    assert message.startswith(f"lmrl: error: checkpoint {str(half)!r} cannot be read")
    assert "truncated" in message


@pytest.mark.slow
def test_data_fit_eval_round_trip(capsys, monkeypatch, data_dir, checkpoint, tmp_path):
    """`lmrl eval` on the checkpoint `lmrl fit` wrote (task and variant taken from it) prints a transcript and a
    summary with returns, success rate and normalised score. The maze's episodes are capped at 5 steps here: the
    5-step model never reaches the goal, and full 100-step episodes would take most of a minute."""
    assert (data_dir / "train.jsonl").is_file() and (data_dir / "tokenizer" / "tokenizer.json").is_file()
    monkeypatch.setattr(maze.TASK, "make_env", lambda variant: MazeEnv(variant, max_steps=5))
    out, episodes_out = tmp_path / "eval.json", tmp_path / "episodes.jsonl"
    assert main(["eval", str(checkpoint), "--episodes", "25", "--out", str(out), "--episodes-out",
                 str(episodes_out)]) == 0
    stdout = capsys.readouterr().out
    assert "> move " in stdout  # the transcript's first action
    summary = json.loads(stdout[stdout.index("\n{") + 1:])
    assert summary["task"] == "maze" and summary["variant"] == "fo"
    assert summary["n_episodes"] == 25  # one episode from each of the 25 starts
    assert -6.0 <= summary["min_return"] <= summary["mean_return"] <= summary["max_return"] <= 0.0
    assert 0.0 <= summary["success_rate"] <= 1.0
    assert summary["normalised_score"] == pytest.approx(maze.NORMALISATION["fo"](summary["mean_return"]))
    written = json.loads(out.read_text())
    assert len(written["returns"]) == 25
    assert sum(written["returns"]) / 25 == pytest.approx(summary["mean_return"])
    episodes = read_episodes(episodes_out)  # the dataset reader's checks pass: the same format
    assert [e.total_reward for e in episodes] == written["returns"]
    # 5 moves, then the failure step
    assert all(e.num_actions == 6 and e.turns[1].text.startswith("move ") for e in episodes)


def test_play_reads_moves_from_stdin(capsys, monkeypatch):
    """`lmrl play maze` plays the typed moves: an unparseable one costs the invalid-action -4 and the game goes
    on; the shortest path then reaches the goal and the final return is printed."""
    env = MazeEnv("fo")
    env.reset(seed=3)
    position, moves = env.start, []
    while optimal_moves(position):
        moves.append(optimal_moves(position)[0])
        position = apply_move(position, moves[-1])
    monkeypatch.setattr(sys, "stdin", io.StringIO("jump\n" + "".join(moves)))
    assert main(["play", "maze", "--variant", "fo", "--seed", "3"]) == 0
    stdout = capsys.readouterr().out
    assert describe_fo(env.start) in stdout
    assert "reward -4, return so far -4" in stdout
    assert "Success" in stdout
    assert f"episode over: return {optimal_return(env.start) - 4:g}," in stdout


def test_eval_beta_on_a_bc_checkpoint_is_one_line(capsys, checkpoint):
    """`--beta` weighs value guidance: on a BC checkpoint it is refused, naming the checkpoint."""
    assert one_line_error(capsys, ["eval", str(checkpoint), "--beta", "4"]) == (
        f"lmrl: error: --beta applies to value-guided decoding (MC, ILQL); {checkpoint} holds BC"
    )


def test_eval_env_options_reach_the_env(capsys, checkpoint, tmp_path):
    """`--env-options` is a JSON object of the env's keyword arguments: a maze capped at 3 moves plays at most 3
    per episode; text that is not a JSON object, or an option the env does not take, is one line."""
    out = tmp_path / "eval.json"
    assert main(["eval", str(checkpoint), "--episodes", "25", "--env-options", '{"max_steps": 3}',
                 "--out", str(out)]) == 0
    assert json.loads(out.read_text())["mean_length"] <= 4  # 3 moves, then the failure step
    capsys.readouterr()
    assert one_line_error(capsys, ["eval", str(checkpoint), "--env-options", "[1]"]).startswith(
        "lmrl: error: --env-options must be a JSON object of keyword arguments")
    assert one_line_error(capsys, ["eval", str(checkpoint), "--env-options", "{max"]).startswith(
        "lmrl: error: --env-options must be a JSON object, e.g.")
