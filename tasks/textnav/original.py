"""The original LMRL-Gym Text-Nav data records, read by `lmrl data textnav --from-original FILE` (`TaskSpec.
read_original`, see `lmrl_lightning.data.original`: a `.json` file holds an array of records, any other file one
record a line). The original's `collect_data.py` writes:

    {"text_history": [obs_0, command_1, obs_1, ..., command_n, obs_n], "rewards": [r_1, ..., r_n],
     "dones": [d_1, ..., d_n]}

Observations and commands alternate (stripped strings); reward and done k belong to command k (the reward is
TextWorld's score after the command: 1 on the winning command, else 0). A record with one reward and done flag per
text (0 on observations, `data.original.read_text_history`'s layout) is read too. Each record becomes one episode:
every text ends with the end-of-turn newline, observations get this task's whitespace tidying (lines stripped, runs
of blank lines merged, as the env's), the episode is done when its last flag is, and meta records `success` (the
last command earned 1) and `source: "lmrl-gym"`. The episode then passes the validation of every dataset line, so
a bad record is refused with one line naming the file, the line (or array record) and the field.
"""
from __future__ import annotations

import math
from typing import Any, Iterator

from lmrl_lightning.data.jsonl import DatasetError
from lmrl_lightning.data.original import validated_episode
from lmrl_lightning.env import END_OF_TURN, Episode, Turn
from lmrl_lightning.tasks.textnav.env import tidy_whitespace

RECORD_FIELDS = ("text_history", "rewards", "dones")


def tidy_observation(text: str) -> str:
    """An original observation in this task's format: lines stripped, blank-line runs merged, one newline."""
    return tidy_whitespace(text) + END_OF_TURN


def read_original_textnav(record: Any, where: str) -> Iterator[Episode]:
    """One original record (module docstring) as a validated episode; `where` is `file:line` for messages."""
    if not isinstance(record, dict):
        raise DatasetError(f"{where}: expected an object with {', '.join(RECORD_FIELDS)}, got {type(record).__name__}")
    missing = next((f for f in RECORD_FIELDS if f not in record), None)
    if missing:
        raise DatasetError(f"{where}: missing field '{missing}'")
    unknown = sorted(set(record) - set(RECORD_FIELDS))
    if unknown:
        raise DatasetError(f"{where}: unknown field(s) {', '.join(map(repr, unknown))}; a record has "
                           f"{', '.join(RECORD_FIELDS)}")
    texts, rewards, dones = (record[f] for f in RECORD_FIELDS)
    for field, value in zip(RECORD_FIELDS, (texts, rewards, dones)):
        if not isinstance(value, list):
            raise DatasetError(f"{where}: field '{field}' must be a list, got {type(value).__name__}")
    if len(texts) < 3 or len(texts) % 2 == 0:
        raise DatasetError(f"{where}: field 'text_history' must hold observation, command, observation, ... "
                           f"(an odd number, at least 3), got {len(texts)} texts")
    n_commands = len(texts) // 2
    per_text = len(rewards) == len(texts)  # read_text_history's layout: every text's reward, 0 on observations
    for field, value in (("rewards", rewards), ("dones", dones)):
        if len(value) != (len(texts) if per_text else n_commands):
            raise DatasetError(f"{where}: field '{field}' has {len(value)} entries for {n_commands} commands")
    command_rewards = rewards[1::2] if per_text else rewards
    command_dones = dones[1::2] if per_text else dones
    for k, text in enumerate(texts):
        if not isinstance(text, str):
            raise DatasetError(f"{where}: text_history[{k}] must be a string, got {type(text).__name__}")
    for k, done in enumerate(dones):
        if not isinstance(done, bool):
            raise DatasetError(f"{where}: dones[{k}] must be true or false, got {done!r}")
    for k, done in enumerate(command_dones[:-1]):
        if done:
            raise DatasetError(f"{where}: dones[{2 * k + 1 if per_text else k}] is true but the episode goes on")
    for k, reward in enumerate(rewards):
        if isinstance(reward, bool) or not isinstance(reward, (int, float)) or not math.isfinite(reward):
            raise DatasetError(f"{where}: rewards[{k}] must be a finite number, got {reward!r}")
        if reward not in (0, 1):  # TextWorld's score: a file of another task is refused here
            raise DatasetError(f"{where}: rewards[{k}] is {reward}; Text-Nav rewards are 0 or 1")
        if per_text and k % 2 == 0 and reward != 0:
            raise DatasetError(f"{where}: rewards[{k}] is {reward} on an observation; rewards belong to commands")
    turns = []
    for k, text in enumerate(texts):
        if k % 2 == 0:
            turns.append(Turn(tidy_observation(text), False))
        else:
            turns.append(Turn(text.strip() + END_OF_TURN, True, float(command_rewards[k // 2])))
    meta = {"success": command_rewards[-1] == 1, "source": "lmrl-gym"}
    yield validated_episode(turns, dones[-1], meta, where)
