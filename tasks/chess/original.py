"""The original LMRL-Gym chess and endgame data files (spec §2.4, §2.5), read by `lmrl data chess|endgames
--from-original FILE`:

- BC files (`train_bc.jsonl`, `complete_background_generated/train.jsonl`): one move per line,
  `{"from_state": FEN, "action": SAN, ...}`, read as a one-move episode without reward or end (other fields,
  such as the opponent's reply, are kept in meta);
- RL files (`train.jsonl` of the endgames, `train_trajectories.jsonl`): one game per line, a list of
  `{"state": FEN, "action": SAN, "reward": r, "done": d}`.

States and moves become this kit's texts (`env.spaced`); a state that is no FEN is refused with its line and field.
"""
from __future__ import annotations

from typing import Any, Iterator

import chess

from lmrl_lightning.data.jsonl import DatasetError
from lmrl_lightning.data.original import transitions_reader, validated_episode
from lmrl_lightning.env import Episode, Turn
from lmrl_lightning.tasks.chess.env import spaced


def observation_text(fen: str, where: str = "") -> str:
    """The observation of a FEN string; refuses text that python-chess cannot read as a position."""
    try:
        chess.Board(fen)
    except ValueError as e:
        raise DatasetError(f"{where}: not a FEN ({e}): {fen[:60]!r}") from None
    return spaced(fen)


def _check_san(san: str, where: str) -> str:
    if not san.strip() or "\n" in san:
        raise DatasetError(f"{where}: a move must be one line of SAN, got {san[:40]!r}")
    return spaced(san.strip())


def read_original_chess(record: Any, where: str) -> Iterator[Episode]:
    """One record of an original chess/endgame file: a BC move (object) or an RL game (list of transitions)."""
    if isinstance(record, list):
        read_game = transitions_reader(lambda fen: observation_text(fen, f"{where}: field 'state'"),
                                       lambda san: _check_san(san, f"{where}: field 'action'"))
        yield from read_game(record, where)
        return
    if not isinstance(record, dict) or "from_state" not in record or "action" not in record:
        raise DatasetError(f"{where}: expected a BC move {{\"from_state\", \"action\"}} or a list of transitions "
                           "{\"state\", \"action\", \"reward\", \"done\"}")
    fen, san = record["from_state"], record["action"]
    for field, value in (("from_state", fen), ("action", san)):
        if not isinstance(value, str):
            raise DatasetError(f"{where}: field '{field}' must be a string, got {type(value).__name__}")
    turns = [Turn(observation_text(fen, f"{where}: field 'from_state'"), False),
             Turn(_check_san(san, f"{where}: field 'action'"), True, 0.0)]
    meta = {k: v for k, v in record.items() if k not in ("from_state", "action")}
    yield validated_episode(turns, False, meta, where)
