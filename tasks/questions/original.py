"""The original LMRL-Gym's Twenty Questions files (`train.json` / `eval.json`, spec §2.6): a JSON array of
conversations `{"lines": ["Is it an animal? No.", ...], "correct": bool, "word": [variants] or "word"}`.

Each line splits at its last "? " into the question (an action, reward -1, given its "?" back and a newline) and the
answer (an observation). A correct conversation's last question earns 0 instead. As in the original, a conversation
of fewer than 20 lines that is not correct was cut short: it is recorded with `done=False`.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from lmrl_lightning.data.jsonl import DatasetError
from lmrl_lightning.data.original import validated_episode
from lmrl_lightning.env import Episode, Turn
from lmrl_lightning.tasks.questions.game import CORRECT_GUESS_REWARD, INITIAL_TEXT, MAX_QUESTIONS, QUESTION_REWARD


def split_line(line: str, where: str) -> tuple[str, str]:
    """("Is it an animal?", "No.") of "Is it an animal? No." (split at the last "? ")."""
    question, separator, answer = line.rpartition("? ")
    if not separator:
        raise DatasetError(f"{where}: a line must read 'question? answer', got {line!r:.80}")
    return question + "?", answer


def read_original_conversation(record: Any, where: str) -> Iterator[Episode]:
    """One conversation of the original's 20Q files as an episode (meta: `word`, `success`)."""
    if not isinstance(record, dict):
        raise DatasetError(f"{where}: expected an object with fields 'lines', 'correct', 'word', got {type(record).__name__}")
    for field, kinds in (("lines", list), ("correct", bool), ("word", (list, str))):
        if field not in record:
            raise DatasetError(f"{where}: missing field '{field}'")
        if not isinstance(record[field], kinds):
            raise DatasetError(f"{where}: field '{field}' has the wrong type ({type(record[field]).__name__})")
    lines, correct = record["lines"], record["correct"]
    if not lines:
        raise DatasetError(f"{where}: field 'lines' is empty")
    if len(lines) > MAX_QUESTIONS:
        raise DatasetError(f"{where}: field 'lines' has {len(lines)} questions, more than {MAX_QUESTIONS}")
    word = record["word"] if isinstance(record["word"], list) else [record["word"]]
    if not word or not all(isinstance(w, str) and w for w in word):
        raise DatasetError(f"{where}: field 'word' must name the object (a non-empty string or list of strings)")
    turns = [Turn(INITIAL_TEXT, False)]
    for i, line in enumerate(lines):
        if not isinstance(line, str):
            raise DatasetError(f"{where}: lines[{i}] must be a string, got {type(line).__name__}")
        question, answer = split_line(line, f"{where}: lines[{i}]")
        turns += [Turn(question + "\n", True, QUESTION_REWARD), Turn(answer + "\n", False)]
    if correct:
        turns[-2] = Turn(turns[-2].text, True, CORRECT_GUESS_REWARD)
    done = correct or len(lines) >= MAX_QUESTIONS
    yield validated_episode(turns, done, {"word": word[0], "success": correct}, where)
