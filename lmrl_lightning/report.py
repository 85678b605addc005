"""`lmrl report`: result files in, the paper's Table 2 layout out (report.md and PNG plots).

Reads
- the cell files that `benchmarks/table2.py` writes (one training run: task, variant, algorithm, seed, evaluation
  summary, dataset statistics, TensorBoard log directory) and its plan file (`grid.json`: which cells were meant
  to run, so that a cell that never finished shows as missing rather than vanishing);
- for compatibility, the per-task score benchmarks' files (`benchmarks/results/*_scores*.json`,
  `maze_online_*.json`): each row with an `algorithm` and a `mean_return` is one result; its task comes from the row,
  the file or the benchmark's name, its variant and seed likewise. Other JSON files (speed benchmarks...) are
  listed as skipped.
A later file's result replaces an earlier one's for the same task, variant, algorithm and seed (the report lists
each replacement), so files are given oldest first.

Writes into `--out`: `report.md` (Table 2: tasks x algorithms, mean ± standard deviation of the normalised score
over seeds beside the paper's number, missing cells marked; the raw returns beside the paper's Table 4; dataset
statistics beside Table 1; each task's protocol and where it differs from the paper's, one line each; the sources),
`table2.png` (the whole table as a heat map), and per task `scores_<task>.png` (ours vs the paper per algorithm,
seed spread) and `curves_<task>.png` (from the logs: evaluation score against steps, training loss against steps,
online rounds' score against environment episodes). Tasks the paper does not have (another package's, say) get
rows of their own, with no paper numbers.
"""
from __future__ import annotations

import io
import json
import math
import os
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence, Union

from lmrl_lightning.atomic import atomic_write_bytes, atomic_write_text
from lmrl_lightning.errors import LMRLError

PathLike = Union[str, os.PathLike]

# File formats written by benchmarks/table2.py (kept here, beside their reader).
CELL_FORMAT = "lmrl-table2-cell"
PLAN_FORMAT = "lmrl-table2-plan"

# The paper's six algorithms, in its column order, by the names of their example configs.
ALGORITHMS = ("bc", "filtered_bc", "mc_returns", "ilql", "ppo", "online_filtered_bc")
ALGORITHM_LABELS = {"bc": "BC", "filtered_bc": "%BC", "mc_returns": "MC Returns", "ilql": "ILQL",
                    "ppo": "Online PPO", "online_filtered_bc": "Online %BC"}
ONLINE_ALGORITHMS = ("ppo", "online_filtered_bc")
# How the per-task score benchmarks and the algorithm classes spell them.
_ALGORITHM_ALIASES = {"BC": "bc", "%BC": "filtered_bc", "MC": "mc_returns", "MC Returns": "mc_returns",
                      "MCReturns": "mc_returns", "ILQL": "ilql", "PPO": "ppo", "Online PPO": "ppo",
                      "online %BC": "online_filtered_bc", "Online %BC": "online_filtered_bc",
                      "OnlineFilteredBC": "online_filtered_bc", "FilteredBC": "filtered_bc"}


@dataclass(frozen=True)
class PaperTask:
    """One row of the paper's tables (spec §4): Table 2's normalised scores and Table 4's raw returns per algorithm
    (with GPT-4 under "gpt4"), the normalisation constants of Table 5 (min, dataset average, max; None where the
    paper gives none) and the evaluation protocol as the paper describes it (spec §2.0)."""

    label: str
    normalised: dict[str, float]
    raw: dict[str, float]
    normalisation: tuple[Optional[float], Optional[float], Optional[float]]
    protocol: str


def _by_algorithm(*values: Optional[float]) -> dict[str, float]:
    """The paper's columns in order (BC, %BC, MC, ILQL, PPO, online %BC, GPT-4) as a dict, without the empty ones."""
    return {k: v for k, v in zip((*ALGORITHMS, "gpt4"), values) if v is not None}


# Spec §4.1 (Table 2), §4.2 (Table 4), §2.9 (Table 5), §2.0 (protocols), keyed by registered task and variant, in
# the paper's row order.
PAPER: dict[tuple[str, str], PaperTask] = {
    ("twenty_questions", "default"): PaperTask(
        "20Qs", _by_algorithm(57.1, 77.1, 87.1, 82.9, 72.9, 55.2, 95.7),
        _by_algorithm(-16.0, -14.6, -13.9, -14.2, -14.9, -16.8, -13.0), (-20.0, -17.3, -12.6),
        "episodes not stated (the scripts: 32 random words)"),
    ("guess_city", "default"): PaperTask(
        "Guess My City", _by_algorithm(30.0, 48.0, 88.0, 75.0, 49.9, 31.6, 92.3),
        _by_algorithm(-17.0, -15.2, -11.2, -12.5, -15.1, -19.2, -10.13), (-20.0, -18.8, -8.56),
        "episodes not stated (the scripts: 32)"),
    ("car_dealer", "default"): PaperTask(
        "Car Dealer", _by_algorithm(44.5, 54.8, 57.2, 46.3, 50.5, 40.4, 53.5), {}, (0.0, None, None),
        "episodes not stated; only normalised scores published"),
    ("maze", "fo"): PaperTask(
        "FO Maze", _by_algorithm(58.2, 68.9, 75.0, 99.9, 79.7, 57.4, 78.2),
        _by_algorithm(-72.1, -56.4, -48.1, -6.97, -37.7, -71.7, -39.7), (-101.0, -83.0, -6.84),
        "800 episodes: 32 rollouts x 25 start positions"),
    ("maze", "po"): PaperTask(
        "PO Maze", _by_algorithm(53.1, 50.1, 52.4, 76.3, 42.4, 53.1, 60.4),
        _by_algorithm(-79.5, -82.9, -80.3, -52.9, -91.7, -79.5, -88.0), (-101.0, -83.0, -25.75),
        "800 episodes: 32 rollouts x 25 start positions"),
    ("textnav", "fo"): PaperTask(
        "FO Text-Nav", _by_algorithm(53.7, 65.1, 71.9, 91.8, 87.1, 74.5, 67.5),
        _by_algorithm(0.39, 0.54, 0.63, 0.88, 0.81, 0.62, 0.52), (0.0, 0.26, 1.0), "episodes not stated"),
    ("textnav", "po"): PaperTask(
        "PO Text-Nav", _by_algorithm(49.7, 60.5, 71.6, 83.7, 85.5, 68.4, 40.2),
        _by_algorithm(0.25, 0.49, 0.58, 0.76, 0.80, 0.53, 0.21), (0.0, 0.26, 1.0), "episodes not stated"),
    ("wordle", "default"): PaperTask(
        "Wordle", _by_algorithm(79.9, 79.1, 94.9, 97.7, 84.2, 95.2, 15.4),
        _by_algorithm(-2.81, -2.85, -2.16, -2.04, -2.63, -2.15, -5.42), (-6.0, -4.12, -1.94), "4096 rollouts"),
    ("chess", "default"): PaperTask(
        "Chess", _by_algorithm(47.2, 42.9, 46.5, 47.3, 48.0, 47.2, 0.0),
        _by_algorithm(-22.3, -56.5, -28.2, -21.4, -16.0, -22.3, -81.3), (-401.0, 0.21, 1.0),
        "1000 games against Stockfish at 'Elo 1200'"),
    ("endgames", "default"): PaperTask(
        "Endgames", _by_algorithm(35.1, 17.7, 50.2, 45.8, 77.5, 36.2, 0.0),
        _by_algorithm(0.112, -0.439, 0.588, 0.452, 0.814, 0.112, -22.87), (-1.0, 0.586, 1.0),
        "645 fixed positions, one game each"),
}

# Spec §4.3 (Table 1), per task (both variants of a task share their dataset's row).
TABLE1_FIELDS = ("n_episodes", "mean_length", "std_length", "success_rate", "mean_return", "std_return")
TABLE1_LABELS = ("episodes", "mean length", "std length", "success rate", "mean return", "std return")
PAPER_TABLE1: dict[str, dict[str, float]] = {
    task: dict(zip(TABLE1_FIELDS, values)) for task, values in {
        "twenty_questions": (100_000, 14.9, 4.38, 0.31, -17.3, 2.56),
        "guess_city": (100_000, 18.8, 4.57, 0.53, -18.8, 4.12),
        "car_dealer": (19_000, 16.5, 3.61, 0.53, 0.562, 0.422),
        "maze": (1240, 19.7, 24.5, 0.11, -19.7, 24.5),
        "textnav": (2500, 12.2, 8.77, 0.26, 0.258, 0.424),
        "wordle": (1_000_000, 4.82, 1.27, 0.70, -4.12, 1.59),
        "chess": (625_000, 46.7, 18.16, 0.60, 0.210, 0.970),
        "endgames": (97_756, 11.9, 12.0, 0.59, 0.586, 0.492),
    }.items()
}

Key = tuple[str, str, str, int]  # task, variant, algorithm, seed


@dataclass
class CellResult:
    """One training run's evaluation and what the report says about it."""

    task: str
    variant: str
    algorithm: str
    seed: int
    mean_return: float
    normalised_score: Optional[float]
    source: str
    success_rate: Optional[float] = None
    n_episodes: Optional[int] = None
    optimizer_steps: Optional[int] = None
    stopped_by_time: bool = False
    beta: Optional[float] = None
    beta_sweep: dict[str, float] = field(default_factory=dict)
    log_dir: Optional[Path] = None
    dataset_stats: Optional[dict[str, Any]] = None
    protocol: dict[str, Any] = field(default_factory=dict)
    wall_seconds: Optional[float] = None

    @property
    def key(self) -> Key:
        return (self.task, self.variant, self.algorithm, self.seed)

    @property
    def beta_on_edge(self) -> bool:
        """The chosen decoding beta is the largest of its sweep or its smallest above 0 (the best may lie outside
        it; 0, no guidance, has nothing below it)."""
        if self.beta is None or len(self.beta_sweep) < 2:
            return False
        betas = sorted(float(b) for b in self.beta_sweep)
        return self.beta == betas[-1] or 0 < self.beta == betas[0]


@dataclass
class Results:
    """Everything read from the result files: results by key, planned cells (key -> status), notes for the report."""

    cells: dict[Key, CellResult] = field(default_factory=dict)
    planned: dict[Key, str] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, result: CellResult) -> None:
        previous = self.cells.get(result.key)
        if previous is not None:
            self.notes.append(f"{_cell_name(result.key)}: {result.source} replaces {previous.source}")
        self.cells[result.key] = result


def canonical_algorithm(name: str) -> str:
    """The config name of an algorithm (`ilql`, `filtered_bc`...) from any spelling the benchmarks use; a name
    the paper does not have (another package's algorithm) is kept as it is."""
    return _ALGORITHM_ALIASES.get(name, name)


def algorithm_label(name: str) -> str:
    return ALGORITHM_LABELS.get(name, name)


def row_label(task: str, variant: str) -> str:
    paper = PAPER.get((task, variant))
    if paper is not None:
        return paper.label
    return task if variant == "default" else f"{task} ({variant})"


def _cell_name(key: Key) -> str:
    task, variant, algorithm, seed = key
    return f"{row_label(task, variant)} {algorithm_label(algorithm)} seed {seed}"


# ---- reading -------------------------------------------------------------------------------------------------------


def load_results(paths: Sequence[PathLike]) -> Results:
    """Every result in `paths` (files, or directories searched for table2 cell and plan files), later ones replacing
    earlier ones with the same key."""
    results = Results()
    if not paths:
        raise LMRLError("no result files given")
    for path in _expand(paths):
        payload = _read_json(path)
        if isinstance(payload, dict) and payload.get("format") == CELL_FORMAT:
            results.add(_read_cell(payload, path))
            results.sources.append(f"{path}: table2 cell")
        elif isinstance(payload, dict) and payload.get("format") == PLAN_FORMAT:
            for key, status in _read_plan(payload, path):
                results.planned[key] = status
            results.sources.append(f"{path}: table2 plan ({len(payload['cells'])} cells)")
        else:
            rows = _read_benchmark_rows(payload, path, results.notes)
            for row in rows:
                results.add(row)
            results.sources.append(f"{path}: {len(rows)} result rows" if rows else f"{path}: skipped (no result rows)")
    return results


def _expand(paths: Sequence[PathLike]) -> list[Path]:
    """Files as given; a directory stands for the table2 cell and plan files under it (other JSON there, such as a
    dataset's stats.json, is not a result)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            for candidate in sorted(p.rglob("*.json")):
                payload = _read_json(candidate)
                if isinstance(payload, dict) and payload.get("format") in (CELL_FORMAT, PLAN_FORMAT):
                    out.append(candidate)
        elif p.is_file():
            out.append(p)
        else:
            raise LMRLError(f"{p}: no such file or directory")
    return out


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise LMRLError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    except UnicodeDecodeError:
        raise LMRLError(f"{path}: not a UTF-8 text file") from None


def _field(data: dict, name: str, where: str, kind: Union[type, tuple[type, ...]], optional: bool = False) -> Any:
    """`data[name]` checked against `kind` (bool is not a number here), or an error naming the file and field."""
    value = data.get(name)
    if value is None and optional:
        return None
    numeric = kind in (float, (int, float))
    if numeric:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    else:
        ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
    if not ok:
        expected = "a number" if numeric else getattr(kind, "__name__", str(kind))
        raise LMRLError(f"{where}: field {name!r} must be {expected}, got {str(value)[:60]!r}")
    return float(value) if numeric else value


def _read_cell(payload: dict, path: Path) -> CellResult:
    where = str(path)
    evaluation = _field(payload, "evaluation", where, dict)
    log_dir = _field(payload, "tensorboard", where, str, optional=True)
    dataset = payload.get("dataset") if isinstance(payload.get("dataset"), dict) else {}
    return CellResult(
        task=_field(payload, "task", where, str),
        variant=_field(payload, "variant", where, str),
        algorithm=canonical_algorithm(_field(payload, "algorithm", where, str)),
        seed=_field(payload, "seed", where, int),
        mean_return=_field(evaluation, "mean_return", f"{where}: evaluation", float),
        normalised_score=_field(evaluation, "normalised_score", f"{where}: evaluation", float, optional=True),
        success_rate=_field(evaluation, "success_rate", f"{where}: evaluation", float, optional=True),
        n_episodes=_field(evaluation, "n_episodes", f"{where}: evaluation", int, optional=True),
        optimizer_steps=_field(payload, "optimizer_steps", where, int, optional=True),
        stopped_by_time=bool(payload.get("stopped_by_time", False)),
        beta=_field(payload, "beta", where, float, optional=True),
        beta_sweep=_beta_sweep(payload, where),
        # Relative to the cell file, so that a results directory can move with its runs.
        log_dir=(path.parent / log_dir) if log_dir else None,
        dataset_stats=dataset.get("stats") if isinstance(dataset.get("stats"), dict) else None,
        protocol=payload.get("protocol") if isinstance(payload.get("protocol"), dict) else {},
        wall_seconds=_field(payload, "wall_seconds", where, float, optional=True),
        source=str(path),
    )


def _beta_sweep(data: dict, where: str) -> dict[str, float]:
    sweep = data.get("beta_sweep") or {}
    if not isinstance(sweep, dict):
        raise LMRLError(f"{where}: field 'beta_sweep' must map betas to scores")
    return {str(k): _field(sweep, k, f"{where}: beta_sweep", float) for k in sweep}


def _read_plan(payload: dict, path: Path) -> list[tuple[Key, str]]:
    cells = _field(payload, "cells", str(path), list)
    out = []
    for i, cell in enumerate(cells):
        where = f"{path}: cells[{i}]"
        if not isinstance(cell, dict):
            raise LMRLError(f"{where}: must be an object")
        key = (_field(cell, "task", where, str), _field(cell, "variant", where, str),
               canonical_algorithm(_field(cell, "algorithm", where, str)), _field(cell, "seed", where, int))
        out.append((key, _field(cell, "status", where, str)))
    return out


def _read_benchmark_rows(payload: Any, path: Path, notes: list[str]) -> list[CellResult]:
    """The result rows of a per-task score benchmark's file (none for other files). A file's repeated key (chess:
    the config's evaluation, then re-ranking over legal moves) keeps its first row."""
    if not isinstance(payload, dict) or not isinstance(payload.get("rows"), list):
        return []
    config = payload.get("config") if isinstance(payload.get("config"), dict) else {}
    benchmark = str(payload.get("benchmark") or path.stem)
    named_after = re.sub(r"_(scores|online)$", "", benchmark)  # maze_scores, maze_online: the maze's
    out: dict[Key, CellResult] = {}
    for i, row in enumerate(payload["rows"]):
        if not (isinstance(row, dict) and isinstance(row.get("algorithm"), str) and "mean_return" in row):
            continue
        where = f"{path}: rows[{i}]"
        task = row.get("task") or payload.get("task") or named_after
        if task == named_after and not _is_task(task):
            notes.append(f"{path}: skipped, its rows name no task and {benchmark!r} is not one")
            return []
        variant = row.get("variant") or config.get("variant") or _only_variant(str(task))
        if variant is None:
            notes.append(f"{where}: skipped, the file does not say which variant of {task!r} it evaluated")
            continue
        # The per-task benchmarks train with seed 0 unless told otherwise; older files do not record it.
        seed = row.get("seed", config.get("seed", 0))
        result = CellResult(
            task=str(task), variant=str(variant), algorithm=canonical_algorithm(row["algorithm"]),
            seed=_field({"seed": seed}, "seed", where, int),
            mean_return=_field(row, "mean_return", where, float),
            normalised_score=_field(row, "normalised_score", where, float, optional=True),
            success_rate=_field(row, "success_rate", where, float, optional=True),
            n_episodes=_field(row, "n_episodes", where, int, optional=True),
            optimizer_steps=_field(row, "optimizer_steps", where, int, optional=True)
            or _field(row, "steps", where, int, optional=True),
            beta=_field(row, "beta", where, float, optional=True), beta_sweep=_beta_sweep(row, where),
            protocol={k: row[k] for k in ("decoding",) if k in row},
            wall_seconds=_field(row, "seconds", where, float, optional=True), source=where,
        )
        if result.key in out:
            notes.append(f"{where}: skipped, {out[result.key].source} already gives {_cell_name(result.key)}")
            continue
        out[result.key] = result
    return list(out.values())


def _is_task(name: str) -> bool:
    return any(t == name for t, _ in PAPER) or _find_task(name) is not None


def _only_variant(task: str) -> Optional[str]:
    """A task's variant when it has one only (registered tasks), else None."""
    spec = _find_task(task)
    if spec is not None:
        return spec.variants[0] if len(spec.variants) == 1 else None
    variants = {v for t, v in PAPER if t == task}
    return variants.pop() if len(variants) == 1 else None


# ---- tables --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Aggregate:
    """Mean and sample standard deviation (None for one value) of a cell's values over seeds."""

    values: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> Optional[float]:
        return statistics.stdev(self.values) if self.n > 1 else None


def table_rows(results: Results) -> list[tuple[str, str]]:
    """(task, variant) rows: the paper's in its order, then every other task with a result or a planned cell."""
    seen = {(k[0], k[1]) for k in [*results.cells, *results.planned]}
    return list(PAPER) + sorted(seen - set(PAPER))


def table_columns(results: Results) -> list[str]:
    """The paper's algorithms, then any other algorithm with a result or a planned cell."""
    seen = {k[2] for k in [*results.cells, *results.planned]}
    return list(ALGORITHMS) + sorted(seen - set(ALGORITHMS))


def cell_results(results: Results, task: str, variant: str, algorithm: str) -> list[CellResult]:
    found = [r for k, r in results.cells.items() if k[:3] == (task, variant, algorithm)]
    return sorted(found, key=lambda r: r.seed)


def aggregate(values: Iterable[Optional[float]]) -> Optional[Aggregate]:
    kept = tuple(v for v in values if v is not None)
    return Aggregate(kept) if kept else None


def _fmt(x: Optional[float], digits: Optional[int] = None) -> str:
    """A number at a precision that suits its size (returns range from -401 to 1), or '—'."""
    if x is None:
        return "—"
    return f"{x:.{_digits(x) if digits is None else digits}f}"


def _digits(x: float) -> int:
    return 1 if abs(x) >= 10 else 2 if abs(x) >= 1 else 3


def _fmt_aggregate(agg: Optional[Aggregate], digits: Optional[int] = None) -> str:
    """`mean ± std (seeds)`, the spread at the mean's precision."""
    if agg is None:
        return "—"
    digits = _digits(agg.mean) if digits is None else digits
    spread = f" ± {_fmt(agg.std, digits)}" if agg.std is not None else ""
    return f"{_fmt(agg.mean, digits)}{spread} ({agg.n})"


def _missing_status(results: Results, task: str, variant: str, algorithm: str) -> str:
    """What an empty cell says: the grid's status of its planned seeds when there are any, else missing."""
    statuses = sorted({s for k, s in results.planned.items() if k[:3] == (task, variant, algorithm)} - {"done"})
    return "missing" + (f" ({', '.join(statuses)})" if statuses else "")


def _marks(found: Sequence[CellResult]) -> str:
    return ("†" if any(r.stopped_by_time for r in found) else "") + ("‡" if any(r.beta_on_edge for r in found) else "")


def score_table(results: Results, raw: bool = False) -> str:
    """Table 2 (normalised scores) or, with `raw`, Table 4 (mean returns): tasks as rows, algorithms as columns,
    each cell `ours mean ± std (seeds) / paper`."""
    columns = table_columns(results)
    header = ["task", *map(algorithm_label, columns), "GPT-4 (paper)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for task, variant in table_rows(results):
        paper = PAPER.get((task, variant))
        paper_values = (paper.raw if raw else paper.normalised) if paper else {}
        digits = None if raw else 1
        cells = [row_label(task, variant)]
        for algorithm in columns:
            found = cell_results(results, task, variant, algorithm)
            agg = aggregate(r.mean_return if raw else r.normalised_score for r in found)
            if agg is not None:
                ours = _fmt_aggregate(agg, digits) + _marks(found)
            else:  # a result without this figure (no normalisation), or none at all
                ours = "—" if found else _missing_status(results, task, variant, algorithm)
            cells.append(f"{ours} / {_fmt(paper_values.get(algorithm), digits)}")
        cells.append(_fmt(paper_values.get("gpt4"), digits))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def dataset_stats(results: Results, task: str, variant: str) -> Optional[dict[str, Any]]:
    """The statistics of the dataset a row's cells trained on (the first cell that recorded them)."""
    for key, result in sorted(results.cells.items(), key=lambda kv: str(kv[0])):
        if key[:2] == (task, variant) and result.dataset_stats:
            return result.dataset_stats
    return None


def paper_table1(task: str, stats: Optional[dict[str, Any]]) -> Optional[dict[str, float]]:
    """The paper's Table 1 row of a task: ours above; for another task, its TaskSpec's `table1`, else what its
    dataset's statistics record as the paper's."""
    if task in PAPER_TABLE1:
        return PAPER_TABLE1[task]
    spec = _find_task(task)
    if spec is not None and spec.table1:
        return dict(spec.table1)
    if stats:
        return {k: stats[k]["paper"] for k in TABLE1_FIELDS if isinstance(stats.get(k), dict)}
    return None


def _find_task(task: str):
    from lmrl_lightning.registry import find_task

    try:
        return find_task(task)
    except LMRLError:  # an installed package that fails to load: its rows are reported without it
        return None


def table1(results: Results) -> str:
    header = ["dataset", *TABLE1_LABELS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for task, variant in table_rows(results):
        stats = dataset_stats(results, task, variant)
        paper = paper_table1(task, stats) or {}
        cells = [row_label(task, variant)]
        for name in TABLE1_FIELDS:
            ours = stats.get(name, {}).get("ours") if stats and isinstance(stats.get(name), dict) else None
            digits = 0 if name == "n_episodes" else None
            cells.append(f"{_fmt(ours, digits)} / {_fmt(paper.get(name), digits)}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def protocol_line(results: Results, task: str, variant: str) -> str:
    """One line: how our cells of a row were evaluated and trained, beside the paper's protocol and constants."""
    found = [r for k, r in results.cells.items() if k[:2] == (task, variant)]
    paper = PAPER.get((task, variant))
    parts = []
    episodes = sorted({r.n_episodes for r in found if r.n_episodes})
    if episodes:
        parts.append(f"evaluation {'/'.join(map(str, episodes))} episodes")
    decodings = sorted({str(r.protocol.get("decoding")) for r in found if r.protocol.get("decoding")})
    if decodings:
        parts.append(f"decoding {'/'.join(decodings)}")
    if paper:
        parts.append(f"paper: {paper.protocol}")
    stats = dataset_stats(results, task, variant)
    paper_data = paper_table1(task, stats)
    if stats and isinstance(stats.get("n_episodes"), dict):
        ours_n = stats["n_episodes"].get("ours")
        paper_n = paper_data.get("n_episodes") if paper_data else None
        parts.append(f"dataset {_fmt(ours_n, 0)} episodes (paper {_fmt(paper_n, 0)})")
    models = sorted({str(r.protocol["model"]) for r in found if r.protocol.get("model")})
    if models:
        parts.append(f"model {'/'.join(models)}")
    steps: dict[str, set[int]] = {}
    rank = {a: i for i, a in enumerate(ALGORITHMS)}
    for r in sorted(found, key=lambda r: (rank.get(r.algorithm, len(rank)), r.algorithm, r.seed)):
        if r.optimizer_steps is not None:
            steps.setdefault(algorithm_label(r.algorithm), set()).add(r.optimizer_steps)
    if steps:
        parts.append("steps " + ", ".join(f"{k} {'/'.join(map(str, sorted(v)))}" for k, v in steps.items()))
    ours_norm = _normalisation(task, variant, found)
    if ours_norm or paper:
        ours_text = "/".join(_constant(x) for x in ours_norm) if ours_norm else "—"
        paper_text = "/".join(_constant(x) for x in paper.normalisation) if paper else "—"
        parts.append(f"normalisation min/avg/max {ours_text} (paper {paper_text})")
    if not found:
        parts.insert(0, "no results")
    return f"- **{row_label(task, variant)}**: " + "; ".join(parts)


def _constant(x: Optional[float]) -> str:
    return "—" if x is None else f"{x:.4g}"


def _normalisation(task: str, variant: str, found: Sequence[CellResult]) -> Optional[tuple[float, float, float]]:
    """Our normalisation constants: recorded by a cell, else the registered task's."""
    for r in found:
        recorded = r.protocol.get("normalisation")
        if isinstance(recorded, list) and len(recorded) == 3:
            return tuple(recorded)
    spec = _find_task(task)
    if spec is not None and variant in spec.normalisation:
        n = spec.normalisation[variant]
        return (n.minimum, n.dataset_average, n.maximum)
    return None


# ---- plots ---------------------------------------------------------------------------------------------------------


def _slug(task: str, variant: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", task if variant == "default" else f"{task}_{variant}")


def _save(fig, path: Path) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def plot_table2(results: Results, path: Path) -> Path:
    """The normalised scores as a heat map: ours (mean over seeds) coloured, the paper's number below each."""
    import matplotlib
    import numpy as np
    from matplotlib.figure import Figure

    rows, columns = table_rows(results), table_columns(results)
    values = np.full((len(rows), len(columns)), np.nan)
    fig = Figure(figsize=(1.5 * len(columns) + 2.5, 0.55 * len(rows) + 1.5), layout="constrained")
    ax = fig.subplots()
    for i, (task, variant) in enumerate(rows):
        paper = PAPER.get((task, variant))
        for j, algorithm in enumerate(columns):
            found = cell_results(results, task, variant, algorithm)
            agg = aggregate(r.normalised_score for r in found)
            if agg is not None:
                values[i, j] = agg.mean
            ours = "missing" if agg is None else f"{agg.mean:.1f}" + (f" ± {agg.std:.1f}" if agg.std else "") \
                + f" ({agg.n})"
            paper_value = paper.normalised.get(algorithm) if paper else None
            text = ours + ("" if paper_value is None else f"\n(paper {paper_value:.1f})")
            # White on the dark ends of the colour scale.
            dark = agg is not None and not 15 <= agg.mean <= 85
            ax.text(j, i, text, ha="center", va="center", fontsize=7, color="white" if dark else "black")
    cmap = matplotlib.colormaps["RdYlGn"].with_extremes(bad="#dddddd")  # grey: no result
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=0, vmax=100, aspect="auto")
    ax.set_xticks(range(len(columns)), [algorithm_label(a) for a in columns], fontsize=8)
    ax.set_yticks(range(len(rows)), [row_label(*r) for r in rows], fontsize=8)
    ax.set_title("Normalised score: ours, mean ± std over seeds (number of seeds), and the paper's Table 2",
                 fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.03)
    return _save(fig, path)


def plot_scores(results: Results, task: str, variant: str, path: Path) -> Optional[Path]:
    """Bars of our mean normalised score (error bar: standard deviation, dots: seeds) beside the paper's, per
    algorithm; None when the row has no normalised result."""
    from matplotlib.figure import Figure

    paper = PAPER.get((task, variant))
    columns = [a for a in table_columns(results)
               if cell_results(results, task, variant, a) or (paper and a in paper.normalised)]
    found = {a: [r.normalised_score for r in cell_results(results, task, variant, a) if r.normalised_score is not None]
             for a in columns}
    if not any(found.values()):
        return None
    fig = Figure(figsize=(1.1 * len(columns) + 2, 3.4), layout="constrained")
    ax = fig.subplots()
    width, labelled = 0.38, set()

    def once(label: str) -> Optional[str]:  # each legend entry once
        if label in labelled:
            return None
        labelled.add(label)
        return label

    for j, algorithm in enumerate(columns):
        agg = aggregate(found[algorithm])
        if agg is not None:
            ax.bar(j - width / 2, agg.mean, width, yerr=agg.std or 0, color="tab:blue", capsize=3,
                   label=once("ours (mean ± std)"))
            ax.scatter([j - width / 2] * agg.n, agg.values, color="black", s=10, zorder=3, label=once("ours, one seed"))
        paper_value = paper.normalised.get(algorithm) if paper else None
        if paper_value is not None:
            ax.bar(j + width / 2, paper_value, width, color="tab:gray", label=once("paper"))
    ax.axhline(50, color="black", linewidth=0.6, linestyle="--")
    ax.set_xticks(range(len(columns)), [algorithm_label(a) for a in columns], fontsize=8)
    ax.set_ylabel("normalised score (50 = dataset)")
    ax.set_title(f"{row_label(task, variant)}: ours vs the paper", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _save(fig, path)


def read_scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series of a TensorBoard log directory: tag -> [(step, value)] ({} when there is none)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    if not log_dir.is_dir():
        return {}
    accumulator = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
    return {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]}


def plot_curves(results: Results, task: str, variant: str, path: Path) -> Optional[Path]:
    """Learning curves of a row's cells from their logs: evaluation score against optimizer steps (when evaluated
    more than once), training loss against steps (offline algorithms), and each online round's score against the
    environment episodes played so far. None when no cell left a log."""
    from matplotlib.figure import Figure

    panels: dict[str, list[tuple[str, str, list[float], list[float]]]] = {"eval": [], "loss": [], "online": []}
    columns = table_columns(results)
    for result in (r for k, r in sorted(results.cells.items(), key=lambda kv: str(kv[0])) if k[:2] == (task, variant)):
        scalars = read_scalars(result.log_dir) if result.log_dir else {}
        label, colour = f"{algorithm_label(result.algorithm)} s{result.seed}", _colour(columns.index(result.algorithm))
        evaluation = scalars.get("eval/normalised_score") or scalars.get("eval/mean_return") or []
        if len(evaluation) > 1:
            panels["eval"].append((label, colour, [s for s, _ in evaluation], [v for _, v in evaluation]))
        rounds = scalars.get("round/normalised_score") or scalars.get("round/mean_return") or []
        episodes = [v for _, v in scalars.get("round/episodes", [])]
        if rounds and len(episodes) == len(rounds):
            cumulative = [sum(episodes[: i + 1]) for i in range(len(episodes))]
            panels["online"].append((label, colour, cumulative, [v for _, v in rounds]))
        elif scalars.get("train/loss") and result.algorithm not in ONLINE_ALGORITHMS:
            loss = scalars["train/loss"]
            panels["loss"].append((label, colour, [s for s, _ in loss], [v for _, v in loss]))
    titles = {"eval": ("optimizer step", "evaluation score"), "loss": ("optimizer step", "training loss"),
              "online": ("environment episodes", "round score (training rollouts)")}
    shown = [name for name in panels if panels[name]]
    if not shown:
        return None
    fig = Figure(figsize=(4.2 * len(shown), 3.2), layout="constrained")
    axes = fig.subplots(1, len(shown), squeeze=False)[0]
    for ax, name in zip(axes, shown):
        for label, colour, xs, ys in panels[name]:
            ax.plot(xs, ys, label=label, color=colour, linewidth=1, marker="." if len(xs) < 30 else None)
        ax.set_xlabel(titles[name][0])
        ax.set_ylabel(titles[name][1])
        ax.legend(fontsize=6)
    fig.suptitle(f"{row_label(task, variant)}: learning curves", fontsize=9)
    return _save(fig, path)


def _colour(index: int) -> str:
    return f"C{index % 10}"


# ---- the report ----------------------------------------------------------------------------------------------------


def write_report(results: Results, out: PathLike) -> Path:
    """Write report.md and the plots into `out` (created); returns the report's path."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise LMRLError(f"--out {out} is a file; name a directory")
    out.mkdir(parents=True, exist_ok=True)
    plot_table2(results, out / "table2.png")
    sections = []
    for task, variant in table_rows(results):
        slug = _slug(task, variant)
        images = [p for p in (plot_scores(results, task, variant, out / f"scores_{slug}.png"),
                              plot_curves(results, task, variant, out / f"curves_{slug}.png")) if p]
        if images:
            sections.append(f"### {row_label(task, variant)}\n\n" + "\n".join(f"![{p.stem}]({p.name})" for p in images))
    seeds = [len(cell_results(results, *row, a)) for row in table_rows(results) for a in table_columns(results)]
    filled = [n for n in seeds if n]
    text = "\n\n".join([
        "# Scoreboard: our results beside the LMRL-Gym paper",
        f"Made by `lmrl report` from {len(results.cells)} results (sources below): {len(filled)} cells with results, "
        f"{sum(n < 3 for n in filled)} of them from fewer than 3 seeds.",
        "![Table 2](table2.png)",
        "## Table 2: normalised scores\n\nEach cell: ours, mean ± standard deviation over seeds (number of seeds) / "
        "the paper's. 0 = minimum return, 50 = the dataset's average, 100 = the expert's (our constants: see the "
        "protocols). —: a result without a normalised score; missing: no result (with the grid's status when it planned the cell); † training stopped by the "
        "time budget in at least one seed; ‡ the decoding beta chosen on the edge of its sweep.",
        score_table(results),
        "## Table 4: raw mean returns\n\nEach cell: ours / the paper's (Car Dealer: the paper gives normalised "
        "scores only).",
        score_table(results, raw=True),
        "## Table 1: datasets\n\nEach cell: ours / the paper's.",
        table1(results),
        "## Protocols and differences from the paper",
        "\n".join(protocol_line(results, *row) for row in table_rows(results)),
        "## Plots\n\n" + ("\n\n".join(sections) if sections else "No per-task plots: no normalised result and no log."),
        "## Sources\n\n" + "\n".join(f"- {s}" for s in results.sources)
        + ("\n\nNotes:\n" + "\n".join(f"- {n}" for n in results.notes) if results.notes else ""),
    ])
    path = out / "report.md"
    atomic_write_text(path, text + "\n")
    return path


def run_report(paths: Sequence[PathLike], out: PathLike) -> Path:
    """`lmrl report`: read `paths`, write the report into `out`; returns report.md's path."""
    results = load_results(paths)
    if not results.cells and not results.planned:
        raise LMRLError(f"no results in {', '.join(map(str, paths))[:200]} (table2 cells, or benchmark rows with "
                        "an algorithm and a mean_return)")
    return write_report(results, out)
