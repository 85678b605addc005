"""Fuzzing of every registered task's `TextEnv` against the contract in `lmrl_lightning.env.TextEnv`'s docstring;
shared by tests/test_env_fuzz.py (seconds per task) and benchmarks/env_fuzz.py (>= 10k actions per task).

Actions are drawn, seeded, from: random unicode (astral planes and lone surrogates included), the empty string,
a lone newline, 1M-character strings, control characters (C0, DEL, C1, CR/CRLF), the task's valid actions with
and without the end-of-turn newline (or with odd case, spaces, CRLF), and pieces of these glued together. The
history passed to `step` is usually the env's own, sometimes a forged prefix (the env must use only the last
action). After an episode ends, some steps are tried again (they must raise `EpisodeOverError`) before the reset;
sometimes a history ending in an observation is passed (it must raise ValueError).

Documented behaviour checked at every step: no exception but `EpisodeOverError` (after done) and ValueError (a
history not ending in an action); a finite float reward from the task's documented set (`REWARDS`); `done` a
bool; the history a tuple of `Text` ending in an observation; an episode no longer than the task's bound.
"""
from __future__ import annotations

import math
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Optional

from lmrl_lightning.env import EpisodeOverError, Text, TextEnv
from lmrl_lightning.registry import get_task, task_names


def _maze_rewards(env) -> set[float]:
    from lmrl_lightning.tasks.maze import env as maze

    return {maze.MOVE_REWARD, maze.GOAL_REWARD, maze.INVALID_ACTION_REWARD, maze.FAILURE_REWARD}


def _wordle_rewards(env) -> set[float]:
    from lmrl_lightning.tasks.wordle import env as wordle

    return {wordle.GUESS_REWARD, wordle.SOLVED_REWARD, env.bad_word_reward}


def _chess_rewards(env) -> set[float]:
    from lmrl_lightning.tasks.chess import env as chess_env

    return set(chess_env.REWARDS)


def _textnav_rewards(env: TextEnv) -> set[float]:
    from lmrl_lightning.tasks.textnav import env as textnav_env

    return set(textnav_env.REWARDS)


# The documented reward set of each task (see each env module's docstring), given the env instance.
REWARDS: dict[str, Callable[[TextEnv], set[float]]] = {
    "maze": _maze_rewards, "wordle": _wordle_rewards, "chess": _chess_rewards, "endgames": _chess_rewards,
    "twenty_questions": lambda env: {-1.0, 0.0},  # -1 a question, 0 for the right guess
    "textnav": _textnav_rewards,
}
# The most steps an episode may take (maze: max_steps moves, then the failure step; wordle: six guesses).
MAX_EPISODE_STEPS: dict[str, Callable[[TextEnv], int]] = {
    "maze": lambda env: env.max_steps + 1,
    "wordle": lambda env: env.max_guesses,
    "chess": lambda env: env.max_moves + 1,  # illegal moves count towards the cap
    "endgames": lambda env: env.max_moves + 1,
    "twenty_questions": lambda env: env.max_questions,
    "car_dealer": lambda env: env.max_conversation_length,  # texts in all, so seller turns stay below it
    "textnav": lambda env: env.max_steps,
}


def _compile_textnav_games() -> None:
    from lmrl_lightning.tasks.textnav import compile_all

    compile_all()


# Work a task does once per machine before its env is fast (Text-Nav compiles its 16 games into a cache, about a
# minute), done before a time-limited fuzz run starts its clock.
PREPARE: dict[str, Callable[[], None]] = {"textnav": _compile_textnav_games}
# Extra env configurations worth fuzzing beside the registered variants: (label, make_env keyword arguments).
ENV_OPTIONS: dict[str, list[tuple[str, dict]]] = {"wordle": [("train-bad-word-reward", {"bad_word_reward": -10.0})]}


def valid_actions(task: str, env: TextEnv, rng: random.Random, history: Optional[tuple] = None) -> list[str]:
    """Valid (or nearly valid) action texts of the task, for mixing in (per-state candidates: those of `history`,
    the episode's first state)."""
    spec = get_task(task)
    if spec.state_candidate_actions and history:
        return list(spec.state_candidate_actions(history)) or ["\n"]
    if spec.candidate_actions:
        return list(spec.candidate_actions)
    if task == "wordle":
        from lmrl_lightning.tasks.wordle.env import answer_words, spaced

        words = rng.sample(answer_words(), 5) + ([env.answer] if getattr(env, "answer", None) else [])
        return [spaced(w) for w in words]
    return ["\n"]


BIG = 1_000_000
CONTROL = [chr(c) for c in range(0, 32)] + ["\x7f"] + [chr(c) for c in range(0x80, 0xA0)] + ["\r\n", "\u2028", "\ufeff"]


def _random_unicode(rng: random.Random, n: int) -> str:
    chars = []
    for _ in range(n):
        r = rng.random()
        if r < 0.5:
            chars.append(chr(rng.randrange(0x20, 0x7F)))
        elif r < 0.8:
            chars.append(chr(rng.randrange(0xA0, 0xD800)))
        elif r < 0.9:
            chars.append(chr(rng.randrange(0xD800, 0xE000)))  # lone surrogates
        else:
            chars.append(chr(rng.randrange(0x10000, 0x110000)))
    return "".join(chars)


class ActionSource:
    """Seeded action texts of every kind in the module docstring; the 1M-character strings are made once."""

    KINDS = ("unicode", "empty", "newline", "big", "control", "surrogate", "valid", "valid-no-eot", "valid-mangled",
             "glued")
    WEIGHTS = (20, 3, 3, 1, 10, 6, 30, 10, 10, 7)

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.big = ["a" * BIG, "move left\n" * (BIG // 10), _random_unicode(rng, BIG), "\x00" * BIG,
                    "c r a n e " * (BIG // 10) + "\n"]

    def draw(self, valid: list[str]) -> tuple[str, str]:
        rng = self.rng
        kind = rng.choices(self.KINDS, self.WEIGHTS)[0]
        if kind == "unicode":
            text = _random_unicode(rng, rng.randrange(1, 40))
        elif kind == "empty":
            text = ""
        elif kind == "newline":
            text = rng.choice(["\n", "\n\n", "\r\n", " \n"])
        elif kind == "big":
            text = rng.choice(self.big)
        elif kind == "control":
            text = "".join(rng.choice(CONTROL) for _ in range(rng.randrange(1, 8)))
            if rng.random() < 0.5:
                text = rng.choice(valid).rstrip("\n") + text
        elif kind == "surrogate":
            text = rng.choice(["\ud800", "\udfff", "\ud83d", "\ude00\ud83d", "move\udc80 up\n"])
        elif kind == "valid":
            text = rng.choice(valid)
        elif kind == "valid-no-eot":
            text = rng.choice(valid).rstrip("\n")
        elif kind == "valid-mangled":
            v = rng.choice(valid)
            text = rng.choice([v.upper(), " " + v, v.rstrip("\n") + " \n", v.rstrip("\n") + "\r\n", v + v, v + "\x00",
                               v.replace(" ", "\t"), v.replace(" ", "")])
        else:
            text = "".join(self.draw(valid)[1][:5000] for _ in range(2))
        return kind, text


@dataclass
class FuzzResult:
    task: str
    variant: str
    actions: int = 0
    episodes: int = 0
    seconds: float = 0.0
    rewards: Counter = field(default_factory=Counter)
    action_kinds: Counter = field(default_factory=Counter)
    documented_exceptions: Counter = field(default_factory=Counter)  # "EpisodeOverError after done", ...
    undocumented_exceptions: Counter = field(default_factory=Counter)  # "<type>: <message>" -> count
    violations: Counter = field(default_factory=Counter)  # broken guarantees other than exceptions
    examples: list = field(default_factory=list)  # a few (what, action repr) for the report

    def problem(self, key: str, what: str, action: str) -> None:
        (self.undocumented_exceptions if key == "exception" else self.violations)[what] += 1
        if len(self.examples) < 10:
            self.examples.append({"what": what, "action": repr(action[:80]) + (f"...({len(action)} chars)"
                                                                              if len(action) > 80 else "")})

    def as_dict(self) -> dict:
        return {
            "task": self.task, "variant": self.variant, "actions": self.actions, "episodes": self.episodes,
            "seconds": round(self.seconds, 2),
            "rewards_seen": {f"{r:g}": n for r, n in sorted(self.rewards.items())},
            "action_kinds": dict(sorted(self.action_kinds.items())),
            "documented_exceptions": dict(self.documented_exceptions),
            "undocumented_exceptions": dict(self.undocumented_exceptions),
            "violations": dict(self.violations),
            "examples": self.examples,
        }

    @property
    def ok(self) -> bool:
        return not self.undocumented_exceptions and not self.violations


def fuzz_env(task: str, variant: str, n_actions: int, seed: int, env_kwargs: Optional[dict] = None,
             label: Optional[str] = None, source: Optional[ActionSource] = None,
             time_limit: Optional[float] = None) -> FuzzResult:
    """Step `task`'s env of `variant` with `n_actions` fuzzed actions (fewer if `time_limit` seconds run out)."""
    rng = random.Random(seed)
    source = source or ActionSource(random.Random(seed + 1))
    source.rng = rng
    spec = get_task(task)
    env = spec.make_env(variant, **(env_kwargs or {}))
    documented = REWARDS.get(task, lambda e: None)(env)
    bound = MAX_EPISODE_STEPS.get(task, lambda e: None)(env)
    result = FuzzResult(task, label or variant)
    start = time.perf_counter()

    # A fresh env stepped before its first reset: a normal step or EpisodeOverError.
    try:
        env.step((Text("move up\n", True),))
    except EpisodeOverError:
        result.documented_exceptions["EpisodeOverError before reset"] += 1
    except Exception as e:  # noqa: BLE001
        result.problem("exception", f"before reset: {type(e).__name__}: {str(e)[:120]}", "move up\n")

    history, steps = None, 0
    while result.actions < n_actions:
        if time_limit is not None and time.perf_counter() - start > time_limit:
            break
        if history is None:
            history = env.reset(seed=rng.randrange(2**31))
            result.episodes += 1
            steps = 0
            if not (isinstance(history, tuple) and history and all(isinstance(t, Text) for t in history)
                    and not history[-1].is_action):
                result.problem("violation", "reset() did not return a tuple of Text ending in an observation", "")
            valid = valid_actions(task, env, rng, history)
        if rng.random() < 0.01:  # misuse: a history that does not end in an action
            try:
                env.step(history)
                result.problem("violation", "step() accepted a history ending in an observation", "")
            except ValueError:
                result.documented_exceptions["ValueError for a history not ending in an action"] += 1
            except Exception as e:  # noqa: BLE001
                result.problem("exception", f"history without action: {type(e).__name__}: {str(e)[:120]}", "")
        kind, action = source.draw(valid)
        prefix = history if rng.random() < 0.9 else tuple(Text(source.draw(valid)[1][:50], i % 2 == 1)
                                                         for i in range(rng.randrange(0, 4)))
        result.actions += 1
        result.action_kinds[kind] += 1
        try:
            new_history, reward, done = env.step(tuple(prefix) + (Text(action, True),))
        except Exception as e:  # noqa: BLE001
            result.problem("exception", f"{type(e).__name__}: {str(e)[:120]}", action)
            history = None
            continue
        steps += 1
        if not isinstance(reward, (int, float)) or isinstance(reward, bool) or not math.isfinite(reward):
            result.problem("violation", f"reward {reward!r} is not a finite number", action)
        elif documented is not None and float(reward) not in documented:
            result.problem("violation", f"reward {reward!r} outside the documented {sorted(documented)}", action)
        else:
            result.rewards[float(reward)] += 1
        if not isinstance(done, bool):
            result.problem("violation", f"done {done!r} is not a bool", action)
        if not (isinstance(new_history, tuple) and new_history and all(isinstance(t, Text) for t in new_history)
                and not new_history[-1].is_action):
            result.problem("violation", "the returned history is not a tuple of Text ending in an observation", action)
        if bound is not None and steps > bound:
            result.problem("violation", f"an episode ran past {bound} steps", action)
            done = True
        history = new_history
        if done:
            for _ in range(rng.choice([0, 0, 1, 2])):  # steps after done
                after = source.draw(valid)[1]
                try:
                    env.step(tuple(history) + (Text(after, True),))
                    result.problem("violation", "step() after done did not raise EpisodeOverError", after)
                except EpisodeOverError:
                    result.documented_exceptions["EpisodeOverError after done"] += 1
                except Exception as e:  # noqa: BLE001
                    result.problem("exception", f"after done: {type(e).__name__}: {str(e)[:120]}", after)
            history = None
    result.seconds = time.perf_counter() - start
    env.close()
    return result


def targets() -> list[tuple[str, str, str, dict]]:
    """(task, variant, label, make_env kwargs) for each registered task's variants, plus ENV_OPTIONS."""
    out = []
    for task in task_names():
        spec = get_task(task)
        for variant in spec.variants:
            out.append((task, variant, variant, {}))
        for label, kwargs in ENV_OPTIONS.get(task, []):
            out.append((task, spec.variants[0], f"{spec.variants[0]}+{label}", kwargs))
    return out
