"""Run by tests/test_resume.py: ILQL with LoRA on a tiny local GPT-2 for EPOCHS epochs, a checkpoint after each
epoch (`last.ckpt`); at the end the module's saved state goes to OUT_DIR/final.safetensors.

    python kill_resume_script.py MODEL_DIR DATA OUT_DIR EPOCHS [--slow] [--resume]

--slow sleeps after every step (so that the test can kill the process mid-epoch) and writes the step reached
to OUT_DIR/step; --resume continues from OUT_DIR/last.ckpt.
"""
import sys
import time
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from safetensors.torch import save_file

from lmrl_lightning.algorithms import ILQL, ILQLValueLearning, Optimisation
from lmrl_lightning.data.datamodule import EpisodeDataModule
from lmrl_lightning.models.backbone import BackboneConfig
from lmrl_lightning.models.lora import LoraSettings


class Progress(L.Callback):
    def __init__(self, out_dir: Path):
        self.out_dir = out_dir

    def on_train_batch_end(self, trainer, *args):
        (self.out_dir / "step").write_text(str(trainer.global_step))
        time.sleep(0.2)


def main(model_dir: str, data: str, out_dir: Path, epochs: int, slow: bool, resume: bool) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    L.seed_everything(0)
    module = ILQL(backbone=BackboneConfig(model_dir, lora=LoraSettings(r=4)), optim=Optimisation(lr=1e-2),
                  value=ILQLValueLearning(polyak=0.1))
    datamodule = EpisodeDataModule(data, window="all", batch_size=8, val_fraction=0.0)
    callbacks = [ModelCheckpoint(dirpath=str(out_dir), filename="epoch{epoch}", auto_insert_metric_name=False, save_last=True)]
    if slow:
        callbacks.append(Progress(out_dir))
    trainer = L.Trainer(
        max_epochs=epochs, accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=callbacks,
    )
    trainer.fit(module, datamodule, ckpt_path=str(out_dir / "last.ckpt") if resume else None)
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(out_dir / "final.safetensors"))


if __name__ == "__main__":
    args = sys.argv[1:]
    main(args[0], args[1], Path(args[2]), int(args[3]), "--slow" in args, "--resume" in args)
