"""Evaluation by rollouts against the task's simulator during and at the end of training, sharded over DDP ranks."""
from __future__ import annotations

from typing import Optional, Sequence

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger

from lmrl_lightning.algorithms.base import Decoding
from lmrl_lightning.env import Episode
from lmrl_lightning.evaluation import RolloutSummary, evaluate_task, gather_episodes, summarise
from lmrl_lightning.registry import get_task
from lmrl_lightning.rollout import format_transcript


class RolloutEvaluation(L.Callback):
    """Rolls the module's policy out with the task's evaluation protocol and logs the scores.

    Runs every `every_n_epochs` training epochs and once more at the end of fit if the last epoch was not
    evaluated. Episode seeds are split over DDP ranks and the episodes gathered, so every rank logs the same
    summary: mean/std/min/max raw return, success rate, episode length and normalised score; the first
    `n_transcripts` episodes go to TensorBoard as text.

    Args:
        task: registered task name.
        variant: task variant (default: the task's first).
        n_rollouts: rollouts per evaluation start (default: the paper's, e.g. 32 for the maze).
        every_n_epochs: evaluation period in epochs (0: only at the end of fit).
        decoding: ``sample``, ``greedy``, ``rerank`` or ``rerank_greedy`` (fixed candidate actions); default: the
            task's default decoding.
        temperature: sampling temperature.
        batch_size: episodes stepped together per rank.
        policy_seed: seed of the policy's sampling (fixed, so that evaluations are comparable).
        n_transcripts: transcripts logged per evaluation.
    """

    def __init__(
        self,
        task: str,
        variant: Optional[str] = None,
        n_rollouts: Optional[int] = None,
        every_n_epochs: int = 1,
        decoding: Optional[Decoding] = None,
        temperature: float = 1.0,
        batch_size: int = 256,
        policy_seed: int = 0,
        n_transcripts: int = 3,
    ):
        self.spec = get_task(task)
        self.variant = self.spec.check_variant(variant or self.spec.variants[0])
        self.n_rollouts = n_rollouts
        self.every_n_epochs = every_n_epochs
        self.decoding = decoding or self.spec.default_decoding
        self.temperature = temperature
        self.batch_size = batch_size
        self.policy_seed = policy_seed
        self.n_transcripts = n_transcripts
        self.results: list[tuple[int, RolloutSummary]] = []
        self.last_episodes: list[Episode] = []
        self._evaluated_step = -1

    def evaluate(self, trainer: L.Trainer, module, prefix: str = "eval/", **policy_args) -> RolloutSummary:
        policy = module.policy(self.decoding, self.temperature, self.spec.candidate_actions, **policy_args)
        mine = evaluate_task(
            policy, self.spec, self.variant, self.n_rollouts, self.batch_size, self.policy_seed,
            rank=trainer.global_rank, world_size=trainer.world_size, progress=trainer.is_global_zero,
        )
        episodes = gather_episodes(mine)
        summary = summarise(episodes, self.spec.normalisation[self.variant])
        self.results.append((trainer.global_step, summary))
        self.last_episodes = episodes
        self._evaluated_step = trainer.global_step
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(summary.as_metrics(prefix), step=trainer.global_step)
                if isinstance(logger, TensorBoardLogger):
                    for i, e in enumerate(episodes[: self.n_transcripts]):
                        logger.experiment.add_text(
                            f"{prefix}transcript_{i}", f"```\n{format_transcript(e)}\n```", trainer.global_step
                        )
        return summary

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.every_n_epochs > 0 and (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self.evaluate(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        if self._evaluated_step != trainer.global_step:
            self.evaluate(trainer, pl_module)


class BetaSweep(RolloutEvaluation):
    """At the end of fit, picks the decoding beta of a value-based module (MC, ILQL) by rollouts.

    beta only weighs the value guidance when decoding, so it can be chosen after training. Each beta of `betas` is
    evaluated with `n_rollouts` per start and `policy_seed` (keep it different from the reported evaluation's
    seed, so the choice is not fitted to the reported episodes); the best normalised score's beta is written to
    `module.hparams.beta` (and to the checkpoint callback's file). Put this callback before the `RolloutEvaluation` that reports the final score: callbacks
    run in list order. Scores per beta are logged under `beta_sweep/beta_<b>/`; `results` holds (beta, summary).
    """

    def __init__(self, task: str, betas: Sequence[float], variant: Optional[str] = None, n_rollouts: int = 4,
                 policy_seed: int = 1, **kwargs):
        super().__init__(task, variant, n_rollouts, every_n_epochs=0, policy_seed=policy_seed, n_transcripts=0,
                         **kwargs)
        if not betas:
            raise ValueError("BetaSweep needs at least one beta")
        self.betas = [float(b) for b in betas]
        self.chosen: Optional[float] = None

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        pass

    def on_train_end(self, trainer, pl_module) -> None:
        if not hasattr(pl_module.hparams, "beta"):
            raise TypeError(f"BetaSweep needs a value-guided module (MC, ILQL), not {type(pl_module).__name__}")
        sweep = [
            (beta, self.evaluate(trainer, pl_module, prefix=f"beta_sweep/beta_{beta:g}/", beta=beta))
            for beta in self.betas
        ]
        self.results = sweep
        self.chosen = max(sweep, key=lambda r: r[1].normalised_score)[0]
        pl_module.hparams.beta = self.chosen
        # The checkpoint was written before the sweep: write it again so that it decodes with the chosen beta.
        saved = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        if saved:
            trainer.save_checkpoint(saved, weights_only=False)
