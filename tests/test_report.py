"""`lmrl report` on small synthetic result files: the Table 2 / Table 4 / Table 1 layout with hand-computed means
and standard deviations, missing and failed cells, a task and an algorithm the paper does not have, a per-task
benchmark file read through the compatibility path, PNG plots (bars, heat map, learning curves from TensorBoard
logs), one-line errors; and the paper numbers of the report's data table against each other and the registry."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from lmrl_lightning.cli import main
from lmrl_lightning.registry import find_task
from lmrl_lightning.report import (
    CELL_FORMAT,
    PAPER,
    PAPER_TABLE1,
    PLAN_FORMAT,
    load_results,
    plot_curves,
    read_scalars,
    run_report,
)
from lmrl_lightning.scoring import Normalisation

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def write_cell(directory: Path, task: str, variant: str, algorithm: str, seed: int, score, mean_return: float,
               **extra) -> Path:
    payload = {"format": CELL_FORMAT, "version": 1, "task": task, "variant": variant, "algorithm": algorithm,
               "seed": seed, "evaluation": {"n_episodes": 800, "mean_return": mean_return, "normalised_score": score,
                                            "success_rate": 0.5}, **extra}
    path = directory / f"{task}_{variant}_{algorithm}_seed{seed}.json"
    path.write_text(json.dumps(payload))
    return path


def table_line(report: str, section: str, label: str) -> str:
    """The line of row `label` in the table under heading `section`."""
    part = report.split(f"## {section}")[1].split("\n## ")[0]
    (line,) = [row for row in part.splitlines() if row.startswith(f"| {label} |")]
    return line


@pytest.fixture
def results_dir(tmp_path) -> Path:
    """A partial grid: FO Maze BC on 3 seeds, ILQL on 2 (one stopped by the time budget), MC planned but failed,
    PPO not started; an external task with an external algorithm; Wordle from a per-task benchmark file."""
    d = tmp_path / "results"
    d.mkdir()
    maze_stats = {"n_episodes": {"ours": 1240, "paper": 1240}, "mean_length": {"ours": 18.7, "paper": 19.7},
                  "std_length": {"ours": 23.3, "paper": 24.5}, "success_rate": {"ours": 0.098, "paper": 0.11},
                  "mean_return": {"ours": -18.6, "paper": -19.7}, "std_return": {"ours": 23.3, "paper": 24.5}}
    for seed, (score, ret) in enumerate([(50.0, -83.0), (60.0, -80.0), (70.0, -77.0)]):
        write_cell(d, "maze", "fo", "bc", seed, score, ret, optimizer_steps=800,
                   dataset={"path": "x", "stats": maze_stats},
                   protocol={"episodes": 800, "decoding": "rerank", "model": "tiny"})
    write_cell(d, "maze", "fo", "ilql", 0, 70.0, -20.0, optimizer_steps=2000, beta=1.0,
               beta_sweep={"1": 70.0, "4": 60.0, "16": 40.0})
    write_cell(d, "maze", "fo", "ilql", 1, 80.0, -15.0, optimizer_steps=1500, stopped_by_time=True)
    external_stats = {"n_episodes": {"ours": 500, "paper": 1000}, "success_rate": {"ours": 0.4, "paper": 0.5}}
    write_cell(d, "guess_number", "default", "bc", 0, 42.0, -5.5, dataset={"stats": external_stats})
    write_cell(d, "guess_number", "default", "my_algo", 0, None, -4.25)
    plan = {"format": PLAN_FORMAT, "version": 1, "cells": [
        {"task": "maze", "variant": "fo", "algorithm": "mc_returns", "seed": 0, "status": "failed"},
        {"task": "maze", "variant": "fo", "algorithm": "ppo", "seed": 0, "status": "not started"},
        {"task": "maze", "variant": "fo", "algorithm": "bc", "seed": 0, "status": "done"},
    ]}
    (d / "grid.json").write_text(json.dumps(plan))
    return d


@pytest.mark.slow  # about 5 s: matplotlib's import and four figures
def test_report_tables_on_a_partial_grid(results_dir, tmp_path):
    wordle = tmp_path / "wordle_scores.json"
    wordle.write_text(json.dumps({"benchmark": "wordle_scores", "config": {}, "rows": [
        {"algorithm": "BC", "seed": 0, "mean_return": -2.9525, "normalised_score": 74.77, "n_episodes": 400},
        {"algorithm": "%BC", "seed": 0, "mean_return": -2.62, "normalised_score": 82.7, "n_episodes": 400}]}))
    report = run_report([results_dir, wordle], tmp_path / "out").read_text()

    # BC: scores 50, 60, 70 -> 60.0 ± 10.0; ILQL 70, 80 -> 75.0 ± 7.1, one seed stopped by time (†), beta 1 the
    # smallest swept (‡); MC failed, PPO never started, the others not planned.
    assert table_line(report, "Table 2", "FO Maze") == (
        "| FO Maze | 60.0 ± 10.0 (3) / 58.2 | missing / 68.9 | missing (failed) / 75.0 | 75.0 ± 7.1 (2)†‡ / 99.9 "
        "| missing (not started) / 79.7 | missing / 57.4 | missing / — | 78.2 |")
    # Returns -83, -80, -77 -> -80.0 ± 3.0; -20, -15 -> -17.5 ± 3.5.
    assert table_line(report, "Table 4", "FO Maze").startswith(
        "| FO Maze | -80.0 ± 3.0 (3) / -72.1 | missing / -56.4 | missing (failed) / -48.1 | -17.5 ± 3.5 (2)†‡ / -6.97 |")
    assert table_line(report, "Table 2", "Wordle").startswith("| Wordle | 74.8 (1) / 79.9 | 82.7 (1) / 79.1 |")
    # Rows the paper has but nobody ran are still shown, as missing.
    assert table_line(report, "Table 2", "Endgames").startswith("| Endgames | missing / 35.1 |")
    # The external task gets its own row and its algorithm its own column (after the paper's six and before GPT-4);
    # a result without a normalised score shows its raw return only.
    assert "| task | BC | %BC | MC Returns | ILQL | Online PPO | Online %BC | my_algo | GPT-4 (paper) |" in report
    assert table_line(report, "Table 2", "guess_number") == (
        "| guess_number | 42.0 (1) / — | missing / — | missing / — | missing / — | missing / — | missing / — "
        "| — / — | — |")
    assert table_line(report, "Table 4", "guess_number").endswith("| -4.25 (1) / — | — |")
    # Table 1: ours beside the paper's (an external task's paper figures come from its dataset's statistics).
    assert table_line(report, "Table 1", "FO Maze") == (
        "| FO Maze | 1240 / 1240 | 18.7 / 19.7 | 23.3 / 24.5 | 0.098 / 0.110 | -18.6 / -19.7 | 23.3 / 24.5 |")
    assert table_line(report, "Table 1", "guess_number").startswith("| guess_number | 500 / 1000 | — / — | — / — "
                                                                    "| 0.400 / 0.500 |")
    protocol = [line for line in report.splitlines() if line.startswith("- **FO Maze**")][0]
    assert "evaluation 800 episodes; decoding rerank; paper: 800 episodes" in protocol
    assert "steps BC 800, ILQL 1500/2000" in protocol and "normalisation min/avg/max -101/-83/-6.84" in protocol

    out = tmp_path / "out"
    for name in ("table2.png", "scores_maze_fo.png", "scores_wordle.png", "scores_guess_number.png"):
        data = (out / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 5000, name
        assert f"]({name})" in report
    assert not (out / "scores_endgames.png").exists()  # no result, no bars


def test_a_later_file_replaces_an_earlier_cell(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir(), second.mkdir()
    old = write_cell(first, "maze", "po", "bc", 0, 30.0, -90.0)
    new = write_cell(second, "maze", "po", "bc", 0, 40.0, -88.0)
    results = load_results([old, new])
    assert [r.normalised_score for r in results.cells.values()] == [40.0]
    assert results.notes == [f"PO Maze BC seed 0: {new} replaces {old}"]


def test_benchmark_rows_take_task_variant_and_seed_from_their_file(tmp_path):
    path = tmp_path / "maze_scores_po.json"
    path.write_text(json.dumps({"benchmark": "maze_scores", "config": {"variant": "po", "seed": 3}, "rows": [
        {"algorithm": "ILQL", "mean_return": -55.9, "normalised_score": 73.7, "beta": 16.0,
         "beta_sweep": {"8": 70.0, "16": 73.7}},
        {"algorithm": "BC", "mean_return": -88.0},  # no normalised score: still a raw return
        {"player": "random walk", "mean_return": -87.0},  # not an algorithm's row
    ]}))
    results = load_results([path])
    assert sorted(results.cells) == [("maze", "po", "bc", 3), ("maze", "po", "ilql", 3)]
    assert results.cells[("maze", "po", "ilql", 3)].beta_on_edge
    at_zero = dataclasses.replace(results.cells[("maze", "po", "ilql", 3)], beta=0.0, beta_sweep={"0": 70, "1": 60})
    assert not at_zero.beta_on_edge  # no guidance has no beta below it
    other = tmp_path / "throughput.json"
    other.write_text(json.dumps({"benchmark": "speed", "results": {"steps_per_s": 3}}))
    assert load_results([other]).sources == [f"{other}: skipped (no result rows)"]
    # An experiment's rows whose file names no task are not results of one; a row naming its task is, even one
    # the paper and this installation do not have.
    experiment = tmp_path / "ilql_target_rate.json"
    experiment.write_text(json.dumps({"benchmark": "ilql_target_rate", "rows": [
        {"algorithm": "ILQL", "mean_return": -60.0}, {"algorithm": "BC", "mean_return": -70.0, "task": "my_task"}]}))
    results = load_results([experiment])
    assert list(results.cells) == [] and results.notes == [
        f"{experiment}: skipped, its rows name no task and 'ilql_target_rate' is not one"]
    experiment.write_text(json.dumps({"benchmark": "x", "rows": [
        {"algorithm": "my_algo", "mean_return": -7.0, "task": "my_task", "variant": "hard"}]}))
    assert list(load_results([experiment]).cells) == [("my_task", "hard", "my_algo", 0)]


def test_learning_curves_from_tensorboard_logs(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    results = tmp_path / "results"
    results.mkdir()
    offline, online = tmp_path / "runs" / "bc", tmp_path / "runs" / "ppo"
    with SummaryWriter(str(offline)) as writer:
        for step, (score, loss) in enumerate([(20.0, 3.0), (40.0, 2.0), (55.0, 1.5)], start=1):
            writer.add_scalar("eval/normalised_score", score, step * 100)
            writer.add_scalar("train/loss", loss, step * 100)
    with SummaryWriter(str(online)) as writer:
        for step, score in enumerate([50.0, 60.0]):
            writer.add_scalar("round/normalised_score", score, step)
            writer.add_scalar("round/episodes", 128, step)
    write_cell(results, "maze", "fo", "bc", 0, 55.0, -75.0, tensorboard="../runs/bc")
    write_cell(results, "maze", "fo", "ppo", 0, 60.0, -70.0, tensorboard="../runs/ppo")
    write_cell(results, "wordle", "default", "bc", 0, 70.0, -3.0)  # no log

    assert read_scalars(offline)["eval/normalised_score"] == [(100, 20.0), (200, 40.0), (300, 55.0)]
    loaded = load_results([results])
    assert plot_curves(loaded, "wordle", "default", tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()
    curves = plot_curves(loaded, "maze", "fo", tmp_path / "curves.png")
    assert curves.read_bytes().startswith(PNG_SIGNATURE) and curves.stat().st_size > 5000


def test_cli_report_and_its_one_line_errors(tmp_path, capsys):
    one = write_cell(tmp_path, "maze", "po", "bc", 0, 50.0, -83.0)
    assert main(["report", str(one), "--out", str(tmp_path / "out")]) == 0
    assert "| PO Maze | 50.0 (1) / 53.1 |" in (tmp_path / "out" / "report.md").read_text()
    capsys.readouterr()

    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "lmrl-table2-cell",\n "task": "maze",\n "seed": 0,,\n}')
    assert main(["report", str(bad), "--out", str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"lmrl: error: {bad}:3: not valid JSON") and "\n" not in err

    no_return = write_cell(tmp_path, "maze", "fo", "bc", 0, 50.0, -80.0)
    payload = json.loads(no_return.read_text())
    payload["evaluation"]["mean_return"] = "high"
    no_return.write_text(json.dumps(payload))
    assert main(["report", str(no_return), "--out", str(tmp_path / "o3")]) == 2
    assert "field 'mean_return' must be a number" in capsys.readouterr().err

    assert main(["report", str(tmp_path / "absent.json"), "--out", str(tmp_path / "o4")]) == 2
    assert "absent.json: no such file or directory" in capsys.readouterr().err


def test_paper_scores_agree_with_paper_returns_through_the_paper_constants():
    # Spec §2.9: Table 2 is Table 4 normalised with Table 5's constants, exactly for Wordle, Chess and Endgames;
    # a transcription error in either table shows here. Endgames' online %BC return is Table 4's copy of BC's.
    for key in (("wordle", "default"), ("chess", "default"), ("endgames", "default")):
        paper = PAPER[key]
        normalise = Normalisation(*paper.normalisation)
        for algorithm, raw in paper.raw.items():
            if algorithm == "gpt4" or key + (algorithm,) == ("endgames", "default", "online_filtered_bc"):
                continue
            assert normalise(raw) == pytest.approx(paper.normalised[algorithm], abs=0.15), (key, algorithm)


def test_paper_table1_matches_the_registered_tasks():
    for task, row in PAPER_TABLE1.items():
        spec = find_task(task)
        if spec is not None:  # a task not registered yet has only the report's row
            assert spec.table1 == row, task
