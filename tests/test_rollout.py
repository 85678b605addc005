"""Rollouts and evaluation (spec §1.5, §2.9): results that do not depend on the batch size or the DDP sharding,
one batched policy call per turn, and the evaluation summary and normalised score against hand computation."""
from __future__ import annotations

import dataclasses
import math
import random

import pytest
import torch

from lmrl_lightning.algorithms import BC
from lmrl_lightning.env import BatchedTextPolicy, Episode, Text, Turn
from lmrl_lightning.models.backbone import BackboneConfig
from lmrl_lightning.models.tokenizer import save_tokenizer, train_bpe_tokenizer
from lmrl_lightning.policies import Decoding
from lmrl_lightning.registry import EvalEpisode, get_task
from lmrl_lightning.evaluation import EvaluationProtocol, evaluate_task, summarise
from lmrl_lightning.rollout import format_transcript, rollout
from lmrl_lightning.scoring import Normalisation
from lmrl_lightning.tasks.maze import MOVES, START_POSITIONS, MazeEnv, MixturePolicy, OptimalMazePolicy
from lmrl_lightning.tasks.maze.env import describe_fo

MAZE = get_task("maze")
FO = MAZE.normalisation["fo"]


class SeededMoves(BatchedTextPolicy):
    """A batched policy playing a random move per row, drawn from that row's seed alone."""

    def act(self, histories, done=None, seeds=None):
        return [h + (Text(random.Random(s).choice(MOVES), True),) for h, s in zip(histories, seeds)]


class CountingPolicy(BatchedTextPolicy):
    """Passes every call on to `policy` and records how many histories each call got."""

    def __init__(self, policy: BatchedTextPolicy):
        self.policy = policy
        self.batch_sizes: list[int] = []

    def act(self, histories, done=None, seeds=None):
        self.batch_sizes.append(len(histories))
        return self.policy.act(histories, done, seeds)


def maze_episode(rewards: list[float], success: bool, done: bool = True) -> Episode:
    """An FO maze record with one `move up` per reward, each followed by an observation."""
    turns = [Turn(describe_fo(START_POSITIONS[0]), False)]
    for r in rewards:
        turns += [Turn("move up\n", True, r), Turn(describe_fo(START_POSITIONS[0]), False)]
    return Episode(turns, done, {"success": success})


# --- batching -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mixture_reference():
    """The maze protocol with 2 episodes per start (50), played one episode at a time by a stochastic player."""
    episodes = MAZE.eval_episodes("fo", 50)
    return episodes, rollout(MazeEnv("fo"), MixturePolicy(solver_prob=0.5), episodes, batch_size=1, policy_seed=3)


@pytest.mark.parametrize("batch_size", [3, 64])
def test_scripted_rollout_does_not_depend_on_batch_size(mixture_reference, batch_size):
    """Batches of 3 and 64 play the same episodes as batches of 1, returned in protocol order."""
    episodes, reference = mixture_reference
    assert [e.meta["index"] for e in reference] == [s.index for s in episodes]
    # short and long episodes, successes and capped failures: slots are refilled at different times
    assert len({e.num_actions for e in reference}) > 10 and len({e.success for e in reference}) == 2
    played = rollout(MazeEnv("fo"), MixturePolicy(solver_prob=0.5), episodes, batch_size=batch_size, policy_seed=3)
    assert played == reference
    other_seed = rollout(MazeEnv("fo"), MixturePolicy(solver_prob=0.5), episodes, batch_size=batch_size, policy_seed=4)
    assert [e.total_reward for e in other_seed] != [e.total_reward for e in reference]


@pytest.fixture(scope="module")
def random_lm(tmp_path_factory):
    """An untrained tiny GPT-2 with a tokenizer trained on the FO maze texts: it samples long random turns."""
    texts = [describe_fo(p) for p in START_POSITIONS] + list(MOVES)
    tok_dir = save_tokenizer(train_bpe_tokenizer(texts, 300), tmp_path_factory.mktemp("rollout") / "tok")
    torch.manual_seed(0)
    return BC(BackboneConfig("tiny", tokenizer=str(tok_dir), max_positions=128))


def test_lm_rollout_does_not_depend_on_batch_size(random_lm):
    """Sampled turns of a tiny LM policy: 6 episodes (two per start) of 4 turns each, in batches of 1, 3 and 64."""
    policy = random_lm.policy(Decoding("sample", temperature=1.0, max_new_tokens=6))
    episodes = [EvalEpisode(i, i, {"init_position": list(START_POSITIONS[i % 3])}) for i in range(6)]
    env = MazeEnv("fo", max_steps=3)
    reference = rollout(env, policy, episodes, batch_size=1, policy_seed=1)
    assert [e.num_actions for e in reference] == [4] * 6
    # episodes from the same start are played with seeds of their own
    assert [e.turns for e in reference[:3]] != [e.turns for e in reference[3:]]
    for batch_size in (3, 64):
        assert rollout(env, policy, episodes, batch_size=batch_size, policy_seed=1) == reference


def test_one_batched_policy_call_per_turn():
    """With a slot for every episode, turn t is one call holding every episode still running at turn t."""
    policy = CountingPolicy(SeededMoves())
    played = rollout(MazeEnv("fo", max_steps=30), policy, MAZE.eval_episodes("fo", 25), batch_size=64)
    lengths = [e.num_actions for e in played]
    assert len(set(lengths)) > 3
    assert len(policy.batch_sizes) == max(lengths)
    assert policy.batch_sizes == [sum(n > t for n in lengths) for t in range(max(lengths))]


class BatchSteppedMaze(MazeEnv):
    """The maze with its envs stepped together, each batched step's size recorded (shared by every copy)."""

    step_batches: list[int] = []

    @classmethod
    def step_many(cls, envs, histories):
        cls.step_batches.append(len(envs))
        return super().step_many(envs, histories)


def test_envs_are_stepped_together_once_per_turn():
    """`TextEnv.step_many` gets every live episode of a turn in one call (an LM oracle answers them in one batch),
    and the episodes are those of stepping each env on its own."""
    BatchSteppedMaze.step_batches = []
    policy = CountingPolicy(SeededMoves())
    played = rollout(BatchSteppedMaze("fo", max_steps=30), policy, MAZE.eval_episodes("fo", 25), batch_size=8)
    assert BatchSteppedMaze.step_batches == policy.batch_sizes and max(policy.batch_sizes) == 8
    assert played == rollout(MazeEnv("fo", max_steps=30), SeededMoves(), MAZE.eval_episodes("fo", 25), batch_size=8)


def test_finished_slots_are_refilled():
    """With 4 slots for 25 episodes every call holds 4 histories until the last episodes run out, and every
    action is played in exactly one call."""
    policy = CountingPolicy(SeededMoves())
    played = rollout(MazeEnv("fo", max_steps=30), policy, MAZE.eval_episodes("fo", 25), batch_size=4)
    lengths = [e.num_actions for e in played]
    assert sum(policy.batch_sizes) == sum(lengths)
    assert policy.batch_sizes == sorted(policy.batch_sizes, reverse=True) and policy.batch_sizes[0] == 4
    assert sum(size < 4 for size in policy.batch_sizes) < max(lengths)
    assert played == rollout(MazeEnv("fo", max_steps=30), SeededMoves(), MAZE.eval_episodes("fo", 25), batch_size=25)


def test_max_turns_truncates_episodes():
    """Episodes still running after `max_turns` actions end there, not done and not successful."""
    played = rollout(MazeEnv("fo"), OptimalMazePolicy(), MAZE.eval_episodes("fo", 25), max_turns=3)
    for e in played:
        if e.done:
            assert e.success and e.num_actions <= 3
        else:
            assert not e.success and e.num_actions == 3 and e.total_reward == -3.0
    # the starts (7, 6), (6, 6) and (5, 6) are within three moves of the goal
    assert sum(e.done for e in played) == 3


# --- summary and normalisation ----------------------------------------------------------------------------


def test_normalisation_maps_min_average_and_max_to_0_50_100():
    assert [FO(r) for r in (-101.0, -83.0, -6.84)] == pytest.approx([0.0, 50.0, 100.0])
    assert FO(-92.0) == pytest.approx(25.0)  # halfway between the minimum and the dataset average
    assert FO(-44.92) == pytest.approx(75.0)  # halfway between the dataset average and the expert
    assert FO(0.0) == pytest.approx(50 + 50 * 83 / 76.16)  # above the expert: over 100
    assert Normalisation(0.0, 0.26, 1.0)(0.13) == pytest.approx(25.0)


def test_summary_matches_hand_computation():
    """Population std of the returns, mean number of agent turns, and the FO maze normalisation of the mean."""
    episodes = [
        maze_episode([-1, -1, 0], success=True),
        maze_episode([-4, -1], success=False),
        maze_episode([0], success=True),
        maze_episode([-1, -1, -1, -1], success=False, done=False),
    ]
    # returns -2, -5, 0, -4: mean -2.75, squared deviations 0.5625 + 5.0625 + 7.5625 + 1.5625 = 14.75
    summary = summarise(episodes, FO)
    expected = {
        "eval/n_episodes": 4.0,
        "eval/mean_return": -2.75,
        "eval/std_return": math.sqrt(14.75 / 4),
        "eval/min_return": -5.0,
        "eval/max_return": 0.0,
        "eval/mean_length": 2.5,
        "eval/success_rate": 0.5,
        "eval/normalised_score": 50 + 50 * (-2.75 + 83) / (-6.84 + 83),
    }
    assert summary.as_metrics("eval/") == pytest.approx(expected)


def test_summary_leaves_out_what_it_cannot_compute():
    """No success rate unless every episode reports success; no normalised score without normalisation."""
    unknown = Episode([Turn("obs\n", False), Turn("act\n", True, 1.0)], True, {})
    summary = summarise([maze_episode([-1], success=True), unknown])
    assert summary.success_rate is None and summary.normalised_score is None
    assert set(summary.as_metrics()) == {
        "n_episodes", "mean_return", "std_return", "min_return", "max_return", "mean_length"
    }
    with pytest.raises(ValueError):
        summarise([])


def test_bfs_optimal_policy_scores_the_spec_maximum():
    """Spec §2.1/§2.9: on the FO protocol (32 episodes x 25 starts) the BFS optimum averages -6.84, the
    normalisation maximum, so it scores 100; every episode succeeds, the farthest start is 12 moves away."""
    played = evaluate_task(OptimalMazePolicy(), EvaluationProtocol("maze", "fo"))
    summary = summarise(played, FO)
    assert summary.n_episodes == 800
    assert summary.mean_return == pytest.approx(-6.84, abs=1e-9)
    assert summary.normalised_score == pytest.approx(100.0, abs=1e-9)
    assert summary.success_rate == 1.0
    assert (summary.min_return, summary.max_return) == (-11.0, 0.0)
    assert summary.mean_length == pytest.approx(7.84)


def test_format_transcript():
    episode = Episode(
        [Turn("You are here.\n", False), Turn("move up\n", True, -1.0), Turn("Success\n", False)], True
    )
    assert format_transcript(episode) == "You are here.\n> move up    [reward -1]\nSuccess"


# --- sharding ---------------------------------------------------------------------------------------------


def test_sharded_evaluation_splits_the_protocol_without_changing_episodes():
    """Ranks 0 and 1 of 2 play disjoint halves whose union is the single-process evaluation, episode for episode."""
    policy = MixturePolicy(solver_prob=0.5)
    protocol = EvaluationProtocol("maze", "fo", episodes=50, batch_size=64, policy_seed=5)
    whole = evaluate_task(policy, protocol)
    shards = [
        evaluate_task(policy, dataclasses.replace(protocol, batch_size=b), rank=r, world_size=2)
        for r, b in ((0, 7), (1, 64))
    ]
    indices = [{e.meta["index"] for e in shard} for shard in shards]
    assert len(shards[0]) == len(shards[1]) == 25
    assert not indices[0] & indices[1]
    assert indices[0] | indices[1] == {e.meta["index"] for e in whole} == set(range(50))
    by_index = {e.meta["index"]: e for e in whole}
    for shard in shards:
        for e in shard:
            assert e == by_index[e.meta["index"]]
    assert len({e.total_reward for e in whole}) > 10


class ClosingMaze(MazeEnv):
    """The maze counting the copies closed (shared by every copy)."""

    closed: list[int] = []

    def close(self):
        ClosingMaze.closed.append(id(self))


class FailingPolicy(BatchedTextPolicy):
    def act(self, histories, done=None, seeds=None):
        raise KeyboardInterrupt


def test_rollout_closes_its_env_copies_even_when_interrupted():
    """Each env copy's resources (a game interpreter) go back when the rollout ends, and also when it is
    interrupted; the env passed in stays the caller's."""
    ClosingMaze.closed = []
    rollout(ClosingMaze("fo", max_steps=5), SeededMoves(), MAZE.eval_episodes("fo", 25), batch_size=4)
    assert len(set(ClosingMaze.closed)) == 4
    ClosingMaze.closed = []
    with pytest.raises(KeyboardInterrupt):
        rollout(ClosingMaze("fo", max_steps=5), FailingPolicy(), MAZE.eval_episodes("fo", 25), batch_size=3)
    assert len(set(ClosingMaze.closed)) == 3
