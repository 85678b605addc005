"""The question grammar the knowledge-base oracles understand (shared by Twenty Questions and Guess My City).

A question is reduced to a key of words before it is looked up, so that these differences never matter:
* case and punctuation: `IS IT AN ANIMAL`, `is it an animal?!`, `Is it an animal .` are one question;
  hyphens and apostrophes separate words (`man-made` = `man made`);
* the subject right after the first word: `it`, `this`, `that`, `they`, `the object`, `this object`, `the thing`,
  ... (a task names its own aliases: Guess My City accepts `your city`, `the city you are from`, ...);
* the articles `a`, `an` and `the`, dropped everywhere: `Is it an animal?` = `Is it animal?`;
* accents: `São Paulo` = `Sao Paulo`, `İzmir` = `Izmir`;
* a task's trailing place phrases, dropped at the end (Guess My City: `What is the weather like in your city?` =
  `What is the weather like?`).
Everything else must match one of the task's listed phrasings word for word; a misspelt word, an extra word, a
question of more than `MAX_WORDS` words or an empty text matches nothing, and the oracle gives its fallback answer.

A guess names one hidden thing: one of the task's guess prefixes, then `<name>`, one of the thing's variants or
aliases. Twenty Questions' prefixes are `<is|are> <subject> [some]` and a name may be singular or plural (`Is it a
cat?`, `Are they cats?`, `Is the object a pair of shoes?`); Guess My City's are `Is it`, `Are you from`, `Do you live
in`, ... with names as written (`Is the city you are from Seoul?`). A guess must be exactly that: `Is it a cat or a
dog?` or `Is it a kind of cat?` are not guesses.
"""
from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Optional

# The original's asker post-processing turned questions of more than 40 words into its invalid question.
MAX_WORDS = 40
# Longer texts are refused before they are split into words (the environment must answer a 1M-character action).
MAX_CHARS = 400
ARTICLES = frozenset({"a", "an", "the"})
WORD = re.compile(r"[a-z0-9]+")
# Twenty Questions' guesses: `Is it a cat?`, `Are they cats?`, `Is it some peas?` (any subject in place of it/they).
DEFAULT_GUESS_PREFIXES = ("Is it", "Are they", "Is it some", "Are they some")

Key = tuple[str, ...]


def fold(text: str) -> str:
    """`text` lower-cased without accents (`São Paulo` -> `sao paulo`, `İzmir` -> `izmir`)."""
    if not text.isascii():
        text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    return text.lower()


def words(text: str) -> list[str]:
    """Lower-case, accent-free words of `text`, hyphens and apostrophes splitting them (`man-made` -> `man`,
    `made`)."""
    return WORD.findall(fold(text))


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


def name_forms(name: str, plurals: bool = True) -> set[Key]:
    """The word keys of a thing's name, articles dropped, with `plurals` its last word singular or plural (`Pair of
    shoes` -> `pair of shoes`; `Soccer ball` -> `soccer ball`, `soccer balls`)."""
    tokens = [w for w in words(name) if w not in ARTICLES]
    if not tokens:
        return set()
    if not plurals:
        return {tuple(tokens)}
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
        guess_prefixes: what a guess says before the name, written with any subject (`Is it`, `Are you from`).
        trailing: place phrases dropped at the end of a question (`in your city`, `there`).
        plural_names: whether a guess may name a thing in the plural (`Are they cats?`).
    """

    def __init__(
        self,
        phrasings: Mapping[str, Mapping[str, Sequence[str]]],
        names: Sequence[Sequence[str]],
        subjects: Sequence[str],
        *,
        guess_prefixes: Sequence[str] = DEFAULT_GUESS_PREFIXES,
        trailing: Sequence[str] = (),
        plural_names: bool = True,
    ) -> None:
        # Subjects by length, longest first, so that "the object" wins over a shorter alias that starts it.
        self.canonical_subject = tuple(words(subjects[0]))
        by_length: dict[int, set[Key]] = {}
        for subject in subjects:
            by_length.setdefault(len(words(subject)), set()).add(tuple(words(subject)))
        self.subjects = sorted(by_length.items(), reverse=True)
        # Trailing phrases longest first, so that "in your city" goes whole before a shorter one could match.
        phrases = {tuple(w for w in words(t) if w not in ARTICLES) for t in trailing}
        self.trailing = sorted(phrases, key=len, reverse=True)
        self.guess_prefixes: list[Key] = []
        for prefix in guess_prefixes:
            key = self.key(prefix)
            if key is None:
                raise ValueError(f"guess prefix {prefix!r} is empty")
            self.guess_prefixes.append(key)
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
                for form in name_forms(name, plural_names):
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
        for phrase in self.trailing:
            if len(key) > len(phrase) + 1 and key[-len(phrase):] == phrase:
                key = key[:-len(phrase)]
                break
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
        for prefix in self.guess_prefixes:
            if key[:len(prefix)] == prefix and key[len(prefix):] in self.guesses:
                return self.guesses[key[len(prefix):]]
        return None
