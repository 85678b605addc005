"""The JSONL episode format: one-line `file:line: field: ...` errors, the round trip, filters, and the
EpisodeDataModule end to end on a small generated maze dataset."""
from __future__ import annotations

import dataclasses
import gzip
import json
import random
import re
import time

import pytest

from lmrl_lightning.data import datamodule
from lmrl_lightning.data.datamodule import EpisodeDataModule
from lmrl_lightning.data.filters import filter_episodes
from lmrl_lightning.data.jsonl import DatasetError, iter_episodes, read_episodes, write_episodes
from lmrl_lightning.data.tokenize import TurnTokenizer, episode_to_chunks
from lmrl_lightning.env import Episode, Turn
from lmrl_lightning.errors import LMRLError
from lmrl_lightning.models.tokenizer import train_bpe_tokenizer
from lmrl_lightning.registry import get_task

GOOD = {
    "turns": [
        {"text": "You are at 1, 1.\n", "is_action": False, "reward": 0.0},
        {"text": "move up\n", "is_action": True, "reward": -1.0},
        {"text": "You are at 1, 2.\n", "is_action": False},
    ],
    "done": False,
    "meta": {"success": False},
}


def _line(**changes) -> str:
    obj = json.loads(json.dumps(GOOD))
    for key, value in changes.items():
        obj[key] = value
    return json.dumps(obj)


def _turns(*edits):
    """GOOD's turns with (index, key, value) edits; value=... deletes the key."""
    turns = json.loads(json.dumps(GOOD["turns"]))
    for i, key, value in edits:
        if value is ...:
            del turns[i][key]
        else:
            turns[i][key] = value
    return turns


def _expect_error(tmp_path, bad_line: str, *needles: str, lineno: int = 3) -> str:
    """Write `bad_line` at line `lineno` (3: after a good line and a blank one, which still counts) with a good
    line after it, read the file, and check the one-line message names the file, the line and every needle."""
    path = tmp_path / "episodes.jsonl"
    lines = [_line(), ""] if lineno == 3 else []
    path.write_text("\n".join(lines + [bad_line, _line()]) + "\n", encoding="utf-8")
    with pytest.raises(DatasetError) as info:
        read_episodes(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}:{lineno}: "), msg
    for needle in needles:
        assert needle in msg, (needle, msg)
    assert "\n" not in msg
    assert isinstance(info.value, ValueError)
    return msg


# ----------------------------------------------------------------------------------------------------------
# Bad files: one-line messages naming file, line and field


def test_invalid_json(tmp_path):
    _expect_error(tmp_path, '{"turns": [{"text": "a\\n", ', "invalid JSON")


def test_not_an_object(tmp_path):
    _expect_error(tmp_path, "[1, 2, 3]", "'turns'", "'done'", "list")


@pytest.mark.parametrize("field", ["turns", "done"])
def test_missing_top_level_field(tmp_path, field):
    obj = json.loads(_line())
    del obj[field]
    _expect_error(tmp_path, json.dumps(obj), f"'{field}'", "missing")


@pytest.mark.parametrize("key", ["text", "is_action"])
def test_missing_turn_field(tmp_path, key):
    _expect_error(tmp_path, _line(turns=_turns((1, key, ...))), f"turns[1]: missing field '{key}'")


def test_mistyped_done(tmp_path):
    _expect_error(tmp_path, _line(done="yes\nno"), "'done'", "'yes\\nno'")


def test_mistyped_is_action(tmp_path):
    _expect_error(tmp_path, _line(turns=_turns((1, "is_action", 1))), "turns[1].is_action", "got 1")


def test_mistyped_reward(tmp_path):
    _expect_error(tmp_path, _line(turns=_turns((1, "reward", "x"))), "turns[1].reward", "'x'")


@pytest.mark.parametrize("bad", ["NaN", "Infinity", "true"])
def test_non_finite_or_boolean_reward(tmp_path, bad):
    line = _line().replace('"reward": -1.0', f'"reward": {bad}')
    assert bad in line
    _expect_error(tmp_path, line, "turns[1].reward")


def test_mistyped_text(tmp_path):
    _expect_error(tmp_path, _line(turns=_turns((0, "text", 5))), "turns[0].text", "got 5")


def test_empty_text(tmp_path):
    _expect_error(tmp_path, _line(turns=_turns((2, "text", ""))), "turns[2].text")


def test_turn_not_an_object(tmp_path):
    turns = _turns()
    turns[2] = "You are at 1, 2.\n"
    _expect_error(tmp_path, _line(turns=turns), "turns[2]")


def test_reward_on_observation(tmp_path):
    _expect_error(tmp_path, _line(turns=_turns((2, "reward", -1.0))), "turns[2].reward", "observation")


def test_no_action_turn(tmp_path):
    # (a lone observation: two in a row would be refused first, as not alternating)
    _expect_error(tmp_path, _line(turns=_turns()[:1]), "'turns'", "action")


def test_empty_turns(tmp_path):
    _expect_error(tmp_path, _line(turns=[]), "'turns'")


def test_turns_not_a_list(tmp_path):
    _expect_error(tmp_path, _line(turns={"text": "a\n"}), "'turns'")


def test_unknown_turn_field(tmp_path):
    _expect_error(tmp_path, _line(turns=_turns((1, "rewrd", -1.0))), "turns[1]", "rewrd")


def test_meta_not_an_object(tmp_path):
    _expect_error(tmp_path, _line(meta=[1]), "'meta'")


def test_error_on_first_line(tmp_path):
    _expect_error(tmp_path, _line(done=None), "'done'", lineno=1)


def test_error_is_raised_lazily_after_good_episodes(tmp_path):
    path = tmp_path / "e.jsonl"
    path.write_text(_line() + "\n" + _line() + "\n" + "oops\n", encoding="utf-8")
    it = iter_episodes(path)
    assert next(it).source == f"{path}:1"
    assert next(it).source == f"{path}:2"
    with pytest.raises(DatasetError, match=re.escape(f"{path}:3: ")):
        next(it)


@pytest.mark.parametrize("content", ["", "\n\n   \n\t\n"])
def test_empty_file(tmp_path, content):
    path = tmp_path / "empty.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DatasetError) as info:
        read_episodes(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}:1: ")
    assert "no episodes" in msg
    assert "\n" not in msg


def test_missing_file(tmp_path):
    path = tmp_path / "nope" / "train.jsonl"
    with pytest.raises(DatasetError) as info:
        read_episodes(path)
    msg = str(info.value)
    assert str(path) in msg
    assert "no such" in msg
    assert "\n" not in msg


def test_directory_is_not_a_dataset(tmp_path):
    with pytest.raises(DatasetError, match=re.escape(str(tmp_path))):
        read_episodes(tmp_path)


# ----------------------------------------------------------------------------------------------------------
# Not UTF-8 JSONL, huge numbers, deep nesting, huge lines: one line each, before or while parsing


def _expect_file_error(path, *needles: str) -> str:
    with pytest.raises(DatasetError) as info:
        read_episodes(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}:"), msg
    for needle in needles:
        assert needle in msg, (needle, msg)
    assert "\n" not in msg
    return msg


def test_gzip_file(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_bytes(gzip.compress((_line() + "\n").encode()))
    _expect_file_error(path, ":1: ", "gzip", "decompress")


@pytest.mark.parametrize("encoding, needle", [("utf-16", "UTF-16"), ("utf-8-sig", "byte-order mark"),
                                              ("utf-32", "UTF-32")])
def test_file_with_byte_order_mark(tmp_path, encoding, needle):
    path = tmp_path / "train.jsonl"
    path.write_text(_line() + "\n", encoding=encoding)
    _expect_file_error(path, ":1: ", needle)


def test_utf16_without_byte_order_mark(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_bytes((_line() + "\n").encode("utf-16-le"))
    _expect_file_error(path, ":1: ", "NUL", "UTF-16")


def test_non_utf8_line_names_its_line(tmp_path):
    path = tmp_path / "train.jsonl"
    bad = _line().replace('"success": false', '"word": "café"').encode("latin-1")
    assert b"\xe9" in bad
    path.write_bytes(_line().encode() + b"\n\n" + bad + b"\n")
    _expect_file_error(path, ":3: ", "not UTF-8", "0xe9")


@pytest.mark.parametrize("digits", [400, 5000])
def test_huge_integer_reward(tmp_path, digits):
    line = _line().replace('"reward": -1.0', f'"reward": {"9" * digits}')
    msg = _expect_error(tmp_path, line)
    assert len(msg) < 300
    if digits == 400:
        assert "turns[1].reward" in msg and "finite number" in msg


def test_deeply_nested_json(tmp_path):
    _expect_error(tmp_path, '{"turns": ' + "[" * 100_000 + "]" * 100_000 + ', "done": true}', "nested too deeply")


def test_line_longer_than_the_limit_fails_fast(tmp_path):
    path = tmp_path / "train.jsonl"
    big = _line(meta={"blob": "x" * (50 << 20)})
    path.write_text(_line() + "\n" + big + "\n", encoding="utf-8")
    del big
    start = time.perf_counter()
    msg = _expect_file_error(path, ":2: ", "longer than 1048576 bytes")
    assert time.perf_counter() - start < 2.0, msg
    # the limit is an argument; a line exactly at it is read
    line = _line()
    path.write_text(line + "\n", encoding="utf-8")
    assert len(read_episodes(path, max_line_bytes=len(line) + 1)) == 1
    with pytest.raises(DatasetError, match=re.escape(f"{path}:1: the line is longer than {len(line)} bytes")):
        read_episodes(path, max_line_bytes=len(line))


def test_crlf_line_endings_of_the_file_are_accepted(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_bytes((_line() + "\r\n" + _line() + "\r\n").encode())
    assert [e.turns[1].text for e in read_episodes(path)] == ["move up\n"] * 2


# ----------------------------------------------------------------------------------------------------------
# Refused content: order of turns, meta.success, unknown fields, characters, end of turn, overflowing returns


def test_first_turn_is_an_action(tmp_path):
    _expect_error(tmp_path, _line(turns=_turns()[1:]), "turns[0]", "first turn is an action")


def test_two_observations_in_a_row(tmp_path):
    turns = _turns()
    turns.insert(1, {"text": "You see a wall.\n", "is_action": False})
    _expect_error(tmp_path, _line(turns=turns), "turns[1]", "two observations in a row")


def test_two_actions_in_a_row(tmp_path):
    turns = _turns()
    turns.insert(2, {"text": "move down\n", "is_action": True, "reward": -1.0})
    _expect_error(tmp_path, _line(turns=turns), "turns[2]", "two actions in a row")


def test_episode_may_end_on_an_action(tmp_path):
    path = tmp_path / "e.jsonl"
    path.write_text(_line(turns=_turns()[:2]) + "\n", encoding="utf-8")
    (episode,) = read_episodes(path)
    assert [t.is_action for t in episode.turns] == [False, True]


def test_generated_datasets_follow_the_format(maze_data, tmp_path):
    """The generators' real data: alternating, starting with an observation, actions ending in one newline."""
    get_task("wordle").generate_dataset(tmp_path, n_episodes=50, progress=False)
    for path in [*maze_data[0].values(), tmp_path / "train.jsonl"]:
        for episode in read_episodes(path):
            kinds = [t.is_action for t in episode.turns]
            assert kinds == [i % 2 == 1 for i in range(len(kinds))]


@pytest.mark.parametrize("success", ["false", "true", 0, 1, None])
def test_meta_success_must_be_a_boolean(tmp_path, success):
    _expect_error(tmp_path, _line(meta={"success": success}), "meta.success", repr(success))


def test_meta_success_may_be_absent(tmp_path):
    path = tmp_path / "e.jsonl"
    path.write_text(_line(meta={"word": "pen"}) + "\n", encoding="utf-8")
    assert read_episodes(path)[0].success is False


def test_unknown_top_level_field(tmp_path):
    _expect_error(tmp_path, _line(sucess=True), "unknown field(s) 'sucess'", "meta")


@pytest.mark.parametrize("text, needle", [
    ("You are\x07 here.\n", "U+0007"),
    ("You are\x00 here.\n", "U+0000"),
    ("del\x7f\n", "U+007F"),
    ("next line\x85\n", "U+0085"),
    ("escape \x1b[31m\n", "U+001B"),
    ("lone \ud800 surrogate\n", "U+D800"),
    ("windows line\r\n", "carriage return"),
    ("old mac\rline\n", "carriage return"),
])
def test_control_characters_in_text(tmp_path, text, needle):
    _expect_error(tmp_path, _line(turns=_turns((0, "text", text))), "turns[0].text", needle)


def test_tab_and_newlines_are_allowed_in_observations(tmp_path):
    path = tmp_path / "e.jsonl"
    path.write_text(_line(turns=_turns((0, "text", "a\tb\nline two\n"))) + "\n", encoding="utf-8")
    assert read_episodes(path)[0].turns[0].text == "a\tb\nline two\n"


@pytest.mark.parametrize("text, needle", [("move up", "end with its end-of-turn newline"),
                                          ("move\nup\n", "one line")])
def test_action_must_be_one_line_ending_in_newline(tmp_path, text, needle):
    _expect_error(tmp_path, _line(turns=_turns((1, "text", text))), "turns[1].text", needle)


def test_return_overflowing_to_infinity(tmp_path):
    turns = _turns((1, "reward", 1e308)) + [{"text": "move up\n", "is_action": True, "reward": 1e308}]
    _expect_error(tmp_path, _line(turns=turns), "turns[3].reward", "overflows", "inf")


def test_interrupted_write_leaves_no_partial_file(tmp_path):
    def interrupted():
        yield _episodes()[0]
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_episodes(tmp_path / "train.jsonl", interrupted())
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------------------------------------
# Round trip


def _episodes():
    return [
        Episode(
            [Turn("Questions:\n", False), Turn("Is it alive?\n", True, -1.0), Turn("Nö — “quoted” ✓\n", False),
             Turn("Is it a pen?\n", True, 0.0), Turn("Yes.\n", False)],
            True,
            {"success": True, "word": "pen", "nested": {"k": [1, 2.5, None]}},
        ),
        Episode([Turn("start\n", False), Turn("move up\n", True, -4.0)], False, {}),
        Episode([Turn("obs\n", False), Turn("move left\n", True, 0.25)], False, {"success": False}),
    ]


def test_round_trip(tmp_path):
    path = tmp_path / "sub" / "dir" / "train.jsonl"
    eps = _episodes()
    assert write_episodes(path, iter(eps)) == 3
    back = read_episodes(path)
    assert [dataclasses.replace(e, source=None) for e in back] == eps
    assert [e.source for e in back] == [f"{path}:{i}" for i in (1, 2, 3)]
    assert [e.total_reward for e in back] == [-1.0, -4.0, 0.25]
    assert isinstance(back[1].turns[0].reward, float)
    assert len(path.read_text(encoding="utf-8").splitlines()) == 3
    assert "✓" in path.read_text(encoding="utf-8")  # written as UTF-8, not escaped


def test_write_leaves_no_partial_file(tmp_path):
    path = tmp_path / "train.jsonl"
    write_episodes(path, _episodes())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.jsonl"]
    assert not path.with_name(path.name + ".partial").exists()


def test_crashed_write_keeps_previous_file(tmp_path):
    path = tmp_path / "train.jsonl"
    write_episodes(path, _episodes())
    before = path.read_bytes()

    def crashing():
        yield _episodes()[0]
        raise RuntimeError("generator died")

    with pytest.raises(RuntimeError):
        write_episodes(path, crashing())
    assert path.read_bytes() == before
    assert len(read_episodes(path)) == 3


# ----------------------------------------------------------------------------------------------------------
# Filters


def _ep(ret: float, success=None) -> Episode:
    meta = {} if success is None else {"success": success}
    return Episode([Turn("o\n", False), Turn("a\n", True, ret)], True, meta)


def test_filter_success_only():
    eps = [_ep(-3, True), _ep(-1, False), _ep(-5), _ep(-2, True), _ep(0, False)]
    kept = filter_episodes(eps, "success")
    assert [e.total_reward for e in kept] == [-3.0, -2.0]
    assert all(e is o for e, o in zip(kept, [eps[0], eps[3]]))
    assert filter_episodes(eps, "none") == eps
    assert filter_episodes([_ep(-1, False)], "success") == []


def test_filter_top_fraction_keeps_ties():
    returns = [-5, -1, -2, -3, -2, -8, -2, -4, -6, -7]
    eps = [_ep(r) for r in returns]
    # top 20% of 10 = 2 episodes: threshold is the 2nd best return (-2); all three -2 episodes are kept
    kept = filter_episodes(eps, "top_fraction", 0.2)
    assert [e.total_reward for e in kept] == [-1.0, -2.0, -2.0, -2.0]
    # top 10%: the best only
    assert [e.total_reward for e in filter_episodes(eps, "top_fraction", 0.1)] == [-1.0]
    # top 50%: threshold is the 5th best (-3); order is kept
    assert [e.total_reward for e in filter_episodes(eps, "top_fraction", 0.5)] == [-1.0, -2.0, -3.0, -2.0, -2.0]
    # top 60%: threshold is the 6th best (-4)
    assert [e.total_reward for e in filter_episodes(eps, "top_fraction", 0.6)] == [-1.0, -2.0, -3.0, -2.0, -2.0, -4.0]
    assert len(filter_episodes(eps, "top_fraction", 1.0)) == 10
    # a fraction below one episode still keeps the best
    assert [e.total_reward for e in filter_episodes(eps, "top_fraction", 0.01)] == [-1.0]
    assert filter_episodes([], "top_fraction", 0.5) == []


def test_filter_top_fraction_uses_total_return():
    eps = [
        Episode([Turn("a\n", True, -1.0), Turn("o\n", False), Turn("a\n", True, -1.0)], True),  # -2
        Episode([Turn("a\n", True, -1.5)], True),  # -1.5
        Episode([Turn("a\n", True, -3.0), Turn("a\n", True, 2.0)], True),  # -1
    ]
    assert [e.total_reward for e in filter_episodes(eps, "top_fraction", 0.34)] == [-1.0]


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5])
def test_filter_top_fraction_rejects_bad_fraction(fraction):
    with pytest.raises(ValueError, match="fraction"):
        filter_episodes([_ep(-1)], "top_fraction", fraction)


def test_filter_unknown_mode():
    with pytest.raises(ValueError, match="unknown filter"):
        filter_episodes([_ep(-1)], "best")


# ----------------------------------------------------------------------------------------------------------
# The DataModule on a generated maze dataset


@pytest.fixture(scope="module")
def maze_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("maze")
    task = get_task("maze")
    out = {}
    for variant in ("fo", "po"):
        task.generate_dataset(root / variant, variant=variant, n_episodes=30, progress=False)
        out[variant] = root / variant / "train.jsonl"
    texts = [t.text for path in out.values() for e in read_episodes(path) for t in e.turns]
    tok = train_bpe_tokenizer(texts, vocab_size=400)
    return out, tok


def _dm(path, tok, **kwargs) -> EpisodeDataModule:
    kwargs.setdefault("val_fraction", 0.0)
    dm = EpisodeDataModule(str(path), task="maze", **kwargs)
    dm.attach_tokenizer(tok)
    dm.setup("fit")
    return dm


def _by_source(path):
    return {e.source: e for e in read_episodes(path)}


def _chunks_by_episode(chunks):
    grouped: dict[str, list] = {}
    for c in chunks:
        grouped.setdefault(c.source, []).append(c)
    return grouped


def test_datamodule_fo_chunks_are_one_observation_one_action(maze_data):
    paths, tok = maze_data
    dm = _dm(paths["fo"], tok, variant="fo")
    assert dm.history_window() == 1
    episodes = _by_source(paths["fo"])
    assert len(dm.train_chunks) == sum(e.num_actions for e in episodes.values())
    assert len(dm.val_chunks) == 0  # a ChunkStore, not a list
    enc = TurnTokenizer(tok)
    grouped = _chunks_by_episode(dm.train_chunks)
    assert set(grouped) == set(episodes)
    for source, chunks in grouped.items():
        ep = episodes[source]
        actions = [i for i, t in enumerate(ep.turns) if t.is_action]
        assert len(chunks) == len(actions)
        for k, (chunk, a) in enumerate(zip(chunks, actions)):
            obs, act = ep.turns[a - 1], ep.turns[a]
            assert not obs.is_action and act.is_action
            assert chunk.input_ids == enc(obs.text) + enc(act.text)
            assert chunk.is_action == [False] * len(enc(obs.text)) + [True] * len(enc(act.text))
            assert tok.decode(chunk.input_ids) == obs.text + act.text
            assert chunk.rewards[-1] == act.reward and not any(chunk.rewards[:-1])
            assert chunk.done == (ep.done and k == len(actions) - 1)
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape[0] == min(32, len(dm.train_chunks))
    assert batch["action_mask"].shape[1] == batch["input_ids"].shape[1] - 1
    # every chunk has exactly one action and its reward on the action's last token
    assert (batch["rewards"] != 0).sum(dim=1).le(1).all()
    assert not (batch["action_mask"] & ~batch["attention_mask"][:, 1:]).any()


def test_datamodule_po_window_is_40_texts(maze_data):
    paths, tok = maze_data
    dm = _dm(paths["po"], tok, variant="po", max_length=2048)
    assert dm.history_window() == 40
    episodes = _by_source(paths["po"])
    enc = TurnTokenizer(tok)
    grouped = _chunks_by_episode(dm.train_chunks)
    longest = max(episodes.values(), key=lambda e: len(e.turns))
    assert len(longest.turns) > 80  # so that the window is actually hit
    actions = [i for i, t in enumerate(longest.turns) if t.is_action]
    chunks = grouped[longest.source]
    saw_full_window = False
    for chunk, a in zip(chunks, actions):
        ctx = longest.turns[max(0, a - 40) : a]
        assert chunk.input_ids == [i for t in ctx + [longest.turns[a]] for i in enc(t.text)]
        assert tok.decode(chunk.input_ids) == "".join(t.text for t in ctx) + longest.turns[a].text
        assert chunk.is_action.count(True) == len(enc(longest.turns[a].text))
        if a >= 40:
            assert len(ctx) == 40
            saw_full_window = True
    assert saw_full_window
    # the PO and FO datasets are the same interactions, so the chunk counts match
    assert len(dm.train_chunks) == len(_dm(paths["fo"], tok, variant="fo").train_chunks)


def test_datamodule_success_filter(maze_data):
    paths, tok = maze_data
    episodes = _by_source(paths["fo"])
    successes = [e for e in episodes.values() if e.success]
    assert 0 < len(successes) < len(episodes)
    dm = _dm(paths["fo"], tok, variant="fo", filter="success")
    assert {c.source for c in dm.train_chunks} == {e.source for e in successes}
    assert len(dm.train_chunks) == sum(e.num_actions for e in successes)
    assert all(episodes[c.source].success for c in dm.train_chunks)


def test_datamodule_val_split_is_disjoint(maze_data):
    paths, tok = maze_data
    dm = _dm(paths["fo"], tok, variant="fo", val_fraction=0.2, seed=3)
    train_src = {c.source for c in dm.train_chunks}
    val_src = {c.source for c in dm.val_chunks}
    assert len(val_src) == 6 and len(train_src) == 24
    assert not train_src & val_src
    again = _dm(paths["fo"], tok, variant="fo", val_fraction=0.2, seed=3)
    assert {c.source for c in again.val_chunks} == val_src


def test_datamodule_episode_longer_than_max_length(maze_data):
    paths, tok = maze_data
    enc = TurnTokenizer(tok)
    episodes = read_episodes(paths["fo"])
    lengths = sorted(((sum(len(enc(t.text)) for t in e.turns), e.source) for e in episodes), reverse=True)
    (longest, longest_source), (second, _) = lengths[0], lengths[1]
    assert longest > second
    lineno = int(longest_source.rsplit(":", 1)[1])
    # whole episodes as one sequence: only the longest episode does not fit
    _dm(paths["fo"], tok, variant="fo", window="all", max_length=longest)
    with pytest.raises(DatasetError) as info:
        _dm(paths["fo"], tok, variant="fo", window="all", max_length=second)
    msg = str(info.value)
    assert msg.startswith(f"{paths['fo']}:{lineno}: field 'turns': ")
    assert str(longest) in msg
    assert "\n" not in msg
    # with truncation the same data loads and every chunk fits
    dm = _dm(paths["fo"], tok, variant="fo", window="all", max_length=second, overflow="truncate")
    assert max(len(c.input_ids) for c in dm.train_chunks) == second


@pytest.mark.parametrize("window", [1, 3, 40, "all"])
def test_chunk_store_gives_back_the_chunks_of_episode_to_chunks(maze_data, window):
    """The packed store returns exactly the chunks `episode_to_chunks` made (later actions and next states
    included), for windowed and whole-episode chunks of the PO data (long episodes), episode by episode in the
    seeded shuffle's order (the order of the in-memory split this streaming one replaced: same seed, same run)."""
    paths, tok = maze_data
    dm = _dm(paths["po"], tok, variant="po", window=window, max_length=4096)
    enc = TurnTokenizer(tok)
    episodes = read_episodes(paths["po"])
    order = list(range(len(episodes)))
    random.Random(dm.seed).shuffle(order)
    expected = [
        c for i in order
        for c in episode_to_chunks(episodes[i], enc, None if window == "all" else window, 4096)
    ]
    got = list(dm.train_chunks)
    assert len(got) == len(expected)
    for mine, theirs in zip(got, expected):
        assert dataclasses.asdict(mine) == {**dataclasses.asdict(theirs), "later_actions": list(theirs.later_actions)}
    assert dm.train_chunks[-1] == got[-1]
    with pytest.raises(IndexError):
        dm.train_chunks[len(got)]


def test_datamodule_top_fraction_matches_filter_episodes(maze_data):
    """The streaming filter keeps what `filter_episodes` keeps on each split (its threshold per split)."""
    paths, tok = maze_data
    dm = _dm(paths["fo"], tok, variant="fo", filter="top_fraction", top_fraction=0.3, val_fraction=0.2, seed=1)
    everything = _dm(paths["fo"], tok, variant="fo", val_fraction=0.2, seed=1)
    episodes = _by_source(paths["fo"])
    for kept, split in ((dm.train_chunks, everything.train_chunks), (dm.val_chunks, everything.val_chunks)):
        split_episodes = [episodes[s] for s in dict.fromkeys(c.source for c in split)]
        wanted = {e.source for e in filter_episodes(split_episodes, "top_fraction", 0.3)}
        assert {c.source for c in kept} == wanted
        assert 0 < len(wanted) < len(split_episodes)


def test_datamodule_validates_the_whole_file_before_tokenising(maze_data, tmp_path, monkeypatch):
    paths, tok = maze_data
    path = tmp_path / "train.jsonl"
    lines = paths["fo"].read_text(encoding="utf-8").splitlines()
    path.write_text("\n".join(lines + ['{"turns": [], "done": true}']) + "\n", encoding="utf-8")
    calls = []
    monkeypatch.setattr(datamodule, "episode_to_chunks", lambda *a: calls.append(a) or [])
    with pytest.raises(DatasetError, match=re.escape(f"{path}:{len(lines) + 1}: field 'turns'")):
        _dm(path, tok, variant="fo")
    assert calls == []


def test_datamodule_success_filter_refuses_string_success(maze_data, tmp_path):
    """`meta.success: "false"` no longer counts as a success: the file is refused."""
    paths, tok = maze_data
    path = tmp_path / "train.jsonl"
    path.write_text(paths["fo"].read_text(encoding="utf-8").replace('"success": false', '"success": "false"', 1),
                    encoding="utf-8")
    with pytest.raises(DatasetError, match="meta.success must be true or false, got 'false'"):
        _dm(path, tok, variant="fo", filter="success")


@pytest.mark.parametrize("field, value, message", [
    ("batch_size", 0, "data.batch_size must be at least 1, got 0"),
    ("batch_size", -1, "data.batch_size must be at least 1, got -1"),
    ("batch_size", 2.5, "data.batch_size must be an integer, got 2.5"),
    ("num_workers", -1, "data.num_workers must be at least 0, got -1"),
    ("window", 0, "data.window must be at least 1, got 0"),
    ("window", "last", "data.window must be 'task', 'all' or a number of texts, got 'last'"),
    ("max_length", 1, "data.max_length must be at least 2, got 1"),
    ("val_fraction", -0.1, "data.val_fraction must be in [0, 1), got -0.1"),
    ("val_fraction", 1.0, "data.val_fraction must be in [0, 1), got 1.0"),
    ("val_fraction", float("nan"), "data.val_fraction must be in [0, 1), got nan"),
    ("top_fraction", 0.0, "data.top_fraction must be in (0, 1], got 0.0"),
    ("top_fraction", 1.5, "data.top_fraction must be in (0, 1], got 1.5"),
    ("filter", "best", "data.filter must be none, success or top_fraction, got 'best'"),
    ("overflow", "wrap", "data.overflow must be error or truncate, got 'wrap'"),
    ("max_line_bytes", 0, "data.max_line_bytes must be at least 1, got 0"),
    ("data_path", "", "data.data_path must be a file path, got ''"),
    ("variant", "zz", "task 'maze' has no variant 'zz'; valid: fo, po"),
])
def test_datamodule_arguments_are_checked_with_one_line(field, value, message):
    kwargs = {"data_path": "train.jsonl", "task": "maze", field: value}
    with pytest.raises(LMRLError) as info:
        EpisodeDataModule(**kwargs)
    assert str(info.value) == message


def test_datamodule_unknown_task():
    with pytest.raises(LMRLError, match="unknown task 'nope'"):
        EpisodeDataModule("train.jsonl", task="nope")
