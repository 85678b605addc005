"""Checkpoints, exports, `lmrl eval` and `lmrl export` under hostile or careless input: files are data, never
code (no URL, no unpickled object, no module a file names, no remote code a file grants), and every bad input
ends with one `lmrl: error:` line and exit code 2, before any work where the input is a flag.

Most cases run in-process through `lmrl_lightning.cli.main` on a 1-step BC checkpoint; two run `lmrl` as a real
subprocess, where the module a file names would really be importable and remote code could really run.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import lightning as L
import pytest
import torch

from hf_models import save_tiny_model
from lmrl_lightning.algorithms import BC
from lmrl_lightning.algorithms.base import load_module
from lmrl_lightning.checkpointing import AtomicCheckpointIO, check_local_checkpoint
from lmrl_lightning.cli import main
from lmrl_lightning.data.datamodule import EpisodeDataModule
from lmrl_lightning.data.jsonl import write_episodes
from lmrl_lightning.env import Episode, Turn
from lmrl_lightning.errors import LMRLError
from lmrl_lightning.export import export_module
from lmrl_lightning.models.backbone import BackboneConfig
from lmrl_lightning.models.lora import LoraSettings
from lmrl_lightning.models.tokenizer import save_tokenizer, train_bpe_tokenizer
from word_choice import BAD, GOOD, PROMPT

pytestmark = [pytest.mark.filterwarnings("ignore:.*IterableDataset.*")]
QUIET = dict(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
             enable_model_summary=False)
SUBPROCESS_ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def words_data(root: Path) -> EpisodeDataModule:
    write_episodes(root / "words.jsonl", [Episode([Turn(PROMPT, False), Turn(w, True, float(w == GOOD))], True)
                                          for w in [GOOD, BAD] * 8])
    return EpisodeDataModule(str(root / "words.jsonl"), task="word_choice", window="all", batch_size=8,
                             val_fraction=0.0)


def one_step_bc(root: Path, backbone: BackboneConfig, name: str) -> Path:
    """A BC checkpoint after one training step (its lmrl metadata records task word_choice)."""
    trainer = L.Trainer(max_steps=1, **QUIET)
    trainer.fit(BC(backbone), words_data(root))
    trainer.save_checkpoint(root / name)
    return root / name


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict[str, Path]:
    """A full-weight BC checkpoint and its export, a LoRA BC checkpoint (on a tiny GPT-2 directory) and its export."""
    root = tmp_path_factory.mktemp("safety")
    tokenizer = train_bpe_tokenizer([PROMPT, GOOD, BAD] * 8, 300)
    save_tokenizer(tokenizer, root / "tok")
    bc = one_step_bc(root, BackboneConfig("tiny", tokenizer=str(root / "tok"), max_positions=64), "bc.ckpt")
    gpt2 = save_tiny_model("gpt2", tokenizer, root / "gpt2")
    lora = one_step_bc(root, BackboneConfig(str(gpt2), lora=LoraSettings(r=4)), "lora.ckpt")
    export_module(bc, root / "bc_export")
    export_module(lora, root / "lora_export")
    return {"bc": bc, "bc_export": root / "bc_export", "lora_export": root / "lora_export"}


def one_line_error(capsys, argv: list) -> str:
    """Run `lmrl argv`, check exit code 2 and a single `lmrl: error:` line on stderr; return that line."""
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("lmrl: error: "), err
    return err.strip()


def assert_words(line: str, words: str) -> None:
    for word in words.split("|"):
        assert word in line, (word, line)


@pytest.fixture
def hostile_module(tmp_path, monkeypatch) -> tuple[str, Path]:
    """An importable module (on sys.path) that writes a marker file when imported and defines `MyBC(BC)`."""
    name, marker = f"lmrl_hostile_{uuid.uuid4().hex[:8]}", tmp_path / "imported"
    (tmp_path / "modules").mkdir()
    (tmp_path / "modules" / f"{name}.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n"
        "from lmrl_lightning.algorithms import BC\n\n\nclass MyBC(BC):\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path / "modules"))
    return name, marker


def forged(assets, tmp_path: Path, edit) -> Path:
    """The BC checkpoint with `edit(checkpoint)` applied, saved under tmp_path."""
    checkpoint = torch.load(assets["bc"], weights_only=True)
    edit(checkpoint)
    torch.save(checkpoint, tmp_path / "forged.ckpt")
    return tmp_path / "forged.ckpt"


class Payload:
    """Unpickling this runs a shell command (what a hostile checkpoint does under weights_only=False)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


# ---- checkpoint files: local, weights only, lmrl metadata ---------------------------------------------------------
def _set(path: str, value):
    def edit(checkpoint: dict) -> None:
        *parents, last = path.split(".")
        node = checkpoint
        for key in parents:
            node = node[key]
        if value is DELETE:
            del node[last]
        else:
            node[last] = value
    return edit


DELETE = object()

CHECKPOINT_CASES = [
    ("url_http", lambda a, t: "http://127.0.0.1:9/model.ckpt", "is a URL|local files only"),
    ("url_https", lambda a, t: "https://example.invalid/model.ckpt", "is a URL"),
    ("url_s3", lambda a, t: "s3://bucket/model.ckpt", "is a URL"),
    ("url_file", lambda a, t: f"file://{a['bc']}", "is a URL"),
    ("missing", lambda a, t: t / "missing.ckpt", "does not exist"),
    ("empty", lambda a, t: _write(t / "empty.ckpt", b""), "cannot be read|truncated"),
    ("garbage", lambda a, t: _write(t / "garbage.ckpt", os.urandom(4096)), "cannot be read"),
    ("half", lambda a, t: _write(t / "half.ckpt", a["bc"].read_bytes()[:50_000]), "cannot be read|truncated"),
    ("foreign", lambda a, t: _save(t / "foreign.ckpt", {"weights": torch.zeros(2)}),
     "not written by an lmrl-lightning algorithm module"),
    ("a_list", lambda a, t: _save(t / "list.ckpt", [1, 2]), "holds a list, not a Lightning checkpoint"),
    ("no_hparams", lambda a, t: forged(a, t, _set("hyper_parameters", DELETE)), "has no hyper_parameters.backbone"),
    ("algorithm_os_system", lambda a, t: forged(a, t, _set("lmrl.algorithm", "os.system")),
     "'os.system', which is not a registered algorithm|--algorithm"),
    ("algorithm_not_a_string", lambda a, t: forged(a, t, _set("lmrl.algorithm", 7)), "lmrl.algorithm must be"),
    ("dropout_5", lambda a, t: forged(a, t, _set("hyper_parameters.backbone.dropout", 5)),
     "backbone.dropout must be in [0, 1), got 5"),
    ("dtype_float99", lambda a, t: forged(a, t, _set("hyper_parameters.backbone.dtype", "float99")),
     "backbone.dtype must be one of float32, bfloat16, float16, got 'float99'"),
    ("unknown_backbone_field", lambda a, t: forged(a, t, _set("hyper_parameters.backbone.colour", "red")),
     "hyper-parameter 'backbone'|colour"),
    ("unknown_hparam", lambda a, t: forged(a, t, _set("hyper_parameters.colour", "red")),
     "hyper-parameters do not fit BC|colour"),
    ("wrong_shape", lambda a, t: forged(a, t, _set_weight("model.transformer.wte.weight", torch.zeros(3, 3))),
     "does not match BC's weights|size mismatch"),
]


def _set_weight(key: str, value: torch.Tensor):
    return lambda checkpoint: checkpoint["state_dict"].__setitem__(key, value)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _save(path: Path, obj) -> Path:
    torch.save(obj, path)
    return path


@pytest.mark.parametrize("make, words", [c[1:] for c in CHECKPOINT_CASES], ids=[c[0] for c in CHECKPOINT_CASES])
def test_bad_checkpoint_is_one_line(capsys, assets, tmp_path, make, words):
    for command in (["eval"], ["export", "--out", tmp_path / "out"]):
        line = one_line_error(capsys, [command[0], make(assets, tmp_path), *command[1:]])
        assert_words(line, words)
        assert not (tmp_path / "out").exists()


def test_a_directory_is_not_a_checkpoint(capsys, tmp_path):
    assert "is not an lmrl export directory" in one_line_error(capsys, ["eval", tmp_path])
    assert "is not a file" in one_line_error(capsys, ["export", tmp_path, "--out", tmp_path / "out"])


def test_a_pickled_payload_is_refused_without_running(capsys, tmp_path):
    """A checkpoint holding an object whose unpickling runs a command: refused by `lmrl eval`, `lmrl export`,
    `check_local_checkpoint` and Lightning's resume path (AtomicCheckpointIO), and the command never runs."""
    marker = tmp_path / "ran"
    path = _save(tmp_path / "payload.ckpt", {"state_dict": {}, "lmrl": {"algorithm": Payload(marker)}})
    torch.load(path, weights_only=False)  # the control: a plain unpickling does run it
    assert marker.exists()
    marker.unlink()
    for argv in (["eval", path], ["export", path, "--out", tmp_path / "out"]):
        assert_words(one_line_error(capsys, argv), "cannot be read with weights_only=True|posix.system")
    with pytest.raises(LMRLError, match="cannot be read"):
        check_local_checkpoint(path, "init_from")
    with pytest.raises(LMRLError, match="cannot be read"):
        AtomicCheckpointIO().load_checkpoint(path, weights_only=False)
    assert not marker.exists()


@pytest.mark.parametrize("ckpt_path", ["https://127.0.0.1:9/last.ckpt", "s3://bucket/last.ckpt"])
def test_resume_from_a_url_is_refused_before_any_download(tmp_path, ckpt_path):
    """Lightning would download the URL and unpickle it with weights_only=False; the lmrl CheckpointIO refuses."""
    save_tokenizer(train_bpe_tokenizer([PROMPT, GOOD, BAD] * 8, 300), tmp_path / "tok")
    module = BC(BackboneConfig("tiny", tokenizer=str(tmp_path / "tok"), max_positions=64))
    with pytest.raises(LMRLError, match="is a URL; checkpoints are loaded from local files only"):
        L.Trainer(max_steps=1, **QUIET).fit(module, words_data(tmp_path), ckpt_path=ckpt_path)


def test_check_local_checkpoint_names_what_it_checks(assets, tmp_path):
    """The check `lmrl fit --ckpt_path` and `init_from` use: the label appears in the message."""
    assert check_local_checkpoint(assets["bc"], "--ckpt_path")["lmrl"]["algorithm"].endswith("bc.BC")
    with pytest.raises(LMRLError, match=r"^--ckpt_path 'http://h/x.ckpt' is a URL"):
        check_local_checkpoint("http://h/x.ckpt", "--ckpt_path")
    with pytest.raises(LMRLError, match=r"^init_from '.*' is not a file"):
        check_local_checkpoint(tmp_path, "init_from")


# ---- algorithms named by a file are never imported -----------------------------------------------------------------
def test_an_unregistered_algorithm_is_not_imported_unless_named(assets, tmp_path, capsys, hostile_module):
    name, marker = hostile_module
    path = forged(assets, tmp_path, _set("lmrl.algorithm", f"{name}.MyBC"))
    line = one_line_error(capsys, ["eval", path])
    assert_words(line, f"written by '{name}.MyBC', which is not a registered algorithm|--algorithm MODULE.CLASS")
    assert not marker.exists()
    # Named by the person, the class is imported and rebuilds the checkpoint; it must be the class the file records.
    module, _ = load_module(path, algorithm=f"{name}.MyBC")
    assert type(module).__name__ == "MyBC" and marker.exists()
    assert_words(one_line_error(capsys, ["eval", path, "--algorithm", "bc"]),
                 f"--algorithm 'bc' is lmrl_lightning.algorithms.bc.BC, but checkpoint|written by '{name}.MyBC'")
    assert_words(one_line_error(capsys, ["eval", path, "--algorithm", "no_such_module.Nope"]),
                 "--algorithm 'no_such_module.Nope' is not an importable LMRLModule subclass")


@pytest.mark.slow
def test_an_unregistered_algorithm_in_a_real_process(assets, tmp_path, hostile_module):
    """`lmrl eval` as a subprocess, the named module on PYTHONPATH: one line on stderr, no traceback, no import."""
    name, marker = hostile_module
    path = forged(assets, tmp_path, _set("lmrl.algorithm", f"{name}.MyBC"))
    env = {**SUBPROCESS_ENV, "PYTHONPATH": os.pathsep.join([str(tmp_path / "modules"), *sys.path])}
    proc = subprocess.run([sys.executable, "-m", "lmrl_lightning.cli", "eval", str(path)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("lmrl: error: checkpoint "), proc.stderr
    assert "not a registered algorithm" in proc.stderr
    assert not marker.exists()


# ---- trust_remote_code comes from the person, never from a file ----------------------------------------------------
def test_stored_trust_remote_code_is_ignored(assets, tmp_path):
    path = forged(assets, tmp_path, _set("hyper_parameters.backbone.trust_remote_code", True))
    assert load_module(path)[0].backbone_config.trust_remote_code is False
    assert load_module(path, trust_remote_code=True)[0].backbone_config.trust_remote_code is True


def hostile_export(assets, tmp_path: Path, marker: Path, known_model_type: bool) -> Path:
    """The BC export, with lmrl.json granting trust_remote_code and config.json/tokenizer_config.json mapping the
    Auto classes to `hostile.py` in the directory, which writes `marker` when imported."""
    out = tmp_path / "hostile_export"
    shutil.copytree(assets["bc_export"], out)
    (out / "hostile.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n"
        "from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast\n\n\n"
        "class HostileConfig(GPT2Config):\n    pass\n\n\nclass HostileModel(GPT2LMHeadModel):\n"
        "    config_class = HostileConfig\n\n\nclass HostileTokenizer(PreTrainedTokenizerFast):\n    pass\n"
    )
    auto_map = {"AutoConfig": "hostile.HostileConfig", "AutoModelForCausalLM": "hostile.HostileModel"}
    edit_json(out / "config.json", lambda c: c.update(
        auto_map=auto_map, **({} if known_model_type else {"model_type": "hostile"})))
    edit_json(out / "tokenizer_config.json",
              lambda c: c.update(auto_map={"AutoTokenizer": [None, "hostile.HostileTokenizer"]}))
    edit_json(out / "lmrl.json", lambda m: m["hparams"]["backbone"].update(trust_remote_code=True))
    return out


def edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("known_model_type", [True, False], ids=["gpt2_model_type", "unknown_model_type"])
def test_an_export_cannot_grant_itself_remote_code(assets, tmp_path, capsys, known_model_type):
    """With a known model type the export evaluates on transformers' own classes; without one it is refused with
    one line. Either way its Python file never runs."""
    marker = tmp_path / "ran"
    export = hostile_export(assets, tmp_path, marker, known_model_type)
    argv = ["eval", export, "--task", "word_choice", "--episodes", "2", "--decoding", "greedy"]
    if known_model_type:
        assert main([str(a) for a in argv]) == 0
        capsys.readouterr()
    else:
        assert_words(one_line_error(capsys, argv), "needs to run its own Python code|--trust-remote-code")
    assert not marker.exists()


@pytest.mark.slow
def test_remote_code_runs_only_with_the_flag(assets, tmp_path):
    """The control for the test above, in a subprocess with its own modules cache: `--trust-remote-code` does let
    the same directory's code run, so the hostile export is a real one."""
    marker = tmp_path / "ran"
    export = hostile_export(assets, tmp_path, marker, known_model_type=False)
    env = {**SUBPROCESS_ENV, "HF_MODULES_CACHE": str(tmp_path / "modules_cache")}
    subprocess.run([sys.executable, "-m", "lmrl_lightning.cli", "eval", str(export), "--trust-remote-code"],
                   env=env, capture_output=True, text=True, timeout=300)
    assert marker.exists()


# ---- damaged export directories -----------------------------------------------------------------------------------
def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: max(1, path.stat().st_size // 2)])


EXPORT_CASES = [
    ("truncated_meta", "bc_export", lambda d: _truncate(d / "lmrl.json"), "lmrl.json: not valid JSON"),
    ("meta_not_utf8", "bc_export", lambda d: (d / "lmrl.json").write_bytes(b"\xff\xfe{}"), "not valid JSON"),
    ("meta_a_list", "bc_export", lambda d: (d / "lmrl.json").write_text("[]"), "must hold a JSON object, got list"),
    ("no_hparams", "bc_export", lambda d: edit_json(d / "lmrl.json", lambda m: m.pop("hparams")),
     "lmrl.json: missing field 'hparams'"),
    ("no_algorithm", "bc_export", lambda d: edit_json(d / "lmrl.json", lambda m: m.pop("algorithm")),
     "missing field 'algorithm'"),
    ("algorithm_a_list", "bc_export", lambda d: edit_json(d / "lmrl.json", lambda m: m.update(algorithm=["x"])),
     "field 'algorithm' must be a string, got list"),
    ("algorithm_os_system", "bc_export",
     lambda d: edit_json(d / "lmrl.json", lambda m: m.update(algorithm="os.system")), "not a registered algorithm"),
    ("backbone_a_string", "bc_export", lambda d: _backbone(d, None, "tiny"),
     "'hparams.backbone' must be a JSON object"),
    ("dtype_float99", "bc_export", lambda d: _backbone(d, "dtype", "float99"), "backbone.dtype must be one of"),
    ("max_positions_4", "bc_export", lambda d: _backbone(d, "max_positions", 4),
     "backbone.max_positions must be an integer of at least 32"),
    ("max_positions_negative", "bc_export", lambda d: _backbone(d, "max_positions", -1), "got -1"),
    ("max_positions_string", "bc_export", lambda d: _backbone(d, "max_positions", "many"), "got 'many'"),
    ("dropout_5", "bc_export", lambda d: _backbone(d, "dropout", 5), "backbone.dropout must be in [0, 1), got 5"),
    ("lora_rank_0", "lora_export", lambda d: _backbone(d, "lora", {"r": 0}), "backbone.lora.r must be an integer"),
    ("truncated_model", "bc_export", lambda d: _truncate(d / "model.safetensors"), "cannot be read|truncated"),
    ("truncated_heads", "bc_export", lambda d: _truncate(d / "heads.safetensors"),
     "heads.safetensors cannot be read|truncated"),
    ("missing_heads", "bc_export", lambda d: (d / "heads.safetensors").unlink(), "does not exist|incomplete"),
    ("truncated_adapter", "lora_export", lambda d: _truncate(d / "adapter_model.safetensors"),
     "adapter_model.safetensors cannot be read"),
    ("missing_adapter", "lora_export", lambda d: (d / "adapter_model.safetensors").unlink(), "does not exist"),
    ("no_tokenizer", "bc_export", lambda d: [(d / f).unlink() for f in ("tokenizer.json", "tokenizer_config.json")],
     "holds no tokenizer"),
    ("no_model_config", "bc_export", lambda d: (d / "config.json").unlink(), "cannot be loaded locally"),
    ("missing_base_model", "lora_export", lambda d: _backbone(d, "name_or_path", "/nonexistent/base"),
     "model directory '/nonexistent/base' does not exist"),
]


def _backbone(directory: Path, field, value) -> None:
    def edit(meta: dict) -> None:
        if field is None:
            meta["hparams"]["backbone"] = value
        else:
            meta["hparams"]["backbone"][field] = value
    edit_json(directory / "lmrl.json", edit)


@pytest.mark.parametrize("source, damage, words", [c[1:] for c in EXPORT_CASES], ids=[c[0] for c in EXPORT_CASES])
def test_damaged_export_is_one_line(capsys, assets, tmp_path, source, damage, words):
    export = tmp_path / "export"
    shutil.copytree(assets[source], export)
    damage(export)
    assert_words(one_line_error(capsys, ["eval", export]), words)


# ---- lmrl export: checked before work, written whole ---------------------------------------------------------------
def test_export_refuses_bad_destinations_before_any_work(assets, tmp_path, capsys):
    (tmp_path / "file").write_text("mine")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep").write_text("mine")
    cases = [
        (tmp_path / "file", "is an existing file"),
        (tmp_path / "full", "is not empty"),
        (tmp_path / "file" / "sub", "is a file, not a directory"),
        ("", "must be a new directory"),
    ]
    for out, words in cases:
        # A missing checkpoint: the destination is refused before the checkpoint is even read.
        assert_words(one_line_error(capsys, ["export", tmp_path / "missing.ckpt", "--out", out]), words)
    assert (tmp_path / "file").read_text() == "mine" and os.listdir(tmp_path / "full") == ["keep"]


def test_merge_without_lora_leaves_nothing(assets, tmp_path, capsys):
    assert "nothing to merge" in one_line_error(capsys, ["export", assets["bc"], "--out", tmp_path / "new", "--merge"])
    assert list(tmp_path.iterdir()) == []


def test_an_interrupted_export_leaves_nothing_and_a_second_one_succeeds(assets, tmp_path, monkeypatch):
    import lmrl_lightning.export as export

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt  # Ctrl-C while writing the heads, after the model and tokenizer

    with monkeypatch.context() as patch:
        patch.setattr(export, "save_file", interrupted)
        with pytest.raises(KeyboardInterrupt):
            export_module(assets["bc"], tmp_path / "out")
    assert list(tmp_path.iterdir()) == []
    export_module(assets["bc"], tmp_path / "out")
    assert (tmp_path / "out" / "lmrl.json").is_file() and [p.name for p in tmp_path.iterdir()] == ["out"]


def test_export_into_an_empty_directory(assets, tmp_path):
    (tmp_path / "out").mkdir()
    assert (export_module(assets["bc"], tmp_path / "out") / "heads.safetensors").is_file()


# ---- lmrl eval: flags checked before any work, --out written whole ------------------------------------------------
EVAL_FLAG_CASES = [
    (["--episodes", "0"], "--episodes must be at least 1, got 0"),
    (["--episodes", "-1"], "--episodes must be at least 1, got -1"),
    (["--batch-size", "0"], "--batch-size must be at least 1, got 0"),
    (["--temperature", "0"], "--temperature must be a positive number, got 0|--decoding greedy"),
    (["--temperature", "-1"], "--temperature must be a positive number, got -1"),
    (["--temperature", "nan"], "--temperature must be a positive number, got nan"),
    (["--temperature", "inf"], "--temperature must be a positive number, got inf"),
    (["--beta", "nan"], "--beta must be a finite number, got nan"),
    (["--beta=-inf"], "--beta must be a finite number, got -inf"),  # "-inf" alone reads as an option
    (["--out", ""], "--out must name a file"),
    (["--out", "{tmp}/missing_dir/eval.json"], "missing_dir' does not exist"),
    (["--out", "{tmp}"], "is a directory; name a file"),
]


@pytest.mark.parametrize("flags, words", EVAL_FLAG_CASES, ids=[" ".join(c[0]) or "empty" for c in EVAL_FLAG_CASES])
def test_bad_eval_flags_are_refused_before_loading(capsys, tmp_path, flags, words):
    # The checkpoint does not exist: the flag is refused before the checkpoint is read.
    flags = [f.replace("{tmp}", str(tmp_path)) for f in flags]
    assert_words(one_line_error(capsys, ["eval", tmp_path / "missing.ckpt", *flags]), words)


def test_eval_out_is_written_whole(assets, tmp_path, capsys, monkeypatch):
    out = tmp_path / "eval.json"
    out.write_text("previous")
    argv = ["eval", str(assets["bc"]), "--episodes", "2", "--decoding", "greedy", "--out", str(out)]

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", interrupted)  # Ctrl-C as --out is put in place, after the evaluation
        assert main(argv) == 130
    assert out.read_text() == "previous" and [p.name for p in tmp_path.iterdir()] == ["eval.json"]
    assert main(argv) == 0
    written = json.loads(out.read_text())
    assert written["task"] == "word_choice" and len(written["returns"]) == 2
    assert all(math.isfinite(r) for r in written["returns"])
    capsys.readouterr()


# ---- backbone and LoRA settings are checked where they are built ---------------------------------------------------
@pytest.mark.parametrize("fields, message", [
    (dict(dropout=5), "backbone.dropout must be in [0, 1), got 5"),
    (dict(dropout=1.0), "backbone.dropout must be in [0, 1), got 1.0"),
    (dict(dropout=float("nan")), "backbone.dropout must be in [0, 1), got nan"),
    (dict(max_positions=4), "backbone.max_positions must be an integer of at least 32"),
    (dict(max_positions=True), "got True"),
    (dict(dtype="float99"), "backbone.dtype must be one of float32, bfloat16, float16, got 'float99'"),
    (dict(name_or_path=""), "backbone.name_or_path must be a non-empty string, got ''"),
    (dict(tokenizer=3), "backbone.tokenizer must be a non-empty string, got 3"),
    (dict(trust_remote_code="yes"), "backbone.trust_remote_code must be true or false, got 'yes'"),
    (dict(lora={"r": 0}), "backbone.lora.r must be an integer of at least 1, got 0"),
    (dict(lora={"dropout": 1}), "backbone.lora.dropout must be in [0, 1), got 1"),
    (dict(lora={"alpha": -1}), "backbone.lora.alpha must be a positive number, got -1"),
    (dict(lora={"target_modules": "c_attn"}), "backbone.lora.target_modules must be a list"),
    (dict(lora={"rank": 4}), "backbone.lora: "),
])
def test_backbone_config_names_the_bad_field(fields, message):
    with pytest.raises(LMRLError) as error:
        BackboneConfig(**fields)
    assert message in str(error.value)
