"""The catalogue of bad inputs for the `lmrl` command (issue 12), shared by `benchmarks/bad_inputs.py` (every case
as a real subprocess) and `tests/test_bad_inputs.py` (most cases in-process through `lmrl_lightning.cli.main`).

A case builds its files in an empty directory (which is also the working directory of the command) and returns
the argv after `lmrl`. The expected outcome of every case is a refusal, and it is *clean* when:

* the exit code is 2;
* stderr holds no "Traceback";
* stderr holds no line starting with "usage:" (neither argparse's nor LightningCLI's usage text);
* exactly one stderr line contains "lmrl: error:", and it is the last non-blank line of stderr, and it starts
  with "lmrl: error: ";
* stderr has at most `MAX_STDERR_LINES` lines in all (Lightning's few start-up log lines are allowed);
* every key word of the case is in that line (case-insensitive; "a|b" means a or b);
* the case's marker file (code-execution cases) was not created, and its `check` (what must not have changed on
  disk, e.g. a directory left behind) finds nothing.

A few cases may also be accepted (`accept`: e.g. a command-line override on resume either applies or is
refused): exit 0 with `accept` finding nothing is clean too.

Otherwise the result is classified, first match wins: `code-executed` (marker created), `hang` (ran past the
timeout), `traceback`, `usage-dump`, `silent` (exit 0, or an exit code other than 2, without a traceback),
`side-effect` (a clean-looking refusal that left damage behind), `unclear` (exit 2 but the one line is missing,
not last, or lacks a key word, or stderr is too long).
"""
from __future__ import annotations

import gzip
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

MAX_STDERR_LINES = 12
CATEGORIES = ("clean", "traceback", "silent", "usage-dump", "hang", "code-executed", "side-effect", "unclear")
MARKER = "PWNED"  # code-execution cases: created by the payload if it ever runs
URL_DEAD = "http://127.0.0.1:9/x.ckpt"  # nothing listens on the discard port


@dataclass
class Fixtures:
    """Valid inputs the cases start from (built once by `build_fixtures`)."""

    root: Path
    data_dir: Path  # `lmrl data maze --episodes 20 --vocab-size 300`
    bc_ckpt: Path  # 2 BC steps on it
    ilql_ckpt: Path  # 2 ILQL steps from bc_ckpt
    export_dir: Path  # `lmrl export bc_ckpt`
    payload_url: Optional[str] = None  # an http URL serving a pickle whose unpickling creates MARKER (see serve_payload)

    @property
    def train(self) -> Path:
        return self.data_dir / "train.jsonl"

    @property
    def tokenizer(self) -> Path:
        return self.data_dir / "tokenizer"


@dataclass
class Case:
    name: str
    kind: str  # dataset, fit, config, resume, code, eval, export, data, play, cli
    build: Callable[[Fixtures, Path], list[str]]  # writes files into the case dir, returns argv after `lmrl`
    keywords: tuple[str, ...] = ()  # each must be in the error line (case-insensitive; "a|b": either)
    marker: bool = False  # a code-execution case: MARKER must not appear in the case dir
    check: Optional[Callable[[Path], Optional[str]]] = None  # damage left on disk (None: none)
    accept: Optional[Callable[[Path], Optional[str]]] = None  # exit 0 is fine when this returns None
    heavy: bool = False  # too slow to run in-process in the test suite when not fixed (big inputs, long runs)
    note: str = ""


def fit_argv(fx: Fixtures, d: Path, data_path=None, tokenizer=None, steps: int = 2, model: str = "BC",
             extra: Sequence[str] = ()) -> list[str]:
    """`lmrl fit` of a tiny model (the flags of tests/test_cli.py `fit_args`), rooted in the case dir."""
    # The flags of the code after issue 13 (--model.optim.lr, --episodes, a callback's protocol); the before run
    # (bad_inputs_before.json, at 074a826) used those of its day (--model.lr, --rollouts, the callback's task).
    argv = ["fit", "--seed_everything", "0", "--model", f"lmrl_lightning.algorithms.{model}"]
    if model == "BC":
        argv += ["--model.backbone.tokenizer", str(tokenizer or fx.tokenizer)]
    else:
        argv += ["--model.init_from", str(fx.bc_ckpt)]
    argv += [
        "--data", "lmrl_lightning.data.datamodule.EpisodeDataModule", "--data.data_path", str(data_path or fx.train),
        "--data.task", "maze", "--data.variant", "fo", "--data.max_length", "64", "--data.batch_size", "8",
        "--trainer.accelerator", "cpu", "--trainer.max_steps", str(steps), "--trainer.limit_val_batches", "0",
        "--trainer.default_root_dir", str(d / "run"), "--trainer.logger", "false",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
    ]
    return argv + list(extra)


def eval_argv(target, *extra: str, episodes: Optional[str] = "25") -> list[str]:
    argv = ["eval", str(target)]
    if episodes is not None:
        argv += ["--episodes", episodes]
    return argv + list(extra)


# ---- helpers that write inputs -------------------------------------------------------------------------------------
def good_lines(fx: Fixtures) -> list[str]:
    return fx.train.read_text(encoding="utf-8").splitlines()


def good_episode(fx: Fixtures) -> dict:
    return json.loads(good_lines(fx)[0])


def write_dataset(fx: Fixtures, d: Path, first: str) -> Path:
    """bad.jsonl: `first` on line 1, then the valid fixture episodes."""
    path = d / "bad.jsonl"
    path.write_text(first + "\n" + "\n".join(good_lines(fx)) + "\n", encoding="utf-8")
    return path


def bad_episode(mutate: Callable[[dict], None]) -> Callable[[Fixtures, Path], list[str]]:
    """A dataset case: the fixture's first episode changed by `mutate`, on line 1 of bad.jsonl, through `lmrl fit`."""

    def build(fx: Fixtures, d: Path) -> list[str]:
        episode = good_episode(fx)
        mutate(episode)
        return fit_argv(fx, d, data_path=write_dataset(fx, d, json.dumps(episode)))

    return build


def bad_line(make: Callable[[Fixtures], str]) -> Callable[[Fixtures, Path], list[str]]:
    return lambda fx, d: fit_argv(fx, d, data_path=write_dataset(fx, d, make(fx)))


def bad_bytes(make: Callable[[Fixtures], bytes]) -> Callable[[Fixtures, Path], list[str]]:
    def build(fx: Fixtures, d: Path) -> list[str]:
        path = d / "bad.jsonl"
        path.write_bytes(make(fx))
        return fit_argv(fx, d, data_path=path)

    return build


def fit_with(*extra: str, **kw) -> Callable[[Fixtures, Path], list[str]]:
    return lambda fx, d: fit_argv(fx, d, extra=extra, **kw)


def write_config(d: Path, text: str, name: str = "config.yaml") -> Path:
    path = d / name
    path.write_text(text, encoding="utf-8")
    return path


def garbage_ckpt(d: Path) -> Path:
    path = d / "garbage.ckpt"
    path.write_bytes(bytes(range(256)) * 64)
    return path


def foreign_ckpt(d: Path) -> Path:
    """A valid torch file, not a Lightning checkpoint of this project."""
    import torch

    path = d / "foreign.ckpt"
    torch.save({"state_dict": {"weight": torch.zeros(2, 2)}, "epoch": 1}, path)
    return path


def retagged_ckpt(fx: Fixtures, d: Path, algorithm: str, name: str = "retagged.ckpt") -> Path:
    """The BC checkpoint with its recorded algorithm replaced."""
    import torch

    ckpt = torch.load(fx.bc_ckpt, map_location="cpu", weights_only=True)
    ckpt["lmrl"]["algorithm"] = algorithm
    path = d / name
    torch.save(ckpt, path)
    return path


def evil_module(d: Path, name: str = "evil_algo") -> str:
    """An importable module (the case dir is the working directory, first on sys.path for `python -m`) whose
    import creates MARKER: the dotted path of a class in it."""
    (d / f"{name}.py").write_text(
        "from pathlib import Path\n"
        f"Path(__file__).with_name({MARKER!r}).write_text('imported')\n"
        "class Evil:\n    pass\n",
        encoding="utf-8",
    )
    return f"{name}.Evil"


def own_file(d: Path, rel: str = "afile") -> Path:
    """A file of the person's ("mine"), which no command may overwrite."""
    path = d / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("mine", encoding="utf-8")
    return path


def copy_export(fx: Fixtures, d: Path) -> Path:
    out = d / "export"
    shutil.copytree(fx.export_dir, out)
    return out


def edit_json(path: Path, edit: Callable[[dict], None]) -> None:
    obj = json.loads(path.read_text(encoding="utf-8"))
    edit(obj)
    path.write_text(json.dumps(obj, indent=2), encoding="utf-8")


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def copy_dataset(fx: Fixtures, d: Path) -> Path:
    out = d / "dataset"
    shutil.copytree(fx.data_dir, out)
    return out


def unchanged(path_of: Callable[[Path], Path], expected: Callable[[Path], bytes]) -> Callable[[Path], Optional[str]]:
    def check(d: Path) -> Optional[str]:
        path = path_of(d)
        if not path.exists():
            return f"{path.name} was removed"
        return None if path.read_bytes() == expected(d) else f"{path.name} was changed"

    return check


def absent(rel: str) -> Callable[[Path], Optional[str]]:
    return lambda d: f"{rel} was left behind" if (d / rel).exists() else None


def trust_remote_code_export(fx: Fixtures, d: Path) -> list[str]:
    """An export whose lmrl.json asks for trust_remote_code and whose config.json maps AutoModelForCausalLM to a
    .py file of the directory that creates MARKER (an absolute path: transformers copies the file elsewhere)."""
    out = copy_export(fx, d)
    marker = (d / MARKER).resolve()
    (out / "evil_model.py").write_text(
        "from pathlib import Path\n"
        f"Path({str(marker)!r}).write_text('imported')\n"
        "class EvilModel:\n    pass\n",
        encoding="utf-8",
    )
    edit_json(out / "config.json", lambda c: c.update(auto_map={"AutoModelForCausalLM": "evil_model.EvilModel"}))
    edit_json(out / "lmrl.json", lambda m: m["hparams"]["backbone"].update(trust_remote_code=True))
    return eval_argv(out)


def deep_json(depth: int) -> str:
    return '{"turns": ' + "[" * depth + "]" * depth + ', "done": true, "meta": {}}'


def reward_digits(n: int) -> Callable[[Fixtures, Path], list[str]]:
    """A dataset case: the first action's reward an n-digit integer literal (json.dumps refuses > 4300 digits)."""
    def make(fx: Fixtures) -> str:
        episode = good_episode(fx)
        episode["turns"][1]["reward"] = 12345.0
        return json.dumps(episode).replace("12345.0", "9" * n, 1)

    return bad_line(make)


def _set_turn(i: int, **kw) -> Callable[[dict], None]:
    return lambda e: e["turns"][i].update(kw)


def _checkpoint_lr(d: Path) -> Optional[str]:
    """Accepted resume with `--model.optim.lr 0.5`: the checkpoint written by the resumed run records lr 0.5."""
    import torch

    ckpts = sorted((d / "run").rglob("*.ckpt"), key=lambda p: p.stat().st_mtime)
    if not ckpts:
        return "no checkpoint written"
    lr = torch.load(ckpts[-1], map_location="cpu", weights_only=True)["hyper_parameters"]["optim"].get("lr")
    return None if lr == 0.5 else f"the resumed run trained with lr {lr}, not the command line's 0.5"


def _config_kept(d: Path) -> Optional[str]:
    return None if (d / "config.yaml").read_text(encoding="utf-8").startswith("# my own notes") else \
        "./config.yaml (the input) was overwritten"


def _dataset_kept(d: Path) -> Optional[str]:
    train = d / "dataset" / "train.jsonl"
    if not train.exists():
        return "dataset/train.jsonl was removed"
    return None if _first_line_is_maze(train) else "dataset/train.jsonl was replaced"


def _first_line_is_maze(path: Path) -> bool:
    with open(path, encoding="utf-8") as f:
        return "move " in f.readline()


# ---- the catalogue -------------------------------------------------------------------------------------------------
def cases() -> list[Case]:
    C = Case
    ds = "bad.jsonl:1"  # the file:line every dataset error names
    out: list[Case] = []

    # Datasets (every one through `lmrl fit --data.data_path bad.jsonl`)
    out += [
        C("dataset-non-utf8", "dataset",
          bad_bytes(lambda fx: good_lines(fx)[0].replace("move", "m\xe9ve").encode("latin-1") + b"\n"),
          (ds, "utf-8|utf8|encoding|decode")),
        C("dataset-utf16", "dataset",
          bad_bytes(lambda fx: ("\n".join(good_lines(fx)) + "\n").encode("utf-16")), ("bad.jsonl", "utf-8|utf8|utf-16|encoding")),
        C("dataset-gzip", "dataset",
          bad_bytes(lambda fx: gzip.compress(("\n".join(good_lines(fx)) + "\n").encode())),
          ("bad.jsonl", "gzip|utf-8|utf8|encoding|compressed|binary")),
        C("dataset-reward-400-digits", "dataset", reward_digits(400), (ds, "reward")),
        C("dataset-reward-5000-digits", "dataset", reward_digits(5000), (ds, "reward|digits|integer|number")),
        C("dataset-nested-100k", "dataset", bad_line(lambda fx: deep_json(100_000)), (ds, "nest|deep|depth|json")),
        C("dataset-first-turn-action", "dataset", bad_episode(lambda e: e["turns"].insert(0, {
            "text": "move up\n", "is_action": True, "reward": -1.0})), (ds, "turns[0]")),
        C("dataset-two-observations", "dataset", bad_episode(lambda e: e["turns"].insert(1, {
            "text": "There are no walls near you.\n", "is_action": False, "reward": 0.0})), (ds, "turns[1]")),
        C("dataset-two-actions", "dataset", bad_episode(lambda e: e["turns"].insert(2, {
            "text": "move up\n", "is_action": True, "reward": -1.0})), (ds, "turns[2]")),
        C("dataset-success-string", "dataset", bad_episode(lambda e: e["meta"].update(success="false")),
          (ds, "success")),
        C("dataset-unknown-field", "dataset", bad_episode(lambda e: e.update(rewardz=[1, 2])), (ds, "rewardz")),
        C("dataset-unknown-turn-field", "dataset", bad_episode(_set_turn(1, is_acton=True)), (ds, "is_acton")),
        C("dataset-control-chars", "dataset", bad_episode(_set_turn(0, text="walls\x1b[2J\x00 here\n")), (ds, "control")),
        C("dataset-crlf-text", "dataset", bad_episode(_set_turn(1, text="move up\r\n")),
          (ds, "control|carriage|crlf|\\r")),
        C("dataset-crlf-file", "dataset",
          bad_bytes(lambda fx: ("\r\n".join(good_lines(fx)[:1] + ['{"turns": 5}']) + "\r\n").encode()),
          ("bad.jsonl:2",), note="CRLF line ends are tolerated (JSON whitespace); the error on line 2 still names its line"),
        C("dataset-action-without-eot", "dataset", bad_episode(_set_turn(1, text="move up")),
          (ds, "end-of-turn|end of turn|newline|\\n")),
        C("dataset-newline-inside-action", "dataset", bad_episode(_set_turn(1, text="move up\nmove down\n")),
          (ds, "newline|end-of-turn|end of turn|\\n")),
        C("dataset-reward-sum-overflow", "dataset", bad_line(lambda fx: json.dumps({"turns": [
            {"text": "a\n", "is_action": False, "reward": 0.0}, {"text": "move up\n", "is_action": True, "reward": 1e308},
            {"text": "b\n", "is_action": False, "reward": 0.0}, {"text": "move up\n", "is_action": True, "reward": 1e308},
            {"text": "Success\n", "is_action": False, "reward": 0.0}], "done": True, "meta": {}})),
          (ds, "reward|overflow|finite|inf")),
        C("dataset-reward-nan-literal", "dataset",
          bad_line(lambda fx: json.dumps(good_episode(fx)).replace('"reward": -1.0', '"reward": NaN', 1)), (ds, "reward")),
        C("dataset-reward-string", "dataset", bad_episode(_set_turn(1, reward="-1")), (ds, "reward")),
        C("dataset-reward-on-observation", "dataset", bad_episode(_set_turn(0, reward=1.0)), (ds, "reward")),
        C("dataset-is-action-string", "dataset", bad_episode(_set_turn(1, is_action="yes")), (ds, "is_action")),
        C("dataset-text-not-string", "dataset", bad_episode(_set_turn(1, text=5)), (ds, "text")),
        C("dataset-lone-surrogate", "dataset",
          bad_line(lambda fx: json.dumps(good_episode(fx)).replace("move", "\\ud800move", 1)),
          (ds, "surrogate|unicode|utf|control|U+D8")),
        C("dataset-turns-empty", "dataset", bad_episode(lambda e: e.update(turns=[])), (ds, "turns")),
        C("dataset-done-string", "dataset", bad_episode(lambda e: e.update(done="true")), (ds, "done")),
        C("dataset-meta-list", "dataset", bad_episode(lambda e: e.update(meta=[1])), (ds, "meta")),
        C("dataset-top-level-list", "dataset", bad_line(lambda fx: "[1, 2]"), (ds, "object|dict|episode")),
        C("dataset-not-json", "dataset", bad_line(lambda fx: "{turns: oops"), (ds, "json")),
        C("dataset-empty-file", "dataset", bad_bytes(lambda fx: b""), ("bad.jsonl", "empty|no episode")),
        C("dataset-20mb-line", "dataset",
          bad_episode(_set_turn(0, text="There are no walls near you. " * 700_000 + "\n")),
          (ds, "long|size|bytes|length|limit|tokens"), heavy=True),
        C("dataset-missing-file", "dataset", lambda fx, d: fit_argv(fx, d, data_path=d / "missing.jsonl"),
          ("missing.jsonl", "not exist|not found|no such")),
        C("dataset-is-directory", "dataset", lambda fx, d: fit_argv(fx, d, data_path=d),
          ("directory|not a file|no such",)),
    ]

    # `lmrl fit` flags
    out += [
        C("fit-lr-negative", "fit", fit_with("--model.optim.lr", "-1"), ("lr",)),
        C("fit-lr-nan", "fit", fit_with("--model.optim.lr", "nan"), ("lr",)),
        C("fit-lr-inf", "fit", fit_with("--model.optim.lr", "inf"), ("lr",)),
        C("fit-batch-size-0", "fit", fit_with("--data.batch_size", "0"), ("batch_size",)),
        C("fit-batch-size-negative", "fit", fit_with("--data.batch_size", "-1"), ("batch_size",)),
        C("fit-window-0", "fit", fit_with("--data.window", "0"), ("window",)),
        C("fit-betas-out-of-range", "fit", fit_with("--model.optim.betas", "[2, 0.5]"), ("betas",)),
        C("fit-num-workers-negative", "fit", fit_with("--data.num_workers", "-1"), ("num_workers",)),
        C("fit-max-positions-4", "fit", fit_with("--model.backbone.max_positions", "4"), ("max_positions",)),
        C("fit-dropout-5", "fit", fit_with("--model.backbone.dropout", "5"), ("dropout",)),
        C("fit-dtype-float99", "fit", fit_with("--model.backbone.dtype", "float99"), ("dtype", "float99")),
        C("fit-val-fraction-negative", "fit", fit_with("--data.val_fraction", "-0.1"), ("val_fraction",)),
        C("fit-val-fraction-above-1", "fit", fit_with("--data.val_fraction", "1.5"), ("val_fraction",)),
        C("fit-warmup-negative", "fit", fit_with("--model.optim.warmup_steps", "-5"), ("warmup",)),
        C("fit-weight-decay-negative", "fit", fit_with("--model.optim.weight_decay", "-0.1"), ("weight_decay",)),
        C("fit-max-length-0", "fit", fit_with("--data.max_length", "0"), ("max_length",)),
        C("fit-top-fraction-2", "fit", fit_with("--data.filter", "top_fraction", "--data.top_fraction", "2"), ("top_fraction",)),
        # Lightning refuses the combination when it builds the Trainer (was a traceback)
        C("fit-progress-bar-off-with-bar-callback", "fit",
          fit_with("--trainer.callbacks", "lightning.pytorch.callbacks.TQDMProgressBar"), ("trainer", "enable_progress_bar")),
        C("fit-missing-tokenizer", "fit", lambda fx, d: fit_argv(fx, d, tokenizer=d / "no_tokenizer"),
          ("no_tokenizer",)),
        C("fit-empty-tokenizer-dir", "fit",
          lambda fx, d: (d / "empty_tok").mkdir() or fit_argv(fx, d, tokenizer=d / "empty_tok"), ("empty_tok",)),
        C("fit-missing-model-dir", "fit", fit_with("--model.backbone.name_or_path", "./no_such_model"),
          ("no_such_model",)),
        C("fit-unknown-data-task", "fit", fit_with("--data.task", "nope"), ("nope",)),
        C("fit-unknown-data-variant", "fit", fit_with("--data.variant", "zz"), ("zz",)),
        C("fit-init-from-missing", "fit",
          lambda fx, d: _ilql_from(fx, d, d / "missing.ckpt"), ("missing.ckpt",)),
        C("fit-init-from-garbage", "fit", lambda fx, d: _ilql_from(fx, d, garbage_ckpt(d)), ("garbage.ckpt",)),
        C("fit-init-from-foreign", "fit", lambda fx, d: _ilql_from(fx, d, foreign_ckpt(d)), ("foreign.ckpt",)),
        C("fit-init-from-url", "fit", lambda fx, d: _ilql_from(fx, d, URL_DEAD), ("url|local|http",)),
        C("fit-ckpt-path-missing", "fit", lambda fx, d: fit_argv(fx, d, extra=["--ckpt_path", str(d / "missing.ckpt")]),
          ("missing.ckpt",)),
        C("fit-ckpt-path-garbage", "fit", lambda fx, d: fit_argv(fx, d, extra=["--ckpt_path", str(garbage_ckpt(d))]),
          ("garbage.ckpt",)),
        C("fit-ckpt-path-foreign", "fit", lambda fx, d: fit_argv(fx, d, extra=["--ckpt_path", str(foreign_ckpt(d))]),
          ("foreign.ckpt",)),
        C("fit-ckpt-path-url", "fit", fit_with("--ckpt_path", URL_DEAD), ("url|local|http",)),
        C("fit-unknown-algorithm-name", "fit", lambda fx, d: ["fit", "--model", "NoSuchAlgo"], ("NoSuchAlgo",)),
        C("fit-wrong-type-batch-size", "fit", fit_with("--data.batch_size", "abc"), ("batch_size",)),
        C("fit-wrong-type-lr", "fit", fit_with("--model.optim.lr", "fast"), ("lr",)),
        C("fit-unknown-key", "fit", fit_with("--model.nope", "1"), ("nope",)),
        C("fit-unknown-data-class", "fit",
          lambda fx, d: [a if a != "lmrl_lightning.data.datamodule.EpisodeDataModule" else "no.such.DataModule"
                         for a in fit_argv(fx, d)], ("no.such.DataModule",)),
    ]

    # Config files
    out += [
        C("config-missing-file", "config", lambda fx, d: ["fit", "-c", str(d / "missing.yaml")], ("missing.yaml",)),
        C("config-yaml-syntax-error", "config",
          lambda fx, d: ["fit", "-c", str(write_config(d, "model:\n  class_path: [unclosed\n  lr: 1\n"))],
          ("config.yaml", "yaml|syntax|parse")),
        C("config-unknown-class-path", "config", lambda fx, d: ["fit", "-c", str(write_config(d, _config_yaml(
            fx, d, model_class="no.such.Algorithm")))], ("no.such.Algorithm",)),
        C("config-unknown-key", "config", lambda fx, d: ["fit", "-c", str(write_config(d, _config_yaml(
            fx, d, trainer_extra="  max_stepz: 3\n")))], ("max_stepz",)),
        C("config-wrong-type", "config", lambda fx, d: ["fit", "-c", str(write_config(d, _config_yaml(
            fx, d, model_extra="    optim:\n      lr: fast\n")))], ("lr",)),
        C("config-not-a-mapping", "config", lambda fx, d: ["fit", "-c", str(write_config(d, "- 1\n- 2\n"))],
          ("config.yaml",)),
        C("config-callback-unknown-task", "config", lambda fx, d: ["fit", "-c", str(write_config(d, _config_yaml(
            fx, d, trainer_extra="  callbacks:\n    - class_path: lmrl_lightning.callbacks.RolloutEvaluation\n"
                                 "      init_args:\n        protocol:\n          task: nope\n")))], ("nope",)),
        C("config-callback-unknown-class", "config", lambda fx, d: ["fit", "-c", str(write_config(d, _config_yaml(
            fx, d, trainer_extra="  callbacks:\n    - class_path: no.such.Callback\n")))], ("no.such.Callback",)),
        C("config-overwrites-input", "config",
          lambda fx, d: ["fit", "-c", str(write_config(d, "# my own notes\n" + _config_yaml(fx, d, root=".")))],
          ("config.yaml",), accept=_config_kept,
          note="run in the directory of config.yaml with logger: false; accepted if ./config.yaml is untouched"),
    ]

    # Resume
    out += [
        C("resume-other-algorithm", "resume",
          lambda fx, d: fit_argv(fx, d, steps=4, extra=["--ckpt_path", str(fx.ilql_ckpt)]), ("ILQL", "BC")),
        C("resume-cli-lr-override", "resume",
          lambda fx, d: fit_argv(fx, d, steps=3, extra=["--model.optim.lr", "0.5", "--ckpt_path", str(fx.bc_ckpt)]),
          ("lr",), accept=_checkpoint_lr, note="the override applies (accepted) or is refused; never ignored"),
        C("resume-other-variant", "resume",
          lambda fx, d: fit_argv(fx, d, steps=4, extra=["--data.variant", "po", "--ckpt_path", str(fx.bc_ckpt)]),
          ("po", "fo")),
    ]

    # Ways to run code from a file
    out += [
        C("code-ckpt-path-url-payload", "code", lambda fx, d: fit_argv(fx, d, extra=["--ckpt_path", _payload(fx)]),
          ("url|local|http",), marker=True, note="a local HTTP server serves a pickle that creates the marker"),
        C("code-init-from-url-payload", "code", lambda fx, d: _ilql_from(fx, d, _payload(fx)),
          ("url|local|http",), marker=True),
        C("code-eval-export-trust-remote-code", "code", trust_remote_code_export, ("trust|remote",), marker=True,
          accept=lambda d: None, note="refused, or evaluated without the file's code (a file never grants trust)"),
        C("code-eval-ckpt-unregistered-algorithm", "code",
          lambda fx, d: eval_argv(retagged_ckpt(fx, d, evil_module(d))), ("evil_algo",), marker=True),
        C("code-eval-export-unregistered-algorithm", "code", lambda fx, d: _export_algorithm(fx, d), ("evil_algo",),
          marker=True),
        C("code-export-ckpt-unregistered-algorithm", "code",
          lambda fx, d: ["export", str(retagged_ckpt(fx, d, evil_module(d))), "--out", str(d / "out")],
          ("evil_algo",), marker=True),
        C("code-fit-init-from-unregistered-algorithm", "code",
          lambda fx, d: _ilql_from(fx, d, retagged_ckpt(fx, d, evil_module(d))), ("evil_algo",), marker=True,
          accept=lambda d: None, note="init_from reads weights only: refused, or trained without importing it"),
    ]

    # `lmrl eval`
    out += [
        C("eval-empty-ckpt", "eval", lambda fx, d: (d / "empty.ckpt").write_bytes(b"") or eval_argv(d / "empty.ckpt"),
          ("empty.ckpt",)),
        C("eval-missing-ckpt", "eval", lambda fx, d: eval_argv(d / "missing.ckpt"), ("missing.ckpt",)),
        C("eval-garbage-ckpt", "eval", lambda fx, d: eval_argv(garbage_ckpt(d)), ("garbage.ckpt",)),
        C("eval-foreign-ckpt", "eval", lambda fx, d: eval_argv(foreign_ckpt(d)), ("foreign.ckpt",)),
        C("eval-url", "eval", lambda fx, d: eval_argv(URL_DEAD), ("url|local|http|not exist",)),
        # (the issue's --rollouts is --episodes since issue 13; the names stay those of bad_inputs_before.json)
        C("eval-rollouts-negative", "eval", lambda fx, d: eval_argv(fx.bc_ckpt, episodes="-1"), ("episodes",)),
        C("eval-rollouts-0", "eval", lambda fx, d: eval_argv(fx.bc_ckpt, episodes="0"), ("episodes",), heavy=True),
        C("eval-rollouts-not-int", "eval", lambda fx, d: eval_argv(fx.bc_ckpt, episodes="abc"), ("episodes",)),
        C("eval-episodes-not-multiple-of-starts", "eval", lambda fx, d: eval_argv(fx.bc_ckpt, episodes="10"),
          ("episodes", "25")),
        C("eval-batch-size-0", "eval", lambda fx, d: eval_argv(fx.bc_ckpt, "--batch-size", "0"), ("batch",)),
        C("eval-batch-size-negative", "eval", lambda fx, d: eval_argv(fx.bc_ckpt, "--batch-size", "-1"), ("batch",)),
        C("eval-temperature-0", "eval", lambda fx, d: eval_argv(fx.bc_ckpt, "--temperature", "0"), ("temperature",)),
        C("eval-temperature-nan", "eval", lambda fx, d: eval_argv(fx.bc_ckpt, "--temperature", "nan"), ("temperature",)),
        C("eval-temperature-negative", "eval", lambda fx, d: eval_argv(fx.bc_ckpt, "--temperature", "-1"),
          ("temperature",)),
        C("eval-beta-nan", "eval", lambda fx, d: eval_argv(fx.ilql_ckpt, "--beta", "nan"), ("beta",)),
        C("eval-out-missing-dir", "eval", lambda fx, d: eval_argv(fx.bc_ckpt, "--out", str(d / "no_dir" / "r.json")),
          ("no_dir",)),
        C("eval-out-is-directory", "eval",
          lambda fx, d: (d / "outdir").mkdir() or eval_argv(fx.bc_ckpt, "--out", str(d / "outdir")), ("outdir",)),
        C("eval-out-empty", "eval", lambda fx, d: eval_argv(fx.bc_ckpt, "--out", ""), ("out",)),
        C("eval-unknown-task", "eval", lambda fx, d: eval_argv(fx.bc_ckpt, "--task", "nope"), ("nope",)),
        C("eval-unknown-variant", "eval", lambda fx, d: eval_argv(fx.bc_ckpt, "--variant", "zz"), ("zz",)),
        C("eval-beta-on-bc", "eval", lambda fx, d: eval_argv(fx.bc_ckpt, "--beta", "4"), ("beta",)),
        C("eval-target-networks-on-bc", "eval", lambda fx, d: eval_argv(fx.bc_ckpt, "--value-networks", "target"),
          ("value_networks",)),
        C("eval-candidate-value-on-bc", "eval", lambda fx, d: eval_argv(fx.bc_ckpt, "--candidate-value", "last"),
          ("candidate_value",)),
        C("eval-candidate-value-sampling", "eval",
          lambda fx, d: eval_argv(fx.ilql_ckpt, "--decoding", "sample", "--candidate-value", "last"),
          ("candidate_value",)),
        C("eval-ckpt-unknown-algorithm", "eval", lambda fx, d: eval_argv(retagged_ckpt(fx, d, "no.such.Algo")),
          ("no.such.Algo",)),
        C("eval-not-an-export-dir", "eval", lambda fx, d: eval_argv(d), ("lmrl.json|export",)),
        C("eval-export-truncated-meta", "eval",
          lambda fx, d: (truncate(copy_export(fx, d) / "lmrl.json"), eval_argv(d / "export"))[1], ("lmrl.json",)),
        C("eval-export-meta-not-object", "eval",
          lambda fx, d: ((copy_export(fx, d) / "lmrl.json").write_text("[]"), eval_argv(d / "export"))[1],
          ("lmrl.json",)),
        C("eval-export-no-hparams", "eval",
          lambda fx, d: (edit_json(copy_export(fx, d) / "lmrl.json", lambda m: m.pop("hparams")),
                         eval_argv(d / "export"))[1], ("hparams",)),
        C("eval-export-format-99", "eval",
          lambda fx, d: (edit_json(copy_export(fx, d) / "lmrl.json", lambda m: m.update(format=99)),
                         eval_argv(d / "export"))[1], ("format",)),
        C("eval-export-truncated-weights", "eval",
          lambda fx, d: (truncate(copy_export(fx, d) / "model.safetensors"), eval_argv(d / "export"))[1],
          ("model.safetensors|weights",)),
        C("eval-export-missing-heads", "eval",
          lambda fx, d: ((copy_export(fx, d) / "heads.safetensors").unlink(), eval_argv(d / "export"))[1],
          ("heads.safetensors",)),
        C("eval-export-hparam-unknown", "eval",
          lambda fx, d: (edit_json(copy_export(fx, d) / "lmrl.json", lambda m: m["hparams"].update(lrr=1)),
                         eval_argv(d / "export"))[1], ("lrr",)),
    ]

    # `lmrl export`
    out += [
        C("export-out-existing-file", "export",
          lambda fx, d: ["export", str(fx.bc_ckpt), "--out", str(own_file(d))],
          ("afile",), check=unchanged(lambda d: d / "afile", lambda d: b"mine")),
        C("export-out-under-file", "export",
          lambda fx, d: ["export", str(fx.bc_ckpt), "--out", str(own_file(d) / "x")],
          ("afile",)),
        C("export-out-unwritable", "export", lambda fx, d: ["export", str(fx.bc_ckpt), "--out", "/proc/lmrl_export"],
          ("/proc/lmrl_export",)),
        C("export-out-empty", "export", lambda fx, d: ["export", str(fx.bc_ckpt), "--out", ""], ("out|directory",)),
        C("export-merge-without-lora", "export",
          lambda fx, d: ["export", str(fx.bc_ckpt), "--out", str(d / "merged"), "--merge"], ("merge", "lora"),
          check=absent("merged")),
        C("export-out-not-empty", "export",
          lambda fx, d: ["export", str(fx.bc_ckpt), "--out", str(own_file(d, "full/x").parent)], ("full",)),
        C("export-missing-ckpt", "export", lambda fx, d: ["export", str(d / "missing.ckpt"), "--out", str(d / "o")],
          ("missing.ckpt",), check=absent("o")),
        C("export-garbage-ckpt", "export", lambda fx, d: ["export", str(garbage_ckpt(d)), "--out", str(d / "o")],
          ("garbage.ckpt",), check=absent("o")),
        C("export-url", "export", lambda fx, d: ["export", URL_DEAD, "--out", str(d / "o")],
          ("url|local|http|not exist",), check=absent("o")),
    ]

    # `lmrl data`
    out += [
        C("data-out-existing-file", "data",
          lambda fx, d: ["data", "maze", "--episodes", "5", "--out", str(own_file(d))],
          ("afile",), check=unchanged(lambda d: d / "afile", lambda d: b"mine")),
        C("data-out-empty", "data", lambda fx, d: ["data", "maze", "--episodes", "5", "--out", ""], ("out",),
          check=absent("train.jsonl")),
        C("data-out-unwritable", "data", lambda fx, d: ["data", "maze", "--episodes", "5", "--out", "/proc/lmrl_data"],
          ("/proc/lmrl_data",)),
        C("data-out-under-file", "data",
          lambda fx, d: ["data", "maze", "--episodes", "5", "--out", str(own_file(d) / "x")],
          ("afile",)),
        C("data-vocab-size-negative", "data",
          lambda fx, d: ["data", "maze", "--episodes", "5", "--vocab-size", "-1", "--out", str(d / "o")], ("vocab",)),
        C("data-vocab-size-0", "data",
          lambda fx, d: ["data", "maze", "--episodes", "5", "--vocab-size", "0", "--out", str(d / "o")], ("vocab",)),
        C("data-vocab-size-10", "data",
          lambda fx, d: ["data", "maze", "--episodes", "5", "--vocab-size", "10", "--out", str(d / "o")], ("vocab",)),
        C("data-episodes-1e12", "data",
          lambda fx, d: ["data", "maze", "--episodes", str(10**12), "--out", str(d / "o")], ("episodes",), heavy=True),
        C("data-episodes-negative", "data", lambda fx, d: ["data", "maze", "--episodes", "-1", "--out", str(d / "o")],
          ("episodes",)),
        C("data-into-existing-dataset", "data",
          lambda fx, d: ["data", "wordle", "--episodes", "5", "--out", str(copy_dataset(fx, d))], ("overwrite",),
          check=_dataset_kept),
        C("data-unknown-task", "data", lambda fx, d: ["data", "nope", "--out", str(d / "o")], ("nope",)),
        C("data-unknown-variant", "data", lambda fx, d: ["data", "maze", "--variant", "zz", "--out", str(d / "o")],
          ("zz",)),
    ]

    # `lmrl play`, `quickstart`, the command line itself
    out += [
        C("play-unknown-variant", "play", lambda fx, d: ["play", "maze", "--variant", "zz"], ("zz",)),
        C("play-unknown-task", "play", lambda fx, d: ["play", "nope"], ("nope",)),
        C("play-wordle-unknown-variant", "play", lambda fx, d: ["play", "wordle", "--variant", "po"], ("po",)),
        C("quickstart-unknown-algorithm", "cli", lambda fx, d: ["quickstart", "--algorithms", "FOO"], ("FOO",)),
        C("cli-unknown-command", "cli", lambda fx, d: ["nope"], ("nope",)),
        C("cli-no-command", "cli", lambda fx, d: [], ("command",)),
        C("cli-eval-unknown-flag", "cli", lambda fx, d: ["eval", str(fx.bc_ckpt), "--rolouts", "1"], ("rolouts",)),
    ]
    names = [c.name for c in out]
    assert len(names) == len(set(names)), "duplicate case names"
    return out


def _ilql_from(fx: Fixtures, d: Path, init_from) -> list[str]:
    argv = fit_argv(fx, d, model="ILQL")
    argv[argv.index("--model.init_from") + 1] = str(init_from)
    return argv


def _payload(fx: Fixtures) -> str:
    if not fx.payload_url:
        raise RuntimeError("this case needs Fixtures.payload_url (serve_payload)")
    return fx.payload_url


def _export_algorithm(fx: Fixtures, d: Path) -> list[str]:
    out = copy_export(fx, d)
    name = evil_module(d)
    edit_json(out / "lmrl.json", lambda m: m.update(algorithm=name))
    return eval_argv(out)


def _config_yaml(fx: Fixtures, d: Path, model_class: str = "lmrl_lightning.algorithms.BC", model_extra: str = "",
                 trainer_extra: str = "", root: Optional[str] = None) -> str:
    return (
        "seed_everything: 0\n"
        "model:\n"
        f"  class_path: {model_class}\n"
        "  init_args:\n"
        f"    backbone:\n      tokenizer: {fx.tokenizer}\n"
        f"{model_extra}"
        "data:\n"
        "  class_path: lmrl_lightning.data.datamodule.EpisodeDataModule\n"
        "  init_args:\n"
        f"    data_path: {fx.train}\n    task: maze\n    variant: fo\n    max_length: 64\n    batch_size: 8\n"
        "trainer:\n"
        "  accelerator: cpu\n  max_steps: 2\n  limit_val_batches: 0\n  logger: false\n"
        "  enable_progress_bar: false\n  enable_model_summary: false\n"
        f"  default_root_dir: {root or (d / 'run')}\n"
        f"{trainer_extra}"
    )


# ---- classification ------------------------------------------------------------------------------------------------
def matches(keyword: str, line: str) -> bool:
    return any(alt.lower() in line.lower() for alt in keyword.split("|"))


def classify(case: Case, d: Path, code: Optional[int], stderr: str, timed_out: bool = False,
             traceback: bool = False) -> tuple[str, str]:
    """(category, detail) of one run of `case` in directory `d`; `traceback`: an exception escaped (in-process)."""
    if case.marker and (d / MARKER).exists():
        return "code-executed", f"{MARKER} was created"
    if timed_out:
        return "hang", "ran past the timeout"
    if traceback or "Traceback (most recent call last)" in stderr:
        return "traceback", _last_line(stderr)
    lines = [l for l in stderr.splitlines() if l.strip()]
    if any(l.lstrip().startswith("usage:") for l in lines):
        return "usage-dump", f"{len(lines)} lines; " + _last_line(stderr)
    if code == 0 and case.accept is not None:
        problem = case.accept(d)
        return ("clean", "accepted") if problem is None else ("silent", problem)
    if code != 2:
        return "silent", f"exit {code}; " + _last_line(stderr)
    errors = [l for l in lines if "lmrl: error:" in l]
    if len(errors) != 1 or not lines[-1].startswith("lmrl: error: "):
        return "unclear", f"{len(errors)} error lines; last: " + _last_line(stderr)
    if len(lines) > MAX_STDERR_LINES:
        return "unclear", f"{len(lines)} stderr lines"
    missing = [k for k in case.keywords if not matches(k, lines[-1])]
    if missing:
        return "unclear", f"missing {missing} in: {lines[-1][:300]}"
    if case.check is not None:
        problem = case.check(d)
        if problem:
            return "side-effect", problem
    return "clean", lines[-1][:300]


def _last_line(text: str) -> str:
    lines = [l for l in text.splitlines() if l.strip()]
    return lines[-1][:300] if lines else "(no stderr)"


# ---- fixtures and the payload server -------------------------------------------------------------------------------
def build_fixtures(root: Path, run: Callable[[list[str], Path], int]) -> Fixtures:
    """The valid inputs, through `run(argv, cwd)` (a subprocess or in-process `main`), which returns the exit code."""
    root.mkdir(parents=True, exist_ok=True)
    data = root / "maze_fo"
    steps = [
        ["data", "maze", "--out", str(data), "--episodes", "20", "--vocab-size", "300"],
    ]
    fx = Fixtures(root, data, root / "bc.ckpt", root / "ilql.ckpt", root / "export")
    for argv in steps:
        _check(run(argv, root), argv)
    for name, model in (("bc", "BC"), ("ilql", "ILQL")):
        d = root / f"fit_{name}"
        d.mkdir(exist_ok=True)
        argv = fit_argv(fx, d, model=model)
        _check(run(argv, d), argv)
        (ckpt,) = (d / "run").rglob("*.ckpt")
        shutil.copy(ckpt, root / f"{name}.ckpt")
    argv = ["export", str(fx.bc_ckpt), "--out", str(fx.export_dir)]
    _check(run(argv, root), argv)
    return fx


def _check(code: int, argv: list[str]) -> None:
    if code != 0:
        raise RuntimeError(f"fixture command failed with exit {code}: lmrl {' '.join(argv)}")


def serve_payload(directory: Path):
    """Serve, on 127.0.0.1 (a free port), `x.ckpt`: a pickle whose loading with weights_only=False creates
    `<working directory of the loader>/PWNED`. Returns (url, server); call server.shutdown() when done."""
    import http.server
    import pickle
    import threading

    class Payload:
        def __reduce__(self):
            return (exec, (f"import pathlib; pathlib.Path({MARKER!r}).write_text('unpickled')",))

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "x.ckpt").write_bytes(pickle.dumps(Payload(), protocol=2))

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(directory), **kw)

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}/x.ckpt", server


def subprocess_env(d: Path) -> dict[str, str]:
    """The environment of a case's subprocess: offline, one thread, caches inside the case dir."""
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               TOKENIZERS_PARALLELISM="false", TORCH_HOME=str(d / ".torch"), HF_MODULES_CACHE=str(d / ".hf_modules"),
               PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTHONPATH", None)
    return env


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)
