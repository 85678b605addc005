"""The LMRL-Gym maze (spec §2.1): the "double T" grid, fully observed (FO) and partially observed (PO).

The agent moves one cell per turn with `"move left\\n"`, `"move right\\n"`, `"move up\\n"`, `"move down\\n"`.
Every move costs -1 (a move into a wall too: the position stays), the move that reaches the goal earns 0,
and any other text is an invalid action (-4, position unchanged). After `max_steps` non-terminal steps the
next step ends the episode with `"Failure\\n"` and -1 whatever the action, so the worst return without
invalid actions is -101 and the best is -(shortest distance - 1).

Observations:
* FO: `"The goal is at position 8, 6. Your current position is at position 5, 3. There are walls to your
  left, below you.\\n"` (coordinates as `(row, col)`, each number's digits space-separated: 10 -> "1 0");
* PO: only the wall sentence, `"There are walls to your left, below you.\\n"`.

The returned history is the last `last_k` texts (FO 1: just the current observation; PO 40: about twenty
turns of walls and moves). An invalid action resets the history to the new observation alone, as the
original environment does (spec §2.1 ⚠), which only matters for PO. The terminal texts `"Success\\n"` and
`"Failure\\n"` are appended and windowed like any observation, so for valid play the history the env returns
is always the last `last_k` texts of the recorded episode.
"""
from __future__ import annotations

import random
from collections import deque
from typing import Any, Literal, Optional, Sequence

from lmrl_lightning.env import EpisodeOverError, Text, TextEnv, TextHistory

Position = tuple[int, int]
Variant = Literal["fo", "po"]

# 1 = wall, 0 = free; the double-T maze of the original benchmark (origin: mazelab).
LAYOUT: tuple[str, ...] = (
    "1111111111111",
    "1000001000001",
    "1110111110111",
    "1110111110111",
    "1110111110111",
    "1110000000111",
    "1111110111111",
    "1111110111111",
    "1111110111111",
    "1111111111111",
)
GOAL: Position = (8, 6)
FREE_CELLS: tuple[Position, ...] = tuple(
    (r, c) for r, row in enumerate(LAYOUT) for c, cell in enumerate(row) if cell == "0"
)
# Every free cell but the goal, in row-major order: the 25 evaluation starts.
START_POSITIONS: tuple[Position, ...] = tuple(p for p in FREE_CELLS if p != GOAL)

MOVES: tuple[str, ...] = ("move left\n", "move right\n", "move up\n", "move down\n")
MOVE_DELTAS: dict[str, Position] = {
    "move left\n": (0, -1),
    "move right\n": (0, 1),
    "move up\n": (-1, 0),
    "move down\n": (1, 0),
}

SUCCESS_TEXT = "Success\n"
FAILURE_TEXT = "Failure\n"
MOVE_REWARD = -1.0
GOAL_REWARD = 0.0
INVALID_ACTION_REWARD = -4.0
FAILURE_REWARD = -1.0

DEFAULT_MAX_STEPS = 100
DEFAULT_LAST_K: dict[str, int] = {"fo": 1, "po": 40}

# Wall relations in the order the original describes them (right, left, above, below).
_WALL_RELATIONS: tuple[tuple[str, Position], ...] = (
    ("to your right", (0, 1)),
    ("to your left", (0, -1)),
    ("above you", (-1, 0)),
    ("below you", (1, 0)),
)


def is_free(position: Position) -> bool:
    """Whether `position` is an open cell of the layout (cells outside the grid count as walls)."""
    r, c = position
    return 0 <= r < len(LAYOUT) and 0 <= c < len(LAYOUT[0]) and LAYOUT[r][c] == "0"


def apply_move(position: Position, move: str) -> Position:
    """The cell reached by `move` from `position`: unchanged when the move hits a wall."""
    dr, dc = MOVE_DELTAS[move]
    target = (position[0] + dr, position[1] + dc)
    return target if is_free(target) else position


def _spaced_digits(n: int) -> str:
    # The original writes each coordinate digit by digit ("1 0" for 10) so that GPT-2's BPE sees one token
    # per digit; kept verbatim because datasets and checkpoints depend on the exact strings.
    return " ".join(str(n))


def describe_walls(position: Position) -> str:
    """The wall sentence: none / one / several walls, relations in the order right, left, above, below."""
    walls = [name for name, (dr, dc) in _WALL_RELATIONS if not is_free((position[0] + dr, position[1] + dc))]
    if not walls:
        return "There are no walls near you."
    if len(walls) == 1:
        return f"There is a wall {walls[0]}."
    return f"There are walls {', '.join(walls)}."


def describe_fo(position: Position, goal: Position = GOAL) -> str:
    """FO observation (the original's `describe_observation_give_position`): goal, position and walls."""
    return (
        f"The goal is at position {_spaced_digits(goal[0])}, {_spaced_digits(goal[1])}. "
        f"Your current position is at position {_spaced_digits(position[0])}, {_spaced_digits(position[1])}. "
        f"{describe_walls(position)}\n"
    )


def describe_po(position: Position) -> str:
    """PO observation (the original's `describe_observation_only_walls`): the wall sentence alone."""
    return f"{describe_walls(position)}\n"


def shortest_distances(goal: Position = GOAL) -> dict[Position, int]:
    """BFS distance (in moves) from every free cell to `goal`."""
    distances = {goal: 0}
    queue = deque([goal])
    while queue:
        cell = queue.popleft()
        for move in MOVES:
            nxt = apply_move(cell, move)
            if nxt not in distances:
                distances[nxt] = distances[cell] + 1
                queue.append(nxt)
    return distances


_DISTANCES: dict[Position, int] = shortest_distances()


def optimal_moves(position: Position) -> tuple[str, ...]:
    """All moves (in `MOVES` order) that start a shortest path from `position` to the goal; () at the goal."""
    position = tuple(position)
    d = _DISTANCES[position]
    return tuple(m for m in MOVES if _DISTANCES[apply_move(position, m)] == d - 1) if d > 0 else ()


def optimal_return(position: Position) -> float:
    """The best achievable return from `position`: -1 per move except 0 for the move onto the goal."""
    return -float(_DISTANCES[tuple(position)] - 1)


class MazeEnv(TextEnv):
    """The double-T maze as a text environment.

    The goal is fixed at `GOAL` (8, 6). Attributes a scripted player may read: `position` (current cell),
    `start` (the episode's start cell), `trail` (every position since reset, the start first, then one entry
    per played step, wall bumps and invalid actions included) and `num_steps`.
    """

    def __init__(self, variant: Variant = "fo", max_steps: int = DEFAULT_MAX_STEPS, last_k: Optional[int] = None):
        """
        Args:
            variant: "fo" (observation shows goal and position) or "po" (walls only).
            max_steps: non-terminal steps after which the next step is the failure step.
            last_k: texts kept in the returned history; None takes the variant's default (FO 1, PO 40).
        """
        if variant not in DEFAULT_LAST_K:
            raise ValueError(f"maze variant must be one of {', '.join(DEFAULT_LAST_K)}, got {variant!r}")
        if max_steps < 0:
            raise ValueError(f"max_steps must be >= 0, got {max_steps}")
        self.variant: Variant = variant
        self.max_steps = max_steps
        self.last_k = DEFAULT_LAST_K[variant] if last_k is None else last_k
        if self.last_k < 1:
            raise ValueError(f"last_k must be >= 1, got {self.last_k}")
        self.start: Position = START_POSITIONS[0]
        self.position: Position = self.start
        self.trail: list[Position] = [self.start]
        self.num_steps = 0
        self.done = False

    def describe(self, position: Optional[Position] = None) -> str:
        """The variant's observation of `position` (default: the current one)."""
        position = self.position if position is None else position
        return describe_fo(position) if self.variant == "fo" else describe_po(position)

    def reset(self, seed: Optional[int] = None, options: Optional[dict[str, Any]] = None) -> TextHistory:
        """Start an episode at `options["init_position"]` (a `(row, col)` tuple or list), or, without it, at a
        start drawn from the 25 with `random.Random(seed)`."""
        init = (options or {}).get("init_position")
        if init is None:
            start = random.Random(seed).choice(START_POSITIONS)
        else:
            start = _as_position(init)
            if start not in START_POSITIONS:
                raise ValueError(
                    f"init_position {list(init)} is not a maze start; use a free cell other than the goal {list(GOAL)}"
                )
        self.start = self.position = start
        self.trail = [start]
        self.num_steps = 0
        self.done = False
        return (Text(self.describe(), False),)

    def step(self, history: TextHistory) -> tuple[TextHistory, float, bool]:
        if self.done:
            raise EpisodeOverError("the maze episode is over; call reset() first")
        if not history or not history[-1].is_action:
            raise ValueError("step() needs a history whose last text is the agent's action")
        action = history[-1].text
        if self.num_steps >= self.max_steps:
            # Step cap: the action is not played; the episode ends with a failure that costs one more move.
            self.done = True
            return self._window(history, FAILURE_TEXT), FAILURE_REWARD, True
        if action not in MOVE_DELTAS:
            # Invalid text (anything but the four exact moves): no movement, and the history restarts from
            # the new observation, as in the original environment.
            self.num_steps += 1
            self.trail.append(self.position)
            return (Text(self.describe(), False),), INVALID_ACTION_REWARD, False
        self.position = apply_move(self.position, action)
        self.trail.append(self.position)
        if self.position == GOAL:
            self.done = True
            return self._window(history, SUCCESS_TEXT), GOAL_REWARD, True
        self.num_steps += 1
        return self._window(history, self.describe()), MOVE_REWARD, False

    def success(self) -> bool:
        """Whether the current episode has reached the goal."""
        return self.position == GOAL

    @staticmethod
    def shortest_distances() -> dict[Position, int]:
        """BFS distance from every free cell to the goal."""
        return dict(_DISTANCES)

    @staticmethod
    def optimal_moves(position: Position) -> tuple[str, ...]:
        """All moves on a shortest path from `position` to the goal."""
        return optimal_moves(position)

    def _window(self, history: TextHistory, observation: str) -> TextHistory:
        extended = tuple(history) + (Text(observation, False),)
        return extended[-self.last_k :]


def _as_position(value: Sequence[int]) -> Position:
    """A `(row, col)` tuple from a tuple or list (JSON options arrive as lists)."""
    try:
        row, col = value
        return (int(row), int(col))
    except (TypeError, ValueError):
        raise ValueError(f"init_position must be a (row, col) pair, got {value!r}") from None
