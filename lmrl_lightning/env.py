"""Text-environment API (spec §1): texts, histories, environments, policies and recorded episodes.

A history is a tuple of `Text` segments; each segment carries its own trailing newline, so a history is
rendered by plain concatenation. Environments own the context they return (the maze keeps only its last
observations), policies return the history extended by one action.
"""
from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

END_OF_TURN = "\n"


@dataclass(frozen=True)
class Text:
    """One segment of an interaction: an agent action (`is_action=True`) or an environment observation.

    `token_ids`: the tokens a language-model policy sampled for this action where they are not the text's own
    encoding (a model can write " Paris" as " Par" + "is"); None: the text's encoding. Prompts and training chunks
    use them, so an update scores the tokens that were sampled. Not part of equality: the text is the action."""

    text: str
    is_action: bool
    token_ids: Optional[tuple[int, ...]] = field(default=None, compare=False)


TextHistory = tuple[Text, ...]


class EpisodeOverError(RuntimeError):
    """`TextEnv.step` after the episode ended (or, in an env that needs it, before the first `reset`)."""


class TextEnv(ABC):
    """A text environment: `reset` gives the first history, `step` takes the history ending in the agent's
    action and returns the new history the agent will see, the reward of that action, and `done`.

    What every environment guarantees (tests/test_env_fuzz.py checks it for each registered task):
    * `step` plays any action text: empty, a million characters, control characters, lone surrogates, with or
      without the end-of-turn newline. Text that is not a valid action is the task's invalid action (it earns
      the task's documented invalid-action reward), never an exception.
    * The reward is a finite float from the task's documented set, `done` is a bool, and the returned history
      is a tuple of `Text` ending in an observation.
    * `step` after the step that returned `done=True` raises `EpisodeOverError` (a RuntimeError) until the
      next `reset()`; an env without a state before its first `reset()` raises it there too.
    * `step` with an empty history, or one whose last text is not an action, raises ValueError.
    No other exception comes out of `step`.
    """

    @abstractmethod
    def reset(self, seed: Optional[int] = None, options: Optional[dict[str, Any]] = None) -> TextHistory: ...

    @abstractmethod
    def step(self, history: TextHistory) -> tuple[TextHistory, float, bool]: ...

    @classmethod
    def step_many(
        cls, envs: Sequence["TextEnv"], histories: Sequence[TextHistory]
    ) -> list[tuple[TextHistory, float, bool]]:
        """`step` for several environments of this class at once, each with its own history: what the rollout
        engine calls each turn for all live episodes of its pool. The default steps them one by one; an env that
        asks a model or a process for its reply (a language-model oracle, a game interpreter) overrides it to
        answer them together. The results must equal stepping each env in turn."""
        return [env.step(history) for env, history in zip(envs, histories)]

    def close(self) -> None:
        pass

    def success(self) -> Optional[bool]:
        """Whether the episode that just ended succeeded (recorded as `meta["success"]`); None: the task has no
        notion of success beyond its return."""
        return None

    def end_message(self) -> Optional[str]:
        """What `lmrl play` tells the person at the end of an episode (e.g. a hidden word); None: nothing."""
        return None

    def copy(self) -> "TextEnv":
        return copy.deepcopy(self)


class TextPolicy(ABC):
    """Takes a history, returns it extended by one action `Text` (ending in a newline)."""

    @abstractmethod
    def act(self, history: TextHistory, seed: Optional[int] = None) -> TextHistory: ...


class BatchedTextPolicy(ABC):
    """Acts on many histories in one call; entries that are done (or None) come back as None.

    `seeds` gives one integer per entry; a policy that samples draws its randomness for entry i from
    seeds[i] alone, so an episode's actions do not depend on which other episodes share its batch.
    """

    @abstractmethod
    def act(
        self,
        histories: Sequence[Optional[TextHistory]],
        done: Optional[Sequence[bool]] = None,
        seeds: Optional[Sequence[int]] = None,
    ) -> list[Optional[TextHistory]]: ...


class PerEpisodePolicy(BatchedTextPolicy):
    """Adapts a single-history `TextPolicy` (a scripted player, a person) to the batched interface."""

    def __init__(self, policy: TextPolicy):
        self.policy = policy

    def act(self, histories, done=None, seeds=None):
        done = done or [h is None for h in histories]
        seeds = seeds or [None] * len(histories)
        return [None if d or h is None else self.policy.act(h, seed=s) for h, d, s in zip(histories, done, seeds)]


class PrivilegedPolicy(ABC):
    """A scripted player that reads the simulator's true state (dataset generators, expert baselines).

    The rollout engine hands it the environment of each episode alongside the history.
    """

    @abstractmethod
    def action(self, env: TextEnv, history: TextHistory, seed: int) -> str:
        """The action text (ending in a newline) to play in `env`, whose agent-visible history is `history`."""


@dataclass
class Turn:
    """One segment of a recorded episode, as written to the JSONL dataset format."""

    text: str
    is_action: bool
    reward: float = 0.0
    token_ids: Optional[tuple[int, ...]] = None  # as `Text.token_ids`; not written to dataset files


@dataclass
class Episode:
    """A whole recorded interaction: every text in order (not the env's truncated view), rewards on actions.

    The data layer rebuilds the agent's context at each action from these turns and the task's history
    window (the number of most recent texts its environment shows the agent).
    """

    turns: list[Turn]
    done: bool
    meta: dict[str, Any] = field(default_factory=dict)
    source: Optional[str] = None  # "file:line" when read from disk, for error messages

    @property
    def total_reward(self) -> float:
        return float(sum(t.reward for t in self.turns))

    @property
    def num_actions(self) -> int:
        return sum(t.is_action for t in self.turns)

    @property
    def success(self) -> bool:
        return bool(self.meta.get("success", False))
