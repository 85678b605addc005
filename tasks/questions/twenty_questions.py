"""Twenty Questions (spec §2.6): the 158 objects, their fact table, the yes/no grammar and the oracle prompt.

Objects: the original's `DEFAULT_OBJECT_DICT` (github abdulhaim/LMRL-Gym, `llm_rl_scripts/twenty_questions/env/
data.py`), carried over as data: 17 categories, 158 objects, synonyms separated by ";" ("Airplane;Plane").

Facts (`data/twenty_questions_facts.csv`, written for this kit): one row per object, its category and 165 yes/no
attributes that people's questions ask about (category membership, alive, edible, electronic, sizes against a
breadbox / a person / a house, materials, colours, uses, parts, where it is found, how it is worn, ...). Each value
is the most typical case, as the original's GPT-3.5 oracle was told ("If the answer could be both, answer with the
most typical scenario"): a cat is bigger than a breadbox, a lawn mower runs on fuel (an engine, not electricity),
a scooter is a kick scooter. No two objects share a row, so questions alone can tell every object apart.

Grammar (`data/twenty_questions_grammar.json`): each attribute's phrasings ("yes": asks it; "no": asks its
opposite, e.g. "Is it natural?" for man_made), parsed as `grammar.QuestionGrammar` describes (case, punctuation,
articles and the subject - it, this, the object, ... - do not matter). The oracle answers "Yes." or "No."; a question
outside the grammar gets "No.", the original's answer to anything it could not read.

Correct guess: the question is a guess of the hidden object (`Is it a cat?`, `Is the object a pair of shoes?`,
`Are they shoes?`: a guess verb, a subject, optionally "some", then one of the object's variants, singular or plural,
with or without an article) and the oracle said "Yes." - the original's rule (answer "Yes." and `is_done`) without
NLTK's tagger, which needs a download.
"""
from __future__ import annotations

import csv
import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lmrl_lightning.errors import LMRLError
from lmrl_lightning.tasks.questions.game import QuestionGame
from lmrl_lightning.tasks.questions.grammar import Parsed, QuestionGrammar

DATA_DIR = Path(__file__).resolve().parent / "data"
FACTS_FILE = DATA_DIR / "twenty_questions_facts.csv"
GRAMMAR_FILE = DATA_DIR / "twenty_questions_grammar.json"

YES, NO = "Yes.", "No."
# The original's sentinel for an unusable question; its oracle answers it "No.".
INVALID_QUESTION = "Is this a valid question?\n"
SUBJECTS = ("it", "this", "that", "they", "the object", "this object", "your object", "the thing", "this thing",
            "the item", "this item", "the word", "your word")
# The original's oracle prompt (spec §2.6); the object is written as its variants, "(Airplane, Plane)".
ORACLE_PROMPT = "Answer the question about the object truthfully.\nobject: {object}\nquestion: {question}\nanswer (yes or no): "
YES_OR_NO = re.compile(r"^\s*(yes|no)\b")
# The spec's 17 categories and their sizes (Table of §2.6); the data file must match them.
CATEGORY_SIZES = {
    "Sports": 10, "Animals": 10, "Fruits": 10, "Vehicles": 10, "Clothes": 11, "Electronics": 10,
    "Musical Instruments": 10, "Furniture": 10, "Office Supplies": 14, "Vegetables": 10, "Art": 7,
    "Kitchen Tools": 10, "Nature": 11, "Toys": 5, "Jewelry": 9, "Garden Supplies": 5, "Tools": 6,
}


@dataclass(frozen=True)
class WordVariants:
    """An object and its synonyms; `str()` is the original's "(Airplane, Plane)"."""

    category: str
    variants: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.variants[0]

    def __str__(self) -> str:
        return f"({', '.join(self.variants)})"


def read_fact_table(path: Path = FACTS_FILE) -> tuple[tuple[WordVariants, ...], tuple[str, ...], np.ndarray]:
    """Objects, attribute names and the boolean fact matrix (objects x attributes) of a facts CSV (header
    `category,object,<attribute>...`; `object` is the variants joined by ";"; values 0 or 1). Bad content is a
    one-line `LMRLError` naming the file, line and field."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows or rows[0][:2] != ["category", "object"] or len(rows[0]) < 3:
        raise LMRLError(f"{path}:1: the header must be category,object,<attribute>,...")
    attributes = tuple(rows[0][2:])
    objects, facts = [], []
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(rows[0]):
            raise LMRLError(f"{path}:{line}: {len(row)} fields, the header has {len(rows[0])}")
        variants = tuple(v.strip() for v in row[1].split(";"))
        if not all(variants):
            raise LMRLError(f"{path}:{line}: field 'object' has an empty variant: {row[1]!r}")
        for attribute, value in zip(attributes, row[2:]):
            if value not in ("0", "1"):
                raise LMRLError(f"{path}:{line}: field {attribute!r} must be 0 or 1, got {value!r}")
        objects.append(WordVariants(row[0], variants))
        facts.append([value == "1" for value in row[2:]])
    return tuple(objects), attributes, np.array(facts, dtype=bool)


def read_phrasings(path: Path = GRAMMAR_FILE) -> dict[str, dict[str, list[str]]]:
    """attribute -> {"yes": [...], "no": [...]} from the grammar JSON file."""
    try:
        phrasings = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise LMRLError(f"{path}: invalid JSON ({e})") from None
    for attribute, forms in phrasings.items():
        if not isinstance(forms, dict) or not forms.get("yes") or set(forms) - {"yes", "no"}:
            raise LMRLError(f"{path}: attribute {attribute!r} needs a non-empty 'yes' list (and optionally 'no')")
    return phrasings


def guess_question(name: str, subject: str = "it") -> str:
    """`Is it a cat?` / `Is it an apple?` / `Is it pants?` (plural names take no article)."""
    words = [w if w.isupper() else w.lower() for w in name.split()]
    plural = words[-1].endswith("s") and not words[-1].endswith(("ss", "us"))
    article = "" if plural else ("an " if words[0][0] in "aeiou" else "a ")
    return f"Is {subject} {article}{' '.join(words)}?"


class TwentyQuestionsGame(QuestionGame):
    """The 158 objects, their facts and the yes/no knowledge-base oracle."""

    def __init__(self, facts_file: Path = FACTS_FILE, grammar_file: Path = GRAMMAR_FILE) -> None:
        self.objects, self.attributes, self.facts = read_fact_table(facts_file)
        self.phrasings = read_phrasings(grammar_file)
        if set(self.phrasings) != set(self.attributes):
            missing = sorted(set(self.attributes) ^ set(self.phrasings))
            raise LMRLError(f"{grammar_file}: attributes differ from {facts_file.name}'s columns: {missing[:5]}")
        self.column = {a: i for i, a in enumerate(self.attributes)}
        self.grammar = QuestionGrammar(self.phrasings, [o.variants for o in self.objects], SUBJECTS)
        self._names = tuple(o.name for o in self.objects)
        self._guess_texts = tuple(
            tuple(guess_question(v) for v in o.variants) + tuple(guess_question(v, "the object") for v in o.variants)
            for o in self.objects
        )

    @property
    def names(self) -> tuple[str, ...]:
        return self._names

    def holds(self, index: int, parsed: Parsed) -> bool:
        """The truth of a question the grammar understood, about object `index`."""
        if parsed.guess is not None:
            return parsed.guess == index
        return bool(self.facts[index, self.column[parsed.attribute]]) == parsed.positive

    def answer(self, index: int, parsed: Parsed) -> str:
        return YES if parsed.understood and self.holds(index, parsed) else NO

    def lm_prompt(self, index: int, question: str) -> str:
        return ORACLE_PROMPT.format(object=str(self.objects[index]), question=" ".join(question.split()))

    def read_completion(self, index: int, question: str, parsed: Parsed, completion: str) -> str:
        """The original's reading: "yes"/"no" at the start of the lower-cased completion, anything else "No."."""
        match = YES_OR_NO.match(completion.lower())
        return YES if match and match.group(1) == "yes" else NO

    def fallback_answer(self, index: int) -> str:
        return NO

    def guessed(self, index: int, parsed: Parsed, answer: str) -> bool:
        return parsed.guess == index and answer == YES


@functools.cache
def twenty_questions_game() -> TwentyQuestionsGame:
    """The shipped objects and facts, read once per process."""
    return TwentyQuestionsGame()
