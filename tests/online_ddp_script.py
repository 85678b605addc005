"""Run by tests/test_online.py: a few PPO rounds on the word_choice task under CPU DDP; every rank writes
`rank<r>.json` into OUT_DIR with its round statistics, its final parameters and, per round, every rank's played
episodes as (index, env seed) pairs, gathered from all ranks (33 episodes a round: unequal shares on 2 ranks).

    python online_ddp_script.py BC_CHECKPOINT OUT_DIR DEVICES
"""
import json
import sys
from pathlib import Path

import lightning as L

sys.path.insert(0, str(Path(__file__).parent))
from word_choice import TASK  # noqa: E402,F401  (registers the task)

from lmrl_lightning.algorithms import PPO, Optimisation, Rollouts, Updates  # noqa: E402
from lmrl_lightning.distributed import all_gather_objects  # noqa: E402
from lmrl_lightning.policies import Decoding  # noqa: E402


class RecordingPPO(PPO):
    """PPO that records, each round, the (index, env seed) of the episodes every rank actually played."""

    played: list

    def collect(self):
        episodes = super().collect()
        mine = [(e.meta["index"], e.meta["seed"]) for e in episodes]
        self.played = getattr(self, "played", []) + [all_gather_objects([mine])]  # [rank0's, rank1's, ...]
        return episodes


def main(bc_checkpoint: str, out_dir: Path, devices: int) -> None:
    L.seed_everything(0)
    rollouts = Rollouts("word_choice", episodes_per_round=33, decoding=Decoding("rerank"))
    module = RecordingPPO(init_from=bc_checkpoint, optim=Optimisation(lr=1e-3), rollouts=rollouts, updates=Updates(8, epochs=2))
    trainer = L.Trainer(
        accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto", max_epochs=2, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )
    trainer.fit(module)
    (out_dir / f"rank{trainer.global_rank}.json").write_text(json.dumps({
        "world_size": trainer.world_size,
        "global_step": trainer.global_step,
        "rounds": [{k: v for k, v in r.items() if not k.endswith("seconds") and k != "episodes_per_second"}
                   for r in module.round_history],
        "played": module.played,
        "parameters": {k: v.flatten().tolist() for k, v in module.state_dict().items() if v.is_floating_point()},
    }))


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]))
