"""Text-Nav (spec §2.2) on TextWorld 1.7.0: the house's layout and objects, the walkthrough's win, the lost game,
the observation format (header stripped, filtered admissible list, FO against PO), the step cap, the pooled
interpreters, the dataset's statistics against the generator's own expectation, the reader of the original's data
files, re-ranking candidates and `lmrl play textnav --variant po`.

Games compile on first use into the user cache (`house.default_cache_dir()`, ~2-3 s a game, 16 games); later runs
find them there."""
from __future__ import annotations

import json
import math

import pytest

from lmrl_lightning.cli import main
from lmrl_lightning.data.jsonl import DatasetError, read_episodes
from lmrl_lightning.data.original import iter_records
from lmrl_lightning.env import EpisodeOverError, Text
from lmrl_lightning.registry import get_task
from lmrl_lightning.tasks.textnav import datagen, house
from lmrl_lightning.tasks.textnav.env import (
    POOL,
    UNKNOWN_COMMAND_REPLY,
    TextNavEnv,
    admissible_actions_for_history,
    clean_feedback,
    format_observation,
    visible_commands,
)
from lmrl_lightning.tasks.textnav.original import read_original_textnav
from lmrl_lightning.tasks.textnav.policies import optimal_walkthrough

ROOM_NAMES = ("bedroom", "office", "bathroom", "living room", "kitchen", "dining room", "garden", "backyard")


def play(env: TextNavEnv, history, command: str):
    return env.step(history + (Text(command + "\n", True),))


def play_commands(env: TextNavEnv, start_room: str, commands):
    history = env.reset(options={"start_room": start_room})
    rewards, dones = [], []
    for command in commands:
        history, reward, done = play(env, history, command)
        rewards.append(reward)
        dones.append(done)
    return history, rewards, dones


# ---- the house ------------------------------------------------------------------------------------------------------
def test_house_has_the_spec_rooms_exits_objects_and_quests():
    game = house.build_game("fo", "garden")
    names = {e.id: game.infos[e.id].name or e.id for e in game.world.entities}
    exits = {names[r.id]: {d: names[dest.id] for d, dest in r.exits.items()} for r in game.world.rooms}
    assert exits == {  # hand-written from spec §2.2's connections
        "bedroom": {"west": "living room", "south": "bathroom"},
        "living room": {"east": "bedroom", "west": "dining room", "south": "office"},
        "dining room": {"east": "living room", "west": "kitchen"},
        "kitchen": {"east": "dining room", "north": "garden", "west": "backyard"},
        "garden": {"south": "kitchen"},
        "office": {"north": "living room", "east": "bathroom"},
        "bathroom": {"west": "office", "north": "bedroom"},
        "backyard": {"east": "kitchen"},
    }
    ids = [(f.name, *(a.name for a in f.arguments)) for f in game.world.facts]
    room_of = {f[1]: names[f[2]] for f in ids if f[0] == "at"}  # furniture and the player
    holder = {names[f[1]]: (names[f[2]], room_of.get(f[2])) for f in ids if f[0] in ("on", "in")}
    assert holder == {
        "stale food": ("table", "living room"), "fresh food": ("table", "living room"), "bowl": ("table", "bedroom"),
        "coffee cup": ("table", "dining room"), "plate": ("table", "dining room"), "utensils": ("chest", "office"),
        "fruit": ("fridge", "kitchen"),
    }
    furniture = sorted((names[k], v) for k, v in room_of.items() if k != "P")
    assert furniture == [("chest", "office"), ("fridge", "kitchen"), ("table", "bedroom"), ("table", "dining room"),
                         ("table", "living room")]
    assert room_of["P"] == "garden"
    closed = {names[f[1]] for f in ids if f[0] == "closed"}
    assert closed == {"chest", "fridge"}
    lost, won = game.quests
    assert [{(p.name, *(names[a.name] for a in p.arguments)) for p in e.condition.preconditions}
            for e in lost.fail_events] == [{("eaten", "stale food")}]
    win = {(p.name, *(names[a.name] for a in p.arguments)) for p in won.win_events[0].condition.preconditions}
    assert {("in", "stale food", "fridge"), ("closed", "fridge")} <= win
    assert game.max_score == 1 and game.objective == house.OBJECTIVE


def test_compiled_game_is_cached_not_rebuilt(tmp_path, monkeypatch):
    path = house.compiled_game("po", "office", cache_dir=tmp_path)
    assert path.endswith(".z8") and "v1-tw1.7.0-seed1234" in path
    monkeypatch.setattr(house, "build_game", lambda *a, **k: pytest.fail("recompiled a cached game"))
    assert house.compiled_game("po", "office", cache_dir=tmp_path) == path


# ---- rules ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", ["fo", "po"])
def test_walkthrough_wins_with_reward_one_from_every_room(variant):
    """The shortest walkthrough (hand-checked lengths: to the living room, take, 2 rooms west, open/insert/close)
    wins on its last command and only there."""
    lengths = {"living room": 6, "bedroom": 7, "office": 7, "dining room": 7, "bathroom": 8, "kitchen": 8,
               "garden": 9, "backyard": 9}
    env = TextNavEnv(variant)
    for room in ROOM_NAMES if variant == "fo" else ("garden", "living room"):
        commands = optimal_walkthrough(room)
        assert len(commands) == lengths[room]
        history, rewards, dones = play_commands(env, room, commands)
        assert rewards == [0.0] * (len(commands) - 1) + [1.0], room
        assert dones == [False] * (len(commands) - 1) + [True], room
        assert env.success() is True and env.room == "kitchen"
        with pytest.raises(EpisodeOverError):
            play(env, history, "go west")


def test_eating_the_stale_food_loses():
    env = TextNavEnv("fo")
    history, rewards, dones = play_commands(env, "living room", ["take stale food from table", "eat stale food"])
    assert rewards == [0.0, 0.0] and dones == [False, True]
    assert env.success() is False and env.lost and "You lost" in history[-1].text


def test_step_cap_ends_the_episode_and_junk_counts_as_a_turn():
    env = TextNavEnv("po", max_steps=3)
    _, rewards, dones = play_commands(env, "garden", ["go south", "xyzzy", "go north"])
    assert rewards == [0.0] * 3 and dones == [False, False, True] and env.success() is False
    assert TextNavEnv().max_steps == 20


def test_text_that_is_no_game_command_never_reaches_the_interpreter():
    """Meta-commands (quit, restart, undo) and junk get Inform's unknown-verb reply and change nothing; the game
    can still be won afterwards."""
    env = TextNavEnv("po")
    history = env.reset(options={"start_room": "living room"})
    for junk in ("quit", "restart", "undo", "", "tw-trace-actions", "take stale food from table\x00", "\ud800"):
        history, reward, done = play(env, history, junk)
        assert (reward, done) == (0.0, False)
        assert history[-1].text.startswith(UNKNOWN_COMMAND_REPLY + "\n\nAdmissible commands: ")
        assert env.room == "living room" and not env.carrying()
    for command in ["  TAKE stale   food from table"] + optimal_walkthrough("living room")[1:]:
        history, reward, done = play(env, history, command)
    assert (reward, done, env.success()) == (1.0, True, True)


# ---- observations ---------------------------------------------------------------------------------------------------
def test_feedback_cleaning_and_observation_format_by_hand():
    raw = ("\n\n-= Kitchen =-\nYou've just walked into a kitchen.\n\n\n\nYou see a closed fridge nearby.  \n\n"
           "There are unblocked exits to the east, north and west.\n\n\n\n>" + " " * 100 + "-= Kitchen =-0/2")
    assert clean_feedback(raw) == ("You've just walked into a kitchen.\n\nYou see a closed fridge nearby.\n\n"
                                   "There are unblocked exits to the east, north and west.")
    admissible = ["examine fridge", "go east", "inventory", "look", "open fridge"]
    text = format_observation("\nYou open the fridge.\n\n>  -= Kitchen =-0/3", visible_commands(admissible),
                              "You are carrying nothing.")
    assert text == ("You open the fridge.\n\nYou are carrying nothing.\n\n"
                    "Admissible commands: go east, open fridge\n")


def test_fo_shows_room_and_inventory_po_neither():
    commands = ["go south", "go east", "go east", "take stale food from table", "go south", "open chest"]
    texts = {}
    for variant in ("fo", "po"):
        env = TextNavEnv(variant)
        history, _, _ = play_commands(env, "garden", commands)
        texts[variant] = [t.text for t in history]
    fo, po = texts["fo"], texts["po"]
    assert fo[1::2] == po[1::2] == [c + "\n" for c in commands]
    for obs in fo[0::2] + po[0::2]:
        assert "-=" not in obs and "$$" not in obs and ">" not in obs  # no header, banner, prompt or status line
        listed = obs.split("\nAdmissible commands: ")[1]
        assert obs.endswith("\n") and listed.count("\n") == 1
        assert not any(c.split()[0] in ("examine", "look", "inventory") for c in listed.strip().split(", "))
    assert fo[0].startswith(house.OBJECTIVE) and po[0].startswith(house.OBJECTIVE)
    assert "garden" in fo[0].replace(house.OBJECTIVE, "")
    assert "kitchen" in fo[2] and "dining room" in fo[4] and "office" in fo[10]
    assert "You are carrying: a stale food." in fo[10] and "You are carrying" not in fo[0]
    for obs in po:
        assert "You are carrying" not in obs
        assert not any(room in obs.replace(house.OBJECTIVE, "") for room in ROOM_NAMES), obs
    assert po[6].startswith("You make out a table.") and "stale food" in po[6]
    assert po[12].startswith("You open the chest, revealing an utensils.")  # TextWorld's article


def test_candidates_are_the_admissible_commands_of_the_state():
    env = TextNavEnv("po")
    history, _, _ = play_commands(env, "garden", ["go south"])
    expected = tuple(c + "\n" for c in env.admissible_commands)
    assert admissible_actions_for_history(history) == expected == (
        "go east\n", "go north\n", "go west\n", "open fridge\n")
    task = get_task("textnav")
    assert task.rerank_candidates() is admissible_actions_for_history
    assert admissible_actions_for_history(history + (Text("go east\n", True),)) == expected


def test_interpreters_are_pooled_and_reset_not_recreated():
    env = TextNavEnv("po")
    env.reset(options={"start_room": "bedroom"})
    created = POOL.created
    for _ in range(3):
        copy = env.copy()
        copy.reset(options={"start_room": "bedroom"})
        copy.close()
        env.reset(options={"start_room": "bedroom"})
    assert POOL.created - created <= 1


def test_eval_protocol_balances_start_rooms_and_keeps_the_standard_error_under_two_points():
    task = get_task("textnav")
    episodes = task.eval_episodes("po", task.default_eval_episodes)
    rooms = [e.options["start_room"] for e in episodes]
    assert {rooms.count(r) for r in ROOM_NAMES} == {task.default_eval_episodes // 8}
    n, norm = len(episodes), task.normalisation["po"]
    worst = max(abs(norm(p + math.sqrt(p * (1 - p) / n)) - norm(p)) for p in [k / 100 for k in range(1, 100)])
    assert worst < 2.0
    assert (norm(0.0), norm(0.26), norm(1.0)) == (0.0, 50.0, 100.0)


# ---- data -----------------------------------------------------------------------------------------------------------
def test_fo_and_po_datasets_hold_the_same_commands(tmp_path):
    for variant in ("fo", "po"):
        datagen.generate_dataset(tmp_path / variant, variant, n_episodes=6, seed=3, progress=False)
    fo, po = (read_episodes(tmp_path / v / "train.jsonl") for v in ("fo", "po"))
    for a, b in zip(fo, po):
        assert [t.text for t in a.turns if t.is_action] == [t.text for t in b.turns if t.is_action]
        assert a.meta["start_room"] == b.meta["start_room"] and a.meta["optimal_rooms"] == b.meta["optimal_rooms"]
        assert a.num_actions <= datagen.DATA_MAX_STEPS and a.done


@pytest.mark.slow
def test_dataset_statistics_match_the_generators_expectation(tmp_path):
    """96 episodes of another seed against the 2500-episode expectation (`datagen.EXPECTED_STATS`): within four
    standard errors of each mean."""
    n = 96
    stats = datagen.generate_dataset(tmp_path, "po", n_episodes=n, seed=7, progress=False)
    expected = datagen.EXPECTED_STATS
    p = expected["success_rate"]
    assert abs(stats["success_rate"]["ours"] - p) < 4 * math.sqrt(p * (1 - p) / n)
    assert abs(stats["mean_length"]["ours"] - expected["mean_length"]) < 4 * expected["std_length"] / math.sqrt(n)
    assert stats["mean_return"]["ours"] == stats["success_rate"]["ours"]
    assert stats["success_rate"]["paper"] == 0.26


# ---- the original's data files --------------------------------------------------------------------------------------
ORIGINAL_RECORDS = [
    {"text_history": ["Your objective is to put the stale food ...\n\n\n\n You see a table.\n\nAdmissible commands: "
                      "go east, take stale food from table", "take stale food from table",
                      "You take the stale food from the table.\n\n\n\nYou are carrying: a stale food.\n\n"
                      "Admissible commands: eat stale food, go east", "eat stale food",
                      "You eat the stale food. Not bad.\n\n\n*** You lost! ***"],
     "rewards": [0, 0], "dones": [False, True]},
    {"text_history": ["You see a closed fridge nearby.", "open fridge", "You open the fridge.",
                      "insert stale food into fridge", "You put the stale food into the fridge.", "close fridge",
                      "You close the fridge."],
     "rewards": [0, 0, 1], "dones": [False, False, False]},
]


def read_file(path):
    return [e for where, record in iter_records(path) for e in read_original_textnav(record, where)]


def test_original_json_array_and_json_lines_read_the_same(tmp_path):
    array, lines = tmp_path / "bc_full_info.json", tmp_path / "data.jsonl"
    array.write_text(json.dumps(ORIGINAL_RECORDS, indent=1))
    lines.write_text("".join(json.dumps(r) + "\n" for r in ORIGINAL_RECORDS))
    for path in (array, lines):
        lost, won = read_file(path)
        assert [t.is_action for t in lost.turns] == [False, True, False, True, False]
        assert lost.turns[0].text == ("Your objective is to put the stale food ...\n\nYou see a table.\n\n"
                                      "Admissible commands: go east, take stale food from table\n")
        assert lost.turns[1].text == "take stale food from table\n"
        assert (lost.done, lost.total_reward, lost.success) == (True, 0.0, False)
        assert [t.reward for t in won.turns if t.is_action] == [0.0, 0.0, 1.0]
        assert (won.done, won.success) == (False, True) and won.meta["source"] == "lmrl-gym"


def test_one_reward_per_text_layout_reads_the_same():
    record = ORIGINAL_RECORDS[1]
    per_text = {"text_history": record["text_history"], "rewards": [0, 0, 0, 0, 0, 1, 0],
                "dones": [False] * 7}
    (a,), (b,) = read_original_textnav(record, "x:1"), read_original_textnav(per_text, "x:2")
    assert a.turns == b.turns and a.meta == b.meta


@pytest.mark.parametrize("record,field", [
    ({"text_history": ["a", "b"], "rewards": [0], "dones": [True]}, "text_history"),
    ({"text_history": ["a", "b", "c"], "rewards": [0, 1], "dones": [True]}, "rewards"),
    ({"text_history": ["a", "b", "c"], "rewards": ["1"], "dones": [True]}, "rewards[0]"),
    ({"text_history": ["a", "b", "c"], "rewards": [0], "dones": [1]}, "dones[0]"),
    ({"text_history": ["a", "b\nc", "c"], "rewards": [0], "dones": [True]}, "turns[1].text"),
    ({"text_history": ["a", "b", "c"], "rewards": [0], "dones": [True], "extra": 1}, "unknown field"),
    ({"text_history": ["a", "b", "c", "d", "e"], "rewards": [0, 0], "dones": [True, True]}, "dones[0]"),
    ({"text_history": ["a", "b", "c"], "rewards": [1, 0, 0], "dones": [False] * 3}, "rewards[0]"),
    ({"text_history": ["a", "b", "c"], "rewards": [-1], "dones": [True]}, "rewards[0] is -1; Text-Nav rewards are 0 or 1"),
])
def test_bad_original_records_are_refused_with_file_line_and_field(tmp_path, record, field):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(ORIGINAL_RECORDS[0]) + "\n" + json.dumps(record) + "\n")
    with pytest.raises(DatasetError) as e:
        read_file(path)
    message = str(e.value)
    assert message.startswith(f"{path}:2: ") and field in message and "\n" not in message


def test_lmrl_data_from_original_writes_a_dataset_directory(tmp_path, capsys):
    source = tmp_path / "bc_full_info.json"
    source.write_text(json.dumps(ORIGINAL_RECORDS))
    out = tmp_path / "data"
    assert main(["data", "textnav", "--variant", "fo", "--from-original", str(source), "--out", str(out),
                 "--vocab-size", "300"]) == 0
    assert len(read_episodes(out / "train.jsonl")) == 2
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["task"], manifest["variant"]) == ("textnav", "fo") and (out / "tokenizer").is_dir()
    assert manifest["stats"]["success_rate"] == {"ours": 0.5, "paper": 0.26}


# ---- lmrl play ------------------------------------------------------------------------------------------------------
def test_lmrl_play_textnav_po(monkeypatch, capsys):
    typed = iter(["go south", "go east", "go east", "take stale food from table", "go west", "go west",
                  "open fridge", "insert stale food into fridge", "close fridge"])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(typed))
    assert main(["play", "textnav", "--variant", "po", "--seed", "0"]) == 0  # seed 0 starts in the garden
    out = capsys.readouterr().out
    assert "Admissible commands: go south" in out and "You are carrying" not in out
    assert "episode over: return 1, normalised score 100.0" in out
