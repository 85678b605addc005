"""Text-environment API (spec §1): texts, histories, trajectories, environments and policies.

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
    """One segment of an interaction: an agent action (`is_action=True`) or an environment observation."""

    text: str
    is_action: bool


TextHistory = tuple[Text, ...]


def history_to_str(history: Sequence[Text]) -> str:
    """Render a history as the model sees it: plain concatenation, no separators."""
    return "".join(t.text for t in history)


@dataclass(frozen=True)
class StepResult:
    history: TextHistory
    reward: float
    done: bool


@dataclass
class TextTrajectory:
    """A history with one reward per segment; rewards sit on action segments only.

    `done` says whether the trajectory ends in a true terminal state (False: truncated).
    """

    history: TextHistory
    rewards: tuple[float, ...]
    done: bool

    def __post_init__(self) -> None:
        if len(self.rewards) != len(self.history):
            raise ValueError(f"{len(self.rewards)} rewards for {len(self.history)} texts")
        for i, (t, r) in enumerate(zip(self.history, self.rewards)):
            if not t.is_action and r != 0.0:
                raise ValueError(f"text {i} is an observation but has reward {r}; rewards belong to actions")

    @property
    def total_reward(self) -> float:
        return float(sum(self.rewards))


@dataclass
class TextTrajectoryChain:
    """A singly linked list of trajectory chunks (one per transition when an episode outgrows a context).

    Only the last chunk may be `done`; a value method bootstraps from each chunk into the next.
    """

    trajectory: TextTrajectory
    next: Optional["TextTrajectoryChain"] = None

    def __post_init__(self) -> None:
        if self.next is not None and self.trajectory.done:
            raise ValueError("only the last chunk of a chain may be done")

    def to_list(self) -> list[TextTrajectory]:
        chunks, node = [], self
        while node is not None:
            chunks.append(node.trajectory)
            node = node.next
        return chunks

    @classmethod
    def from_list(cls, chunks: Sequence[TextTrajectory]) -> "TextTrajectoryChain":
        if not chunks:
            raise ValueError("a chain needs at least one chunk")
        node = None
        for chunk in reversed(chunks):
            node = cls(chunk, node)
        return node


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

    def close(self) -> None:
        pass

    def end_message(self) -> Optional[str]:
        """What `lmrl play` tells the person at the end of an episode (e.g. a hidden word); None: nothing."""
        return None

    def copy(self) -> "TextEnv":
        return copy.deepcopy(self)


class BatchedTextEnv:
    """N independent copies of one environment stepped together; finished entries are skipped (None)."""

    def __init__(self, env: TextEnv, size: int):
        self.envs = [env.copy() for _ in range(size)]

    def __len__(self) -> int:
        return len(self.envs)

    def reset(
        self, seeds: Sequence[Optional[int]], options: Sequence[Optional[dict[str, Any]]]
    ) -> list[TextHistory]:
        if not (len(seeds) == len(options) <= len(self.envs)):
            raise ValueError(f"{len(seeds)} seeds and {len(options)} options for {len(self.envs)} environments")
        return [env.reset(seed=s, options=o) for env, s, o in zip(self.envs, seeds, options)]

    def step(
        self, histories: Sequence[Optional[TextHistory]], done: Sequence[bool]
    ) -> list[Optional[StepResult]]:
        return [
            None if d or h is None else StepResult(*env.step(h))
            for env, h, d in zip(self.envs, histories, done)
        ]

    def close(self) -> None:
        for env in self.envs:
            env.close()


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


def ensure_end_of_turn(text: str) -> str:
    """Exactly one trailing newline, and no newline inside the action (it ends the turn)."""
    return text.split(END_OF_TURN, 1)[0] + END_OF_TURN


@dataclass
class Turn:
    """One segment of a recorded episode, as written to the JSONL dataset format."""

    text: str
    is_action: bool
    reward: float = 0.0


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

    def to_trajectory(self) -> TextTrajectory:
        return TextTrajectory(
            tuple(Text(t.text, t.is_action) for t in self.turns), tuple(t.reward for t in self.turns), self.done
        )


def episode_success(env: TextEnv) -> Optional[bool]:
    """Whether the env's last episode succeeded, for envs that define `success()`; None otherwise."""
    success = getattr(env, "success", None)
    return success() if callable(success) else None
