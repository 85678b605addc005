"""Task and algorithm registry: the core finds tasks and algorithms by name here and never imports a task package
directly, nor a module that a file names."""
from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, PackageNotFoundError, entry_points, version
from typing import Any, Callable, Iterable, Optional, Union

from lmrl_lightning.env import TextEnv, TextHistory
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

    make_env(variant, **env_options) builds the simulator (options: the task env's keyword arguments);
    eval_episodes(variant, episodes) lists `episodes` evaluation episodes in all (the paper's protocol at
    default_eval_episodes; a task may refuse other counts, e.g. the maze plays a multiple of its 25 starts);
    generate_dataset(out_dir, variant=,
    n_episodes=, seed=, progress=) writes `out_dir/train.jsonl` and returns statistics that format_stats prints;
    candidate_actions, when set, is the task's fixed action set for re-ranking decoding; state_candidate_actions,
    when set, gives the candidate actions of the state a history ends in (chess: the legal moves) and takes
    precedence for re-ranking (see `rerank_candidates`); history_window[variant]
    is how many recent texts the environment shows the agent (None: all);
    default_decoding is how evaluation decodes unless told otherwise (see `LMRLModule.policy`); read_original, when
    set, converts one record of the original LMRL-Gym project's data files into episodes (`lmrl data TASK
    --from-original FILE`, see `data.original`); table1 is the paper's Table 1 row of the task's dataset
    (n_episodes, mean_length, std_length, success_rate, mean_return, std_return), printed beside ours;
    show_observation, when set, is how `lmrl play` shows an observation text to a person (chess: a board diagram).
    """

    name: str
    variants: tuple[str, ...]
    make_env: Callable[..., TextEnv]
    normalisation: dict[str, Normalisation]
    eval_episodes: Callable[[str, int], list[EvalEpisode]]
    default_eval_episodes: int
    history_window: dict[str, Optional[int]] = field(default_factory=dict)
    candidate_actions: Optional[tuple[str, ...]] = None
    state_candidate_actions: Optional[Callable[[TextHistory], tuple[str, ...]]] = None
    default_decoding: str = "sample"
    generate_dataset: Optional[Callable[..., Any]] = None
    format_stats: Optional[Callable[[dict[str, Any]], str]] = None
    read_original: Optional[Callable[[Any, str], Iterable[Any]]] = None
    table1: Optional[dict[str, float]] = None
    show_observation: Optional[Callable[[str], str]] = None
    description: str = ""

    def rerank_candidates(self) -> Optional[Union[tuple[str, ...], Callable[[TextHistory], tuple[str, ...]]]]:
        """What re-ranking decoding chooses among: the per-state candidates when the task has them, else its
        fixed set (None: re-ranking is unavailable)."""
        return self.state_candidate_actions or self.candidate_actions

    def check_variant(self, variant: str) -> str:
        if variant not in self.variants:
            raise LMRLError(f"task {self.name!r} has no variant {variant!r}; valid: {', '.join(self.variants)}")
        return variant


_TASKS: dict[str, TaskSpec] = {}
# Where each registered task came from (see `task_origin`), recorded in checkpoints and dataset manifests.
_ORIGINS: dict[str, dict[str, str]] = {}

# Installed packages declare their tasks under this entry-point group, naming a TaskSpec, e.g. in pyproject.toml:
#   [project.entry-points."lmrl_lightning.tasks"]
#   guess_number = "my_package.task:TASK"
TASK_ENTRY_POINTS = "lmrl_lightning.tasks"


def register_task(spec: TaskSpec) -> TaskSpec:
    _TASKS[spec.name] = spec
    return spec


def task_names() -> list[str]:
    """Registered tasks and those installed packages declare (not loaded: a name is enough to list them)."""
    _load_builtin_tasks()
    return sorted(set(_TASKS) | {entry.name for entry in entry_points(group=TASK_ENTRY_POINTS)})


def get_task(name: str) -> TaskSpec:
    """The task called `name` (see `find_task`); an unknown name lists the valid ones."""
    task = find_task(name)
    if task is None:
        raise LMRLError(f"unknown task {name!r}; valid tasks: {', '.join(task_names())}")
    return task


def find_task(name: str) -> Optional[TaskSpec]:
    """The task called `name`: a built-in, one registered in code, or the installed entry point of that name; None.

    Only the entry point whose name matches is loaded, so a broken package breaks its own task only. A name read
    from a file (a checkpoint's task) is looked up here and nowhere else: it never names a module to import."""
    _load_builtin_tasks()
    if name not in _TASKS:
        _load_task_entry_point(name)
    return _TASKS.get(name)


def task_origin(name: str) -> dict[str, str]:
    """Where task `name` came from: its distribution, version and entry point, or the module that registered it
    in code (a launcher script, a test). Tells a person reading a checkpoint which package to install."""
    if name in _ORIGINS:
        return _ORIGINS[name]
    make_env = get_task(name).make_env
    return {"module": str(getattr(make_env, "__module__", None) or "unknown")}


def describe_origin(origin: object) -> str:
    """`origin` as recorded in a file, for a message: `dist version (entry point ...)`; untrusted text, shortened."""
    if not isinstance(origin, dict):
        return "an unrecorded source"
    fields = {k: str(v)[:100] for k, v in origin.items() if k in ("distribution", "version", "entry_point", "module")}
    if "distribution" in fields:
        pin = f"=={fields['version']}" if "version" in fields else ""
        return f"the package {fields['distribution']}{pin} (entry point {fields.get('entry_point', '?')})"
    return f"module {fields.get('module', '?')} (registered in code, not by an installed package)"


def _load_builtin_tasks() -> None:
    # The tasks package registers each built-in task on import and lists them in BUILTIN_TASKS.
    for spec in importlib.import_module("lmrl_lightning.tasks").BUILTIN_TASKS:
        _ORIGINS.setdefault(spec.name, _builtin_origin())


@functools.cache
def _builtin_origin() -> dict[str, str]:
    version_ = _installed_version("lmrl-lightning")
    return {"distribution": "lmrl-lightning", "version": version_, "entry_point": "built-in"}


def _load_task_entry_point(name: str) -> None:
    matches = [entry for entry in entry_points(group=TASK_ENTRY_POINTS) if entry.name == name]
    if not matches:
        return
    origins = [_entry_point_origin(entry) for entry in matches]
    if len(matches) > 1:
        raise LMRLError(f"task {name!r} is declared by several installed packages: "
                        f"{', '.join(describe_origin(o) for o in origins)}; uninstall all but one")
    spec = _load_entry_point(matches[0], f"task {name!r}")
    if not isinstance(spec, TaskSpec) or spec.name != name:
        raise LMRLError(f"task {name!r} from {describe_origin(origins[0])}: the entry point must name the TaskSpec "
                        f"called {name!r}, got {type(spec).__name__} {getattr(spec, 'name', '')!r}")
    register_task(spec)
    _ORIGINS[name] = origins[0]


def _load_entry_point(entry: EntryPoint, what: str) -> Any:
    try:
        return entry.load()
    except Exception as e:  # a third-party package's import error is reported as such, for this name only
        origin = describe_origin(_entry_point_origin(entry))
        raise LMRLError(f"{what} from {origin} failed to load: {type(e).__name__}: {str(e)[:200]}") from None


def _entry_point_origin(entry: EntryPoint) -> dict[str, str]:
    origin = {"entry_point": f"{entry.name} = {entry.value}"}
    if entry.dist is not None:
        origin.update(distribution=entry.dist.name, version=entry.dist.version)
    return origin


def _installed_version(distribution: str) -> str:
    try:
        return version(distribution)
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


# Installed packages declare their algorithms under this entry-point group, e.g. in pyproject.toml:
#   [project.entry-points."lmrl_lightning.algorithms"]
#   my_algo = "my_package.algo:MyAlgo"
ALGORITHM_ENTRY_POINTS = "lmrl_lightning.algorithms"


def class_path(cls: type) -> str:
    """`module.Class`, as checkpoints record the algorithm that wrote them."""
    return f"{cls.__module__}.{cls.__qualname__}"


def algorithm_names() -> list[str]:
    """The built-in algorithms' short names, then those installed packages declare (not loaded)."""
    from lmrl_lightning.algorithms import ALGORITHMS

    declared = sorted({entry.name for entry in entry_points(group=ALGORITHM_ENTRY_POINTS)} - set(ALGORITHMS))
    return [*ALGORITHMS, *declared]


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
            cls = _load_entry_point(entry, f"algorithm {entry.name!r}")
            if not (isinstance(cls, type) and issubclass(cls, LMRLModule)):
                raise LMRLError(f"entry point {entry.name!r} ({entry.value}) is not an LMRLModule subclass")
            return cls
    return None


def import_algorithm_class(dotted: str) -> Optional[type]:
    """The LMRLModule subclass at `module.Class`, or None when there is none there. It imports that module: only
    for a path a person typed (a command-line flag), never for one read from a file."""
    from lmrl_lightning.algorithms.base import LMRLModule

    module_name, _, class_name = dotted.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), class_name) if module_name else None
    except (ImportError, AttributeError):
        return None
    return cls if isinstance(cls, type) and issubclass(cls, LMRLModule) else None
