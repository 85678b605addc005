"""The Text-Nav house (spec §2.2), built with TextWorld's game-making API and compiled once per start room.

The facts are the original's (`text_nav/env/make_game.py`): eight rooms and their connections, three tables, a
closed chest and a closed fridge, the stale and fresh food on the living-room table, the distractors (a bowl, a
coffee cup, a plate, the utensils in the chest, a fruit in the fridge), and two quests: the stale food inside the
closed fridge wins (score 1), eating it loses. The original built and compiled a new game at every reset to place
the player in a random room; here each (variant, start room) game is compiled once, on first use, into a cache
directory keyed by `GENERATOR_VERSION`, the TextWorld version and the seed, and episodes only reset an interpreter.

Stock TextWorld 1.7.0 instead of the original's fork (jxihong/TextWorld, 1.5.4 + three commits). The fork did two
things this module redoes on stock TextWorld:
* it removed the ASCII-art "TextWorld" banner from the start text (only the objective is printed): the same lines
  are removed from the generated Inform 7 source before compiling (`_without_banner`);
* it added a grammar flag `hide_location` (set for PO) that leaves out each room's opening sentence, the one that
  names the room ("You arrive in a kitchen."): PO games here drop that sentence from the generated descriptions.
Descriptions are TextWorld's stochastic prose: the grammar is seeded with the original's 1234, but stock 1.7.0's
grammar files and the fork's `hide_location` (which changed the random draws) make the exact sentences differ from
the original's; the objects, exits and commands are the same. The seed of the game's other random choices
(`GameOptions.seeds`, random in the original, so its prose changed between episodes) is this module's `seed`.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

from lmrl_lightning.atomic import atomic_directory
from lmrl_lightning.errors import LMRLError

# Bump when the house, its text or the compile steps below change: cached games are keyed by it.
GENERATOR_VERSION = 1
DEFAULT_SEED = 1234  # the original's grammar seed; also seeds TextWorld's other generation choices here
GRAMMAR_SEED = 1234

# Room names in TextWorld (lower case) and as the game prints them in its "-= Living Room =-" header.
ROOMS: tuple[str, ...] = (
    "bedroom", "office", "bathroom", "living room", "kitchen", "dining room", "garden", "backyard",
)
# (room, its exit, room, its exit): e.g. the bedroom's west exit leads to the living room's east side.
CONNECTIONS: tuple[tuple[str, str, str, str], ...] = (
    ("bedroom", "west", "living room", "east"),
    ("living room", "west", "dining room", "east"),
    ("dining room", "west", "kitchen", "east"),
    ("kitchen", "north", "garden", "south"),
    ("living room", "south", "office", "north"),
    ("office", "east", "bathroom", "west"),
    ("bedroom", "south", "bathroom", "north"),
    ("kitchen", "west", "backyard", "east"),
)
# Supporters ('s') and containers ('c') per room; both containers start closed.
TABLE_ROOMS: tuple[str, ...] = ("bedroom", "living room", "dining room")
CONTAINERS: dict[str, str] = {"chest": "office", "fridge": "kitchen"}
# Portable objects: name -> (TextWorld type: 'f' food, 'o' object; holder, the table's room or the container).
OBJECTS: dict[str, tuple[str, str]] = {
    "stale food": ("f", "living room"),
    "fresh food": ("f", "living room"),
    "bowl": ("o", "bedroom"),
    "coffee cup": ("o", "dining room"),
    "plate": ("o", "dining room"),
    "utensils": ("o", "chest"),
    "fruit": ("f", "fridge"),
}
TARGET_OBJECT, TARGET_CONTAINER = "stale food", "fridge"
OBJECTIVE = ("Your objective is to put the stale food on the table in the living room into the fridge in the "
             "kitchen.")
VARIANTS: tuple[str, ...] = ("fo", "po")

# TextWorld's grammar flags of the original (`compile_game`); `hide_location` is emulated (module docstring).
GRAMMAR_FLAGS = {"theme": "house", "include_adj": False, "only_last_action": True, "blend_instructions": True,
                 "blend_descriptions": True}

_BANNER = re.compile(r'(Rule for printing the banner text:\n)(?:[ \t]+say ".*";\n)+([ \t]+say "\[objective\])')


def require_textworld():
    """The `textworld` module, or a one-line LMRLError saying how to install it."""
    try:
        import textworld
    except ImportError:
        raise LMRLError("the textnav task needs TextWorld: pip install 'textworld==1.7.0' (pin torch in the same "
                        "command, see README)") from None
    return textworld


def header(room: str) -> str:
    """How the game names `room` in its header line: `-= Living Room =-`."""
    return f"-= {room.title()} =-"


def check_room(room: str) -> str:
    if room not in ROOMS:
        raise LMRLError(f"textnav: unknown room {room!r}; valid: {', '.join(ROOMS)}")
    return room


def build_game(variant: str, start_room: str, seed: int = DEFAULT_SEED):
    """The house as a `textworld.Game` with the player in `start_room`, its text generated (not compiled)."""
    import numpy as np

    textworld = require_textworld()
    from textworld import GameMaker, GameOptions
    from textworld.generator.game import Event, Quest

    check_room(start_room)
    options = GameOptions()
    options.seeds = seed
    for flag, value in GRAMMAR_FLAGS.items():
        setattr(options.grammar, flag, value)
    maker = GameMaker(options)
    rooms = {name: maker.new_room(name) for name in ROOMS}
    for room_a, exit_a, room_b, exit_b in CONNECTIONS:
        maker.connect(getattr(rooms[room_a], exit_a), getattr(rooms[room_b], exit_b))
    holders = {}
    for room in TABLE_ROOMS:
        holders[room] = maker.new(type="s", name="table")
        rooms[room].add(holders[room])
    for name, room in CONTAINERS.items():
        holders[name] = maker.new(type="c", name=name)
        maker.add_fact("closed", holders[name])
        rooms[room].add(holders[name])
    objects = {}
    for name, (kind, holder) in OBJECTS.items():
        objects[name] = maker.new(type=kind, name=name)
        holders[holder].add(objects[name])
    maker.set_player(rooms[start_room])
    target, fridge = objects[TARGET_OBJECT], holders[TARGET_CONTAINER]
    maker.quests = [
        Quest(win_events=[], fail_events=[Event(conditions={maker.new_fact("eaten", target)})]),
        Quest(win_events=[Event(conditions={maker.new_fact("in", target, fridge), maker.new_fact("closed", fridge)})],
              reward=1),
    ]
    game = maker.build()
    game.objective = OBJECTIVE
    grammar = textworld.generator.make_grammar(dict(GRAMMAR_FLAGS), rng=np.random.RandomState(GRAMMAR_SEED))
    game.change_grammar(grammar)
    if variant == "po":
        _hide_locations(game)
    game.metadata = {"textnav": {"variant": variant, "start_room": start_room, "seed": seed,
                                 "generator_version": GENERATOR_VERSION}}
    return game


def _hide_locations(game) -> None:
    """Drop each room description's opening sentence, the one naming the room (the fork's `hide_location`)."""
    for room in game.world.rooms:
        infos = game.infos[room.id]
        opening, sep, rest = infos.desc.partition("\n\n")
        if not sep or infos.name not in opening.lower():
            raise RuntimeError(f"unexpected TextWorld room description for {infos.name!r}: {infos.desc[:80]!r}")
        infos.desc = rest


def _without_banner(source: str) -> str:
    """The Inform 7 source without the ASCII-art banner lines (the objective is still printed)."""
    source, n = _BANNER.subn(r"\1\2", source)
    if n != 1:
        raise RuntimeError("unexpected TextWorld Inform 7 source: banner rule not found (TextWorld version?)")
    return source


def default_cache_dir() -> Path:
    """`$LMRL_TEXTNAV_CACHE`, else `$XDG_CACHE_HOME/lmrl_lightning/textnav` (default `~/.cache/...`)."""
    if os.environ.get("LMRL_TEXTNAV_CACHE"):
        return Path(os.environ["LMRL_TEXTNAV_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "lmrl_lightning" / "textnav"


@dataclass(frozen=True)
class HouseKey:
    """What a compiled game depends on; its cache path is built from all of it."""

    variant: str
    start_room: str
    seed: int = DEFAULT_SEED

    def directory(self, cache_dir: Path) -> Path:
        version = f"v{GENERATOR_VERSION}-tw{require_textworld().__version__}-seed{self.seed}"
        return cache_dir / version / self.variant / self.start_room.replace(" ", "_")


GAME_STEM = "textnav"


def compiled_game(variant: str, start_room: str, seed: int = DEFAULT_SEED,
                  cache_dir: Optional[Union[str, os.PathLike]] = None) -> str:
    """The path of the compiled game (`.z8`, its `.json` beside it), compiled on first use only.

    Concurrent processes (DDP ranks, data workers) may compile the same game at once: each compiles into its own
    staging directory and the first rename wins; the others use the winner's files."""
    if variant not in VARIANTS:
        raise LMRLError(f"textnav: unknown variant {variant!r}; valid: {', '.join(VARIANTS)}")
    key = HouseKey(variant, check_room(start_room), seed)
    out = key.directory(Path(cache_dir) if cache_dir else default_cache_dir())
    game_file = out / f"{GAME_STEM}.z8"
    if game_file.is_file() and game_file.with_suffix(".json").is_file():
        return str(game_file)
    from textworld.generator.inform7 import compile_inform7_game, generate_inform7_source

    game = build_game(variant, start_room, seed)
    try:
        with atomic_directory(out) as staging:
            game.save(str(staging / f"{GAME_STEM}.json"))
            compile_inform7_game(_without_banner(generate_inform7_source(game)), str(staging / f"{GAME_STEM}.z8"))
    except OSError:
        if not game_file.is_file():  # not another process's win: a real failure
            raise
    return str(game_file)


def compile_all(seed: int = DEFAULT_SEED, cache_dir: Optional[Union[str, os.PathLike]] = None) -> list[str]:
    """Compile (or find in the cache) all 16 games: both variants, every start room."""
    return [compiled_game(v, room, seed, cache_dir) for v in VARIANTS for room in ROOMS]
