"""Rebuild answers.txt and guesses.txt (run once by a maintainer; the task never downloads anything).

    pip install wordfreq==3.1.1 english-words==2.0.2 && python make_lists.py

Words come from Webster's Second International Dictionary (1934, public domain) as shipped in the `web2`
list of the `english-words` package (MIT); only its lowercase entries, so proper nouns are out. The answers are
the 400 most frequent of them by `wordfreq` (Apache-2.0 code, CC-BY-SA-4.0 data; used only to rank), after
dropping inflected forms (plural -s, -ed, -ing of a dictionary word), as Wordle's answers are base forms, and a
short list of names and slurs. The guesses are every five-letter lowercase web2 word, the answers, and the
inflected forms among wordfreq's 20k most frequent five-letter words (so that "times" is a legal guess).
"""
import re
from pathlib import Path

from english_words import get_english_words_set
from wordfreq import top_n_list

N_ANSWERS = 400
EXCLUDED = {"bitch", "china", "japan", "harry", "henry", "lewis", "peter", "smith", "trump"}
WORD = re.compile("[a-z]{5}")

web2 = get_english_words_set(["web2"], lower=False, alpha=True)
web2_five = {w for w in web2 if WORD.fullmatch(w)}
ranked = [w for w in top_n_list("en", 200_000) if WORD.fullmatch(w)]


def inflected(w: str) -> bool:
    return (
        (w.endswith("s") and not w.endswith("ss") and w[:-1] in web2)
        or (w.endswith("ed") and (w[:-1] in web2 or w[:-2] in web2))
        or (w.endswith("ing") and (w[:-3] in web2 or w[:-3] + "e" in web2))
    )


answers = [w for w in ranked if w in web2_five and not inflected(w) and w not in EXCLUDED][:N_ANSWERS]
guesses = web2_five | {w for w in ranked[:20_000] if inflected(w)} | set(answers)
here = Path(__file__).parent
(here / "answers.txt").write_text("\n".join(sorted(answers)) + "\n")
(here / "guesses.txt").write_text("\n".join(sorted(guesses)) + "\n")
print(f"{len(answers)} answers, {len(guesses)} guesses")
