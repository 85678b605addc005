"""`lmrl data TASK --from-original FILE`: the original LMRL-Gym project's data files (spec §2.1, §2.3, §2.4, §2.5)
converted to episodes, validated like any dataset, written as a dataset directory; bad records refused with the file,
line and field, and nothing written."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmrl_lightning.cli import main
from lmrl_lightning.data.jsonl import DatasetError, read_episodes
from lmrl_lightning.data.original import iter_records
from lmrl_lightning.data.prepare import import_original_data, read_manifest
from lmrl_lightning.errors import LMRLError

START = "rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w KQkq - 0 1"
ENDGAME = "8/8/8/4k3/8/8/3QK3/8 w - - 0 1"


def write_lines(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_chess_bc_lines_become_one_move_episodes(tmp_path):
    source = write_lines(tmp_path / "train_bc.jsonl", [
        {"from_state": START, "action": "Nf3", "opponent_move": "d5"},
        {"from_state": ENDGAME, "action": "Qd5+"},
    ])
    stats = import_original_data("chess", None, source, tmp_path / "data")
    first, second = read_episodes(tmp_path / "data" / "train.jsonl")
    assert [t.text for t in first.turns] == [" ".join(START) + "\n", "N f 3\n"]
    assert first.turns[1].is_action and first.total_reward == 0 and not first.done
    assert first.meta == {"opponent_move": "d5"}
    assert second.turns[1].text == "Q d 5 +\n"
    assert stats["n_episodes"]["ours"] == 2 and stats["n_episodes"]["paper"] == 625_000
    manifest = read_manifest(tmp_path / "data")
    assert manifest["task"] == "chess" and manifest["source"] == str(source.resolve()) and manifest["episodes"] == 2
    assert (tmp_path / "data" / "tokenizer").is_dir()


def test_endgame_games_keep_rewards_and_end(tmp_path):
    won = [{"state": ENDGAME, "action": "Qd5+", "reward": 0.0, "done": False},
           {"state": "8/8/8/3Q4/8/4k3/4K3/8 w - - 0 1", "action": "Kf1", "reward": -1.0, "done": False},
           {"state": "4k3/8/8/8/8/8/3Q4/4K3 w - - 0 1", "action": "Qd7#", "reward": 1.0, "done": True}]
    source = write_lines(tmp_path / "train.jsonl", [won, won[:1]])
    stats = import_original_data("endgames", None, source, tmp_path / "data")
    game, cut = read_episodes(tmp_path / "data" / "train.jsonl")
    assert [t.reward for t in game.turns if t.is_action] == [0.0, -1.0, 1.0]
    assert game.done and game.success and game.num_actions == 3
    assert not cut.done and not cut.success
    assert stats["success_rate"]["ours"] == 0.5 and stats["mean_return"]["ours"] == 0.0


def test_maze_and_wordle_formats(tmp_path):
    po = {"text_history": ["There is a wall to your left.\n", "move up\n", "There is no wall.\n", "move left\n",
                           "Success\n"], "rewards": [0, -1, 0, 0, 0], "dones": [False, False, False, True, True]}
    fo = [{"state": "goal (8, 6), at (8, 5)", "action": "move down", "reward": 0.0, "done": True}]
    source = write_lines(tmp_path / "maze.jsonl", [po, fo])
    import_original_data("maze", "po", source, tmp_path / "maze")
    partial, full = read_episodes(tmp_path / "maze" / "train.jsonl")
    assert [t.is_action for t in partial.turns] == [False, True, False, True, False]
    assert partial.total_reward == -1 and partial.done
    assert [t.text for t in full.turns] == ["goal (8, 6), at (8, 5)\n", "move down\n"]  # end of turn added

    wordle = {"sequence": [["Wordle:\n", 0], ["c r a n e\n", 1], ["b b b g g\n", 0], ["s h a n e\n", 1]],
              "reward": [0, -1, 0, 0], "done": True}
    # The original's JSON-array files (20Q's train.json) are read too.
    array = tmp_path / "wordle.json"
    array.write_text(json.dumps([wordle, wordle]))
    import_original_data("wordle", None, array, tmp_path / "wordle")
    episodes = read_episodes(tmp_path / "wordle" / "train.jsonl")
    assert len(episodes) == 2 and episodes[0].num_actions == 2 and episodes[0].total_reward == -1


@pytest.mark.parametrize("record, message", [
    ({"from_state": "not a fen", "action": "e4"}, "train.jsonl:2: field 'from_state': not a FEN"),
    ({"from_state": START, "action": 4}, "train.jsonl:2: field 'action' must be a string"),
    ({"from_state": START}, "train.jsonl:2: expected a BC move"),
    ([{"state": ENDGAME, "action": "Qd5+", "reward": "1"}], "train.jsonl:2: transition 0: reward must be a finite"),
    ([{"state": ENDGAME, "action": "Qd5+\nQd6"}], "train.jsonl:2: field 'action': a move must be one line"),
])
def test_bad_chess_records_are_refused_with_line_and_field(tmp_path, record, message):
    source = write_lines(tmp_path / "train.jsonl", [{"from_state": START, "action": "e4"}, record])
    with pytest.raises(DatasetError) as error:
        import_original_data("chess", None, source, tmp_path / "data")
    assert message in str(error.value)
    assert not (tmp_path / "data").exists() and [p.name for p in tmp_path.iterdir()] == ["train.jsonl"]


def test_bad_shared_records(tmp_path):
    short = {"text_history": ["a\n", "move up\n"], "rewards": [0], "dones": [False, True]}
    with pytest.raises(DatasetError, match=r"maze.jsonl:1: field 'rewards' has 1 entries for 2 texts"):
        import_original_data("maze", "po", write_lines(tmp_path / "maze.jsonl", [short]), tmp_path / "out")
    observation_reward = {"text_history": ["a\n", "move up\n"], "rewards": [1, 0], "dones": [False, True]}
    with pytest.raises(DatasetError, match=r"maze.jsonl:1: turns\[0\].reward is 1.0 on an observation"):
        import_original_data("maze", "po", write_lines(tmp_path / "maze.jsonl", [observation_reward]),
                             tmp_path / "out")
    bad_pair = {"sequence": [["Wordle:\n", 0], ["crane\n", 2]], "reward": [0, 0], "done": False}
    array = tmp_path / "w.json"
    array.write_text(json.dumps([bad_pair]))
    with pytest.raises(DatasetError, match=r"w.json: record 0: sequence\[1\] must be \[text, is_action"):
        import_original_data("wordle", None, array, tmp_path / "out")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DatasetError, match="holds no episodes"):
        import_original_data("wordle", None, tmp_path / "empty.jsonl", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    (tmp_path / "broken.json").write_text("[{\"sequence\": ")
    with pytest.raises(DatasetError, match="broken.json: invalid JSON"):
        list(iter_records(tmp_path / "broken.json"))


def test_cli(tmp_path, capsys):
    source = write_lines(tmp_path / "bc.jsonl", [{"from_state": ENDGAME, "action": "Qd5+"}])
    assert main(["data", "endgames", "--from-original", str(source), "--out", str(tmp_path / "d")]) == 0
    out = capsys.readouterr().out
    assert "episodes" in out and "97756" in out and (tmp_path / "d" / "manifest.json").is_file()
    assert main(["data", "endgames", "--from-original", str(source), "--out", str(tmp_path / "e"),
                 "--episodes", "3"]) == 2
    assert "--episodes and --from-original exclude each other" in capsys.readouterr().err
    assert main(["data", "endgames", "--from-original", str(tmp_path / "missing.jsonl"), "--out",
                 str(tmp_path / "e")]) == 2
    assert "missing.jsonl: no such file" in capsys.readouterr().err


def test_task_without_reader_is_refused(tmp_path, monkeypatch):
    from lmrl_lightning.registry import get_task

    monkeypatch.setattr(get_task("maze"), "read_original", None)
    with pytest.raises(LMRLError, match="cannot read the original project's data files"):
        import_original_data("maze", "fo", tmp_path / "x.jsonl", tmp_path / "out")
