"""Text-Nav (spec §2.2): put the stale food from the living-room table into the kitchen fridge, in a TextWorld house of
eight rooms; registered as "textnav" with variants "fo" (fully observed: each room names itself and the inventory is
shown after every step) and "po" (partially observed: neither). Needs `textworld==1.7.0` (pip); its games compile
offline with the Inform 7 tools in its wheel, once per (variant, start room), into a cache directory (see `house`).

Evaluation protocol: 1800 sampled episodes, episode i starting in room i mod 8 (225 from each room) with the
sampling seed i (the original's scripts roll out 32). A return is 0 or 1, so the standard error of the mean return
over n episodes is sqrt(p(1-p)/n) at success rate p; one return point is 50/0.74 = 67.6 score points above the
dataset average (0.26) and 50/0.26 = 192 below it. With n = 1800 the score's standard error stays under 2 points
everywhere: at most 192 x 0.439 / sqrt(1800) = 1.98 just below the average (p = 0.26) and 67.6 x 0.5 / 42.4 = 0.80
above it. (640 episodes would keep it under 2 points only above the dataset average.)
"""
from __future__ import annotations

from typing import Any

from lmrl_lightning.errors import LMRLError
from lmrl_lightning.registry import EvalEpisode, TaskSpec, register_task
from lmrl_lightning.scoring import Normalisation
from lmrl_lightning.tasks.textnav.datagen import (
    DATA_MAX_STEPS,
    PAPER_TABLE1,
    format_stats_table,
    generate_dataset,
)
from lmrl_lightning.tasks.textnav.env import (
    MAX_STEPS,
    REWARDS,
    TextNavEnv,
    admissible_actions_for_history,
    clean_feedback,
    format_observation,
)
from lmrl_lightning.tasks.textnav.house import ROOMS, VARIANTS, compile_all, compiled_game
from lmrl_lightning.tasks.textnav.original import read_original_textnav
from lmrl_lightning.tasks.textnav.policies import (
    PartialWalkthroughAgent,
    RandomCommandPlayer,
    optimal_walkthrough,
)

# Spec §2.9 / paper Table 5: the minimum return, the dataset's average, the optimal return (every episode won).
NORMALISATION: dict[str, Normalisation] = {
    "fo": Normalisation(minimum=0.0, dataset_average=0.26, maximum=1.0),
    "po": Normalisation(minimum=0.0, dataset_average=0.26, maximum=1.0),
}
EVAL_EPISODES = 1800  # see the module docstring: standard error under 2 points


def make_env(variant: str, **kwargs: Any) -> TextNavEnv:
    """The Text-Nav env of `variant`; keyword arguments (`rollouts.env_options`) go to `TextNavEnv`: max_steps,
    house_seed, cache_dir."""
    TASK.check_variant(variant)
    known = {"max_steps", "house_seed", "cache_dir"}
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise LMRLError(f"textnav env_options: unknown option {unknown[0]!r}; valid: {', '.join(sorted(known))}")
    return TextNavEnv(variant, **kwargs)


def eval_episodes(variant: str, episodes: int) -> list[EvalEpisode]:
    """`episodes` episodes; episode i starts in room i mod 8 (equal shares when `episodes` is a multiple of 8) and
    seeds the policy's sampling with i."""
    TASK.check_variant(variant)
    return [EvalEpisode(i, i, {"start_room": ROOMS[i % len(ROOMS)]}) for i in range(episodes)]


TASK: TaskSpec = register_task(
    TaskSpec(
        name="textnav",
        variants=VARIANTS,
        make_env=make_env,
        normalisation=NORMALISATION,
        eval_episodes=eval_episodes,
        default_eval_episodes=EVAL_EPISODES,
        history_window={"fo": None, "po": None},  # the agent sees the whole episode, as in the original
        # Re-ranking chooses among the current state's admissible commands; free generation (the paper's) stays
        # the default.
        state_candidate_actions=admissible_actions_for_history,
        default_decoding="sample",
        generate_dataset=generate_dataset,
        format_stats=format_stats_table,
        read_original=read_original_textnav,  # the original's {"text_history", "rewards", "dones"} records
        table1=PAPER_TABLE1,
        description="Text-Nav (TextWorld): put the stale food from the living-room table into the kitchen fridge "
        "and close it. Type one of the admissible commands, e.g. 'go west', 'take stale food from table'; "
        f"{MAX_STEPS} commands at most. FO names the room and shows your inventory, PO does not.",
    )
)

__all__ = [
    "DATA_MAX_STEPS", "EVAL_EPISODES", "MAX_STEPS", "NORMALISATION", "PAPER_TABLE1", "REWARDS", "ROOMS", "TASK",
    "PartialWalkthroughAgent", "RandomCommandPlayer", "TextNavEnv", "admissible_actions_for_history",
    "clean_feedback", "compile_all", "compiled_game", "eval_episodes", "format_observation", "format_stats_table",
    "generate_dataset", "make_env", "optimal_walkthrough", "read_original_textnav",
]
