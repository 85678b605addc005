"""The score benchmarks' shared results file (`benchmarks/_scores.py`): rows from several processes merge under a
lock, a rerun replaces its own row only, and a file written before any row (the Car Dealer's scripted sellers)
takes its first row; every benchmark script's `--help` works."""
from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

import pytest
import yaml

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
import _scores  # noqa: E402

ORDER = {"task": ["a", "b"], "algorithm": ["BC", "MC"]}


def test_rows_merge_replace_and_sort(tmp_path):
    results = tmp_path / "scores.json"
    for task, algorithm, score in [("b", "MC", 1), ("a", "MC", 2), ("a", "BC", 3), ("b", "MC", 4)]:
        _scores.add_row(results, {"task": task, "algorithm": algorithm, "score": score}, {"benchmark": "x"}, ORDER)
    rows = json.loads(results.read_text())["rows"]
    assert [(r["task"], r["algorithm"], r["score"]) for r in rows] == [("a", "BC", 3), ("a", "MC", 2), ("b", "MC", 4)]


def test_a_file_without_rows_takes_its_first(tmp_path):
    results = tmp_path / "car_dealer_scores.json"
    results.write_text(json.dumps({"benchmark": "car_dealer_scores", "sellers": [{"seller": "idle"}]}))
    _scores.add_row(results, {"task": "a", "algorithm": "BC"}, {"benchmark": "car_dealer_scores",
                                                                 "sellers": [{"seller": "idle"}]}, ORDER)
    payload = json.loads(results.read_text())
    assert payload["rows"] == [{"task": "a", "algorithm": "BC"}] and payload["sellers"] == [{"seller": "idle"}]


def test_continuing_bc_needs_its_checkpoint(tmp_path):
    last = tmp_path / "last.ckpt"
    assert _scores.continued_bc(last, False, "BC") is None and _scores.continued_bc(last, True, "MC") is None
    with pytest.raises(SystemExit, match="does not exist; train BC first"):
        _scores.continued_bc(last, True, "BC")
    last.write_bytes(b"")
    assert _scores.continued_bc(last, True, "BC") == last


@pytest.mark.parametrize("script", sorted(p.stem for p in BENCHMARKS.glob("*.py")
                                          if not p.stem.startswith("_") and "def main(argv" in p.read_text()))
def test_every_benchmark_prints_its_help(script, capsys):
    """`--help` formats every option's help (a bare % in one, e.g. "%BC", made argparse raise instead)."""
    module = importlib.import_module(script)
    with pytest.raises(SystemExit) as e:
        module.main(["--help"])
    assert e.value.code == 0 and "usage:" in capsys.readouterr().out


@pytest.mark.parametrize("name, suffix", [("BC", "bc"), ("PPO", "ppo")])
def test_textnav_scores_seed_reaches_the_configs_it_runs(tmp_path, name, suffix):
    """`--seed` seeds training (and an online method's rounds), not only the throughput games: a seed the rewritten
    config ignored would make three "seeds" one run three times."""
    textnav_scores = importlib.import_module("textnav_scores")
    args = argparse.Namespace(
        eval_episodes=8, rounds=2, episodes_per_round=8, steps=3, value_steps=3, decay=None, max_length=1536, seed=7)
    config = textnav_scores.benchmark_config(name, "po", tmp_path, tmp_path / "data", args)
    assert config.name == f"textnav_po_{suffix}.yaml"
    text = config.read_text()
    assert "seed_everything: 7" in text
    assert ("      seed: 7\n" in text) == (name == "PPO")


@pytest.mark.parametrize("name, online", [("BC", False), ("PPO", True), ("online %BC", True)])
def test_questions_scores_seed_reaches_the_configs_it_runs(tmp_path, name, online):
    """The same for `questions_scores.py`, which shares the replacements (`_scores.seed_replacements`)."""
    questions_scores = importlib.import_module("questions_scores")
    args = argparse.Namespace(rounds=2, steps=3, value_steps=3, eval_episodes=None, seed=5)
    text = questions_scores.benchmark_config("twenty_questions", name, tmp_path, tmp_path / "data", args).read_text()
    assert "seed_everything: 5" in text
    assert ("      seed: 5\n" in text) == online


@pytest.mark.parametrize("name, online", [("BC", False), ("MC", False), ("PPO", True), ("online %BC", True)])
def test_car_dealer_scores_seed_reaches_the_configs_it_runs(tmp_path, name, online):
    """The same for `car_dealer_scores.py`, whose online rows also change their round size."""
    car_dealer_scores = importlib.import_module("car_dealer_scores")
    args = argparse.Namespace(rounds=2, round_episodes=8, steps=3, value_steps=3, eval_episodes=16, seed=3)
    text = car_dealer_scores.benchmark_config(name, tmp_path, tmp_path / "data", args).read_text()
    assert "seed_everything: 3" in text
    assert ("      seed: 3\n" in text) == online
    assert ("episodes_per_round: 8 " in text) == online


@pytest.mark.parametrize("name, variant, decay, expected", [
    ("BC", "po", None, "cosine"), ("BC", "po", "none", "none"), ("BC", "fo", None, "cosine"),
    ("%BC", "fo", None, None), ("%BC", "fo", "cosine", "cosine")])
def test_textnav_scores_decay_is_the_configs_unless_given(tmp_path, name, variant, decay, expected):
    """`--decay` left out keeps the config's schedule (BC: cosine; %BC: none stated); given, it replaces a stated
    one or is added where the config has none, never written twice."""
    textnav_scores = importlib.import_module("textnav_scores")
    args = argparse.Namespace(
        eval_episodes=8, rounds=2, episodes_per_round=8, steps=3, value_steps=3, decay=decay, max_length=1536, seed=0)
    text = textnav_scores.benchmark_config(name, variant, tmp_path, tmp_path / "data", args).read_text()
    assert yaml.safe_load(text)["model"]["init_args"]["optim"].get("decay") == expected
    assert text.count("      decay:") == (expected is not None)  # YAML would silently keep the last of two


def test_settings_reach_the_fit_after_the_config(tmp_path, monkeypatch):
    """`--set KEY=VALUE` becomes `--KEY=VALUE` after `-c CONFIG` (so it wins over the config, as on `lmrl fit`'s
    command line) and before `--ckpt_path`."""
    seen = []

    def record(args):
        seen.append(args)
        raise KeyboardInterrupt  # stop before training: only the command line is under test

    monkeypatch.setattr(_scores, "_fit", record)
    with pytest.raises(KeyboardInterrupt):
        _scores.fit_row("PPO", tmp_path / "ppo.yaml", settings=["model.ppo.value_trunk_grad=false"],
                        resume_from=tmp_path / "last.ckpt")
    assert seen == [["-c", str(tmp_path / "ppo.yaml"), "--model.ppo.value_trunk_grad=false",
                     "--ckpt_path", str(tmp_path / "last.ckpt")]]


@pytest.mark.parametrize("script, argv", [
    ("car_dealer_scores", ["--algorithms", "BC"]),
    ("chess_scores", ["--algorithms", "BC"]),
    ("wordle_scores", ["--algorithms", "BC"]),
])
def test_each_score_benchmark_passes_its_settings_to_the_fit(script, argv, tmp_path, monkeypatch):
    """The per-task benchmarks that gained `--set` hand it to `fit_row` (questions and Text-Nav: tested above
    through `fit_row` and their own tests)."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.jsonl").write_text("")  # an existing dataset: nothing is generated
    (data / "stats.json").write_text("{}")
    seen = []

    def record(args):
        seen.append(args)
        raise KeyboardInterrupt

    monkeypatch.setattr(_scores, "_fit", record)
    with pytest.raises(KeyboardInterrupt):
        importlib.import_module(script).main([*argv, "--data", str(data), "--out", str(tmp_path / "out"),
                                              "--results", str(tmp_path / "r.json"), "--set", "model.optim.decay=cosine"])
    assert seen[0][-1] == "--model.optim.decay=cosine"


@pytest.mark.parametrize("script", ["questions_scores", "textnav_scores", "car_dealer_scores", "chess_scores",
                                    "wordle_scores"])
@pytest.mark.parametrize("setting", ["value_trunk_grad", "=false", "", "model lr=1"])
def test_a_setting_that_is_not_key_value_stops_before_any_work(script, setting, capsys):
    with pytest.raises(SystemExit) as e:
        importlib.import_module(script).main(["--set", setting])
    assert e.value.code == 2 and "is not KEY=VALUE with a dotted config key" in capsys.readouterr().err


def test_settings_parse_into_a_list():
    parser = argparse.ArgumentParser()
    _scores.add_setting_argument(parser)
    assert parser.parse_args([]).settings == []
    assert parser.parse_args(["--set", "a.b=1", "--set", "c=x=y"]).settings == ["a.b=1", "c=x=y"]


@pytest.mark.parametrize("variant", ["fo", "po"])
def test_textnav_ilql_sweeps_beta_on_other_sampling_within_the_evaluations_size(tmp_path, variant):
    """The ILQL configs choose their decoding beta on held-out sampling (policy seed 1) before the reported
    evaluation (seed 0); the benchmark's smaller evaluations shrink the sweep too."""
    textnav_scores = importlib.import_module("textnav_scores")
    args = argparse.Namespace(
        eval_episodes=8, rounds=2, episodes_per_round=8, steps=3, value_steps=3, decay=None, max_length=1536, seed=0)
    config = yaml.safe_load(textnav_scores.benchmark_config("ILQL", variant, tmp_path, tmp_path / "data", args)
                            .read_text())
    sweep, evaluation = [c["init_args"] for c in config["trainer"]["callbacks"]
                         if c["class_path"].rsplit(".", 1)[1] in ("BetaSweep", "RolloutEvaluation")]
    assert sweep["protocol"]["policy_seed"] == 1 and evaluation["protocol"].get("policy_seed", 0) == 0
    assert sweep["protocol"]["episodes"] == evaluation["protocol"]["episodes"] == 8
    assert sweep["protocol"]["variant"] == evaluation["protocol"]["variant"] == variant
