"""The Text-Nav environment (spec §2.2) on TextWorld 1.7.0: fully (FO) and partially (PO) observed.

Observation. TextWorld's reply to the command, cleaned as the original did: the room header (`-= Kitchen =-`) is
removed, and the admissible commands without `examine`, `look` and `inventory` are appended as
`"\\nAdmissible commands: a, b, c\\n"`. FO games describe each room with a sentence naming it and, after each step,
add the inventory ("You are carrying: a stale food."); PO games leave both out (see `house`). Whitespace is tidied:
the interpreter's prompt and status line (a Jericho artefact: `>` and `-= Kitchen =-0/3`, which would give the room
away) are removed, every line is stripped and runs of blank lines become one. The first observation starts with
the objective. Example (PO, after `open fridge`):

    You open the fridge, revealing a fruit.

    Admissible commands: close fridge, go east, go north, go west, take fruit from fridge

Actions. One command per turn, e.g. `take stale food from table`, `go west`, `insert stale food into fridge`
(case and extra spaces are ignored). A text that is one of the game's commands (TextWorld's `possible_commands`,
built from its verbs and objects, or an admissible command) goes to the interpreter, which answers it as the
original's did ("You can't go that way."). Any other text is answered "That's not a verb I recognise." (Inform's own
reply) without reaching the interpreter, so that meta-commands (quit, restart, undo, save) and junk never desync the
game from TextWorld's state tracker. Every turn counts towards the step cap.

Reward and end. The reward is the rise in TextWorld's score: 1 on the step that leaves the stale food in the
closed fridge (the game is then won), else 0, so a return is 0 or 1. Eating the stale food loses (done, 0). After
`max_steps` turns (default `MAX_STEPS` = 20) the episode ends too (done, reward 0 unless that step won). The spec
leaves the evaluation cap unknown; 20 is the original's `play()` default, gives the longest optimal episode
(9 commands, from the garden or the backyard) room for 11 detours, and is above the data's 15-step cap.

Speed. Games are compiled once (`house.compiled_game`); each env slot leases a TextWorld interpreter for its start
room from a process-wide pool and resets it at every episode, so a batch of envs (`rollout`'s `env.copy()`) shares
interpreters across episodes and rollouts instead of loading one per episode.
"""
from __future__ import annotations

import random
import re
import threading
import warnings
from collections import defaultdict
from typing import Any, Optional, Sequence

from lmrl_lightning.env import EpisodeOverError, Text, TextEnv, TextHistory
from lmrl_lightning.errors import LMRLError
from lmrl_lightning.tasks.textnav.house import (
    DEFAULT_SEED,
    ROOMS,
    TARGET_OBJECT,
    VARIANTS,
    check_room,
    compiled_game,
    require_textworld,
)

MAX_STEPS = 20
WIN_REWARD = 1.0
REWARDS = frozenset({0.0, WIN_REWARD})
# Commands TextWorld admits but the original removed from the list the agent sees (they change nothing).
HIDDEN_VERBS = ("examine", "look", "inventory")
ADMISSIBLE_PREFIX = "Admissible commands: "
UNKNOWN_COMMAND_REPLY = "That's not a verb I recognise."
# The interpreter's prompt and status line at the end of a reply, and the room header lines.
_PROMPT_AND_STATUS = re.compile(r"\n>[^\n]*$")
_HEADER = re.compile(r"^-=.*=-$", re.MULTILINE)
_BLANK_RUNS = re.compile(r"\n{3,}")
MAX_IDLE_PER_GAME = 256


def tidy_whitespace(text: str) -> str:
    """Every line stripped, runs of blank lines merged into one, no blank lines at either end."""
    text = "\n".join(line.strip() for line in text.split("\n"))
    return _BLANK_RUNS.sub("\n\n", text).strip()


def clean_feedback(raw: str) -> str:
    """TextWorld's raw reply without the prompt/status line and room headers, its whitespace tidied."""
    return tidy_whitespace(_HEADER.sub("", _PROMPT_AND_STATUS.sub("", raw)))


def visible_commands(admissible: Sequence[str]) -> list[str]:
    """The admissible commands the agent is shown: all but examine/look/inventory, in TextWorld's sorted order."""
    return [c for c in admissible if c.split(" ", 1)[0] not in HIDDEN_VERBS]


def format_observation(feedback: str, commands: Sequence[str], inventory: Optional[str] = None) -> str:
    """One observation text: the cleaned feedback, the inventory line (FO, after a step), the command list."""
    parts = [clean_feedback(feedback)]
    if inventory is not None:
        parts.append(inventory.strip())
    body = "\n\n".join(p for p in parts if p)
    return f"{body}\n\n{ADMISSIBLE_PREFIX}{', '.join(commands)}\n"


def admissible_from_observation(text: str) -> tuple[str, ...]:
    """The commands listed on an observation's `Admissible commands:` line (none when it has no such line)."""
    for line in reversed(text.split("\n")):
        if line.startswith(ADMISSIBLE_PREFIX):
            listed = line[len(ADMISSIBLE_PREFIX):]
            return tuple(c.strip() for c in listed.split(",") if c.strip())
    return ()


def admissible_actions_for_history(history: Sequence[Text]) -> tuple[str, ...]:
    """The candidate actions of the state a history ends in: its last observation's admissible commands, each as
    an action text ending in the end-of-turn newline (re-ranking decoding)."""
    for text in reversed(history):
        if not text.is_action:
            return tuple(f"{c}\n" for c in admissible_from_observation(text.text))
    return ()


def normalise_command(text: str) -> str:
    """The command an action text names: lower case, whitespace runs as single spaces, no newline."""
    return " ".join(text.lower().split())


class _InterpreterPool:
    """Idle TextWorld interpreters per compiled game, shared by every env of this process.

    An interpreter (`textworld.start`: a Jericho Z-machine with its own copy of the Frotz library, plus TextWorld's
    state tracker) takes ~30 ms to load; a reset takes a few ms. Envs lease one per episode's start room and give it
    back when they switch rooms, close or are collected."""

    def __init__(self) -> None:
        self.idle: dict[str, list[Any]] = defaultdict(list)
        self.lock = threading.Lock()
        self.created = 0

    def acquire(self, game_file: str, inventory: bool) -> Any:
        with self.lock:
            if self.idle[game_file]:
                return self.idle[game_file].pop()
        textworld = require_textworld()
        infos = textworld.EnvInfos(admissible_commands=True, inventory=inventory, score=True, won=True, lost=True)
        with warnings.catch_warnings():
            # Jericho knows no bindings for TextWorld's games; TextWorld reads score and moves itself.
            warnings.filterwarnings("ignore", message=".*is not fully supported")
            interpreter = textworld.start(game_file, infos)
        with self.lock:
            self.created += 1
        return interpreter

    def release(self, game_file: str, interpreter: Any) -> None:
        with self.lock:
            if len(self.idle[game_file]) < MAX_IDLE_PER_GAME:
                self.idle[game_file].append(interpreter)
                return
        interpreter.close()


POOL = _InterpreterPool()


class TextNavEnv(TextEnv):
    """One Text-Nav episode at a time on a pooled TextWorld interpreter.

    Args:
        variant: "fo" (room sentences and inventory shown) or "po" (neither).
        max_steps: turns after which the episode ends (default `MAX_STEPS`).
        house_seed: the seed of the compiled house (its prose; see `house`).
        cache_dir: where compiled games are kept (default `house.default_cache_dir()`).

    `reset(seed, options)`: the start room is `options["start_room"]` if given, else drawn uniformly from the 8
    rooms by `seed`; other options are kept in `self.options` for scripted players (the data generator's
    `optimal_rooms`).
    """

    def __init__(self, variant: str = "fo", max_steps: int = MAX_STEPS, house_seed: int = DEFAULT_SEED,
                 cache_dir: Optional[str] = None):
        if variant not in VARIANTS:
            raise LMRLError(f"textnav: unknown variant {variant!r}; valid: {', '.join(VARIANTS)}")
        if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
            raise LMRLError(f"textnav: max_steps must be an integer >= 1, got {max_steps!r}")
        self.variant = variant
        self.max_steps = max_steps
        self.house_seed = house_seed
        self.cache_dir = cache_dir
        self.options: dict[str, Any] = {}
        self.start_room: Optional[str] = None
        self.steps = 0
        self.done = False
        self.won = False
        self.lost = False
        self._game_file: Optional[str] = None
        self._interpreter: Any = None
        self._state: Any = None  # TextWorld's GameState after the last command
        self._known_commands: frozenset[str] = frozenset()

    # ---- episode lifecycle -----------------------------------------------------------------------------------------
    def reset(self, seed: Optional[int] = None, options: Optional[dict[str, Any]] = None) -> TextHistory:
        self.options = dict(options or {})
        room = self.options.get("start_room")
        self.start_room = check_room(room) if room is not None else random.Random(seed).choice(ROOMS)
        self._lease(compiled_game(self.variant, self.start_room, self.house_seed, self.cache_dir))
        self._state = self._interpreter.reset()
        self._known_commands = frozenset(self._state["possible_commands"]) | frozenset(
            self._state["admissible_commands"])
        self.steps, self.done, self.won, self.lost = 0, False, False, False
        text = format_observation(self._state.feedback, visible_commands(self._state["admissible_commands"]))
        return (Text(text, False),)

    def step(self, history: TextHistory) -> tuple[TextHistory, float, bool]:
        if self._state is None:
            raise EpisodeOverError("step() before the first reset(); call reset() first")
        if self.done:
            raise EpisodeOverError("step() after the episode ended; call reset() first")
        if not history or not history[-1].is_action:
            raise ValueError("step() needs a history whose last text is the agent's action")
        command = normalise_command(history[-1].text)
        self.steps += 1
        reward = 0.0
        if command in self._known_commands:
            score_before = self._state["score"]
            self._state, _, _ = self._interpreter.step(command)
            reward = float(self._state["score"] - score_before)
            self.won, self.lost = bool(self._state["won"]), bool(self._state["lost"])
            feedback = self._state.feedback
        else:
            feedback = UNKNOWN_COMMAND_REPLY
        self.done = self.won or self.lost or self.steps >= self.max_steps
        inventory = self._state["inventory"] if self.variant == "fo" else None
        text = format_observation(feedback, visible_commands(self._state["admissible_commands"]), inventory)
        return tuple(history) + (Text(text, False),), reward, self.done

    def success(self) -> Optional[bool]:
        return None if self._state is None else self.won

    def end_message(self) -> Optional[str]:
        if self._state is None:
            return None
        outcome = "won" if self.won else "lost (the stale food was eaten)" if self.lost else "step cap reached"
        return f"{outcome} after {self.steps} commands (started in the {self.start_room})"

    def copy(self) -> "TextNavEnv":
        """A fresh env with the same settings (it leases its own interpreter at reset)."""
        return TextNavEnv(self.variant, self.max_steps, self.house_seed, self.cache_dir)

    def close(self) -> None:
        """Give the interpreter back to the pool (the env can be reset again)."""
        if self._interpreter is not None:
            POOL.release(self._game_file, self._interpreter)
        self._interpreter = self._game_file = self._state = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: the pool may already be gone
            pass

    def _lease(self, game_file: str) -> None:
        if game_file != self._game_file:
            self.close()
            self._interpreter = POOL.acquire(game_file, inventory=self.variant == "fo")
            self._game_file = game_file

    # ---- the simulator's true state (scripted players) -------------------------------------------------------------
    def _facts(self) -> list:
        if self._state is None:
            raise EpisodeOverError("no episode yet; call reset() first")
        return self._state["_facts"]

    def _name(self, entity_id: str) -> str:
        return self._state["game"].infos[entity_id].name

    @property
    def room(self) -> str:
        """The room the player is in."""
        for fact in self._facts():
            if fact.name == "at" and fact.arguments[0].name == "P":
                return self._name(fact.arguments[1].name)
        raise RuntimeError("TextWorld state has no player location")

    def carrying(self, name: str = TARGET_OBJECT) -> bool:
        """Whether the player holds the object called `name`."""
        return any(f.name == "in" and f.arguments[1].name == "I" and self._name(f.arguments[0].name) == name
                   for f in self._facts())

    @property
    def admissible_commands(self) -> list[str]:
        """The commands the agent is shown now."""
        if self._state is None:
            raise EpisodeOverError("no episode yet; call reset() first")
        return visible_commands(self._state["admissible_commands"])
