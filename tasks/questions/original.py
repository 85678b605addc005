"""The original LMRL-Gym's question-game files: a JSON array of conversations.

Twenty Questions (`train.json` / `eval.json`, spec §2.6): `{"lines": ["Is it an animal? No.", ...], "correct": bool,
"word": [variants] or "word"}`; each line splits at its last "? " (the original's rule) into the question and the
answer.

Guess My City (spec §2.7): the same fields with `"word": "sao paulo,brazil"`, or as its data generator wrote them,
`{"conversation": [...], "done": bool, "word": ...}`. Its generator cut every question at its first "?", while the
free-form answers may ask back ("Have you heard of it? It is ..."), so a city line splits at its first "? ".

The question is an action (reward -1, given its "?" back and a newline), the answer an observation; a correct
conversation's last question earns 0 instead. As in the original, a conversation of fewer than 20 lines that is not
correct was cut short: it is recorded with `done=False`.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from lmrl_lightning.data.jsonl import DatasetError
from lmrl_lightning.data.original import validated_episode
from lmrl_lightning.env import Episode, Turn
from lmrl_lightning.tasks.questions.game import CORRECT_GUESS_REWARD, INITIAL_TEXT, MAX_QUESTIONS, QUESTION_REWARD


def split_line(line: str, where: str, first: bool = False) -> tuple[str, str]:
    """("Is it an animal?", "No.") of "Is it an animal? No." (split at the last "? ", or the first)."""
    question, separator, answer = line.partition("? ") if first else line.rpartition("? ")
    if not separator:
        raise DatasetError(f"{where}: a line must read 'question? answer', got {line!r:.80}")
    return question + "?", answer


def _checked(record: Any, where: str, fields: tuple[tuple[str, Any], ...]) -> None:
    if not isinstance(record, dict):
        names = ", ".join(f"'{name}'" for name, _ in fields)
        raise DatasetError(f"{where}: expected an object with fields {names}, got {type(record).__name__}")
    for field, kinds in fields:
        if field not in record:
            raise DatasetError(f"{where}: missing field '{field}'")
        if not isinstance(record[field], kinds):
            raise DatasetError(f"{where}: field '{field}' has the wrong type ({type(record[field]).__name__})")


def conversation_episode(lines: list, correct: bool, meta: dict[str, Any], where: str, first: bool = False) -> Episode:
    """The episode of a conversation's "question? answer" lines (see the module docstring)."""
    if not lines:
        raise DatasetError(f"{where}: the conversation is empty (no lines)")
    if len(lines) > MAX_QUESTIONS:
        raise DatasetError(f"{where}: the conversation has {len(lines)} questions, more than {MAX_QUESTIONS}")
    turns = [Turn(INITIAL_TEXT, False)]
    for i, line in enumerate(lines):
        if not isinstance(line, str):
            raise DatasetError(f"{where}: lines[{i}] must be a string, got {type(line).__name__}")
        question, answer = split_line(line, f"{where}: lines[{i}]", first)
        turns += [Turn(question + "\n", True, QUESTION_REWARD), Turn(answer + "\n", False)]
    if correct:
        turns[-2] = Turn(turns[-2].text, True, CORRECT_GUESS_REWARD)
    done = correct or len(lines) >= MAX_QUESTIONS
    return validated_episode(turns, done, {**meta, "success": correct}, where)


def read_original_conversation(record: Any, where: str) -> Iterator[Episode]:
    """One conversation of the original's 20Q files as an episode (meta: `word`, `success`)."""
    _checked(record, where, (("lines", list), ("correct", bool), ("word", (list, str))))
    word = record["word"] if isinstance(record["word"], list) else [record["word"]]
    if not word or not all(isinstance(w, str) and w for w in word):
        raise DatasetError(f"{where}: field 'word' must name the object (a non-empty string or list of strings)")
    last = record["lines"][-1] if record["lines"] else None
    if record["correct"] and isinstance(last, str) and not last.rstrip().endswith("? Yes."):
        # The oracle ends a won game by answering the guess "Yes."; anything else contradicts `correct`.
        raise DatasetError(f"{where}: field 'correct' is true but the last line is not answered 'Yes.' ({last!r:.80})")
    yield conversation_episode(record["lines"], record["correct"], {"word": word[0]}, where)


def read_original_city_conversation(record: Any, where: str) -> Iterator[Episode]:
    """One conversation of the original's Guess My City files as an episode (meta: `city`, our name of the city
    when it is one of ours, else the file's word; `success`)."""
    from lmrl_lightning.tasks.questions.guess_city import guess_city_game

    generated = isinstance(record, dict) and "conversation" in record
    lines, correct = ("conversation", "done") if generated else ("lines", "correct")
    _checked(record, where, ((lines, list), (correct, bool), ("word", (list, str))))
    word = record["word"][0] if isinstance(record["word"], list) and record["word"] else record["word"]
    if not isinstance(word, str) or not word.strip():
        raise DatasetError(f"{where}: field 'word' must name the city (\"sao paulo,brazil\")")
    city = guess_city_game().city_of_word(word)
    yield conversation_episode(record[lines], record[correct], {"city": city or word}, where, first=True)
