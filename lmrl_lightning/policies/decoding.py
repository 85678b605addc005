"""How a module acts: one typed decoding configuration, and the one function that turns it into a policy."""
from __future__ import annotations

import dataclasses
from typing import Literal, Optional, Sequence, Union

from lmrl_lightning.env import BatchedTextPolicy
from lmrl_lightning.errors import LMRLError
from lmrl_lightning.policies.rerank import RerankPolicy
from lmrl_lightning.policies.sampling import LMPolicy
from lmrl_lightning.policies.value_guided import ValueGuidance, ValueGuidedPolicy, ValueRerankPolicy
from lmrl_lightning.validation import as_settings, check_bool, check_choice, check_int, check_number

DecodingKind = Literal["sample", "greedy", "rerank", "rerank_greedy"]
DECODING_KINDS: tuple[str, ...] = ("sample", "greedy", "rerank", "rerank_greedy")
VALUE_NETWORKS: tuple[str, ...] = ("online", "target")
CANDIDATE_VALUES: tuple[str, ...] = ("sum", "last")


@dataclasses.dataclass(frozen=True)
class Decoding:
    """How a policy chooses each action (evaluation, online rollouts, `lmrl eval`).

    Args:
        kind: ``sample`` (token by token from the softmax), ``greedy`` (the most likely token), ``rerank`` (one of the
            task's fixed candidate actions, sampled from the softmax of their summed token scores) or
            ``rerank_greedy`` (the best-scoring candidate).
        temperature: divides the logits (or candidate scores) before sampling, > 0; the greedy kinds ignore it.
        beta: weight of the value guidance of value-based modules (MC Returns, ILQL): logits_pi_beta + beta *
            guidance. None: the module's own beta (as trained, or as a `BetaSweep` chose it). Setting it on a module
            without value guidance is an error.
        max_new_tokens: longest generated action in tokens (``sample``/``greedy``); a turn cut there ends with a
            newline.
        carry_cache: keep each call's KV caches for the next turn, so that a history that only grew runs its new
            tokens only; false frees them after each call (the kept caches can double the decoder's memory peak:
            one batch's caches, held between turns).
        value_networks: which of a value-based module's networks give the guidance: ``online`` (the trunk and heads
            being trained; the original's evaluation scripts) or ``target`` (ILQL's Polyak-averaged target trunk
            and target Q heads, with V read on the target trunk: the original's re-ranker and the default of its
            `ILQLInference.generate`). Only ILQL has targets.
        candidate_value: how the re-ranking kinds read a value-based module's guidance over a candidate's tokens:
            ``sum`` (every token's, the sequence-level form of token-by-token guidance) or ``last`` (Q at the last
            token only: the value of the action as a whole, Q(s, a), rather than a sum that also counts the values
            of its prefixes, which average over every action sharing them).
    """

    kind: DecodingKind = "sample"
    temperature: float = 1.0
    beta: Optional[float] = None
    max_new_tokens: int = 16
    carry_cache: bool = True
    value_networks: Literal["online", "target"] = "online"
    candidate_value: Literal["sum", "last"] = "sum"

    def __post_init__(self) -> None:
        check_choice("decoding.kind", self.kind, DECODING_KINDS)
        check_number("decoding.temperature", self.temperature, low=0, low_open=True)
        if self.beta is not None:
            check_number("decoding.beta", self.beta, low=0)
        check_int("decoding.max_new_tokens", self.max_new_tokens)
        check_bool("decoding.carry_cache", self.carry_cache)
        check_choice("decoding.value_networks", self.value_networks, VALUE_NETWORKS)
        check_choice("decoding.candidate_value", self.candidate_value, CANDIDATE_VALUES)
        if self.candidate_value != "sum" and not self.reranks:
            raise LMRLError(f"decoding.candidate_value: {self.candidate_value!r} reads values over candidate actions; "
                            f"kind {self.kind!r} adds the value of every token it generates (use rerank or "
                            "rerank_greedy)")

    @property
    def reranks(self) -> bool:
        """Chooses among the task's candidate actions rather than generating text."""
        return self.kind in ("rerank", "rerank_greedy")

    @property
    def sampling_temperature(self) -> float:
        """The temperature the decoder applies: 0 (argmax) for the greedy kinds."""
        return 0.0 if self.kind in ("greedy", "rerank_greedy") else self.temperature


def as_decoding(value: Union[Decoding, dict, None], default_kind: str = "sample", field: str = "decoding") -> Decoding:
    """A `Decoding` from a constructor argument: itself, its fields as a mapping (as checkpoints store it), or None
    (`default_kind`, e.g. the task's default decoding, with the other fields' defaults). `field` names the argument
    in errors as the CLI spells it."""
    return Decoding(default_kind) if value is None else as_settings(value, Decoding, field)


def build_policy(
    model,
    tokenizer,
    decoding: Decoding,
    candidates: Optional[Sequence[str]] = None,
    guidance: Optional[ValueGuidance] = None,
) -> BatchedTextPolicy:
    """The decoder `decoding` asks for, over `model` (a causal LM), value-guided when `guidance` is given."""
    temperature = decoding.sampling_temperature
    if decoding.reranks:
        if not candidates:
            raise LMRLError(f"decoding {decoding.kind!r} needs the task's candidate actions; this task has none")
        if guidance is not None:
            return ValueRerankPolicy(model, tokenizer, candidates, temperature, decoding.carry_cache,
                                     guidance=guidance, candidate_value=decoding.candidate_value)
        return RerankPolicy(model, tokenizer, candidates, temperature, decoding.carry_cache)
    if guidance is not None:
        return ValueGuidedPolicy(
            model, tokenizer, temperature, 0, decoding.max_new_tokens, decoding.carry_cache, guidance=guidance
        )
    return LMPolicy(model, tokenizer, temperature, 0, decoding.max_new_tokens, decoding.carry_cache)
