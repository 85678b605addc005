"""`lmrl data TASK --from-original FILE`: a dataset file of the original LMRL-Gym project, converted to this kit's
episode format and written as a dataset directory (train.jsonl, tokenizer/, stats.json, manifest.json) that
`lmrl fit` uses like a generated one.

A task that reads the original's files sets `TaskSpec.read_original(record, where) -> Iterable[Episode]`: it turns
one record (a line of a JSON-lines file, or an element of the array a `.json` file holds) into episodes. Record shapes that
several tasks share are read here:

- `read_text_history`: `{"text_history": [obs, act, obs, ...], "rewards": [...], "dones": [...]}` (PO maze,
  a one-reward-per-text layout), one reward and one done flag per text;
- `read_sequence`: `{"sequence": [[text, is_action], ...], "reward": [...], "done": bool}` (Wordle);
- `transitions_reader(...)`: `[{"state", "action", "reward", "done"}, ...]` (FO maze, chess RL chains), with the
  task's own text formatting of states and actions.

Every converted episode then passes the same validation as any dataset line (`jsonl.parse_episode`), so a bad
record is refused with one line naming the file, the line (or array element) and the field; the output directory
is written whole or not at all, as `lmrl data` writes it.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence, Union

from lmrl_lightning.atomic import atomic_write_json
from lmrl_lightning.data.generation import STATS_FILE, TRAIN_FILE
from lmrl_lightning.data.jsonl import DatasetError, _load_json, episode_to_json, iter_lines, parse_episode, write_episodes
from lmrl_lightning.env import Episode, Turn

PathLike = Union[str, os.PathLike]
OriginalReader = Callable[[Any, str], Iterable[Episode]]

# A file that holds one JSON array (the original's 20Q `train.json`) is parsed whole; beyond this size it is
# refused rather than read into memory.
MAX_ARRAY_FILE_BYTES = 2 << 30


def iter_records(path: PathLike) -> Iterator[tuple[str, Any]]:
    """(`where`, record) for each record of an original data file: the elements of the JSON array a `.json` file
    holds (`file: record i`; the original's 20Q and Car Dealer files), else the lines of a JSON-lines file
    (`file:line`). The suffix decides because a line of a JSON-lines file may itself be an array (a chess game)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such data file")
    if path.suffix.lower() != ".json":
        for where, line in iter_lines(path):
            yield where, _load_json(line, where)
        return
    size = path.stat().st_size
    if size > MAX_ARRAY_FILE_BYTES:
        raise DatasetError(f"{path}: a JSON array of {size} bytes is too large to read whole; split it into JSON lines")
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path}: not UTF-8 text (byte {e.start + 1}); the original's files are UTF-8 JSON") from None
    except ValueError as e:
        raise DatasetError(f"{path}: invalid JSON ({e})") from None
    if not isinstance(records, list):
        raise DatasetError(f"{path}: expected a JSON array of records or JSON lines, got {type(records).__name__}")
    for i, record in enumerate(records):
        yield f"{path}: record {i}", record


def validated_episode(turns: Sequence[Turn], done: bool, meta: dict[str, Any], where: str) -> Episode:
    """The episode of `turns`, checked by the rules every dataset line obeys (`jsonl.parse_episode`)."""
    episode = Episode(list(turns), done, meta)
    return parse_episode(episode_to_json(episode), where)


def _field(record: Any, name: str, kind: type, where: str) -> Any:
    if not isinstance(record, dict):
        raise DatasetError(f"{where}: expected an object with field '{name}', got {type(record).__name__}")
    if name not in record:
        raise DatasetError(f"{where}: missing field '{name}'")
    value = record[name]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise DatasetError(f"{where}: field '{name}' must be {kind.__name__}, got {type(value).__name__}")
    return value


def _number(value: Any, field: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DatasetError(f"{where}: {field} must be a finite number, got {value!r}")
    return float(value)


def _success(turns: Sequence[Turn], done: bool) -> bool:
    """The original's files carry no success flag: an episode that ends (done) on a positive reward succeeded."""
    return done and bool(turns) and turns[-1].is_action and turns[-1].reward > 0


def read_text_history(record: Any, where: str) -> Iterator[Episode]:
    """`{"text_history": [...], "rewards": [...], "dones": [...]}`: texts alternate observation, action, ...;
    rewards and done flags are one per text (the episode is done when its last flag is)."""
    texts = _field(record, "text_history", list, where)
    rewards = _field(record, "rewards", list, where)
    dones = _field(record, "dones", list, where)
    for name, values in (("rewards", rewards), ("dones", dones)):
        if len(values) != len(texts):
            raise DatasetError(f"{where}: field '{name}' has {len(values)} entries for {len(texts)} texts")
    turns = [Turn(text, i % 2 == 1, _number(r, f"rewards[{i}]", where)) for i, (text, r) in enumerate(zip(texts, rewards))]
    done = bool(dones[-1]) if dones else False
    yield validated_episode(turns, done, {"success": _success(turns, done)}, where)


def read_sequence(record: Any, where: str) -> Iterator[Episode]:
    """`{"sequence": [[text, is_action], ...], "reward": [...], "done": bool}` (is_action 0/1 or a bool)."""
    sequence = _field(record, "sequence", list, where)
    rewards = _field(record, "reward", list, where)
    done = _field(record, "done", bool, where)
    if len(rewards) != len(sequence):
        raise DatasetError(f"{where}: field 'reward' has {len(rewards)} entries for {len(sequence)} texts")
    turns = []
    for i, (item, reward) in enumerate(zip(sequence, rewards)):
        if not (isinstance(item, list) and len(item) == 2 and item[1] in (0, 1)):
            raise DatasetError(f"{where}: sequence[{i}] must be [text, is_action (0 or 1)], got {item!r:.60}")
        turns.append(Turn(item[0], bool(item[1]), _number(reward, f"reward[{i}]", where)))
    yield validated_episode(turns, done, {"success": _success(turns, done)}, where)


def transitions_reader(observation: Callable[[str], str], action: Callable[[str], str]) -> OriginalReader:
    """A reader of `[{"state", "action", "reward", "done"}, ...]` records: each transition's state becomes an
    observation text (`observation(state)`) and its action an action text (`action(action)`) with the reward."""

    def read(record: Any, where: str) -> Iterator[Episode]:
        if not isinstance(record, list) or not record:
            raise DatasetError(f"{where}: expected a non-empty list of transitions, got {type(record).__name__}")
        turns: list[Turn] = []
        done = False
        for i, step in enumerate(record):
            at = f"{where}: transition {i}"
            state, move = _field(step, "state", str, at), _field(step, "action", str, at)
            turns.append(Turn(observation(state), False))
            turns.append(Turn(action(move), True, _number(step.get("reward", 0.0), "reward", at)))
            done = bool(step.get("done", False))
        yield validated_episode(turns, done, {"success": _success(turns, done)}, where)

    return read


def convert_original_file(
    source: PathLike, out_file: PathLike, reader: OriginalReader, statistics: Any
) -> int:
    """Stream `source`'s records through `reader` into the JSONL file `out_file`; `statistics.add` sees each
    episode. Returns the number of episodes; a file that yields none is an error."""

    def episodes() -> Iterator[Episode]:
        for where, record in iter_records(source):
            for episode in reader(record, where):
                statistics.add(episode)
                yield episode

    count = write_episodes(out_file, episodes())
    if count == 0:
        raise DatasetError(f"{source}: the file holds no episodes")
    return count


def write_original_dataset(
    source: PathLike, out_dir: Path, reader: OriginalReader, statistics: Any, config: dict[str, Any]
) -> dict[str, Any]:
    """`out_dir/train.jsonl` and `out_dir/stats.json` from the original's file `source` (the generators' layout)."""
    convert_original_file(source, out_dir / TRAIN_FILE, reader, statistics)
    stats = statistics.summary()
    stats["config"] = config
    atomic_write_json(out_dir / STATS_FILE, stats)
    return stats


__all__ = [
    "OriginalReader", "convert_original_file", "iter_records", "read_sequence", "read_text_history",
    "transitions_reader", "validated_episode", "write_original_dataset",
]
