"""Scripted maze players (spec §2.1, paper C.1): BFS-optimal, a depth-first solver, random, and their mixture.

They are `PrivilegedPolicy`s: they read the simulator's state (`env.position`, `env.start`, `env.trail`)
rather than the text. All randomness comes from the `seed` the rollout engine passes for each (episode,
turn), so a player is deterministic and keeps no state of its own between calls: everything it needs about
the episode so far is in the env, which makes one player object safe to share across episodes and batches.

Submazes (paper C.1: "maze split into 3 symmetric submazes, each trajectory confined to one submaze").
The double T is three T shapes, each a five-cell bar with a stem hanging from its middle
(L: left T, R: right T, C: centre T, G: the goal, which belongs to the centre T):

    col    0123456789012
    row 0  #############       left T   bar (1,1)-(1,5),  stem (2,3)-(5,3)   9 cells
    row 1  #LLLLL#RRRRR#       right T  bar (1,7)-(1,11), stem (2,9)-(5,9)   9 cells
    row 2  ###L#####R###       centre T bar (5,4)-(5,8),  stem (6,6)-(8,6)   8 cells
    row 3  ###L#####R###
    row 4  ###L#####R###
    row 5  ###LCCCCCR###
    row 6  ######C######
    row 7  ######C######
    row 8  ######G######
    row 9  #############

Left and right are mirror images and all three are congruent up to stem length (4, 4, 3), the most
symmetric three-way split of this layout: the corners (5,3) and (5,9) end the upper T's stems. Starts:
9 left, 9 right, 7 centre.

A confined player may visit its T and the first cell of each neighbouring T across a junction
(`REGIONS`: left adds (5,4), right adds (5,8), centre adds (5,3) and (5,9)), never further; moves into walls
stay allowed (ordinary, if wasted, moves). So only episodes that start in the centre T can reach the goal,
yet every junction is crossed in the data: an offline learner can stitch a left-T episode that reaches (5,4)
to centre-T episodes that go on from there to the goal (the paper's point: "no start-to-goal path in the data").
With disjoint regions no transition would ever cross a junction and 18 of the 25 evaluation starts could not be
solved from the data at all.
"""
from __future__ import annotations

import random
from collections import deque
from typing import Iterable, Optional

from lmrl_lightning.env import PrivilegedPolicy, TextEnv, TextHistory
from lmrl_lightning.tasks.maze.env import FREE_CELLS, MOVES, MazeEnv, Position, apply_move, optimal_moves

SUBMAZES: dict[str, frozenset[Position]] = {
    "left": frozenset([(1, c) for c in range(1, 6)] + [(r, 3) for r in range(2, 6)]),
    "right": frozenset([(1, c) for c in range(7, 12)] + [(r, 9) for r in range(2, 6)]),
    "centre": frozenset([(5, c) for c in range(4, 9)] + [(r, 6) for r in range(6, 9)]),
}
GOAL_SUBMAZE = "centre"
# Cells a confined episode may visit: its submaze plus the neighbouring submazes' junction cells.
REGIONS: dict[str, frozenset[Position]] = {
    "left": SUBMAZES["left"] | {(5, 4)},
    "right": SUBMAZES["right"] | {(5, 8)},
    "centre": SUBMAZES["centre"] | {(5, 3), (5, 9)},
}


def submaze_of(position: Position) -> str:
    """The name of the submaze holding `position`."""
    position = tuple(position)
    for name, cells in SUBMAZES.items():
        if position in cells:
            return name
    raise ValueError(f"{list(position)} is not a free maze cell")


def _as_maze(env: TextEnv) -> MazeEnv:
    if not isinstance(env, MazeEnv):
        raise TypeError(f"maze players read the maze state and need a MazeEnv, got {type(env).__name__}")
    return env


class _MazePlayer(PrivilegedPolicy):
    """Shared confinement logic: with `confine`, the episode is kept inside the submaze of its start."""

    def __init__(self, confine: bool = False):
        self.confine = confine

    def region(self, env: MazeEnv) -> frozenset[Position]:
        """The cells this episode may visit."""
        return REGIONS[submaze_of(env.start)] if self.confine else frozenset(FREE_CELLS)

    def allowed_moves(self, env: MazeEnv) -> tuple[str, ...]:
        """Moves (in `MOVES` order) that keep the player in its region; a wall bump stays in place, so it counts."""
        region = self.region(env)
        return tuple(m for m in MOVES if apply_move(env.position, m) in region)


class OptimalMazePolicy(_MazePlayer):
    """Follows a BFS shortest path to the goal; when several moves are optimal the seed picks one."""

    def __init__(self) -> None:
        # Never confined: from outside the goal's submaze a confined shortest path does not exist.
        super().__init__(confine=False)

    def action(self, env: TextEnv, history: TextHistory, seed: int) -> str:
        return random.Random(seed).choice(optimal_moves(_as_maze(env).position))


class RandomMazePolicy(_MazePlayer):
    """A uniformly random move among the four (among the allowed ones when confined)."""

    def action(self, env: TextEnv, history: TextHistory, seed: int) -> str:
        return random.Random(seed).choice(self.allowed_moves(_as_maze(env)))


class SuboptimalMazeSolver(_MazePlayer):
    """A depth-first explorer that knows the layout but not where the goal is.

    It steps into a neighbouring open cell it has not visited yet when there is one (the seed picks among
    several); otherwise it backtracks, one move at a time, along the shortest route through visited cells to
    the nearest visited cell that still has an unvisited neighbour. The maze is a tree, so on its own this is
    exactly depth-first search with backtracking out of dead ends: it always reaches the goal (within 50
    moves: each of the 25 corridors between cells is walked at most twice) but seldom by a shortest path.
    The visited set is read from `env.trail`, so the explorer needs no memory of its own and stays
    consistent when other players' moves are interleaved (the mixture's random moves count as visits).
    When the whole region is explored without finding the goal (a confined episode outside the goal's
    submaze) it moves at random among the allowed moves.
    """

    def action(self, env: TextEnv, history: TextHistory, seed: int) -> str:
        maze = _as_maze(env)
        rng = random.Random(seed)
        region = self.region(maze)
        visited = frozenset(maze.trail) & region
        targets = {m: _step_to(maze.position, m, region) for m in MOVES}
        fresh = [m for m, t in targets.items() if t is not None and t not in visited]
        if fresh:
            return rng.choice(fresh)
        frontier = [c for c in visited if any(n not in visited for n in _neighbours(c, region))]
        if not frontier:
            return rng.choice(self.allowed_moves(maze))
        # Distance from every visited cell to its nearest frontier cell; a backtracking move lowers it by one.
        distance = _bfs(frontier, passable=visited)
        here = distance[maze.position]
        return rng.choice([m for m, t in targets.items() if t is not None and distance.get(t) == here - 1])


class MixturePolicy(_MazePlayer):
    """Paper C.1's data-collection player: each move comes from the depth-first solver with probability
    `solver_prob` (0.15 in the paper) and is uniformly random otherwise; both obey the same confinement."""

    def __init__(self, solver_prob: float = 0.15, confine: bool = False):
        if not 0.0 <= solver_prob <= 1.0:
            raise ValueError(f"solver_prob must be in [0, 1], got {solver_prob}")
        super().__init__(confine)
        self.solver_prob = solver_prob
        self.solver = SuboptimalMazeSolver(confine)
        self.random = RandomMazePolicy(confine)

    def action(self, env: TextEnv, history: TextHistory, seed: int) -> str:
        rng = random.Random(seed)
        player = self.solver if rng.random() < self.solver_prob else self.random
        # The chosen player gets a seed of its own so its draw is independent of the coin flip.
        return player.action(env, history, rng.getrandbits(31))


def _step_to(position: Position, move: str, region: frozenset[Position]) -> Optional[Position]:
    """The cell a move leads to when it is a real move inside `region`; None for wall bumps and exits."""
    target = apply_move(position, move)
    return target if target != position and target in region else None


def _neighbours(cell: Position, region: frozenset[Position]) -> Iterable[Position]:
    return (t for m in MOVES if (t := _step_to(cell, m, region)) is not None)


def _bfs(sources: Iterable[Position], passable: frozenset[Position]) -> dict[Position, int]:
    """Multi-source BFS distances over `passable` cells (sources included)."""
    distance = {s: 0 for s in sources}
    queue = deque(distance)
    while queue:
        cell = queue.popleft()
        for n in _neighbours(cell, passable):
            if n not in distance:
                distance[n] = distance[cell] + 1
                queue.append(n)
    return distance


__all__ = [
    "GOAL_SUBMAZE",
    "REGIONS",
    "SUBMAZES",
    "MixturePolicy",
    "OptimalMazePolicy",
    "RandomMazePolicy",
    "SuboptimalMazeSolver",
    "submaze_of",
]
