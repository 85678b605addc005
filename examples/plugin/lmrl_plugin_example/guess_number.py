"""Guess the number: find a hidden number from 1 to 8 in at most four guesses; after each guess the environment
answers "higher", "lower" or "correct". The example task of README "Add a task".

A task is four things, all registered in one `TaskSpec`:
  * an environment (`TextEnv`): `reset` returns the first history, `step` plays the agent's action;
  * an evaluation protocol: the episodes (seeds, options) every evaluation plays;
  * a normalisation of returns onto the 0 (worst) / 50 (dataset) / 100 (expert) scale;
  * a dataset generator: scripted players write `train.jsonl` for offline training.

Rewards: -1 for every guess that is not the number (an invalid guess included), 0 for the right one, so the return
is minus the number of wrong guesses: -4 at worst, 0 at best. Bisection always wins within four guesses.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Iterator, Optional

from lmrl_lightning.data.jsonl import write_episodes
from lmrl_lightning.env import EpisodeOverError, Episode, PerEpisodePolicy, Text, TextEnv, TextHistory, TextPolicy
from lmrl_lightning.registry import EvalEpisode, TaskSpec
from lmrl_lightning.rollout import rollout
from lmrl_lightning.scoring import Normalisation

LOWEST, HIGHEST, MAX_GUESSES = 1, 8, 4
NUMBERS = tuple(str(n) for n in range(LOWEST, HIGHEST + 1))
PROMPT = f"guess a number from {LOWEST} to {HIGHEST}\n"
INVALID = f"not a number from {LOWEST} to {HIGHEST}\n"
WRONG_GUESS_REWARD, RIGHT_GUESS_REWARD = -1.0, 0.0

# Normalisation: the worst return (four wrong guesses), the data's mean return (`lmrl data guess_number`, 2000
# episodes, seed 0; tests/test_plugin_task.py recomputes it) and the expert's (bisection: 13 wrong guesses over 8).
DATASET_AVERAGE_RETURN = -2.3875
EXPERT_RETURN = -13 / 8


class GuessNumberEnv(TextEnv):
    """The game; `options={"secret": n}` fixes the hidden number, otherwise the seed draws it."""

    def __init__(self) -> None:
        self.secret: Optional[int] = None
        self.n_guesses, self.solved = 0, False

    def reset(self, seed: Optional[int] = None, options: Optional[dict[str, Any]] = None) -> TextHistory:
        secret = (options or {}).get("secret", random.Random(seed).randint(LOWEST, HIGHEST))
        if str(secret) not in NUMBERS:
            raise ValueError(f"secret must be a number from {LOWEST} to {HIGHEST}, got {secret!r}")
        self.secret, self.n_guesses, self.solved = int(secret), 0, False
        return (Text(PROMPT, False),)

    def step(self, history: TextHistory) -> tuple[TextHistory, float, bool]:
        if self.secret is None or self.done:
            raise EpisodeOverError("the game is over or not started; call reset() first")
        if not history or not history[-1].is_action:
            raise ValueError("step() needs a history whose last text is the agent's action")
        guess = history[-1].text.strip()
        self.n_guesses += 1
        # Only the eight digit strings are guesses ("٣".isdigit() is True, so no int() on arbitrary text).
        if guess not in NUMBERS:
            answer = INVALID
        else:
            self.solved = int(guess) == self.secret
            answer = "correct\n" if self.solved else ("higher\n" if int(guess) < self.secret else "lower\n")
        reward = RIGHT_GUESS_REWARD if self.solved else WRONG_GUESS_REWARD
        return tuple(history) + (Text(answer, False),), reward, self.done

    @property
    def done(self) -> bool:
        return self.solved or self.n_guesses >= MAX_GUESSES

    def success(self) -> bool:
        return self.solved

    def end_message(self) -> Optional[str]:
        return f"the number was {self.secret}" if self.secret is not None else None


class BisectingPlayer(TextPolicy):
    """The data's scripted player: with probability `prob_bisect` the middle of the numbers still possible, else a
    uniformly random number. It reads only the history, as a language model would."""

    def __init__(self, prob_bisect: float = 0.5):
        self.prob_bisect = prob_bisect

    def act(self, history: TextHistory, seed: Optional[int] = None) -> TextHistory:
        rng = random.Random(seed)
        low, high = possible_range(history)
        guess = (low + high) // 2 if rng.random() < self.prob_bisect else rng.randint(LOWEST, HIGHEST)
        return tuple(history) + (Text(f"{guess}\n", True),)


def possible_range(history: TextHistory) -> tuple[int, int]:
    """The lowest and highest numbers consistent with the answers so far."""
    low, high = LOWEST, HIGHEST
    for action, answer in zip(history[1::2], history[2::2]):
        guess = action.text.strip()
        if guess in NUMBERS and answer.text == "higher\n":
            low = max(low, int(guess) + 1)
        elif guess in NUMBERS and answer.text == "lower\n":
            high = min(high, int(guess) - 1)
    return low, max(low, high)


def generate_dataset(out_dir: str, variant: str = "default", n_episodes: int = 2000, seed: int = 0,
                     progress: bool = False) -> dict[str, Any]:
    """Write `out_dir/train.jsonl`: `n_episodes` games of `BisectingPlayer`, streamed in blocks; return statistics."""
    check_variant(variant)
    totals = {"n_episodes": 0, "mean_return": 0.0, "success_rate": 0.0}

    def games(block: int = 1024) -> Iterator[Episode]:
        env, player = GuessNumberEnv(), PerEpisodePolicy(BisectingPlayer())
        for start in range(0, n_episodes, block):
            specs = [EvalEpisode(i, seed * 1_000_003 + i) for i in range(start, min(n_episodes, start + block))]
            for episode in rollout(env, player, specs, batch_size=len(specs), policy_seed=seed, progress=progress):
                totals["n_episodes"] += 1
                totals["mean_return"] += episode.total_reward
                totals["success_rate"] += episode.success
                yield episode

    write_episodes(Path(out_dir) / "train.jsonl", games())
    return {**totals, "mean_return": totals["mean_return"] / n_episodes,
            "success_rate": totals["success_rate"] / n_episodes}


def eval_episodes(variant: str, episodes: int) -> list[EvalEpisode]:
    """`episodes` games whose hidden numbers cycle through the range in order; the episode index seeds the policy's
    sampling."""
    check_variant(variant)
    return [EvalEpisode(i, i, {"secret": LOWEST + i % len(NUMBERS)}) for i in range(episodes)]


def make_env(variant: str) -> GuessNumberEnv:
    check_variant(variant)
    return GuessNumberEnv()


def check_variant(variant: str) -> str:
    return TASK.check_variant(variant)


# The entry point `guess_number = "lmrl_plugin_example.guess_number:TASK"` names this spec; lmrl registers it when a
# command asks for the task "guess_number". (Code that is not installed can call `register_task(TASK)` itself.)
TASK = TaskSpec(
    name="guess_number",
    variants=("default",),
    make_env=make_env,
    normalisation={"default": Normalisation(-float(MAX_GUESSES), DATASET_AVERAGE_RETURN, EXPERT_RETURN)},
    eval_episodes=eval_episodes,
    default_eval_episodes=8 * len(NUMBERS),  # every number 8 times
    history_window={"default": None},
    candidate_actions=tuple(f"{n}\n" for n in NUMBERS),
    default_decoding="rerank",
    generate_dataset=generate_dataset,
    description=f"Guess the number: find the hidden number from {LOWEST} to {HIGHEST} in {MAX_GUESSES} guesses; "
    "after each guess you hear higher, lower or correct.",
)
