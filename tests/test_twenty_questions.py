"""Twenty Questions (spec §2.6): the original's 158 objects in 17 categories, a fact table that tells them all apart,
the question grammar (every phrasing, case, punctuation, subjects, articles; typos fall back to "No."), the oracle's
truthfulness against the table for every object, guess detection with variants, plurals and articles, the episode's
texts and rewards, the information-gain expert (every object in <= 20 questions, the normalisation's maximum), the
dataset against Table 1, the original's file format, and the language-model oracle's prompt, parsing and batching."""
from __future__ import annotations

import json

import numpy as np
import pytest

from lmrl_lightning.data.jsonl import DatasetError
from lmrl_lightning.env import EpisodeOverError, Text
from lmrl_lightning.errors import LMRLError
from lmrl_lightning.registry import get_task
from lmrl_lightning.tasks.questions import (
    TWENTY_QUESTIONS_EXPERT_RETURN,
    AnswerTable,
    InfoGainAsker,
    LanguageModelQuestionOracle,
    QuestionsEnv,
    expert_returns,
    generate_twenty_questions,
    read_original_conversation,
    step_many,
    twenty_questions_game,
)
from lmrl_lightning.tasks.questions.grammar import MAX_WORDS
from lmrl_lightning.tasks.questions.twenty_questions import CATEGORY_SIZES, INVALID_QUESTION, guess_question

GAME = twenty_questions_game()


def ask(env: QuestionsEnv, history, question: str):
    return env.step(history + (Text(question + "\n", True),))


def answer_for(name: str, question: str) -> str:
    return GAME.answer(GAME.index_of(name), GAME.grammar.parse(question))


# ---- objects and facts -------------------------------------------------------------------------------------------


def test_objects_are_the_originals_158_in_17_categories():
    counts = {}
    for thing in GAME.objects:
        counts[thing.category] = counts.get(thing.category, 0) + 1
    assert counts == CATEGORY_SIZES and len(GAME.objects) == 158
    by_name = {o.name: o for o in GAME.objects}
    assert by_name["Airplane"].variants == ("Airplane", "Plane")
    assert str(by_name["Headphone"]) == "(Headphone, Headphones, Pair of headphones)"
    assert by_name["Pliers"].variants == ("Pliers", "plier", "Pair of pliers")
    assert [o.name for o in GAME.objects[:3]] == ["Basketball", "Football", "Baseball"]
    assert GAME.objects[-1].name == "Drill"


def test_no_two_objects_share_a_row_and_every_attribute_splits_them():
    rows = {tuple(row) for row in GAME.facts}
    assert len(rows) == len(GAME.objects)
    assert GAME.facts.any(axis=0).all() and (~GAME.facts).any(axis=0).all()


@pytest.mark.parametrize("name, question, expected", [
    ("Cat", "Is it an animal?", "Yes."), ("Cat", "Is it bigger than a breadbox?", "Yes."),
    ("Cat", "Is it a pet?", "Yes."), ("Lion", "Is it a pet?", "No."), ("Computer", "Is it electronic?", "Yes."),
    ("Apple", "Is it edible?", "Yes."), ("Pen", "Is it alive?", "No."), ("Cup", "Is it furniture?", "No."),
    ("Airplane", "Can it fly?", "Yes."), ("Potato", "Does it grow underground?", "Yes."),
    ("Computer", "Is it natural?", "No."), ("Rock", "Is it natural?", "Yes."), ("Golf ball", "Is it small?", "Yes."),
    ("Hammer", "Is it made of metal?", "Yes."), ("Baseball bat", "Is it made of wood?", "Yes."),
    ("Car", "Does it have wheels?", "Yes."), ("Boat", "Does it have wheels?", "No."),
])
def test_hand_checked_answers(name, question, expected):
    assert answer_for(name, question) == expected


# ---- grammar -----------------------------------------------------------------------------------------------------


def test_every_listed_phrasing_parses_to_its_attribute():
    for attribute, forms in GAME.phrasings.items():
        for polarity, texts in forms.items():
            for text in texts:
                parsed = GAME.grammar.parse(text)
                assert (parsed.attribute, parsed.positive) == (attribute, polarity == "yes"), text


@pytest.mark.parametrize("question", [
    "Is it an animal?", "is it an animal", "IS IT AN ANIMAL?!", "  Is it   an animal ?  ", "Is it animal?",
    "Is the object an animal?", "Is this an animal?", "Is this object an animal.", "Is the thing an animal?",
    "Is it a kind of animal?", "Is it the animal?",
])
def test_case_punctuation_subjects_and_articles_do_not_matter(question):
    parsed = GAME.grammar.parse(question)
    assert (parsed.attribute, parsed.positive) == ("animal", True)
    assert answer_for("Dog", question) == "Yes." and answer_for("Pen", question) == "No."


@pytest.mark.parametrize("question", [
    "Is it aliev?", "Is it an animl?", "Is it an animal or a plant?", "Is it not an animal?", "What is it?",
    "", "?", "\x00\x01", "A", "The an a?", INVALID_QUESTION, "Is it " + "very " * MAX_WORDS + "big?", "x" * 1_000_000,
    "Is it a kind of cat?", "Is it a cat or a dog?", "Does it have four legs and fur?",
])
def test_questions_outside_the_grammar_get_no(question):
    assert not GAME.grammar.parse(question).understood
    for name in ("Cat", "Computer", "Apple"):
        assert answer_for(name, question) == "No."


def test_opposite_phrasings_answer_the_opposite():
    for name in GAME.names:
        assert answer_for(name, "Is it natural?") != answer_for(name, "Is it man-made?")
        assert answer_for(name, "Is it smaller than a breadbox?") != answer_for(name, "Is it bigger than a breadbox?")


def test_oracle_tells_the_truth_of_the_table_for_every_object_and_phrasing():
    for i, name in enumerate(GAME.names):
        for attribute, forms in GAME.phrasings.items():
            value = bool(GAME.facts[i, GAME.column[attribute]])
            for polarity, texts in forms.items():
                truth = value if polarity == "yes" else not value
                for text in texts:
                    assert answer_for(name, text) == ("Yes." if truth else "No."), (name, text)


# ---- guesses -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, question", [
    ("Airplane", "Is it an airplane?"), ("Airplane", "Is it a plane?"), ("Airplane", "Are they planes?"),
    ("Shoes", "Is it a pair of shoes?"), ("Shoes", "Are they shoes?"), ("Shoes", "Is the object a shoe?"),
    ("Shoes", "is it SHOES"), ("Soccer ball", "Is it a soccer ball?"), ("Soccer ball", "Is it soccer balls?"),
    ("Peas", "Is it some peas?"), ("Peas", "Is it a pea?"), ("Battery", "Is it batteries?"),
    ("Battery", "Is it a pack of batteries?"), ("Knife", "Are they knives?"), ("Television", "Is it a TV?"),
    ("Painting", "Is it an oil painting?"), ("Canvas", "Is it a canvas?"), ("Cat", "Is this a cat?"),
    ("Cooking pot", "Is it a pot?"), ("Computer keyboard", "Is it a keyboard?"), ("Computer", "Is it a computer?"),
])
def test_a_guess_naming_a_variant_singular_or_plural_wins(name, question):
    env = QuestionsEnv(GAME)
    history = env.reset(options={"name": name})
    history, reward, done = ask(env, history, question)
    assert (history[-1].text, reward, done, env.success()) == ("Yes.\n", 0.0, True, True)


@pytest.mark.parametrize("question", ["Is it a dog?", "Is it a kind of cat?", "Is it a cat or a dog?",
                                      "Is it a catalog?", "Is it a lion?", "Is it an animal?"])
def test_other_questions_do_not_end_the_game(question):
    env = QuestionsEnv(GAME)
    history = env.reset(options={"name": "Cat"})
    history, reward, done = ask(env, history, question)
    assert reward == -1.0 and not done and not env.success()


def test_a_variant_names_one_object_only():
    # "Canvas painting" is a Painting, "Painting canvas" a Canvas; "Pot" the cooking pot, "Pan" the pan
    assert GAME.grammar.parse("Is it a canvas painting?").guess == GAME.index_of("Painting")
    assert GAME.grammar.parse("Is it a painting canvas?").guess == GAME.index_of("Canvas")
    assert guess_question("Pants") == "Is it pants?" and guess_question("Apple") == "Is it an apple?"
    assert guess_question("Bus") == "Is it a bus?" and guess_question("Television") == "Is it a television?"


# ---- episode -----------------------------------------------------------------------------------------------------


def test_episode_texts_rewards_and_the_twenty_question_limit():
    env = QuestionsEnv(GAME)
    history = env.reset(options={"name": "Cat"})
    assert history == (Text("Questions:\n", False),)
    history, reward, done = ask(env, history, "Is it an animal?")
    assert [t.text for t in history] == ["Questions:\n", "Is it an animal?\n", "Yes.\n"] and reward == -1.0
    total = reward
    for _ in range(19):
        history, reward, done = ask(env, history, "Is it made of metal?")
        total += reward
    assert done and total == -20.0 and history[-1].text == "No.\n" and not env.success()
    with pytest.raises(EpisodeOverError, match="reset"):
        ask(env, history, "Is it a cat?")
    assert env.end_message() == "It was: Cat."


def test_reset_options_choose_the_object():
    env = QuestionsEnv(GAME)
    env.reset(seed=160, options={"deterministic": True})
    assert env.hidden == GAME.names[2]
    env.reset(options={"index": 5})
    assert env.hidden == GAME.names[5]
    unseeded = QuestionsEnv(GAME)
    unseeded.reset()  # no seed: a uniformly drawn object, still one of the game's
    assert unseeded.hidden in GAME.names
    for bad in (158, -1, "3", True):  # no silent wrap-around to another object
        with pytest.raises(LMRLError, match=r"reset option index must be an integer from 0 to 157"):
            env.reset(options={"index": bad})
    drawn = set()
    for s in range(400):
        env.reset(seed=s)
        drawn.add(env.hidden)
    assert len(drawn) > 100
    with pytest.raises(LMRLError, match="no hidden thing"):
        env.reset(options={"name": "Unicorn"})


def test_registered_task_protocol_and_candidates():
    task = get_task("twenty_questions")
    episodes = task.eval_episodes("default", task.default_eval_episodes)
    per_object = np.bincount([e.options["index"] for e in episodes])
    assert len(per_object) == 158 and set(per_object) == {3}
    assert all(GAME.grammar.parse(c).understood and c.endswith("?\n") for c in task.candidate_actions)
    assert len(task.candidate_actions) == len(GAME.phrasings) + 158
    norm = task.normalisation["default"]
    assert norm(-20.0) == 0.0 and norm(norm.dataset_average) == 50.0 and norm(TWENTY_QUESTIONS_EXPERT_RETURN) == 100.0
    with pytest.raises(LMRLError, match="unknown option"):
        task.make_env("default", max_question=3)
    assert task.make_env("default", max_questions=3).max_questions == 3
    # checked before any model is looked for: a string from a YAML typo is one line, not a TypeError later
    with pytest.raises(LMRLError, match=r"twenty_questions env_options.oracle_batch_size must be an integer >= 1"):
        task.make_env("default", oracle_model="/nonexistent", oracle_batch_size="32")


# ---- askers and data ---------------------------------------------------------------------------------------------


def test_information_gain_expert_finds_every_object_within_twenty():
    table = AnswerTable(GAME)
    returns = expert_returns(table, QuestionsEnv(GAME))
    assert len(returns) == 158 and min(returns) >= -19.0  # every object found, with questions to spare
    assert sum(returns) / len(returns) == pytest.approx(TWENTY_QUESTIONS_EXPERT_RETURN)


def test_the_experts_cache_never_carries_answers_into_another_episode():
    """The expert caches each conversation's consistent objects between turns; a reset env whose new game reaches
    the same length without the expert (here, questions asked by hand) must not reuse the old game's answers."""
    table = AnswerTable(GAME)
    expert = InfoGainAsker(table)
    env = QuestionsEnv(GAME)
    history = env.reset(options={"name": "Elephant"})
    for _ in range(2):
        history, _, _ = env.step(history + (Text(expert.action(env, history, 0), True),))
    history = env.reset(options={"name": "Pen"})
    for question in ("Is it an animal?", "Is it made of metal?"):
        history, _, _ = ask(env, history, question)
    assert list(expert.tracker.candidates(env)) == list(table.candidates(env.asked))
    assert "Pen" in [GAME.names[i] for i in expert.tracker.candidates(env)]


def test_candidates_follow_the_answers():
    table = AnswerTable(GAME)
    animal, fur = GAME.grammar.parse("Is it an animal?"), GAME.grammar.parse("Does it have fur?")
    left = table.candidates([(animal, "Yes."), (fur, "No.")])
    assert [GAME.names[i] for i in left] == ["Elephant"]
    assert len(table.candidates([(animal, "Yes."), (animal, "No.")])) == 158  # contradictory: start again


@pytest.mark.slow
def test_dataset_matches_table1_success_and_return(tmp_path):
    stats = generate_twenty_questions(tmp_path, n_episodes=3160, seed=0, progress=False)
    assert stats["success_rate"]["ours"] == pytest.approx(0.31, abs=0.03)
    assert stats["mean_return"]["ours"] == pytest.approx(-17.3, abs=0.5)
    lines = (tmp_path / "train.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    assert first["meta"]["word"] == "Basketball" and first["turns"][0]["text"] == "Questions:\n"
    words = {json.loads(line)["meta"]["word"] for line in lines}
    assert words == set(GAME.names)
    for line in lines[:200]:
        episode = json.loads(line)
        actions = [t for t in episode["turns"] if t["is_action"]]
        assert all(t["text"].endswith("?\n") for t in actions)
        assert all(t["text"] in ("Yes.\n", "No.\n") for t in episode["turns"][2::2])
        assert sum(t["reward"] for t in actions) == -len(actions) + int(episode["meta"]["success"])


# ---- the original's files ----------------------------------------------------------------------------------------


def test_reads_the_originals_conversations():
    record = {"lines": ["Is it an animal? No.", "Is it a vehicle? Yes.", "Is it a car? Yes."], "correct": True,
              "word": ["Car"]}
    (episode,) = read_original_conversation(record, "train.json: record 0")
    assert [t.text for t in episode.turns] == ["Questions:\n", "Is it an animal?\n", "No.\n", "Is it a vehicle?\n",
                                                "Yes.\n", "Is it a car?\n", "Yes.\n"]
    assert [t.reward for t in episode.turns if t.is_action] == [-1.0, -1.0, 0.0]
    assert episode.done and episode.meta == {"word": "Car", "success": True}
    cut = {"lines": ["Is it big? No."], "correct": False, "word": "Pen"}
    (short,) = read_original_conversation(cut, "x")
    assert not short.done and short.total_reward == -1.0  # fewer than 20 lines, not correct: truncated
    full = {"lines": ["Is it big? Is it? No."] * 20, "correct": False, "word": ["Pen"]}
    (whole,) = read_original_conversation(full, "x")
    assert whole.done and whole.turns[1].text == "Is it big? Is it?\n"  # split at the last "? "


@pytest.mark.parametrize("record, message", [
    ({"lines": ["Is it big? No."], "correct": True}, "missing field 'word'"),
    ({"lines": "Is it big? No.", "correct": True, "word": "Pen"}, "field 'lines'"),
    ({"lines": ["no question here"], "correct": False, "word": "Pen"}, "lines\\[0\\]"),
    ({"lines": [], "correct": False, "word": "Pen"}, "empty"),
    ([1, 2], "expected an object"),
    ({"lines": ["Is it a pen? No."], "correct": True, "word": "Pen"}, "'correct' is true but the last line"),
])
def test_bad_original_records_are_one_line_errors(record, message):
    with pytest.raises(DatasetError, match=message):
        list(read_original_conversation(record, "train.json: record 3"))


# ---- language-model oracle ---------------------------------------------------------------------------------------


class ScriptedModel:
    """Stands in for `LanguageModelOracle`: records each `complete` call and answers from a script."""

    def __init__(self, completions):
        self.completions = completions
        self.calls = []

    def complete(self, prompts):
        self.calls.append(list(prompts))
        return [self.completions(p) for p in prompts]


def test_language_model_oracle_prompt_parsing_and_one_call_per_batch():
    model = ScriptedModel(lambda p: " Yes, it is" if "Basketball" in p else "nope" if "Cat" in p else "no.")
    oracle = LanguageModelQuestionOracle(GAME, model)
    envs = [QuestionsEnv(GAME, oracle) for _ in range(3)]
    histories = [env.reset(options={"name": n}) for env, n in zip(envs, ("Basketball", "Cat", "Airplane"))]
    actions = [h + (Text(q, True),) for h, q in zip(histories, ("Is it round?\n", "Is it a cat?\n", "Can  it fly?\n"))]
    results = step_many(envs, actions)
    assert len(model.calls) == 1 and len(model.calls[0]) == 3  # the whole batch in one call
    assert model.calls[0][0] == ("Answer the question about the object truthfully.\nobject: (Basketball)\n"
                                 "question: Is it round?\nanswer (yes or no): ")
    assert "object: (Airplane, Plane)\nquestion: Can it fly?\n" in model.calls[0][2]
    assert [r[0][-1].text for r in results] == ["Yes.\n", "No.\n", "No.\n"]
    # the model said "nope" to the right guess: as in the original, no "Yes." means no win
    assert [r[1:] for r in results] == [(-1.0, False)] * 3
    env = envs[0]
    history, reward, done = env.step(results[0][0] + (Text("x" * 10_000, True),))
    assert history[-1].text == "No.\n" and len(model.calls) == 1  # unaskable: the fallback, no model call


@pytest.mark.slow
def test_language_model_oracle_from_a_local_model_directory(tmp_path):
    """`env_options: {oracle_model: DIR}` answers through a real (tiny, random) seq2seq model."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    from lmrl_lightning.models.tokenizer import train_bpe_tokenizer

    tokenizer = train_bpe_tokenizer([GAME.lm_prompt(0, "Is it round?"), "yes no Yes. No."] * 4, 300)
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(T5Config(
        vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=2,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    ))
    model.save_pretrained(tmp_path / "oracle")
    tokenizer.save_pretrained(tmp_path / "oracle")
    env = get_task("twenty_questions").make_env("default", oracle_model=str(tmp_path / "oracle"))
    assert isinstance(env.oracle, LanguageModelQuestionOracle) and env.oracle.model.max_new_tokens == 4
    history = env.reset(options={"name": "Cat"})
    history, reward, done = env.step(history + (Text("Is it an animal?\n", True),))
    assert history[-1].text in ("Yes.\n", "No.\n") and reward == -1.0
    assert env.copy().oracle is env.oracle  # copies share the loaded model
    # envs built with the same settings share one oracle, so `step_many` answers them in one batched call
    assert get_task("twenty_questions").make_env("default", oracle_model=str(tmp_path / "oracle")).oracle is env.oracle
    with pytest.raises(LMRLError, match="does not exist"):
        get_task("twenty_questions").make_env("default", oracle_model=str(tmp_path / "missing"))
