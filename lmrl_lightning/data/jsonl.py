"""The JSONL episode format: one episode per line, validated strictly on read.

    {"turns": [{"text": str, "is_action": bool, "reward": float}, ...], "done": bool, "meta": {...}}

Rewards sit on action turns only. Every problem is reported as one line, `file:line: field: what is wrong`.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Iterable, Iterator, Union

from lmrl_lightning.env import Episode, Turn
from lmrl_lightning.errors import LMRLError

PathLike = Union[str, os.PathLike]


class DatasetError(LMRLError):
    """A malformed dataset; the message names the file, line and field."""


def episode_to_json(episode: Episode) -> str:
    return json.dumps(
        {
            "turns": [{"text": t.text, "is_action": t.is_action, "reward": t.reward} for t in episode.turns],
            "done": episode.done,
            "meta": episode.meta,
        },
        ensure_ascii=False,
    )


def write_episodes(path: PathLike, episodes: Iterable[Episode]) -> int:
    """Stream episodes to `path` (written to a temporary file, then renamed: a crash never leaves half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    count = 0
    with open(tmp, "w", encoding="utf-8") as f:
        for episode in episodes:
            f.write(episode_to_json(episode) + "\n")
            count += 1
    os.replace(tmp, path)
    return count


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def parse_episode(line: str, where: str) -> Episode:
    """Parse and validate one JSONL line; `where` is `file:line` for the error message."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise DatasetError(f"{where}: invalid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(obj, dict):
        raise DatasetError(f"{where}: expected a JSON object with 'turns' and 'done', got {type(obj).__name__}")
    for key in ("turns", "done"):
        if key not in obj:
            raise DatasetError(f"{where}: missing field '{key}'")
    if not isinstance(obj["done"], bool):
        raise DatasetError(f"{where}: field 'done' must be true or false, got {obj['done']!r}")
    meta = obj.get("meta", {})
    if not isinstance(meta, dict):
        raise DatasetError(f"{where}: field 'meta' must be an object, got {type(meta).__name__}")
    raw_turns = obj["turns"]
    if not isinstance(raw_turns, list) or not raw_turns:
        raise DatasetError(f"{where}: field 'turns' must be a non-empty list")
    turns = []
    for i, t in enumerate(raw_turns):
        field = f"turns[{i}]"
        if not isinstance(t, dict):
            raise DatasetError(f"{where}: {field} must be an object")
        for key in ("text", "is_action"):
            if key not in t:
                raise DatasetError(f"{where}: {field}.{key} is missing")
        if not isinstance(t["text"], str) or not t["text"]:
            raise DatasetError(f"{where}: {field}.text must be a non-empty string, got {t['text']!r}")
        if not isinstance(t["is_action"], bool):
            raise DatasetError(f"{where}: {field}.is_action must be true or false, got {t['is_action']!r}")
        reward = t.get("reward", 0.0)
        if not _is_number(reward):
            raise DatasetError(f"{where}: {field}.reward must be a finite number, got {reward!r}")
        if not t["is_action"] and reward != 0:
            raise DatasetError(f"{where}: {field}.reward is {reward} on an observation; rewards belong to actions")
        unknown = set(t) - {"text", "is_action", "reward"}
        if unknown:
            raise DatasetError(f"{where}: {field} has unknown field(s) {', '.join(sorted(unknown))}")
        turns.append(Turn(t["text"], t["is_action"], float(reward)))
    if not any(t.is_action for t in turns):
        raise DatasetError(f"{where}: field 'turns' has no action turn, so there is nothing to learn from")
    return Episode(turns, obj["done"], meta, source=where)


def iter_episodes(path: PathLike) -> Iterator[Episode]:
    """Yield validated episodes from a JSONL file; blank lines are skipped, an empty file is an error."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such dataset file")
    count = 0
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if line.strip():
                count += 1
                yield parse_episode(line, f"{path}:{lineno}")
    if count == 0:
        raise DatasetError(f"{path}:1: the file holds no episodes")


def read_episodes(path: PathLike) -> list[Episode]:
    return list(iter_episodes(path))
