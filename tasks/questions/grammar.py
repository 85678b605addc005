"""The question grammar the knowledge-base oracles understand (shared by Twenty Questions and Guess My City).

A question is reduced to a key of words before it is looked up, so that these differences never matter:
* case and punctuation: `IS IT AN ANIMAL`, `is it an animal?!`, `Is it an animal .` are one question;
  hyphens and apostrophes separate words (`man-made` = `man made`);
* the subject right after the first word: `it`, `this`, `that`, `they`, `the object`, `this object`, `the thing`,
  ... (a task names its own aliases: Guess My City accepts `your city`, `the city you are from`, ...);
* the articles `a`, `an` and `the`, dropped everywhere: `Is it an animal?` = `Is it animal?`.
Everything else must match one of the task's listed phrasings word for word; a misspelt word, an extra word, a
question of more than `MAX_WORDS` words or an empty text matches nothing, and the oracle gives its fallback answer.

A guess names one hidden thing: `<is|are> <subject> [some] <name>`, where `<name>` is one of the thing's variants
or aliases, singular or plural (`Is it a cat?`, `Are they cats?`, `Is the object a pair of shoes?`). A guess must be
exactly that: `Is it a cat or a dog?` or `Is it a kind of cat?` are not guesses.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Optional

# The original's asker post-processing turned questions of more than 40 words into its invalid question.
MAX_WORDS = 40
# Longer texts are refused before they are split into words (the environment must answer a 1M-character action).
MAX_CHARS = 400
ARTICLES = frozenset({"a", "an", "the"})
WORD = re.compile(r"[a-z0-9]+")
GUESS_VERBS = ("is", "are")

Key = tuple[str, ...]


def words(text: str) -> list[str]:
    """Lower-case words of `text`, hyphens and apostrophes splitting them (`man-made` -> `man`, `made`)."""
    return WORD.findall(text.lower().replace("\u2019", "'"))


def plural_forms(word: str) -> set[str]:
    """`word` and the plurals a person might write for it (cat -> cats, box -> boxes, berry -> berries,
    knife -> knives); a word that already ends in s stays as it is."""
    forms = {word}
    if word.endswith("s"):
        return forms
    forms.add(word + "s")
    if word.endswith(("sh", "ch", "x", "z", "o")):
        forms.add(word + "es")
    if len(word) > 1 and word.endswith("y") and word[-2] not in "aeiou":
        forms.add(word[:-1] + "ies")
    if word.endswith("fe"):
        forms.add(word[:-2] + "ves")
    elif word.endswith("f"):
        forms.add(word[:-1] + "ves")
    return forms


def name_forms(name: str) -> set[Key]:
    """The word keys of a thing's name, its last word singular or plural, articles dropped (`Pair of shoes` ->
    `pair of shoes`; `Soccer ball` -> `soccer ball`, `soccer balls`)."""
    tokens = [w for w in words(name) if w not in ARTICLES]
    if not tokens:
        return set()
    return {tuple(tokens[:-1]) + (last,) for last in plural_forms(tokens[-1])}


@dataclass(frozen=True)
class Parsed:
    """What a question asks: `attribute` (with `positive` False for a phrasing that asks the opposite, e.g. "Is it
    natural?" for man_made), a `guess` (the index of the named thing), or neither (outside the grammar)."""

    attribute: Optional[str] = None
    positive: bool = True
    guess: Optional[int] = None

    @property
    def understood(self) -> bool:
        return self.attribute is not None or self.guess is not None


NOT_UNDERSTOOD = Parsed()


class QuestionGrammar:
    """Parses questions into `Parsed`: the listed phrasings of each attribute and the guesses of every thing.

    Args:
        phrasings: attribute -> {"yes": [phrasings asking it], "no": [phrasings asking its opposite]}, each
            phrasing written with the subject "it" (or another of `subjects`).
        names: per hidden thing, its names (variants, aliases) that a guess may use.
        subjects: the subject phrases accepted right after a question's first word; the first is canonical.
    """

    def __init__(
        self,
        phrasings: Mapping[str, Mapping[str, Sequence[str]]],
        names: Sequence[Sequence[str]],
        subjects: Sequence[str],
    ) -> None:
        # Subjects by length, longest first, so that "the object" wins over a shorter alias that starts it.
        self.canonical_subject = tuple(words(subjects[0]))
        by_length: dict[int, set[Key]] = {}
        for subject in subjects:
            by_length.setdefault(len(words(subject)), set()).add(tuple(words(subject)))
        self.subjects = sorted(by_length.items(), reverse=True)
        self.attributes: dict[Key, Parsed] = {}
        for attribute, forms in phrasings.items():
            for polarity, texts in forms.items():
                if polarity not in ("yes", "no"):
                    raise ValueError(f"phrasings of {attribute!r}: unknown polarity {polarity!r} (yes or no)")
                for text in texts:
                    self._add(self.key(text), Parsed(attribute, polarity == "yes"), text)
        self.guesses: dict[Key, int] = {}
        for index, thing_names in enumerate(names):
            for name in thing_names:
                for form in name_forms(name):
                    if self.guesses.setdefault(form, index) != index:
                        raise ValueError(f"name {name!r} ({' '.join(form)}) names two things")
        for key in self.attributes:
            if self._guessed(key) is not None:
                raise ValueError(f"phrasing {' '.join(key)!r} is also a guess")

    def _add(self, key: Optional[Key], parsed: Parsed, text: str) -> None:
        if key is None:
            raise ValueError(f"phrasing {text!r} is too long or empty")
        if self.attributes.setdefault(key, parsed) != parsed:
            raise ValueError(f"phrasing {text!r} is listed for two attributes")

    def key(self, question: str) -> Optional[Key]:
        """The word key of `question`: lower-case words, the subject canonical, articles dropped; None for an
        empty or over-long question."""
        if len(question) > MAX_CHARS:
            return None
        tokens = words(question)
        if not tokens or len(tokens) > MAX_WORDS:
            return None
        rest = tokens[1:]
        for length, subjects in self.subjects:
            if tuple(rest[:length]) in subjects:
                rest = [*self.canonical_subject, *rest[length:]]
                break
        key = tuple(w for w in [tokens[0], *rest] if w not in ARTICLES)
        return key or None

    def parse(self, question: str) -> Parsed:
        key = self.key(question)
        if key is None:
            return NOT_UNDERSTOOD
        found = self.attributes.get(key)
        if found is not None:
            return found
        guessed = self._guessed(key)
        return NOT_UNDERSTOOD if guessed is None else Parsed(guess=guessed)

    def _guessed(self, key: Key) -> Optional[int]:
        subject = len(self.canonical_subject)
        if key[0] not in GUESS_VERBS or key[1: 1 + subject] != self.canonical_subject:
            return None
        named = key[1 + subject:]
        return self.guesses.get(named[1:] if named[:1] == ("some",) else named)
