"""The maze task: simulator strings and rules (spec §2.1), scripted players, dataset generator, registration."""
from __future__ import annotations

import json
import random
import statistics

import pytest

from lmrl_lightning.data.jsonl import read_episodes
from lmrl_lightning.env import PrivilegedPolicy, Text, TextEnv, TextHistory
from lmrl_lightning.errors import LMRLError
from lmrl_lightning.registry import EvalEpisode, get_task
from lmrl_lightning.evaluation import summarise
from lmrl_lightning.rollout import rollout
from lmrl_lightning.tasks.maze import env as maze_env
from lmrl_lightning.tasks.maze.datagen import dataset_stats, format_stats_table, generate_dataset, sample_horizon
from lmrl_lightning.tasks.maze.env import (
    FREE_CELLS,
    GOAL,
    MOVES,
    START_POSITIONS,
    MazeEnv,
    describe_walls,
    optimal_moves,
    optimal_return,
)
from lmrl_lightning.tasks.maze.policies import (
    GOAL_SUBMAZE,
    REGIONS,
    SUBMAZES,
    MixturePolicy,
    OptimalMazePolicy,
    RandomMazePolicy,
    SuboptimalMazeSolver,
    submaze_of,
)

LEFT, RIGHT, UP, DOWN = MOVES


def act(env: MazeEnv, history: TextHistory, action: str) -> tuple[TextHistory, float, bool]:
    return env.step(history + (Text(action, True),))


class Always(PrivilegedPolicy):
    """Plays the same text every turn."""

    def __init__(self, text: str):
        self.text = text

    def action(self, env: TextEnv, history: TextHistory, seed: int) -> str:
        return self.text


def starts(per_start: int = 1) -> list[EvalEpisode]:
    return get_task("maze").eval_episodes("fo", 25 * per_start)


# --- layout ----------------------------------------------------------------------------------------------


def test_layout_matches_spec():
    assert len(FREE_CELLS) == 26 and len(START_POSITIONS) == 25 and GOAL not in START_POSITIONS
    distances = MazeEnv.shortest_distances()
    assert sum(distances[p] for p in START_POSITIONS) / 25 == pytest.approx(7.84)
    assert max(distances.values()) == 12
    assert optimal_moves((5, 3)) == (RIGHT,)
    assert optimal_moves((1, 3)) == (DOWN,)
    assert optimal_moves(GOAL) == ()
    for p in START_POSITIONS:
        assert optimal_moves(p), p
        for m in optimal_moves(p):
            assert distances[maze_env.apply_move(p, m)] == distances[p] - 1


# --- observations ----------------------------------------------------------------------------------------


def test_fo_observation_spec_example():
    history = MazeEnv("fo").reset(options={"init_position": (5, 3)})
    assert history == (
        Text(
            "The goal is at position 8, 6. Your current position is at position 5, 3. "
            "There are walls to your left, below you.\n",
            False,
        ),
    )


def test_fo_two_digit_coordinates_are_spaced():
    (obs,) = MazeEnv("fo").reset(options={"init_position": [1, 11]})
    assert obs.text == (
        "The goal is at position 8, 6. Your current position is at position 1, 1 1. "
        "There are walls to your right, above you, below you.\n"
    )


@pytest.mark.parametrize(
    "position, text",
    [
        ((5, 6), "There is a wall above you.\n"),
        ((1, 3), "There is a wall above you.\n"),
        ((2, 3), "There are walls to your right, to your left.\n"),
        ((5, 3), "There are walls to your left, below you.\n"),
        ((1, 1), "There are walls to your left, above you, below you.\n"),
        ((7, 6), "There are walls to your right, to your left.\n"),
    ],
)
def test_po_observation(position, text):
    assert MazeEnv("po").reset(options={"init_position": position}) == (Text(text, False),)


def test_no_walls_phrase(monkeypatch):
    # The double T has no open crossroads, so the zero-wall sentence is checked on a small open grid.
    monkeypatch.setattr(maze_env, "LAYOUT", ("111", "101", "000", "101", "111"))
    assert describe_walls((2, 1)) == "There are no walls near you."
    assert describe_walls((1, 1)) == "There are walls to your right, to your left, above you."


# --- rules -----------------------------------------------------------------------------------------------


def test_wall_bump_costs_a_move_and_stays():
    env = MazeEnv("fo")
    first = env.reset(options={"init_position": (5, 3)})
    history, reward, done = act(env, first, LEFT)
    assert (env.position, reward, done) == ((5, 3), -1.0, False)
    assert history == first


def test_move_changes_position():
    env = MazeEnv("fo")
    history = env.reset(options={"init_position": (5, 3)})
    history, reward, done = act(env, history, RIGHT)
    assert (env.position, reward, done) == ((5, 4), -1.0, False)
    assert "position 5, 4." in history[-1].text


@pytest.mark.parametrize("action", ["fly\n", "", "\n", "move left", "Move left\n", "move left\nmove up\n"])
def test_invalid_action(action):
    env = MazeEnv("po")
    history = env.reset(options={"init_position": (5, 4)})
    history, _, _ = act(env, history, RIGHT)
    history, reward, done = act(env, history, action)
    assert (reward, done, env.position) == (-4.0, False, (5, 5))
    # The history restarts from the new observation alone (spec §2.1 ⚠).
    assert history == (Text(maze_env.describe_po((5, 5)), False),)


def test_reaching_the_goal():
    env = MazeEnv("po")
    history = env.reset(options={"init_position": (7, 6)})
    assert not env.success()
    history, reward, done = act(env, history, DOWN)
    assert (reward, done, env.success(), env.position) == (0.0, True, True, GOAL)
    assert history[-1] == Text("Success\n", False)
    assert history[-2] == Text(DOWN, True)  # PO keeps its window on the terminal step too
    with pytest.raises(RuntimeError):
        act(env, history, UP)


@pytest.mark.parametrize("text, step_reward", [(LEFT, -1.0), ("fly\n", -4.0)])
def test_step_cap_failure(text, step_reward):
    (episode,) = rollout(MazeEnv("fo"), Always(text), [EvalEpisode(0, 0, {"init_position": [5, 3]})])
    assert episode.done and not episode.success
    assert episode.num_actions == 101
    assert episode.turns[-1].text == "Failure\n"
    assert episode.turns[-2].reward == -1.0  # the failure step costs one move whatever the action
    assert episode.total_reward == 100 * step_reward - 1.0


def test_minimum_return_is_minus_101():
    episodes = rollout(MazeEnv("fo"), Always(LEFT), starts())
    assert min(e.total_reward for e in episodes) == -101.0


def test_reset_start_and_options():
    env = MazeEnv("fo")
    drawn = set()
    for s in range(200):
        env.reset(seed=s)
        drawn.add(env.position)
    assert drawn == set(START_POSITIONS)
    env.reset(seed=7)
    first = env.position
    env.reset(seed=7)
    assert env.position == first
    for bad in [GOAL, (0, 0), (5, 3, 1)]:
        with pytest.raises(ValueError):
            env.reset(options={"init_position": bad})


@pytest.mark.parametrize("variant, window", [("fo", 1), ("po", 40)])
def test_history_window(variant, window):
    (episode,) = rollout(MazeEnv(variant), Always(LEFT), [EvalEpisode(0, 0, {"init_position": [5, 3]})])
    env = MazeEnv(variant)
    history = env.reset(options={"init_position": (5, 3)})
    lengths = []
    for _ in range(60):
        history, _, _ = act(env, history, LEFT)
        lengths.append(len(history))
    assert max(lengths) == window
    assert lengths[-1] == window
    # The env's view is always the last `window` texts of the recorded episode.
    texts = tuple(Text(t.text, t.is_action) for t in episode.turns[: 1 + 2 * 60])
    assert history == texts[-window:]


def test_invalid_arguments():
    with pytest.raises(ValueError):
        MazeEnv("xo")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        MazeEnv("fo", last_k=0)


# --- scripted players ------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["fo", "po"])
def test_optimal_policy_scores_the_normalisation_maximum(variant):
    episodes = rollout(MazeEnv(variant), OptimalMazePolicy(), starts(2), batch_size=16)
    for e in episodes:
        assert e.success and e.total_reward == optimal_return(e.meta["options"]["init_position"])
    mean = summarise(episodes).mean_return
    assert abs(round(mean, 2) - (-6.84)) < 1e-9
    if variant == "fo":
        assert get_task("maze").normalisation["fo"](mean) == pytest.approx(100.0, abs=0.01)


def test_solver_reaches_the_goal_but_not_by_shortest_paths():
    episodes = rollout(MazeEnv("fo"), SuboptimalMazeSolver(), starts(4), batch_size=32)
    assert all(e.success and e.num_actions <= 50 for e in episodes)
    gaps = [optimal_return(e.meta["options"]["init_position"]) - e.total_reward for e in episodes]
    assert min(gaps) >= 0 and statistics.mean(gaps) > 3


def test_players_are_deterministic_and_seeded():
    for policy in [MixturePolicy(confine=True), SuboptimalMazeSolver(), RandomMazePolicy(), OptimalMazePolicy()]:
        a = rollout(MazeEnv("fo"), policy, starts(2), batch_size=7, policy_seed=3)
        b = rollout(MazeEnv("fo"), policy, starts(2), batch_size=50, policy_seed=3)
        assert [e.turns for e in a] == [e.turns for e in b]
    seed3 = rollout(MazeEnv("fo"), MixturePolicy(), starts(2), policy_seed=3)
    seed4 = rollout(MazeEnv("fo"), MixturePolicy(), starts(2), policy_seed=4)
    assert [e.turns for e in seed3] != [e.turns for e in seed4]


def test_submaze_partition():
    cells = [c for cells in SUBMAZES.values() for c in cells]
    assert sorted(cells) == sorted(FREE_CELLS)  # disjoint and covering
    assert {name: len(cells) for name, cells in SUBMAZES.items()} == {"left": 9, "right": 9, "centre": 8}
    assert submaze_of(GOAL) == GOAL_SUBMAZE
    assert {(r, 12 - c) for r, c in SUBMAZES["left"]} == SUBMAZES["right"]  # mirror images


def test_regions_overlap_only_at_the_junctions():
    """Each confined region is its T plus the neighbouring T's first cell, so the data crosses every junction."""
    assert REGIONS["left"] & REGIONS["centre"] == {(5, 3), (5, 4)}
    assert REGIONS["right"] & REGIONS["centre"] == {(5, 8), (5, 9)}
    assert not REGIONS["left"] & REGIONS["right"]
    assert all(SUBMAZES[name] <= region for name, region in REGIONS.items())


@pytest.mark.parametrize("policy", [MixturePolicy(confine=True), RandomMazePolicy(True), SuboptimalMazeSolver(True)])
def test_confined_players_stay_in_their_submaze(policy):
    env = MazeEnv("fo", max_steps=60)
    episodes = rollout(env, policy, starts(3), batch_size=25)
    for e in episodes:
        region = REGIONS[submaze_of(e.meta["options"]["init_position"])]
        positions = _positions(e.turns)
        assert set(positions) <= region
        assert e.success == (GOAL in positions)
        if submaze_of(positions[0]) != GOAL_SUBMAZE:
            assert not e.success
    solver_in_centre = [e for e in episodes if submaze_of(e.meta["options"]["init_position"]) == GOAL_SUBMAZE]
    if isinstance(policy, SuboptimalMazeSolver):
        assert all(e.success for e in solver_in_centre)


def test_confined_random_player_still_bumps_walls():
    # A centre-T episode that stepped into the left T's corner (5, 3): right leads back, left and down are wall
    # bumps (allowed: ordinary wasted moves), up leads further into the left T (refused).
    env = MazeEnv("fo")
    history = env.reset(options={"init_position": (5, 4)})
    env.step(history + (Text(LEFT, True),))
    assert env.position == (5, 3)
    assert RandomMazePolicy(confine=True).allowed_moves(env) == (LEFT, RIGHT, DOWN)
    assert RandomMazePolicy().allowed_moves(env) == MOVES


def test_mixture_probability_extremes():
    with pytest.raises(ValueError):
        MixturePolicy(solver_prob=1.5)
    solver_only = rollout(MazeEnv("fo"), MixturePolicy(solver_prob=1.0), starts())
    assert all(e.success and e.num_actions <= 50 for e in solver_only)
    env = MazeEnv("fo")
    env.reset(options={"init_position": (1, 1)})
    moves = {MixturePolicy(solver_prob=0.0).action(env, (), seed) for seed in range(100)}
    assert moves == set(MOVES)  # pure random play uses all four moves, wall bumps included


def _positions(turns) -> list[tuple[int, int]]:
    """Positions read back from FO observations (the start first), `GOAL` for "Success"."""
    out = []
    for t in turns:
        if t.is_action:
            continue
        if t.text == "Success\n":
            out.append(GOAL)
        elif "current position" in t.text:
            coords = t.text.split("current position is at position ")[1].split(".")[0]
            row, col = (int(x.replace(" ", "")) for x in coords.split(","))
            out.append((row, col))
    return out


# --- dataset generator -----------------------------------------------------------------------------------


def test_generator_small_run(tmp_path):
    stats = generate_dataset(tmp_path / "fo", variant="fo", n_episodes=200, seed=1, progress=False)
    episodes = read_episodes(tmp_path / "fo" / "train.jsonl")
    assert len(episodes) == 200
    assert json.loads((tmp_path / "fo" / "stats.json").read_text())["n_episodes"] == {"ours": 200, "paper": 1240}
    assert {e.meta["submaze"] for e in episodes} == set(SUBMAZES)
    for e in episodes:
        start = tuple(e.meta["start"])
        assert e.meta["submaze"] == submaze_of(start)
        positions = _positions(e.turns)
        assert positions[0] == start and set(positions) <= REGIONS[e.meta["submaze"]]
        if e.success:
            assert e.meta["submaze"] == GOAL_SUBMAZE and e.done and e.turns[-1].text == "Success\n"
        if not e.done:
            assert e.num_actions == e.meta["horizon"] and not e.success
        else:
            assert e.turns[-1].text in ("Success\n", "Failure\n")
        assert all(t.text in MOVES for t in e.turns if t.is_action)
    assert any(e.success for e in episodes)
    assert stats == {**dataset_stats(episodes), "config": stats["config"]}
    assert stats["success_rate"]["ours"] == pytest.approx(sum(e.success for e in episodes) / 200)
    assert stats["mean_return"]["paper"] == -19.7
    assert stats["per_submaze"]["left"]["success_rate"] == 0.0
    table = format_stats_table(stats)
    assert "paper" in table and "19.70" in table


def test_generator_fo_and_po_share_interactions(tmp_path):
    generate_dataset(tmp_path / "fo", "fo", n_episodes=30, seed=5, progress=False)
    generate_dataset(tmp_path / "po", "po", n_episodes=30, seed=5, progress=False)
    generate_dataset(tmp_path / "fo2", "fo", n_episodes=30, seed=5, progress=False)
    fo, po = read_episodes(tmp_path / "fo" / "train.jsonl"), read_episodes(tmp_path / "po" / "train.jsonl")
    def actions(e):
        return [(t.text, t.reward) for t in e.turns if t.is_action]

    for a, b in zip(fo, po):
        assert actions(a) == actions(b)
        assert a.done == b.done and a.success == b.success
        assert not any("position" in t.text for t in b.turns)
    assert (tmp_path / "fo" / "train.jsonl").read_bytes() == (tmp_path / "fo2" / "train.jsonl").read_bytes()


def test_fixed_horizon(tmp_path):
    generate_dataset(tmp_path, n_episodes=30, max_episode_steps=5, progress=False)
    assert all(e.num_actions <= 5 for e in read_episodes(tmp_path / "train.jsonl"))
    with pytest.raises(ValueError):
        generate_dataset(tmp_path, n_episodes=3, max_episode_steps=(0, 10), progress=False)


def test_sample_horizon_range():
    rng = random.Random(0)
    draws = [sample_horizon(rng, (1, 101)) for _ in range(5000)]
    assert min(draws) == 1 and max(draws) <= 101
    assert sample_horizon(rng, 7) == 7


# --- registration ----------------------------------------------------------------------------------------


def test_task_registration():
    task = get_task("maze")
    assert task.variants == ("fo", "po")
    assert task.candidate_actions == MOVES
    assert task.history_window == {"fo": 1, "po": 40}
    assert task.default_eval_episodes == 800  # 25 starts x 32
    assert {v: (n.minimum, n.dataset_average, n.maximum) for v, n in task.normalisation.items()} == {
        "fo": (-101.0, -83.0, -6.84),
        "po": (-101.0, -83.0, -25.75),
    }
    episodes = task.eval_episodes("po", 800)
    assert len(episodes) == 800 and [e.index for e in episodes] == list(range(800))
    # start-major, 32 from each start: the indices, seeds and starts of the paper's 25 x 32 protocol
    assert [tuple(e.options["init_position"]) for e in episodes[::32]] == list(START_POSITIONS)
    assert all(e.seed == e.index for e in episodes)
    for wrong in (0, 30, 801):
        with pytest.raises(LMRLError, match="multiple of its 25 start positions"):
            task.eval_episodes("po", wrong)
    assert sorted({tuple(e.options["init_position"]) for e in episodes}) == sorted(START_POSITIONS)
    assert isinstance(task.make_env("po"), MazeEnv) and task.make_env("po").variant == "po"
    with pytest.raises(ValueError):
        task.make_env("xo")
