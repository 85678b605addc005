"""benchmarks/table2.py, the Table 2 grid runner: its plan (cells in order, dependencies added), each cell's config
rewritten from the example configs (paths into the grid, the cell's seed, scaled lengths, budgets), refusals of
paths the grid cannot provide, and the run loop: finished cells are never rerun, an interrupted or failed cell
runs again, its dependents wait, the grid's time budget stops new cells. The cells here are stubs (no training),
except the one slow end-to-end cell."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from lmrl_lightning.errors import LMRLError
from lmrl_lightning.report import ALGORITHMS, CELL_FORMAT, PLAN_FORMAT, load_results

ROOT = Path(__file__).resolve().parent.parent


def _load_table2():
    spec = importlib.util.spec_from_file_location("table2", ROOT / "benchmarks" / "table2.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["table2"] = module
    spec.loader.exec_module(module)
    return module


table2 = _load_table2()


def strings(data) -> list[str]:
    if isinstance(data, dict):
        return [s for v in data.values() for s in strings(v)]
    if isinstance(data, list):
        return [s for v in data for s in strings(v)]
    return [data] if isinstance(data, str) else []


def callback(config: dict, name: str) -> dict:
    (found,) = [c for c in config["trainer"]["callbacks"] if c["class_path"].endswith(name)]
    return found["init_args"]


def test_plan_runs_bc_first_and_adds_it_when_not_selected(tmp_path):
    settings = table2.GridSettings(tmp_path / "grid")
    cells = table2.plan_grid("maze:fo", ["ilql", "filtered_bc"], [0, 1], settings)
    # Seed by seed; BC (added: ILQL starts from it) before ILQL; maze %BC trains from scratch, so depends on nothing.
    assert [c.key for c in cells] == ["maze_fo_bc_seed0", "maze_fo_filtered_bc_seed0", "maze_fo_ilql_seed0",
                                      "maze_fo_bc_seed1", "maze_fo_filtered_bc_seed1", "maze_fo_ilql_seed1"]
    assert cells[2].dependency_keys() == ["maze_fo_bc_seed0"] and cells[1].depends_on == ()


def test_cell_config_points_into_the_grid_with_the_cells_seed_and_lengths(tmp_path):
    settings = table2.GridSettings(tmp_path / "grid", step_scale=0.1, budget_minutes=20, eval_episodes=100,
                                   rollout_episodes=16)
    out = settings.out
    ilql, dependencies = table2.cell_config(table2.Cell("maze", "fo", "ilql", 1, "maze_fo"), settings)
    assert dependencies == {"bc"}
    assert ilql["model"]["init_args"]["init_from"] == str(out / "cells/maze_fo_bc_seed1/checkpoints/last.ckpt")
    assert ilql["data"]["init_args"]["data_path"] == str(out / "data/maze_fo/train.jsonl")
    assert ilql["seed_everything"] == 1
    trainer = ilql["trainer"]
    assert trainer["max_steps"] == 200 and trainer["max_time"] == "00:00:20:00"  # the config's 2000 x 0.1
    assert trainer["logger"]["init_args"]["save_dir"] == str(out / "cells/maze_fo_ilql_seed1")
    assert callback(ilql, "ModelCheckpoint")["dirpath"] == str(out / "cells/maze_fo_ilql_seed1/checkpoints")
    assert callback(ilql, "RolloutEvaluation")["protocol"]["episodes"] == 100  # the config's 800, capped
    assert not [s for s in strings(ilql) if s.startswith(("runs", "data/"))]

    bc, dependencies = table2.cell_config(table2.Cell("maze", "fo", "bc", 1, "maze_fo"), settings)
    assert dependencies == set() and bc["model"]["init_args"]["backbone"]["tokenizer"] == str(
        out / "data/maze_fo/tokenizer")
    ppo, _ = table2.cell_config(table2.Cell("maze", "fo", "ppo", 0, "maze_fo"), settings)
    assert ppo["trainer"]["max_epochs"] == 2  # 20 rounds x 0.1
    assert ppo["model"]["init_args"]["rollouts"]["episodes_per_round"] == 16  # 128, capped
    assert table2.cell_config(table2.Cell("maze", "fo", "ppo", 0, "maze_fo"), table2.GridSettings(tmp_path))[0][
        "trainer"]["max_epochs"] == 20  # unscaled by default


def test_every_example_config_of_every_registered_task_fits_the_grid(tmp_path):
    notes: list[str] = []
    cells = table2.plan_grid(None, ALGORITHMS, [0], table2.GridSettings(tmp_path), notes)
    prefixes = {c.prefix for c in cells}
    assert {"maze_fo", "maze_po", "wordle", "endgames", "chess", "twenty_questions", "car_dealer"} <= prefixes
    # Every cell but BC (and a %BC trained from scratch) starts from its BC, which runs first.
    for i, cell in enumerate(cells):
        assert set(cell.depends_on) <= {"bc"}
        assert all(k in [c.key for c in cells[:i]] for k in cell.dependency_keys())
    assert not [n for n in notes if n.startswith("chess:")]  # all six have configs


@pytest.mark.parametrize("line, message", [
    ("    init_from: runs/someone_else/last.ckpt", "'runs/someone_else/last.ckpt' is the run of no config of maze_fo"),
    ("    init_from: data/wordle/model.ckpt", "'data/wordle/model.ckpt' is not the task's dataset data/maze_fo/"),
])
def test_a_path_the_grid_cannot_provide_is_refused_with_file_and_line(tmp_path, line, message):
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "maze_fo_ilql.yaml").write_text(f"seed_everything: 0\nmodel:\n  init_args:\n{line}\n")
    settings = table2.GridSettings(tmp_path / "grid", configs=configs)
    with pytest.raises(LMRLError) as e:
        table2.cell_config(table2.Cell("maze", "fo", "ilql", 0, "maze_fo"), settings)
    assert str(e.value) == f"{configs / 'maze_fo_ilql.yaml'}:4 (model.init_args.init_from): {message}: the grid " \
                           "cannot provide it"


class StubRunner:
    """Stands for the child process: writes the cell's result file, or fails, or is interrupted."""

    def __init__(self, fail=(), interrupt=()):
        self.calls: list[str] = []
        self.fail, self.interrupt = set(fail), set(interrupt)

    def __call__(self, spec_path: Path, settings) -> str:
        spec = json.loads(spec_path.read_text())
        key = spec_path.parent.name
        self.calls.append(key)
        if key in self.interrupt:
            raise KeyboardInterrupt
        if key in self.fail:
            return table2.FAILED
        assert Path(spec["config"]).is_file() and all(settings.result_path(k).is_file() for k in spec["depends_on"])
        Path(spec["result"]).parent.mkdir(parents=True, exist_ok=True)
        Path(spec["result"]).write_text(json.dumps({
            "format": CELL_FORMAT, **{k: spec[k] for k in ("task", "variant", "algorithm", "seed")},
            "planned": spec["planned"], "evaluation": {"mean_return": -50.0, "normalised_score": 60.0}}))
        return table2.DONE


def plan_statuses(settings) -> dict[str, str]:
    plan = json.loads(settings.plan_path.read_text())
    assert plan["format"] == PLAN_FORMAT
    return {c["key"]: c["status"] for c in plan["cells"]}


def test_grid_resumes_without_rerunning_finished_cells(tmp_path, monkeypatch):
    monkeypatch.setattr(table2, "ensure_dataset", lambda cell, settings: settings.data_dir(cell.prefix))
    settings = table2.GridSettings(tmp_path / "grid")
    cells = table2.plan_grid("maze:fo", ["bc", "mc_returns", "ilql"], [0, 1], settings)
    seed0 = ["maze_fo_bc_seed0", "maze_fo_mc_returns_seed0", "maze_fo_ilql_seed0"]
    seed1 = ["maze_fo_bc_seed1", "maze_fo_mc_returns_seed1", "maze_fo_ilql_seed1"]

    # 1. Interrupted while ILQL seed 0 runs: the two finished cells keep their results.
    runner = StubRunner(interrupt={"maze_fo_ilql_seed0"})
    with pytest.raises(KeyboardInterrupt):
        table2.run_grid(cells, settings, runner)
    assert runner.calls == seed0
    stale = settings.cell_dir("maze_fo_ilql_seed0") / "half_written.ckpt"
    stale.write_text("from the interrupted attempt")

    # 2. Continues with the interrupted cell (its old files removed); BC seed 1 fails, so its dependents wait.
    runner = StubRunner(fail={"maze_fo_bc_seed1"})
    statuses = table2.run_grid(cells, settings, runner)
    assert runner.calls == ["maze_fo_ilql_seed0", "maze_fo_bc_seed1"] and not stale.exists()
    assert plan_statuses(settings) == statuses == {**dict.fromkeys(seed0, "done"), "maze_fo_bc_seed1": "failed",
                                                   "maze_fo_mc_returns_seed1": "blocked",
                                                   "maze_fo_ilql_seed1": "blocked"}
    # The report shows the failed and blocked cells as missing, with their status.
    results = load_results([settings.out / "results"])
    assert len(results.cells) == 3 and results.planned[("maze", "fo", "ilql", 1)] == "blocked"

    # 3. Only what is left runs; 4. then nothing.
    runner = StubRunner()
    assert set(table2.run_grid(cells, settings, runner).values()) == {"done"}
    assert runner.calls == seed1
    runner = StubRunner()
    table2.run_grid(cells, settings, runner)
    assert runner.calls == []


def test_grid_budget_stops_starting_cells(tmp_path, monkeypatch):
    monkeypatch.setattr(table2, "ensure_dataset", lambda cell, settings: settings.data_dir(cell.prefix))
    settings = table2.GridSettings(tmp_path / "grid", grid_budget_hours=1.0)
    cells = table2.plan_grid("maze:fo", ["bc", "filtered_bc", "ilql"], [0], settings)
    minutes = iter(range(0, 1000, 25))  # every reading of the clock 25 minutes later
    runner = StubRunner()
    statuses = table2.run_grid(cells, settings, runner, clock=lambda: 60.0 * next(minutes))
    # Readings: the start 0; BC checked at 25 (starts), 50 and 75 around its run; %BC checked at 100 > 60.
    assert runner.calls == ["maze_fo_bc_seed0"]
    assert statuses == {"maze_fo_bc_seed0": "done", "maze_fo_filtered_bc_seed0": "not started",
                        "maze_fo_ilql_seed0": "not started"}


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "grid"
    assert table2.main(["--dry-run", "--tasks", "maze:po", "--algorithms", "ilql", "--seeds", "0", "--out", str(out),
                        "--step-scale", "0.5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["maze_po_bc_seed0", "to", "run", "steps", "1000", "-", "to", "generate", "(default)"]
    assert lines[2].split()[:6] == ["maze_po_ilql_seed0", "to", "run", "steps", "1000", "maze_po_bc_seed0"]
    assert not out.exists()
    assert table2.main(["--dry-run", "--seeds", "zero", "--out", str(out)]) == 2
    assert "--seeds must be comma-separated integers" in capsys.readouterr().err


@pytest.mark.slow
def test_one_tiny_cell_end_to_end(tmp_path):
    out = tmp_path / "grid"
    argv = ["--tasks", "maze:fo", "--algorithms", "bc", "--seeds", "0", "--out", str(out), "--step-scale", "0.001",
            "--budget-minutes", "2", "--eval-episodes", "25", "--data-episodes", "50", "--threads", "1"]
    assert table2.main(argv) == 0
    result_path = out / "results" / "maze_fo_bc_seed0.json"
    result = json.loads(result_path.read_text())
    assert result["format"] == CELL_FORMAT and result["optimizer_steps"] == 2 and not result["stopped_by_time"]
    assert result["evaluation"]["n_episodes"] == 25 and result["dataset"]["stats"]["n_episodes"]["ours"] == 50
    assert result["command"].endswith(f"--run-cell {out}/cells/maze_fo_bc_seed0/spec.json")
    assert (result_path.parent / result["tensorboard"]).is_dir()
    written = result_path.stat().st_mtime_ns
    assert table2.main(argv) == 0 and result_path.stat().st_mtime_ns == written  # done: not run again
