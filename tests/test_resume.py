"""Kill and resume: a training process killed with SIGKILL mid-epoch resumes from its last checkpoint and ends
with the same weights as an uninterrupted run; checkpoint files are replaced atomically."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hf_models import save_tiny_model
from lmrl_lightning.checkpointing import AtomicCheckpointIO
from lmrl_lightning.models.tokenizer import train_bpe_tokenizer
from word_choice import BAD, GOOD, PROMPT, bc_checkpoint

SCRIPT = Path(__file__).with_name("kill_resume_script.py")
EPOCHS = 4  # 8 steps each


def run(args, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.Popen([sys.executable, str(SCRIPT), *map(str, args)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, **kwargs)


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run(tmp_path):
    bc_checkpoint(tmp_path)  # words.jsonl
    model_dir = save_tiny_model("gpt2", train_bpe_tokenizer([PROMPT, GOOD, BAD] * 8, 300), tmp_path / "gpt2")
    data = tmp_path / "words.jsonl"

    full = run([model_dir, data, tmp_path / "full", EPOCHS])
    killed_dir = tmp_path / "killed"
    killed = run([model_dir, data, killed_dir, EPOCHS, "--slow"])
    # Wait until the third epoch is under way (two checkpoints written), then kill without warning.
    deadline = time.time() + 120
    while time.time() < deadline:
        step = (killed_dir / "step").read_text() if (killed_dir / "step").is_file() else ""
        if step and int(step) >= 19:
            break
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert killed.returncode == -signal.SIGKILL
    assert (killed_dir / "last.ckpt").is_file() and not (killed_dir / "final.safetensors").exists()
    assert torch.load(killed_dir / "last.ckpt", weights_only=True)["global_step"] == 16

    resumed = run([model_dir, data, killed_dir, EPOCHS, "--resume"])
    for proc in (full, resumed):
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
    expected = load_file(str(tmp_path / "full" / "final.safetensors"))
    got = load_file(str(killed_dir / "final.safetensors"))
    assert expected.keys() == got.keys() and any(".value." in k for k in got)
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, rtol=0, atol=1e-6, msg=key)


def test_a_failed_save_leaves_the_previous_checkpoint_whole(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"step": 1, "weights": torch.ones(3)}, path)

    def dies_midway(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt  # as a kill would, in the middle of writing

    monkeypatch.setattr(torch, "save", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"step": 2, "weights": torch.zeros(3)}, path)
    assert torch.load(path, weights_only=True)["step"] == 1
    assert list(tmp_path.iterdir()) == [path]
