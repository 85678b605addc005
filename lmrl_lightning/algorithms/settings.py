"""The algorithms' settings, grouped: each group a typed dataclass that LightningCLI reads (``--model.optim.lr``),
checked when it is built (one line naming the field as the CLI spells it), and stored in checkpoints as a plain
mapping (`dataclasses.asdict`) that `validation.as_settings` turns back into the group.

A module's constructor takes groups, not their fields, each class only its own groups: the rest pass up unchanged
as keyword arguments (``**kwargs``, which LightningCLI follows to the base's signature): `LMRLModule(backbone,
init_from, optim)`; `ValueModule(value, beta, **kwargs)`; `OnlineModule(rollouts, updates, **kwargs)`;
`PPO(optim, ppo, bc, **kwargs)`; `OnlineFilteredBC(updates, filter, **kwargs)`. Defaults follow the paper (spec
§3.8) unless a field says why not; a module whose paper default differs names that group with its own default
instance (e.g. PPO's ``Optimisation(lr=1e-5)``).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal, Mapping, Optional

from lmrl_lightning.errors import LMRLError
from lmrl_lightning.evaluation import check_play_settings
from lmrl_lightning.models.heads import HeadKind
from lmrl_lightning.policies.decoding import Decoding
from lmrl_lightning.validation import check_bool, check_choice, check_int, check_number

DiscountPer = Literal["token", "turn"]
HEAD_KINDS = ("mlp", "linear", "tied")


def settings_as_dicts(hparams: Mapping[str, Any]) -> dict[str, Any]:
    """Hyper-parameters with every settings group as a plain mapping (so a checkpoint loads with weights_only)."""
    return {k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v for k, v in hparams.items()}


@dataclasses.dataclass(frozen=True)
class Optimisation:
    """The optimiser every module uses: AdamW, a linear warm-up, then a constant or decaying learning rate.

    Args:
        lr: peak learning rate (paper: 1e-4 for BC on every task; 0 freezes the module, e.g. evaluation-only runs).
        weight_decay: decoupled weight decay, not applied to biases and norm weights.
        warmup_steps: linear warm-up steps, then the `decay` schedule.
        betas: AdamW betas (the paper's Adafactor uses momentum 0.9 and decay 0.95).
        decay: after the warm-up, ``none`` (a constant learning rate: the paper's schedule in effect) or ``cosine``
            (down to 0 at the run's last step: the trainer's `max_steps`, or its epochs of a fixed dataset).
    """

    lr: float = 1e-4
    weight_decay: float = 0.0
    warmup_steps: int = 0
    betas: tuple[float, float] = (0.9, 0.95)
    decay: Literal["none", "cosine"] = "none"

    def __post_init__(self) -> None:
        check_number("model.optim.lr", self.lr, low=0)
        check_number("model.optim.weight_decay", self.weight_decay, low=0)
        check_int("model.optim.warmup_steps", self.warmup_steps, low=0)
        if not isinstance(self.betas, (tuple, list)) or len(self.betas) != 2:
            raise LMRLError(f"model.optim.betas must be two numbers, got {self.betas!r}")
        for i, beta in enumerate(self.betas):
            check_number(f"model.optim.betas[{i}]", beta, low=0, high=1, high_open=True)
        object.__setattr__(self, "betas", tuple(self.betas))
        check_choice("model.optim.decay", self.decay, ("none", "cosine"))

    def lr_factor(self, step: int, total_steps: Optional[float] = None) -> float:
        """The learning rate at optimiser step `step` (from 0) as a fraction of `lr`; `total_steps` (the run's
        length) is needed by a decaying schedule."""
        warmup = max(1, self.warmup_steps)
        if step < warmup or self.decay == "none":
            return min(1.0, (step + 1) / warmup)
        progress = min(1.0, (step + 1 - warmup) / max(1.0, total_steps - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclasses.dataclass(frozen=True)
class ValueLearning:
    """How MC Returns and ILQL learn values (spec §3.4, §3.5).

    Args:
        gamma: discount (paper 0.99).
        discount_per: ``token`` (the paper's code: gamma per action token) or ``turn`` (gamma per agent turn).
        head: Q/V head: ``mlp`` (paper), ``linear`` or ``tied`` (shares the trunk's output embedding).
        head_bias: initial output of every head (about the expected return; paper: 0 maze, -4.4/-4.1 Wordle).
        cql_weight: weight of the cross-entropy of the data action under softmax(Q) (paper maze scripts: 0).
    """

    gamma: float = 0.99
    discount_per: DiscountPer = "token"
    head: HeadKind = "mlp"
    head_bias: float = 0.0
    cql_weight: float = 0.0

    def __post_init__(self) -> None:
        check_number("model.value.gamma", self.gamma, low=0, high=1)
        check_choice("model.value.discount_per", self.discount_per, ("token", "turn"))
        check_choice("model.value.head", self.head, HEAD_KINDS)
        check_number("model.value.head_bias", self.head_bias)
        check_number("model.value.cql_weight", self.cql_weight, low=0)


@dataclasses.dataclass(frozen=True)
class ILQLValueLearning(ValueLearning):
    """ILQL's value learning: `ValueLearning`'s fields and its expectile and target networks.

    Args:
        tau: expectile of V (paper: 0.7; maze scripts 0.95).
        polyak: target update rate after every optimiser step (paper: 0.005).
        forced_targets: V's target where the training data's actions continue one way only after the action's
            tokens so far (the maze's ``move`` and the newline after its direction): ``target``, the target
            networks' Q as everywhere (the paper's), or ``online``, the online Q (not differentiated). The
            expectile of a single action's value is that value, so both have the same fixed point; ``online``
            spares each forced token a target lag of about 1/polyak steps (values cross a maze turn with one lag
            instead of three).
    """

    tau: float = 0.7
    polyak: float = 0.005
    forced_targets: Literal["target", "online"] = "target"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_number("model.value.tau", self.tau, low=0, high=1, low_open=True, high_open=True)
        check_number("model.value.polyak", self.polyak, low=0, high=1, low_open=True)
        check_choice("model.value.forced_targets", self.forced_targets, ("target", "online"))


@dataclasses.dataclass(frozen=True)
class Rollouts:
    """What an online module plays each round (spec §3.6, §3.7): one round is one training epoch.

    Args:
        task: registered task whose simulator the policy plays.
        variant: task variant (default: the task's first).
        env_options: keyword arguments of the task's environment for training rollouts (e.g. Wordle's
            ``bad_word_reward: -10``, the original's RL training value; evaluation keeps the task's defaults).
        episodes_per_round: episodes played each round, over all DDP ranks together (paper: 128; each rank plays
            its share).
        batch_size: episodes stepped together by the batched rollout engine (per rank).
        seed: seed of the rounds' start states and sampling, and of the minibatch order.
        decoding: how rollouts decode (default: the task's evaluation decoding kind, temperature 1): kind
            ``sample`` (the policy's own tokens) or ``rerank`` (sampled among the task's fixed candidate actions,
            e.g. the maze's four moves: their token sequences are the canonical ones the updates score, whereas
            free text is re-tokenised).
    """

    task: str = "maze"
    variant: Optional[str] = None
    env_options: Optional[dict[str, Any]] = None
    episodes_per_round: int = 128
    batch_size: int = 32
    seed: int = 0
    decoding: Optional[Decoding] = None

    def __post_init__(self) -> None:
        check_play_settings(self, "model.rollouts", counts=("episodes_per_round", "batch_size"), seed="seed")
        if self.env_options is not None and not isinstance(self.env_options, Mapping):
            raise LMRLError(
                f"model.rollouts.env_options must be a mapping of keyword arguments, got {self.env_options!r}"
            )


@dataclasses.dataclass(frozen=True)
class Updates:
    """How an online module trains on a round's episodes.

    Args:
        batch_size: chunks per minibatch, per rank (paper PPO: 32 maze and Wordle; online filtered BC 128 maze FO).
        epochs: passes over a round's data (paper PPO: 4 in the dialogue commands, 1 elsewhere).
        max_length: longest training chunk in tokens (longer ones keep their last tokens).
    """

    batch_size: int = 32
    epochs: int = 1
    max_length: int = 512

    def __post_init__(self) -> None:
        check_int("model.updates.batch_size", self.batch_size)
        check_int("model.updates.epochs", self.epochs)
        check_int("model.updates.max_length", self.max_length, low=2)


@dataclasses.dataclass(frozen=True)
class PPOSettings:
    """PPO's own settings (spec §3.6).

    Args:
        gamma: discount per action token (paper: 0.99 maze FO, 1.0 PO maze and dialogue).
        lam: GAE lambda (paper 0.95).
        clip: policy ratio clip range (paper 0.2).
        clip_value: value clip range (paper 0.2).
        value_coef: weight of the value loss (paper: 0.5 maze FO, 1.0 others).
        kl_coef: initial KL penalty coefficient (scripts 0.001).
        kl_target: adapt kl_coef towards this KL once per round (Ziegler et al.; None: a fixed coefficient, as the
            paper's scripts): per action token, or per decision when rollouts re-rank candidate actions (the KL
            between the candidate distributions). Needs kl_horizon.
        kl_horizon: the adaptive controller's horizon in minibatch steps. Needs kl_target.
        value_bias: initial output of the value head (paper: -1 maze, -4.1 Wordle and the dialogue tasks).
        whiten_advantages: whiten advantages over the round, all ranks together (paper: yes).
        grad_clip: global gradient-norm clip (None: no clipping, as the paper).
        value_lr: the value head's own learning rate (None: `optim.lr`, as the paper). A linear head under Adam moves
            its output by roughly lr x the hidden size per step: at a policy's 1e-4 and a few steps a round it cannot
            follow returns of tens (the dialogue tasks), and the advantages stay noise.
        value_trunk_grad: the value loss trains the shared trunk too (paper: yes). False reads the value head off
            the trunk's hidden states without differentiating them, so that the value head's early errors (returns
            of tens against its initial bias) cannot move the policy's features; only the policy loss (and the BC
            term) trains the trunk.
    """

    gamma: float = 0.99
    lam: float = 0.95
    clip: float = 0.2
    clip_value: float = 0.2
    value_coef: float = 1.0
    kl_coef: float = 0.001
    kl_target: Optional[float] = None
    kl_horizon: Optional[float] = None
    value_bias: float = 0.0
    whiten_advantages: bool = True
    grad_clip: Optional[float] = None
    value_lr: Optional[float] = None
    value_trunk_grad: bool = True

    def __post_init__(self) -> None:
        for field in ("gamma", "lam"):
            check_number(f"model.ppo.{field}", getattr(self, field), low=0, high=1)
        for field in ("whiten_advantages", "value_trunk_grad"):
            check_bool(f"model.ppo.{field}", getattr(self, field))
        for field in ("clip", "clip_value"):
            check_number(f"model.ppo.{field}", getattr(self, field), low=0, low_open=True)
        for field in ("value_coef", "kl_coef"):
            check_number(f"model.ppo.{field}", getattr(self, field), low=0)
        check_number("model.ppo.value_bias", self.value_bias)
        for field in ("kl_target", "kl_horizon", "grad_clip", "value_lr"):
            if getattr(self, field) is not None:
                check_number(f"model.ppo.{field}", getattr(self, field), low=0, low_open=True)
        if (self.kl_target is None) != (self.kl_horizon is None):
            raise LMRLError("an adaptive KL coefficient needs both model.ppo.kl_target and model.ppo.kl_horizon")


@dataclasses.dataclass(frozen=True)
class BCRegularisation:
    """A BC loss on offline episodes added to each online update (PPO; paper: Wordle and the dialogue tasks, not
    the maze).

    Args:
        data: JSONL episodes to clone (paper: the task's offline dataset).
        weight: weight of the BC loss (paper's Wordle script: 1.0).
        batch_size: offline chunks per minibatch (drawn uniformly with replacement).
    """

    data: str
    weight: float = 1.0
    batch_size: int = 32

    def __post_init__(self) -> None:
        if not isinstance(self.data, str) or not self.data:
            raise LMRLError(f"model.bc.data must name a JSONL file of episodes, got {self.data!r}")
        check_number("model.bc.weight", self.weight, low=0)
        check_int("model.bc.batch_size", self.batch_size)


@dataclasses.dataclass(frozen=True)
class RoundFilter:
    """Which of a round's episodes online filtered BC clones (spec §3.7).

    Args:
        mode: ``success`` (maze, chess: the successful episodes) or ``top_fraction`` (Wordle: the best returns).
        top_fraction: fraction of the round kept by ``top_fraction``, over all DDP ranks (paper Wordle: 0.3).
    """

    mode: Literal["success", "top_fraction"] = "success"
    top_fraction: float = 0.3

    def __post_init__(self) -> None:
        check_choice("model.filter.mode", self.mode, ("success", "top_fraction"))
        check_number("model.filter.top_fraction", self.top_fraction, low=0, high=1, low_open=True)
