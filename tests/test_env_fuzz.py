"""Every registered task's env against the `TextEnv` contract (issue 12): seeded fuzzed actions (random unicode,
empty, 1M characters, control characters, surrogates, valid actions with/without the newline, steps after done)
raise nothing but the documented `EpisodeOverError`/ValueError and earn only the task's documented rewards.
A few seconds per task; benchmarks/env_fuzz.py runs >= 10k actions per task."""
from __future__ import annotations

import pytest

from lmrl_lightning.env import EpisodeOverError, Text
from lmrl_lightning.registry import get_task

from env_fuzzing import PREPARE, REWARDS, fuzz_env, targets

TARGETS = targets()


@pytest.mark.parametrize("task,variant,label,kwargs", TARGETS, ids=[f"{t[0]}-{t[2]}" for t in TARGETS])
def test_fuzzed_actions_keep_the_env_contract(task, variant, label, kwargs):
    PREPARE.get(task, lambda: None)()
    result = fuzz_env(task, variant, n_actions=1500, seed=12, env_kwargs=kwargs, label=label, time_limit=20)
    assert result.actions >= 200, f"only {result.actions} actions in the time limit"
    assert not result.undocumented_exceptions, (result.undocumented_exceptions, result.examples)
    assert not result.violations, (result.violations, result.examples)
    assert result.episodes > 1 and result.documented_exceptions["EpisodeOverError after done"] > 0
    if task in REWARDS:
        assert set(result.rewards) <= REWARDS[task](get_task(task).make_env(variant, **kwargs))


@pytest.mark.parametrize("task", sorted({t[0] for t in TARGETS}))
def test_step_after_done_raises_episode_over_until_reset(task):
    """Played to the end with invalid actions, the env refuses one more step with EpisodeOverError (a
    RuntimeError), and plays again after reset()."""
    spec = get_task(task)
    env = spec.make_env(spec.variants[0])
    history, done, steps = env.reset(seed=0), False, 0
    while not done:
        history, reward, done = env.step(history + (Text("\x00" * 1000, True),))
        steps += 1
        assert steps < 10_000
    with pytest.raises(EpisodeOverError, match="reset"):
        env.step(history + (Text("\x00", True),))
    assert isinstance(EpisodeOverError(), RuntimeError)
    history = env.reset(seed=1)
    env.step(history + (Text("", True),))


@pytest.mark.parametrize("task", sorted({t[0] for t in TARGETS}))
def test_history_not_ending_in_an_action_is_a_value_error(task):
    spec = get_task(task)
    env = spec.make_env(spec.variants[0])
    history = env.reset(seed=0)
    with pytest.raises(ValueError, match="action"):
        env.step(history)
    with pytest.raises(ValueError, match="action"):
        env.step(())
