"""`lmrl fit` refuses what would change, lose or run something behind the person's back, in one line.

Resuming: a checkpoint of another algorithm, a changed model setting, a URL (nothing downloaded, nothing
unpickled). Config errors: one line naming the key, no usage screen. Out-of-range settings: one line naming the
field. A non-finite loss stops the run before the update. The run's config never overwrites an input file.
"""
from __future__ import annotations

import http.server
import pickle
import threading
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lmrl_lightning.algorithms import BC
from lmrl_lightning.cli import main
from lmrl_lightning.data.datamodule import EpisodeDataModule
from lmrl_lightning.errors import LMRLError
from lmrl_lightning.fit_cli import summarise_parse_error
from lmrl_lightning.models.backbone import BackboneConfig
from test_cli import data_dir, fit_args  # noqa: F401 (data_dir: the 20-episode maze dataset fixture)


def run_fit(capsys, argv: list[str]) -> tuple[int, str]:
    """Run `lmrl argv` in-process; return the exit code and stderr's last line (after checking for tracebacks)."""
    code = main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err and "usage:" not in err, err[-3000:]
    lines = err.strip().splitlines()
    return code, lines[-1] if lines else ""


@pytest.fixture(scope="module")
def checkpoints(data_dir, tmp_path_factory) -> dict[str, Path]:
    """A 2-step BC and a 2-step ILQL checkpoint written by `lmrl fit`."""
    found = {}
    for name in ("BC", "ILQL"):
        root = tmp_path_factory.mktemp(name)
        args = fit_args(data_dir / "train.jsonl", data_dir / "tokenizer", root, steps=2)
        args[args.index("lmrl_lightning.algorithms.BC")] = name
        assert main(args) == 0
        (found[name],) = (root / "checkpoints").glob("*.ckpt")
    return found


def bc_args(data_dir: Path, root: Path, steps: int = 2) -> list[str]:
    return fit_args(data_dir / "train.jsonl", data_dir / "tokenizer", root, steps=steps)


def test_resuming_a_bc_config_from_an_ilql_checkpoint_is_refused(capsys, data_dir, checkpoints, tmp_path):
    code, line = run_fit(capsys, [*bc_args(data_dir, tmp_path), "--ckpt_path", str(checkpoints["ILQL"])])
    assert code == 2
    assert "was written by lmrl_lightning.algorithms.ilql.ILQL" in line and "trains lmrl_lightning.algorithms.bc.BC" in line


def test_a_changed_learning_rate_on_resume_is_refused_not_ignored(capsys, data_dir, checkpoints, tmp_path):
    argv = [*bc_args(data_dir, tmp_path, steps=4), "--model.init_args.optim.lr", "0.5", "--ckpt_path", str(checkpoints["BC"])]
    code, line = run_fit(capsys, argv)
    assert code == 2
    assert line == (
        "lmrl: error: cannot resume: model.optim.lr is 0.5 here but 0.0001 in the checkpoint; resume with the "
        "checkpoint's settings, or start a new run from its weights with --model.init_from"
    )


def test_a_resume_with_the_same_settings_trains_on(capsys, data_dir, checkpoints, tmp_path):
    code, _ = run_fit(capsys, [*bc_args(data_dir, tmp_path, steps=4), "--ckpt_path", str(checkpoints["BC"])])
    assert code == 0
    (resumed,) = (tmp_path / "checkpoints").glob("*.ckpt")
    assert torch.load(resumed, weights_only=True)["global_step"] == 4


class Payload:
    """Unpickling this writes a marker file: what a hostile checkpoint would do with weights_only=False."""

    marker: Path

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code ran"))


def test_a_url_checkpoint_is_refused_without_a_download(capsys, data_dir, tmp_path):
    marker = tmp_path / "pwned"
    Payload.marker = marker
    payload = pickle.dumps({"state_dict": Payload()})
    requests = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/x.ckpt"
    try:
        for flag in ("--ckpt_path", "--model.init_args.init_from"):
            code, line = run_fit(capsys, [*bc_args(data_dir, tmp_path), flag, url])
            assert code == 2 and "URL" in line and "local files only" in line, line
    finally:
        server.shutdown()
    assert requests == [] and not marker.exists()


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--model.init_args.foo", "1"], "fit: model (lmrl_lightning.algorithms.BC): Option 'foo' is not accepted"),
        (["--model.init_args.optim.lr", "abc"], "fit: model.optim.lr (lmrl_lightning.algorithms.BC): expected float, got 'abc'"),
        (["--trainer.max_steps", "x"], "fit: trainer.max_steps: expected int, got 'x'"),
        (["--data", "no_such_module.Data"], "fit: data (no_such_module.Data): No module named 'no_such_module'"),
        (["--trainer.bogus", "3"], "fit: unrecognized arguments: --trainer.bogus 3"),
        (["--model.init_args.optim.lr", "-1"], "model.optim.lr must be a finite number >= 0, got -1.0"),
        (["--model.optim.weight_decay", "-0.1"], "model.optim.weight_decay must be a finite number >= 0, got -0.1"),
        (["--model.optim.warmup_steps", "-5"], "model.optim.warmup_steps must be an integer >= 0, got -5"),
        (["--model.optim.betas", "[2, 0.5]"], "model.optim.betas[0] must be a finite number >= 0 and < 1, got 2.0"),
        (["--model.optim.decay", "linear"],
         "fit: model.optim.decay (lmrl_lightning.algorithms.BC): Expected a typing.Literal['none', 'cosine']. Got value: linear"),
        (["--trainer.callbacks+=lmrl_lightning.callbacks.RolloutEvaluation", "--trainer.callbacks.protocol.task",
          "nomaze"],
         "unknown task 'nomaze'; valid tasks: "),
    ],
)
def test_bad_settings_are_one_line(capsys, data_dir, tmp_path, extra, expected):
    code, line = run_fit(capsys, [*bc_args(data_dir, tmp_path), *extra])
    assert code == 2
    assert line.startswith(f"lmrl: error: {expected}"), line


@pytest.mark.parametrize(
    "model, field, value, expected",
    [
        ("lmrl_lightning.algorithms.ILQL", "value", "{tau: 1.5}",
         "model.value.tau must be a finite number > 0 and < 1, got 1.5"),
        ("lmrl_lightning.algorithms.ILQL", "value", "{gamma: .nan}",
         "model.value.gamma must be a finite number >= 0 and <= 1, got nan"),
        ("lmrl_lightning.algorithms.MCReturns", "value", "{discount_per: episode}",
         "fit: model.value.discount_per (lmrl_lightning.algorithms.MCReturns): Expected a typing.Literal['token'"),
        ("lmrl_lightning.algorithms.PPO", "ppo", "{clip: 0}", "model.ppo.clip must be a finite number > 0, got 0"),
        ("lmrl_lightning.algorithms.PPO", "ppo", "{kl_target: 0.1}",
         "an adaptive KL coefficient needs both model.ppo.kl_target and model.ppo.kl_horizon"),
        ("lmrl_lightning.algorithms.PPO", "bc", "{data: x.jsonl, batch_size: 0}",
         "model.bc.batch_size must be an integer >= 1, got 0"),
        ("lmrl_lightning.algorithms.PPO", "rollouts", "{decoding: {temperature: 0}}",
         "decoding.temperature must be a finite number > 0, got 0"),
        ("lmrl_lightning.algorithms.PPO", "rollouts", "{decoding: {kind: beam}}",
         "fit: model.rollouts.decoding.kind (lmrl_lightning.policies.Decoding): Expected a typing.Literal['sample', "),
        ("lmrl_lightning.algorithms.PPO", "rollouts", "{decoding: {carry_cache: sometimes}}",
         "fit: model.rollouts.decoding.carry_cache (lmrl_lightning.policies.Decoding): expected bool, got 'sometimes'"),
        ("lmrl_lightning.algorithms.OnlineFilteredBC", "rollouts", "{episodes_per_round: 0}",
         "model.rollouts.episodes_per_round must be an integer >= 1"),
        ("lmrl_lightning.algorithms.OnlineFilteredBC", "updates", "{max_length: 1}",
         "model.updates.max_length must be an integer >= 2"),
        ("lmrl_lightning.algorithms.OnlineFilteredBC", "filter", "{top_fraction: 2}",
         "model.filter.top_fraction must be a finite number > 0 and <= 1, got 2"),
    ],
)
def test_algorithm_settings_out_of_range_are_one_line(capsys, tmp_path, data_dir, model, field, value, expected):
    config = tmp_path / "config.yaml"
    config.write_text(f"model:\n  class_path: {model}\n  init_args:\n    {field}: {value}\n")
    code, line = run_fit(capsys, ["fit", "-c", str(config), "--model.backbone.tokenizer", str(data_dir / "tokenizer")])
    assert code == 2
    assert line.startswith(f"lmrl: error: {expected}"), line


def test_config_file_errors_name_the_file_and_line(capsys, tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("model:\n  class_path: x\n  init_args: [\n")
    code, line = run_fit(capsys, ["fit", "-c", str(broken)])
    assert code == 2 and line.startswith(f"lmrl: error: {broken}:4:1: YAML syntax error"), line
    code, line = run_fit(capsys, ["fit", "-c", str(tmp_path / "missing.yaml")])
    assert code == 2 and line == f"lmrl: error: config file {str(tmp_path / 'missing.yaml')!r} does not exist"


def test_summarise_parse_error_keeps_the_innermost_problem():
    message = (
        'Parser key "data":\n  Does not validate against any of the Union subtypes\n  Subtypes: [A, None]\n'
        "  Errors:\n    - Problem with given class_path 'pkg.Data':\n        Parser key \"batch_size\":\n"
        "          Expected a <class 'int'>. Got value: x\n    - Expected a <class 'NoneType'>\n"
        "  Given value type: <class 'str'>\n  Given value: x"
    )
    assert summarise_parse_error(message) == "data.batch_size (pkg.Data): expected int, got 'x'"


def test_the_run_never_overwrites_its_own_config_file(capsys, data_dir, tmp_path, monkeypatch):
    """`logger: false` puts the run's files in the working directory, where the person's config.yaml is."""
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "config.yaml"
    text = "# my notes: keep these\ntrainer:\n  max_steps: 2   # two steps\n"
    config.write_text(text)
    args = [a for a in bc_args(data_dir, tmp_path) if a not in ("--trainer.default_root_dir", str(tmp_path))]
    code, _ = run_fit(capsys, [*args, "-c", "config.yaml"])
    assert code == 0
    assert config.read_text() == text


class NaNAfterTwoSteps(BC):
    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        return loss * float("nan") if self.global_step >= 2 else loss


def test_a_non_finite_loss_stops_before_the_update_and_keeps_the_checkpoints(data_dir, tmp_path):
    module = NaNAfterTwoSteps(backbone=BackboneConfig(tokenizer=str(data_dir / "tokenizer")))
    data = EpisodeDataModule(str(data_dir / "train.jsonl"), task="maze", variant="fo", max_length=64, batch_size=4)
    saver = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=1, save_top_k=-1)
    trainer = L.Trainer(max_steps=5, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, callbacks=[saver])
    with pytest.raises(LMRLError, match=r"the training loss is nan at step 2 \(epoch 0\); stopped before the update"):
        trainer.fit(module, data)
    saved = sorted(p.name for p in tmp_path.glob("*.ckpt"))
    assert saved == ["epoch=0-step=1.ckpt", "epoch=0-step=2.ckpt"]
    weights = torch.load(tmp_path / saved[-1], weights_only=True)["state_dict"]
    assert all(torch.isfinite(w).all() for w in weights.values())
