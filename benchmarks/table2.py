"""Table 2 grid: every registered task x algorithm x seed, trained from the example configs and evaluated with each
task's protocol, one result file per cell; `lmrl report` turns the results into the paper's tables and plots.

Cells. For each registered task and variant, each algorithm with an example config
`examples/configs/<task>[_<variant>]_<algorithm>.yaml` (the variant is in the name when the task has several; a
task or variant without configs is skipped, and says so), and each seed. The config is rewritten as YAML, not as
text: its dataset paths (`data/<task>[_<variant>]...`) point at the grid's dataset, generated once per task and
variant by the task's generator (`lmrl data`, data seed 0 for every training seed); its run paths (`runs/<name>...`)
point into the cell's directory, and a path into another config's run (the BC checkpoint of `init_from`) into that
cell's directory for the same seed, which makes that cell a dependency (added to the grid when not selected, run
first); `seed_everything` becomes the cell's seed; `max_steps` and `max_epochs` (online rounds) are multiplied by
`--step-scale`; `max_time` stops training after `--budget-minutes` (the final evaluation still runs);
`--eval-episodes` and `--rollout-episodes` cap the evaluations' episodes and the online rounds' episodes.

Each cell runs in a child process (`--run-cell SPEC`: the command its result records) with its output in
`OUT/cells/<cell>/log.txt`, and writes `OUT/results/<cell>.json` (format `lmrl-table2-cell`: command, config, seed,
machine, wall time, evaluation summary, dataset statistics, TensorBoard log directory) when it finishes. A cell
whose result exists is never rerun, so running the same command again continues an interrupted grid. A cell that
fails or passes its hard limit (`--budget-minutes` + `--eval-minutes`) is tried again on the next run, and its
dependents wait. `OUT/results/grid.json` is the plan with every cell's status, rewritten after each cell.
Order: seed by seed (a whole table with one seed first), task by task in the paper's row order, a cell after those
it starts from. `--grid-budget-hours` stops starting cells once the grid has run that long. Training runs on a GPU
when there is one (the configs' `accelerator: auto`).

Run:  python benchmarks/table2.py --dry-run                       (the plan: cells, lengths, dependencies, status)
      python benchmarks/table2.py --budget-minutes 20 --step-scale 0.25 --grid-budget-hours 40
      lmrl report runs/table2/results --out benchmarks/results/report
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import command_line, machine_info, write_json  # noqa: E402

from lmrl_lightning.errors import LMRLError  # noqa: E402
from lmrl_lightning.report import ALGORITHMS, CELL_FORMAT, PAPER, PLAN_FORMAT  # noqa: E402

CONFIGS = Path(__file__).resolve().parent.parent / "examples" / "configs"
EVALUATION_CALLBACKS = ("RolloutEvaluation", "BetaSweep")
# Statuses of a cell in grid.json.
DONE, FAILED, TIMED_OUT, BLOCKED, NOT_STARTED = "done", "failed", "timed out", "blocked", "not started"


@dataclass(frozen=True)
class Cell:
    """One training run of the grid: a task variant's config for one algorithm and one seed."""

    task: str
    variant: str
    algorithm: str
    seed: int
    prefix: str  # the configs' and the dataset's name: <task>, or <task>_<variant> for a task with several variants
    depends_on: tuple[str, ...] = ()  # algorithms of the same task variant and seed whose runs this one starts from

    @property
    def stem(self) -> str:
        return f"{self.prefix}_{self.algorithm}"

    @property
    def key(self) -> str:
        return f"{self.stem}_seed{self.seed}"

    def dependency_keys(self) -> list[str]:
        return [f"{self.prefix}_{a}_seed{self.seed}" for a in self.depends_on]


@dataclass
class GridSettings:
    """Where the grid writes and how each cell is cut down."""

    out: Path
    configs: Path = CONFIGS
    step_scale: float = 1.0
    budget_minutes: Optional[float] = None
    eval_minutes: float = 60.0
    grid_budget_hours: Optional[float] = None
    eval_episodes: Optional[int] = None
    rollout_episodes: Optional[int] = None
    data_episodes: dict[str, int] = field(default_factory=dict)
    threads: Optional[int] = None

    def __post_init__(self) -> None:
        self.out = Path(os.path.abspath(self.out))

    def data_dir(self, prefix: str) -> Path:
        return self.out / "data" / prefix

    def cell_dir(self, key: str) -> Path:
        return self.out / "cells" / key

    def result_path(self, key: str) -> Path:
        return self.out / "results" / f"{key}.json"

    @property
    def plan_path(self) -> Path:
        return self.out / "results" / "grid.json"


# ---- the plan ------------------------------------------------------------------------------------------------------


def config_prefix(task: str, variant: str, variants: Sequence[str]) -> str:
    return task if len(variants) == 1 else f"{task}_{variant}"


def task_order(task: str) -> tuple[int, str]:
    """The paper's row order, then other tasks by name."""
    paper_tasks = list(dict.fromkeys(t for t, _ in PAPER))
    return (paper_tasks.index(task) if task in paper_tasks else len(paper_tasks), task)


def selected_variants(tasks: Optional[str]) -> list[tuple[str, str, str]]:
    """(task, variant, config prefix) for `--tasks` ("maze,wordle", "maze:po"; None: every registered task)."""
    from lmrl_lightning.registry import get_task, task_names

    out = []
    for item in (tasks.split(",") if tasks else task_names()):
        name, _, variant = item.strip().partition(":")
        spec = get_task(name)
        for v in ([spec.check_variant(variant)] if variant else spec.variants):
            out.append((spec.name, v, config_prefix(spec.name, v, spec.variants)))
    return sorted(out, key=lambda t: (task_order(t[0]), t[1]))


def plan_grid(tasks: Optional[str], algorithms: Sequence[str], seeds: Sequence[int], settings: GridSettings,
              notes: Optional[list[str]] = None) -> list[Cell]:
    """The grid's cells in running order, with the cells that selected ones start from added."""
    notes = notes if notes is not None else []
    cells: dict[str, Cell] = {}

    def add(task: str, variant: str, prefix: str, algorithm: str, seed: int) -> Cell:
        key = f"{prefix}_{algorithm}_seed{seed}"
        if key not in cells:
            _, dependencies = cell_config(Cell(task, variant, algorithm, seed, prefix), settings)
            cells[key] = Cell(task, variant, algorithm, seed, prefix, tuple(sorted(dependencies)))
            for dependency in dependencies:
                add(task, variant, prefix, dependency, seed)
        return cells[key]

    for task, variant, prefix in selected_variants(tasks):
        present = [a for a in algorithms if (settings.configs / f"{prefix}_{a}.yaml").is_file()]
        absent = [a for a in algorithms if a not in present]
        if absent:
            notes.append(f"{prefix}: no example config for {', '.join(absent)}")
        for seed in seeds:
            for algorithm in present:
                add(task, variant, prefix, algorithm, seed)
    algorithm_rank = {a: i for i, a in enumerate([*ALGORITHMS, *algorithms])}

    def depth(cell: Cell) -> int:
        return 1 + max((depth(cells[k]) for k in cell.dependency_keys()), default=-1)

    return sorted(cells.values(), key=lambda c: (c.seed, task_order(c.task), c.variant, depth(c),
                                                 algorithm_rank.get(c.algorithm, len(algorithm_rank)), c.algorithm))


def cell_config(cell: Cell, settings: GridSettings) -> tuple[dict[str, Any], set[str]]:
    """The cell's config (see the module docstring) and the algorithms whose runs it reads."""
    source = settings.configs / f"{cell.stem}.yaml"
    text = source.read_text(encoding="utf-8")
    try:
        config = yaml.safe_load(text)
        root = yaml.compose(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise LMRLError(f"{source}:{mark.line + 1 if mark else '?'}: not valid YAML") from None
    if not isinstance(config, dict):
        raise LMRLError(f"{source}: not a config (a mapping of sections)")
    dependencies: set[str] = set()
    _rewrite_strings(root, config, "", lambda value, where: _grid_path(value, f"{source}:{where}", cell, settings,
                                                                       dependencies))
    config["seed_everything"] = cell.seed
    _cut_down(config, settings)
    return config, dependencies


def _grid_path(value: str, where: str, cell: Cell, settings: GridSettings, dependencies: set[str]) -> str:
    """A config's string with its dataset and run paths moved into the grid; the algorithms whose runs it names
    (other than the cell's own) are added to `dependencies`."""
    data_name = f"data/{cell.prefix}"
    if value == "runs":  # the logger's save_dir
        return str(settings.cell_dir(cell.key))
    if value == data_name or value.startswith(data_name + "/"):
        return str(settings.data_dir(cell.prefix)) + value[len(data_name):]
    if value.startswith("data/"):
        raise LMRLError(f"{where}: {value!r} is not the task's dataset {data_name}/: the grid cannot provide it")
    if value.startswith("runs/"):
        name, _, rest = value[len("runs/"):].partition("/")
        if name != cell.stem:
            algorithm = name[len(cell.prefix) + 1:] if name.startswith(cell.prefix + "_") else ""
            if not algorithm or not (settings.configs / f"{name}.yaml").is_file():
                raise LMRLError(f"{where}: {value!r} is the run of no config of {cell.prefix}: the grid cannot "
                                "provide it")
            dependencies.add(algorithm)
        return str(settings.cell_dir(f"{name}_seed{cell.seed}") / rest)
    return value


def _cut_down(config: dict[str, Any], settings: GridSettings) -> None:
    """Scale the training length, set the time budget, cap evaluation and online rounds' episodes."""
    trainer = config.setdefault("trainer", {})
    for length in ("max_steps", "max_epochs"):
        if isinstance(trainer.get(length), int) and trainer[length] > 0:
            trainer[length] = max(1, round(trainer[length] * settings.step_scale))
    if settings.budget_minutes is not None:
        trainer["max_time"] = _duration(settings.budget_minutes)
    for callback in trainer.get("callbacks") or []:
        if settings.eval_episodes and str(callback.get("class_path", "")).endswith(EVALUATION_CALLBACKS):
            protocol = callback.setdefault("init_args", {}).setdefault("protocol", {})
            protocol["episodes"] = min(settings.eval_episodes, protocol.get("episodes") or settings.eval_episodes)
    rollouts = (config.get("model") or {}).get("init_args", {}).get("rollouts")
    if settings.rollout_episodes and isinstance(rollouts, dict):
        for name in ("episodes_per_round", "batch_size"):
            if isinstance(rollouts.get(name), int):
                rollouts[name] = min(rollouts[name], settings.rollout_episodes)


def _rewrite_strings(node: yaml.Node, data: Any, where: str, rewrite: Callable[[str, str], str]) -> Any:
    """Replace every string of `data` (the loaded config) with `rewrite(value, "line N (field)")`, walking the
    composed YAML `node` beside it for line numbers."""
    if isinstance(node, yaml.MappingNode) and isinstance(data, dict):
        for key_node, value_node in node.value:
            if key_node.value in data:
                path = f"{where}.{key_node.value}" if where else key_node.value
                data[key_node.value] = _rewrite_strings(value_node, data[key_node.value], path, rewrite)
    elif isinstance(node, yaml.SequenceNode) and isinstance(data, list):
        for i, child in enumerate(node.value):
            data[i] = _rewrite_strings(child, data[i], f"{where}[{i}]", rewrite)
    elif isinstance(data, str):
        return rewrite(data, f"{node.start_mark.line + 1} ({where})")
    return data


def _duration(minutes: float) -> str:
    """Lightning's `max_time` format, DD:HH:MM:SS."""
    seconds = max(1, round(minutes * 60))
    return f"{seconds // 86400:02d}:{seconds // 3600 % 24:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def planned_length(config: dict[str, Any]) -> dict[str, int]:
    trainer = config.get("trainer") or {}
    return {k: trainer[k] for k in ("max_steps", "max_epochs") if isinstance(trainer.get(k), int) and trainer[k] > 0}


# ---- running -------------------------------------------------------------------------------------------------------


def ensure_dataset(cell: Cell, settings: GridSettings) -> Path:
    """The task variant's dataset, generated the first time a cell needs it."""
    from lmrl_lightning.data.prepare import is_dataset_dir, prepare_task_data

    path = settings.data_dir(cell.prefix)
    if not is_dataset_dir(path):
        episodes = settings.data_episodes.get(cell.prefix, settings.data_episodes.get("*"))
        started = time.time()
        print(f"[data] {cell.prefix}: generating {episodes or 'the default number of'} episodes", flush=True)
        prepare_task_data(cell.task, cell.variant, path, episodes, seed=0, progress=False)
        print(f"[data] {cell.prefix}: {time.time() - started:.0f} s", flush=True)
    return path


def prepare_cell(cell: Cell, settings: GridSettings) -> Path:
    """A fresh cell directory (an interrupted attempt's files removed) with its config and the spec the child reads."""
    directory = settings.cell_dir(cell.key)
    if (directory / "spec.json").is_file():  # ours: an earlier attempt that did not finish
        shutil.rmtree(directory)
    config, _ = cell_config(cell, settings)
    config_path = directory / f"{cell.stem}.yaml"
    config_path.parent.mkdir(parents=True, exist_ok=True)
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    spec = {"task": cell.task, "variant": cell.variant, "algorithm": cell.algorithm, "seed": cell.seed,
            "config": str(config_path), "source_config": str(settings.configs / f"{cell.stem}.yaml"),
            "result": str(settings.result_path(cell.key)), "data": str(settings.data_dir(cell.prefix)),
            "depends_on": cell.dependency_keys(), "planned": planned_length(config),
            "budget_minutes": settings.budget_minutes, "step_scale": settings.step_scale,
            "threads": settings.threads, "grid_command": command_line()}
    write_json(directory / "spec.json", spec)
    return directory / "spec.json"


def cell_process(spec: Path, settings: GridSettings) -> str:
    """Run the cell of `spec` in a child process (its own process group, so that engines it starts go with it);
    its status."""
    log = spec.parent / "log.txt"
    limit = None if settings.budget_minutes is None else 60 * (settings.budget_minutes + settings.eval_minutes)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if settings.threads:
        env["OMP_NUM_THREADS"] = str(settings.threads)
    with open(log, "w") as out:
        child = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--run-cell", str(spec)],
                                 stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            code = child.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            _stop(child)
            return TIMED_OUT
        except BaseException:  # Ctrl-C: the child goes too, the cell runs again next time
            _stop(child)
            raise
    result = json.loads(spec.read_text())["result"]
    return DONE if code == 0 and Path(result).is_file() else FAILED


def _stop(child: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, None)):
        try:
            os.killpg(child.pid, sig)
            child.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue
        except ProcessLookupError:
            return


def run_grid(cells: Sequence[Cell], settings: GridSettings,
             runner: Callable[[Path, GridSettings], str] = cell_process,
             clock: Callable[[], float] = time.monotonic) -> dict[str, str]:
    """Run every unfinished cell in order (see the module docstring); each cell's status by key."""
    started = clock()
    statuses: dict[str, str] = {}
    for cell in cells:
        if settings.result_path(cell.key).is_file():
            statuses[cell.key] = DONE
            _note_changed_length(cell, settings)
        elif any(statuses.get(k) != DONE for k in cell.dependency_keys()):
            statuses[cell.key] = BLOCKED
        elif settings.grid_budget_hours is not None and clock() - started >= 3600 * settings.grid_budget_hours:
            statuses[cell.key] = NOT_STARTED
        else:
            ensure_dataset(cell, settings)
            print(f"[cell] {cell.key}: started", flush=True)
            cell_started = clock()
            statuses[cell.key] = runner(prepare_cell(cell, settings), settings)
            print(f"[cell] {cell.key}: {statuses[cell.key]} after {clock() - cell_started:.0f} s", flush=True)
        write_plan(cells, statuses, settings)
    write_plan(cells, statuses, settings)
    return statuses


def _note_changed_length(cell: Cell, settings: GridSettings) -> None:
    """A finished cell is kept even when this run would train it for another length: say so."""
    recorded = json.loads(settings.result_path(cell.key).read_text()).get("planned")
    planned = planned_length(cell_config(cell, settings)[0])
    if recorded != planned:
        print(f"note: {cell.key} was trained with {recorded}, this run would train {planned}: kept (delete "
              f"{settings.result_path(cell.key)} to run it again)", flush=True)


def write_plan(cells: Sequence[Cell], statuses: dict[str, str], settings: GridSettings) -> None:
    """grid.json: every planned cell with its status (pending: not reached yet in this run)."""
    write_json(settings.plan_path, {
        "format": PLAN_FORMAT, "version": 1, "command": command_line(),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(settings).items()},
        "cells": [{"key": c.key, "task": c.task, "variant": c.variant, "algorithm": c.algorithm, "seed": c.seed,
                   "depends_on": c.dependency_keys(), "status": statuses.get(c.key, "pending")} for c in cells],
    })


def run_cell(spec_path: Path) -> None:
    """The child: fit the cell's config through `lmrl fit`'s CLI and write its result file."""
    import torch

    from _common import quiet_libraries
    from _scores import fit_row

    quiet_libraries()
    spec = json.loads(spec_path.read_text())
    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    started = time.time()
    cli, row = fit_row(spec["algorithm"], Path(spec["config"]), spec["seed"])
    if not cli.trainer.is_global_zero:  # several devices: rank 0 writes the result
        return
    trainer, planned = cli.trainer, spec["planned"]
    completed = trainer.global_step >= planned["max_steps"] if "max_steps" in planned else \
        trainer.current_epoch >= planned.get("max_epochs", 0)
    result = Path(spec["result"])
    stats_file = Path(spec["data"]) / "stats.json"
    log_dir = trainer.logger.log_dir if trainer.logger is not None else None
    payload = {
        "format": CELL_FORMAT, "version": 1,
        **{k: spec[k] for k in ("task", "variant", "algorithm", "seed")},
        "status": DONE,
        "command": row["command"], "grid_command": spec["grid_command"],
        "config_path": spec["config"], "source_config": spec["source_config"],
        "config": yaml.safe_load(Path(spec["config"]).read_text()),
        "depends_on": spec["depends_on"],
        "machine": machine_info(),
        "wall_seconds": round(time.time() - started, 1), "fit_seconds": row["seconds"],
        "optimizer_steps": trainer.global_step, "epochs": trainer.current_epoch, "planned": planned,
        "budget_minutes": spec["budget_minutes"], "step_scale": spec["step_scale"], "stopped_by_time": not completed,
        **evaluation_record(cli),
        "dataset": {"path": spec["data"],
                    "stats": json.loads(stats_file.read_text()) if stats_file.is_file() else None},
        "tensorboard": os.path.relpath(log_dir, result.parent) if log_dir else None,
        **{k: row[k] for k in ("beta", "beta_sweep", "round_mean_returns") if k in row},
    }
    write_json(result, payload)
    print(f"{spec['task']} {spec['variant']} {spec['algorithm']} seed {spec['seed']}: normalised score "
          f"{payload['evaluation']['normalised_score']}, return {payload['evaluation']['mean_return']:.3f}; {result}",
          flush=True)


def evaluation_record(cli) -> dict[str, Any]:
    """The final evaluation's summary and how it was made (episodes, decoding, model, normalisation constants)."""
    evaluation = next(c for c in cli.trainer.callbacks if type(c).__name__ == "RolloutEvaluation")
    normalisation = evaluation.spec.normalisation.get(evaluation.variant)
    protocol = evaluation.protocol
    return {"evaluation": vars(evaluation.results[-1][1]), "protocol": {
        "episodes": protocol.episodes, "decoding": protocol.decoding.kind, "policy_seed": protocol.policy_seed,
        "model": cli.model.backbone_config.name_or_path,
        "normalisation": None if normalisation is None else
        [normalisation.minimum, normalisation.dataset_average, normalisation.maximum]}}


# ---- command line --------------------------------------------------------------------------------------------------


def print_plan(cells: Sequence[Cell], settings: GridSettings, notes: Sequence[str]) -> None:
    """The dry run: each cell with its status, length, dependencies and dataset."""
    print(f"{'cell':<44} {'status':<8} {'length':<18} {'starts from':<28} dataset")
    for cell in cells:
        config, _ = cell_config(cell, settings)
        length = ", ".join(f"{k.removeprefix('max_')} {v}" for k, v in planned_length(config).items())
        status = DONE if settings.result_path(cell.key).is_file() else "to run"
        data = settings.data_dir(cell.prefix)
        data_status = "exists" if data.is_dir() else \
            f"to generate ({settings.data_episodes.get(cell.prefix, settings.data_episodes.get('*', 'default'))})"
        print(f"{cell.key:<44} {status:<8} {length:<18} {', '.join(cell.dependency_keys()) or '-':<28} {data_status}")
    for note in notes:
        print(f"note: {note}")
    budget = f", training at most {settings.budget_minutes:g} min each" if settings.budget_minutes else ""
    print(f"{len(cells)} cells{budget}; results in {settings.out / 'results'}")


def parse_data_episodes(text: Optional[str]) -> dict[str, int]:
    """`--data-episodes`: "2000" (every dataset) or "maze_fo=1240,wordle=20000" (by config prefix)."""
    if not text:
        return {}
    out = {}
    for item in text.split(","):
        name, _, count = item.rpartition("=")
        try:
            out[name or "*"] = int(count)
        except ValueError:
            raise LMRLError(f"--data-episodes: {item!r} is not COUNT or PREFIX=COUNT") from None
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", default=None, help="comma-separated tasks, TASK:VARIANT for one variant (default: all "
                   "registered)")
    p.add_argument("--algorithms", default=",".join(ALGORITHMS), help="comma-separated config names (bc, ilql...)")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds")
    p.add_argument("--out", default="runs/table2", help="datasets, cell runs and results/ (default: runs/table2)")
    p.add_argument("--configs", default=str(CONFIGS), help="the configs' directory (default: examples/configs)")
    p.add_argument("--budget-minutes", type=float, default=None, help="training time limit per cell")
    p.add_argument("--eval-minutes", type=float, default=60.0,
                   help="allowance for loading and evaluation on top of --budget-minutes before a cell is stopped")
    p.add_argument("--grid-budget-hours", type=float, default=None, help="start no cell after this long")
    p.add_argument("--step-scale", type=float, default=1.0, help="multiplies the configs' max_steps and max_epochs")
    p.add_argument("--eval-episodes", type=int, default=None, help="cap on every evaluation's episodes")
    p.add_argument("--rollout-episodes", type=int, default=None, help="cap on the online rounds' episodes")
    p.add_argument("--data-episodes", default=None, help="dataset sizes: COUNT, or PREFIX=COUNT,... (default: the "
                   "generators')")
    p.add_argument("--threads", type=int, default=None, help="torch threads per cell (default: torch's)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and stop")
    p.add_argument("--run-cell", default=None, metavar="SPEC", help=argparse.SUPPRESS)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.run_cell:
            run_cell(Path(args.run_cell))
            return 0
        if args.step_scale <= 0:
            raise LMRLError(f"--step-scale must be positive, got {args.step_scale:g}")
        try:
            seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        except ValueError:
            raise LMRLError(f"--seeds must be comma-separated integers, got {args.seeds!r}") from None
        settings = GridSettings(Path(args.out), Path(args.configs), args.step_scale, args.budget_minutes,
                                args.eval_minutes, args.grid_budget_hours, args.eval_episodes, args.rollout_episodes,
                                parse_data_episodes(args.data_episodes), args.threads)
        notes: list[str] = []
        cells = plan_grid(args.tasks, [a.strip() for a in args.algorithms.split(",") if a.strip()], seeds, settings,
                          notes)
        if args.dry_run:
            print_plan(cells, settings, notes)
            return 0
        for note in notes:
            print(f"note: {note}")
        statuses = run_grid(cells, settings)
        counts = {s: list(statuses.values()).count(s) for s in dict.fromkeys(statuses.values())}
        print(f"grid: {', '.join(f'{n} {s}' for s, n in counts.items())}; plan and results in {settings.out / 'results'}")
        return 0 if all(s == DONE for s in statuses.values()) else 1
    except LMRLError as e:
        print(f"table2: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
