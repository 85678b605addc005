"""The JSONL episode format: one episode per line, validated strictly while streaming.

    {"turns": [{"text": str, "is_action": bool, "reward": float}, ...], "done": bool, "meta": {...}}

The rules, each refused with one line `file:line: field: what is wrong` (never a traceback):

- The file is plain UTF-8 (no byte-order mark, not compressed) and each line holds at most `MAX_LINE_BYTES`
  bytes (1 MiB; `max_line_bytes` raises it). The size is checked before the JSON is parsed, so a huge line
  fails fast with little memory. Blank lines are skipped (they still count for line numbers); a line may end
  with CRLF, since a JSON line's trailing whitespace is not part of the episode.
- Top-level fields are `turns`, `done` and optionally `meta`, nothing else. `meta.success`, when present, is
  `true` or `false` (filtered BC keeps episodes by it).
- Turns alternate, starting with an observation: observation, action, observation, ... as every
  environment produces them (the rollout engine records the reset observation, then each action and the
  observation it leads to). An episode may end on either kind and holds at least one action.
- Texts are non-empty and hold no control character other than `\\n` and `\\t` (no `\\r`: line ends are
  `\\n`) and no lone surrogate. An action is one line ending with the end-of-turn newline
  (`env.END_OF_TURN`): the policy's decoding stops at that newline, so an action without it, or with a
  newline inside it, is not something the model could produce.
- Rewards are finite numbers, on actions only, and the episode's running return stays finite.
"""
from __future__ import annotations

import codecs
import json
import math
import os
import re
import sys
from pathlib import Path
from typing import Any, BinaryIO, Iterable, Iterator, Optional, Sequence, Union

from lmrl_lightning.atomic import atomic_open
from lmrl_lightning.env import END_OF_TURN, Episode, Turn
from lmrl_lightning.errors import LMRLError

PathLike = Union[str, os.PathLike]

# The longest maze episode (FO, 101 moves) is about 23 kB; 1 MiB leaves room for long-text tasks while keeping a
# malformed multi-gigabyte line from being read whole.
MAX_LINE_BYTES = 1 << 20

EPISODE_FIELDS = ("turns", "done", "meta")
TURN_FIELDS = ("text", "is_action", "reward")

# Not UTF-8 JSONL at all: a clearer message than a decoding error on line 1.
_COMPRESSED_MAGIC = {b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz", b"\x28\xb5\x2f\xfd": "zstd",
                     b"PK\x03\x04": "zip"}
# UTF-32 first: its little-endian mark starts with UTF-16's.
_BYTE_ORDER_MARKS = {codecs.BOM_UTF32_LE: "UTF-32", codecs.BOM_UTF32_BE: "UTF-32", codecs.BOM_UTF16_LE: "UTF-16",
                     codecs.BOM_UTF16_BE: "UTF-16", codecs.BOM_UTF8: "UTF-8 with a byte-order mark"}
# C0 controls but \t and \n, DEL, C1 controls, and lone surrogates (which `json.loads` lets through).
_BAD_CHARACTER = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


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
    """Stream episodes to `path` (written to a temporary file, then renamed: a crash never leaves half a file,
    and an exception, Ctrl-C included, removes the temporary file)."""
    count = 0
    with atomic_open(path, "w") as f:
        for episode in episodes:
            f.write(episode_to_json(episode) + "\n")
            count += 1
    return count


def _load_json(line: str, where: str) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError as e:
        raise DatasetError(f"{where}: invalid JSON ({e.msg} at column {e.colno})") from None
    except RecursionError:
        raise DatasetError(f"{where}: invalid episode: JSON nested too deeply") from None
    except ValueError:  # the only other error json.loads raises: an integer beyond Python's int-string limit
        raise DatasetError(
            f"{where}: invalid episode: a number with more than {sys.get_int_max_str_digits()} digits"
        ) from None


def _reward(value: Any) -> Optional[float]:
    """The reward as a finite float, or None when it is not one (booleans, strings, NaN, 400-digit ints)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        reward = float(value)
    except OverflowError:
        return None
    return reward if math.isfinite(reward) else None


def _shorten(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _check_fields(obj: dict, required: Sequence[str], allowed: Sequence[str], where: str, what: str) -> None:
    """The first required field `obj` lacks, then its fields outside `allowed`, each refused in one line; `what`
    is the kind of object (an episode, a turn), named with its fields."""
    missing = next((key for key in required if key not in obj), None)
    if missing:
        raise DatasetError(f"{where}: missing field '{missing}'")
    unknown = sorted(set(obj) - set(allowed))
    if unknown:
        extra = " (put extra information in meta)" if what == "an episode" else ""
        raise DatasetError(
            f"{where}: unknown field(s) {', '.join(map(repr, unknown))}; {what} has {', '.join(allowed)}{extra}"
        )


def _check_bool(value: Any, field: str) -> None:
    if not isinstance(value, bool):
        raise DatasetError(f"{field} must be true or false, got {value!r}")


def _check_envelope(obj: Any, where: str) -> dict:
    """Top level and meta; returns meta."""
    if not isinstance(obj, dict):
        raise DatasetError(f"{where}: expected a JSON object with 'turns' and 'done', got {type(obj).__name__}")
    _check_fields(obj, ("turns", "done"), EPISODE_FIELDS, where, "an episode")
    _check_bool(obj["done"], f"{where}: field 'done'")
    meta = obj.get("meta", {})
    if not isinstance(meta, dict):
        raise DatasetError(f"{where}: field 'meta' must be an object, got {type(meta).__name__}")
    if "success" in meta:
        _check_bool(meta["success"], f"{where}: meta.success")
    if not isinstance(obj["turns"], list) or not obj["turns"]:
        raise DatasetError(f"{where}: field 'turns' must be a non-empty list")
    return meta


def _check_text(text: Any, is_action: bool, field: str) -> None:
    if not isinstance(text, str) or not text:
        raise DatasetError(f"{field} must be a non-empty string, got {text!r}")
    bad = _BAD_CHARACTER.search(text)
    if bad:
        char, column = bad.group(), bad.start() + 1
        if char == "\r":
            raise DatasetError(f"{field}: carriage return (\\r) at character {column}; turns end with \\n only")
        raise DatasetError(
            f"{field}: control character U+{ord(char):04X} at character {column}; only \\n and \\t are allowed"
        )
    if is_action and not text.endswith(END_OF_TURN):
        raise DatasetError(f"{field}: an action must end with its end-of-turn newline, got {_shorten(repr(text))}")
    if is_action and END_OF_TURN in text[:-1]:
        raise DatasetError(
            f"{field}: an action is one line; the newline at character {text.index(END_OF_TURN) + 1} would end "
            "the turn early"
        )


def _parse_turn(t: Any, i: int, where: str) -> Turn:
    field = f"{where}: turns[{i}]"
    if not isinstance(t, dict):
        raise DatasetError(f"{field} must be an object")
    _check_fields(t, ("text", "is_action"), TURN_FIELDS, field, "a turn")
    _check_bool(t["is_action"], f"{field}.is_action")
    _check_text(t["text"], t["is_action"], f"{field}.text")
    reward = _reward(t.get("reward", 0.0))
    if reward is None:
        raise DatasetError(f"{field}.reward must be a finite number, got {_shorten(repr(t['reward']))}")
    if not t["is_action"] and reward != 0:
        raise DatasetError(f"{field}.reward is {reward} on an observation; rewards belong to actions")
    return Turn(t["text"], t["is_action"], reward)


def parse_episode(line: str, where: str) -> Episode:
    """Parse and validate one JSONL line (the rules in the module docstring); `where` is `file:line`."""
    obj = _load_json(line, where)
    meta = _check_envelope(obj, where)
    turns: list[Turn] = []
    running_return = 0.0
    for i, raw in enumerate(obj["turns"]):
        turn = _parse_turn(raw, i, where)
        if i == 0 and turn.is_action:
            raise DatasetError(f"{where}: turns[0]: the first turn is an action; an episode starts with an observation")
        if turns and turn.is_action == turns[-1].is_action:
            kind = "actions" if turn.is_action else "observations"
            raise DatasetError(f"{where}: turns[{i}]: two {kind} in a row; observations and actions alternate")
        running_return += turn.reward
        if not math.isfinite(running_return):
            raise DatasetError(f"{where}: turns[{i}].reward: the episode's return overflows to {running_return}")
        turns.append(turn)
    if not any(t.is_action for t in turns):
        raise DatasetError(f"{where}: field 'turns' has no action turn, so there is nothing to learn from")
    return Episode(turns, obj["done"], meta, source=where)


def _check_file_start(f: BinaryIO, path: Path) -> None:
    head = f.peek(8)[:8]
    for magic, kind in _COMPRESSED_MAGIC.items():
        if head.startswith(magic):
            raise DatasetError(f"{path}:1: the file is {kind}-compressed; decompress it (episodes are UTF-8 JSONL)")
    for mark, kind in _BYTE_ORDER_MARKS.items():
        if head.startswith(mark):
            raise DatasetError(
                f"{path}:1: the file is {kind} (it starts with a byte-order mark); save it as UTF-8 without one"
            )


def _decode_line(raw: bytes, where: str, max_line_bytes: int) -> str:
    if len(raw) > max_line_bytes:
        raise DatasetError(
            f"{where}: the line is longer than {max_line_bytes} bytes (the limit, max_line_bytes); "
            "an episode this large is almost surely not one"
        )
    if b"\x00" in raw:
        raise DatasetError(f"{where}: NUL byte at byte {raw.index(0) + 1}: not UTF-8 text (UTF-16 without a BOM?)")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DatasetError(
            f"{where}: not UTF-8 text (byte 0x{raw[e.start]:02x} at byte {e.start + 1} of the line); "
            "episode files are UTF-8 JSONL"
        ) from None


def iter_lines(path: PathLike, max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[tuple[str, str]]:
    """Yield (`file:line`, text) for each non-blank line, reading at most `max_line_bytes` + 1 bytes at a time."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such dataset file")
    try:
        f = open(path, "rb")
    except OSError as e:
        raise DatasetError(f"{path}: cannot read the dataset file ({e.strerror})") from None
    with f:
        _check_file_start(f, path)
        lineno = 0
        while raw := f.readline(max_line_bytes + 1):
            lineno += 1
            where = f"{path}:{lineno}"
            # A line cut at the limit has no newline yet: too long, whatever follows.
            if len(raw) > max_line_bytes or raw.strip():
                yield where, _decode_line(raw, where, max_line_bytes)


def iter_episodes(path: PathLike, max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[Episode]:
    """Yield validated episodes from a JSONL file; blank lines are skipped, an empty file is an error."""
    count = 0
    for where, line in iter_lines(path, max_line_bytes):
        count += 1
        yield parse_episode(line, where)
    if count == 0:
        raise DatasetError(f"{path}:1: the file holds no episodes")


def read_episodes(path: PathLike, max_line_bytes: int = MAX_LINE_BYTES) -> list[Episode]:
    return list(iter_episodes(path, max_line_bytes))
