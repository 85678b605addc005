"""Evaluation by rollouts against the task's simulator during and at the end of training, sharded over DDP ranks."""
from __future__ import annotations

import dataclasses
import glob
import os
import time
from typing import Callable, Optional, Sequence

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from lmrl_lightning.algorithms.value import ValueModule
from lmrl_lightning.env import Episode
from lmrl_lightning.errors import LMRLError
from lmrl_lightning.validation import as_settings
from lmrl_lightning.evaluation import EvaluationProtocol, RolloutSummary, evaluate_module, gather_episodes, summarise
from lmrl_lightning.policies import Decoding
from lmrl_lightning.rollout import format_transcript
from lmrl_lightning.validation import check_int


class RolloutEvaluation(L.Callback):
    """Rolls the module's policy out with an evaluation protocol and logs the scores.

    Runs every `every_n_epochs` training epochs and once more at the end of fit if the last epoch was not
    evaluated. Episode seeds are split over DDP ranks and the episodes gathered, so every rank logs the same
    summary: mean/std/min/max raw return, success rate, episode length and normalised score; the first
    `n_transcripts` episodes go to TensorBoard as text.

    Args:
        protocol: the task, variant, number of episodes, batch size, policy seed and decoding (the settings of
            `lmrl eval`; see `EvaluationProtocol`). Its defaults are the task's protocol, e.g. the maze's 800 episodes.
        every_n_epochs: evaluation period in epochs (0: only at the end of fit).
        n_transcripts: transcripts logged per evaluation.
    """

    def __init__(self, protocol: EvaluationProtocol, every_n_epochs: int = 1, n_transcripts: int = 3):
        # Checked against the task now (task, variant, episode count), not after training.
        self.protocol = as_settings(protocol, EvaluationProtocol, "protocol").resolved()
        self.spec = self.protocol.spec
        self.variant = self.protocol.variant
        self.decoding = self.protocol.decoding
        check_int("every_n_epochs", every_n_epochs, low=0)
        check_int("n_transcripts", n_transcripts, low=0)
        self.every_n_epochs = every_n_epochs
        self.n_transcripts = n_transcripts
        self.results: list[tuple[int, RolloutSummary]] = []
        self.last_episodes: list[Episode] = []
        self._evaluated_step = -1

    def evaluate(
        self, trainer: L.Trainer, module, prefix: str = "eval/", decoding: Optional[Decoding] = None
    ) -> RolloutSummary:
        protocol = dataclasses.replace(self.protocol, decoding=decoding or self.decoding)
        mine = evaluate_module(
            module, protocol, rank=trainer.global_rank, world_size=trainer.world_size, progress=trainer.is_global_zero
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

    def summary_line(self) -> str:
        """The last evaluation in one line (what `lmrl fit` prints at the end)."""
        step, s = self.results[-1]
        success = f", success rate {s.success_rate:.3f}" if s.success_rate is not None else ""
        score = f", normalised score {s.normalised_score:.1f}" if s.normalised_score is not None else ""
        return (
            f"evaluation of {self.spec.name}-{self.variant} at step {step} ({s.n_episodes} episodes): mean return "
            f"{s.mean_return:.3f} (std {s.std_return:.3f}, min {s.min_return:g}, max {s.max_return:g}), mean length "
            f"{s.mean_length:.2f}{success}{score}"
        )


class BetaSweep(RolloutEvaluation):
    """At the end of fit, picks the decoding beta of a value-based module (MC, ILQL) by rollouts.

    beta only weighs the value guidance when decoding, so it can be chosen after training. Each beta of `betas` is
    evaluated with `protocol` (fewer episodes than the report's do, e.g. the maze's 100 = 25 starts x 4; give it a
    `policy_seed` other than the reported evaluation's, e.g. 1, so the choice is not fitted to the reported
    episodes). When the best score sits at an end of the grid, the grid grows past that end (`next_beta`), one
    beta at a time while the new end scores best, at most `extend` betas per end: an edge value says only that the
    best lies somewhere beyond. The best normalised score's beta (the first evaluated among equal scores) becomes
    the module's `decoding_beta` (a buffer: every checkpoint saved afterwards carries it), and every checkpoint file
    the run's `ModelCheckpoint` callbacks already wrote (best, top k, last) is rewritten with it, its weights
    unchanged. Put this callback before the `RolloutEvaluation` that reports the final score: callbacks run in list
    order. Scores per beta are logged under `beta_sweep/beta_<b>/`; `results` holds (beta, summary) in the order
    evaluated.

    Args:
        protocol: the sweep's evaluation (see above).
        betas: the grid (any order; 0 is BC's own policy).
        extend: how many betas the grid may grow by at each end (0: the grid as given).
    """

    def __init__(self, protocol: EvaluationProtocol, betas: Sequence[float], extend: int = 2):
        super().__init__(protocol, every_n_epochs=0, n_transcripts=0)
        if not betas:
            raise LMRLError("BetaSweep needs at least one beta")
        if any(float(b) < 0 for b in betas):
            raise LMRLError(f"BetaSweep's betas must be >= 0, got {list(betas)}")
        check_int("extend", extend, low=0)
        self.betas = list(dict.fromkeys(float(b) for b in betas))
        self.extend = extend
        self.chosen: Optional[float] = None
        self._fit_started = 0.0

    def on_fit_start(self, trainer, pl_module) -> None:
        self._fit_started = time.time()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        pass

    def on_train_end(self, trainer, pl_module) -> None:
        if not isinstance(pl_module, ValueModule):
            raise LMRLError(f"BetaSweep needs a value-guided module (MC, ILQL), not {type(pl_module).__name__}")
        self.chosen = self.sweep(lambda beta: self.evaluate(
            trainer, pl_module, f"beta_sweep/beta_{beta:g}/", self.decoding_with(beta)))
        pl_module.decoding_beta.fill_(self.chosen)
        # The files were written before the sweep: give each the chosen beta, so that none decodes with another.
        if trainer.is_global_zero:
            for path in written_checkpoints(trainer, self._fit_started):
                set_decoding_beta(trainer, path, self.chosen)
        trainer.strategy.barrier()

    def sweep(self, evaluate: Callable[[float], RolloutSummary]) -> float:
        """Evaluate every beta of the grid with `evaluate`, grow the grid past an end that scores best (see the
        class), set `results` and return the best beta."""
        summaries = {beta: evaluate(beta) for beta in self.betas}
        for end in ("high", "low"):
            for _ in range(self.extend):
                beta = next_beta({b: s.normalised_score for b, s in summaries.items()}, end)
                if beta is None:  # the best is inside the grid (or at 0)
                    break
                summaries[beta] = evaluate(beta)
        self.results = list(summaries.items())
        return max(summaries, key=lambda b: summaries[b].normalised_score)

    def decoding_with(self, beta: float) -> Decoding:
        return dataclasses.replace(self.decoding, beta=beta)


def next_beta(scores: dict[float, float], end: str) -> Optional[float]:
    """The beta to try past the `end` ("high" or "low") of a swept grid whose best score (`scores`: beta -> score,
    the first among equals) sits at that end, else None.

    The grid grows geometrically by the ratio of its two betas nearest that end (x4 where that ratio is undefined):
    1, 4, 16 grows to 64, and 4, 16 shrinks to 1. 0 (no guidance) is an end of its own: below the smallest positive
    beta the grid stops at 0 when 0 was swept, and a best of 0 grows nothing downward."""
    best = max(scores, key=scores.get)
    grid = sorted(scores)
    positive = [b for b in grid if b > 0]
    if end == "high":
        if best != grid[-1]:
            return None
        if best == 0:
            return 1.0
        ratio = positive[-1] / positive[-2] if len(positive) >= 2 else 4.0
        return positive[-1] * ratio
    if end == "low":
        if best == 0 or best != positive[0] or 0.0 in scores:
            return None
        ratio = positive[1] / positive[0] if len(positive) >= 2 else 4.0
        return positive[0] / ratio
    raise ValueError(f"end must be 'high' or 'low', not {end!r}")


def written_checkpoints(trainer: L.Trainer, since: float) -> list[str]:
    """The distinct checkpoint files that the trainer's ModelCheckpoint callbacks saved since `since` (a time)."""
    paths = set()
    for callback in trainer.checkpoint_callbacks:
        tracked = [*callback.best_k_models, callback.best_model_path, callback.last_model_path]
        # Without a monitor a callback tracks only its latest file; the others are in its directory, newer than `since`.
        recent = []
        if callback.dirpath:
            pattern = os.path.join(glob.escape(callback.dirpath), "*" + callback.FILE_EXTENSION)
            recent = [p for p in glob.glob(pattern) if os.path.getmtime(p) >= since]
        for path in tracked + recent:
            if path and os.path.isfile(path):
                paths.add(os.path.realpath(path))  # a symlinked last.ckpt is its target
    return sorted(paths)


def set_decoding_beta(trainer: L.Trainer, path: str, beta: float) -> None:
    """Rewrite the checkpoint at `path` with `beta` as its module's decoding beta, everything else as it was."""
    checkpoint_io = trainer.strategy.checkpoint_io
    checkpoint = checkpoint_io.load_checkpoint(path, map_location="cpu", weights_only=True)
    checkpoint["state_dict"]["decoding_beta"] = torch.tensor(beta, dtype=torch.float64)
    checkpoint_io.save_checkpoint(checkpoint, path)
