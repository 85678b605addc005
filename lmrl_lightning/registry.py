"""Task and algorithm registry: the core finds tasks and algorithms by name here and never imports a task package
directly, nor a module that a file names."""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Callable, Optional

from lmrl_lightning.env import TextEnv
from lmrl_lightning.errors import LMRLError
from lmrl_lightning.scoring import Normalisation


@dataclass(frozen=True)
class EvalEpisode:
    """One evaluation episode: its global index, the env seed and reset options."""

    index: int
    seed: int
    options: Optional[dict[str, Any]] = None


@dataclass
class TaskSpec:
    """Everything generic code needs to know about a task.

    make_env(variant, **env_options) builds the simulator (options: the task env's keyword arguments); eval_episodes(variant, n_rollouts) lists the paper's evaluation
    episodes; generate_dataset(out_dir, variant=, n_episodes=, seed=, progress=) writes `out_dir/train.jsonl` and
    returns statistics that format_stats prints; candidate_actions, when set, is the task's fixed action set for re-ranking decoding;
    history_window[variant] is how many recent texts the environment shows the agent (None: all);
    default_decoding is how evaluation decodes unless told otherwise (see `LMRLModule.policy`).
    """

    name: str
    variants: tuple[str, ...]
    make_env: Callable[..., TextEnv]
    normalisation: dict[str, Normalisation]
    eval_episodes: Callable[[str, int], list[EvalEpisode]]
    default_eval_rollouts: int
    history_window: dict[str, Optional[int]] = field(default_factory=dict)
    candidate_actions: Optional[tuple[str, ...]] = None
    default_decoding: str = "sample"
    generate_dataset: Optional[Callable[..., Any]] = None
    format_stats: Optional[Callable[[dict[str, Any]], str]] = None
    description: str = ""

    def check_variant(self, variant: str) -> str:
        if variant not in self.variants:
            raise LMRLError(f"task {self.name!r} has no variant {variant!r}; valid: {', '.join(self.variants)}")
        return variant


_TASKS: dict[str, TaskSpec] = {}


def register_task(spec: TaskSpec) -> TaskSpec:
    _TASKS[spec.name] = spec
    return spec


def task_names() -> list[str]:
    _load_builtin_tasks()
    return sorted(_TASKS)


def get_task(name: str) -> TaskSpec:
    _load_builtin_tasks()
    if name not in _TASKS:
        raise LMRLError(f"unknown task {name!r}; valid tasks: {', '.join(sorted(_TASKS))}")
    return _TASKS[name]


def _load_builtin_tasks() -> None:
    # The tasks package registers each built-in task on import.
    importlib.import_module("lmrl_lightning.tasks")


# Installed packages declare their algorithms under this entry-point group, e.g. in pyproject.toml:
#   [project.entry-points."lmrl_lightning.algorithms"]
#   my_algo = "my_package.algo:MyAlgo"
ALGORITHM_ENTRY_POINTS = "lmrl_lightning.algorithms"


def class_path(cls: type) -> str:
    """`module.Class`, as checkpoints record the algorithm that wrote them."""
    return f"{cls.__module__}.{cls.__qualname__}"


def algorithm_class(name: str) -> Optional[type]:
    """The registered algorithm called `name` (e.g. `bc`, `BC` or `lmrl_lightning.algorithms.bc.BC`), or None.

    Registered: the built-in ALGORITHMS and what installed packages declare under ALGORITHM_ENTRY_POINTS. Names are
    matched before anything is loaded, so an unregistered name (read from a file, say) never causes an import."""
    from lmrl_lightning.algorithms import ALGORITHMS
    from lmrl_lightning.algorithms.base import LMRLModule

    for short, cls in ALGORITHMS.items():
        if name in (short, cls.__name__, class_path(cls)):
            return cls
    for entry in entry_points(group=ALGORITHM_ENTRY_POINTS):
        if name in (entry.name, entry.value.replace(":", ".")):
            cls = entry.load()
            if not (isinstance(cls, type) and issubclass(cls, LMRLModule)):
                raise LMRLError(f"entry point {entry.name!r} ({entry.value}) is not an LMRLModule subclass")
            return cls
    return None
