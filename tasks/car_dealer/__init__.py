"""Car Dealer (spec §2.8): sell a car to a simulated buyer; registered as "car_dealer", one variant ("default").

The agent is the seller and speaks first; the buyer is the rule-based `RuleBuyer` (the default, see `buyer`) or,
with the env option `buyer_model`, a local language model prompted as the original's buyer (`LanguageModelBuyer`).
The reward is the spec's "fancy" price ratio on the seller's last action (env option `reward_mode: revenue` gives
the original's revenue in thousands instead).

Evaluation: `N_EVAL_PROFILES` fixed buyer profiles, each met `EPISODES_PER_PROFILE` times by default (the seed of an
episode changes the buyer's wording and the policy's sampling, not the profile); the paper's count is unknown.

Normalisation (spec §2.9's formula; the paper published none for this task): minimum 0, the paper's Table 5 value
and the return of a seller who never names a price (`IdleSeller`: the buyer walks out and reports its budget as the
MSRP); dataset average: the mean return of `lmrl data car_dealer` (19,000 conversations, seed 0); maximum: the
`ExpertSeller`'s mean return on the evaluation protocol (the best scripted seller: every wanted feature, then the
buyer's willingness to pay). tests/test_car_dealer.py recomputes the minimum and maximum. The rule buyer's returns
lie in [-1, 1.072] (see `buyer`).
"""
from __future__ import annotations

import functools
import random
from typing import Any, Optional

from lmrl_lightning.errors import LMRLError
from lmrl_lightning.lm_oracle import shared_oracle
from lmrl_lightning.registry import EvalEpisode, TaskSpec, register_task
from lmrl_lightning.scoring import Normalisation
from lmrl_lightning.validation import check_int
from lmrl_lightning.tasks.car_dealer.buyer import Decision, RuleBuyer
from lmrl_lightning.tasks.car_dealer.datagen import PAPER_TABLE1, format_stats_table, generate_dataset
from lmrl_lightning.tasks.car_dealer.env import (
    DECISION_PATTERN,
    MAX_CONVERSATION_LENGTH,
    CarDealerEnv,
    compute_reward,
    extract_decision,
)
from lmrl_lightning.tasks.car_dealer.grammar import SellerMove, parse_seller
from lmrl_lightning.tasks.car_dealer.lm_buyer import ORIGINAL_MAX_NEW_TOKENS, START_TEXT, LanguageModelBuyer
from lmrl_lightning.tasks.car_dealer.original import conversation_to_episode, read_original_record
from lmrl_lightning.tasks.car_dealer.policies import (
    SELLERS,
    ConciseSeller,
    DiscountSeller,
    ExpertSeller,
    FeatureSeller,
    IdleSeller,
    MixedSeller,
    expert_price,
)
from lmrl_lightning.tasks.car_dealer.profiles import BuyerProfile, draw_profile

VARIANTS: tuple[str, ...] = ("default",)
N_EVAL_PROFILES = 64
EPISODES_PER_PROFILE = 4
EVAL_PROFILE_SEED = 2019  # the fixed evaluation profiles are drawn from this seed

MINIMUM_RETURN = 0.0
DATASET_AVERAGE_RETURN = 0.5494  # lmrl data car_dealer (19,000 conversations, seed 0): 0.54935
EXPERT_RETURN = 1.0711  # ExpertSeller on the 256 default evaluation episodes: 1.07110
NORMALISATION: dict[str, Normalisation] = {
    "default": Normalisation(minimum=MINIMUM_RETURN, dataset_average=DATASET_AVERAGE_RETURN, maximum=EXPERT_RETURN),
}
ENV_OPTIONS = ("reward_mode", "max_conversation_length", "buyer_model", "buyer_device", "buyer_batch_size",
               "buyer_max_new_tokens")


@functools.lru_cache(maxsize=None)
def eval_profiles() -> tuple[BuyerProfile, ...]:
    """The fixed evaluation buyers."""
    rng = random.Random(EVAL_PROFILE_SEED)
    return tuple(draw_profile(rng) for _ in range(N_EVAL_PROFILES))


def eval_episodes(variant: str, episodes: int) -> list[EvalEpisode]:
    """`episodes` negotiations cycling through the fixed profiles (episode i meets profile i mod 64); the index is
    the episode's seed (the buyer's wording) and seeds the policy's sampling."""
    TASK.check_variant(variant)
    profiles = eval_profiles()
    return [EvalEpisode(i, i, {"profile": profiles[i % len(profiles)].as_buyer_info()}) for i in range(episodes)]


@functools.lru_cache(maxsize=4)
def _language_model_buyer(model_dir: str, device: str, batch_size: int, max_new_tokens: int) -> LanguageModelBuyer:
    # One buyer per setting for the whole process (every env, online round and evaluation: one batched call per
    # turn), over the process-wide model that any task asking for the same directory shares.
    return LanguageModelBuyer(oracle=shared_oracle(model_dir, device, batch_size=batch_size, max_new_tokens=max_new_tokens))


def make_env(variant: str, **options: Any) -> CarDealerEnv:
    """The negotiation. Options (`rollouts.env_options` in configs): reward_mode ("fancy" | "revenue"),
    max_conversation_length (50), buyer_model (a local model directory: the LM buyer instead of the rule buyer),
    buyer_device ("cpu"), buyer_batch_size (32), buyer_max_new_tokens (127)."""
    TASK.check_variant(variant)
    unknown = sorted(set(options) - set(ENV_OPTIONS))
    if unknown:
        raise LMRLError(f"car_dealer env_options: unknown option {unknown[0]!r}; valid: {', '.join(ENV_OPTIONS)}")
    buyer: Optional[LanguageModelBuyer] = None
    if options.get("buyer_model") is not None:
        sizes = {"buyer_batch_size": options.get("buyer_batch_size", 32),
                 "buyer_max_new_tokens": options.get("buyer_max_new_tokens", ORIGINAL_MAX_NEW_TOKENS)}
        for field, value in sizes.items():
            check_int(f"car_dealer env_options.{field}", value)
        buyer = _language_model_buyer(str(options["buyer_model"]), str(options.get("buyer_device", "cpu")),
                                      *sizes.values())
    return CarDealerEnv(options.get("reward_mode", "fancy"),
                        options.get("max_conversation_length", MAX_CONVERSATION_LENGTH), buyer)


TASK: TaskSpec = register_task(
    TaskSpec(
        name="car_dealer",
        variants=VARIANTS,
        make_env=make_env,
        normalisation=NORMALISATION,
        eval_episodes=eval_episodes,
        default_eval_episodes=N_EVAL_PROFILES * EPISODES_PER_PROFILE,
        history_window={"default": None},  # the seller sees the whole conversation
        default_decoding="sample",
        generate_dataset=generate_dataset,
        format_stats=format_stats_table,
        read_original=read_original_record,  # the original's train.json / eval.json conversations
        table1=PAPER_TABLE1,
        description="Car Dealer: you are the seller and speak first. Greet, ask about needs and budget, describe "
        "features, quote a price ('The price is $32,000'), offer discounts ('$1,000 off') or hold firm ('final "
        "price'), ask 'Do we have a deal?'. The buyer decides; your reward is the price ratio of the sale.",
    )
)

__all__ = [
    "DATASET_AVERAGE_RETURN", "DECISION_PATTERN", "EPISODES_PER_PROFILE", "EXPERT_RETURN", "MINIMUM_RETURN",
    "N_EVAL_PROFILES", "NORMALISATION", "PAPER_TABLE1", "SELLERS", "START_TEXT", "TASK", "BuyerProfile",
    "CarDealerEnv", "ConciseSeller", "Decision", "DiscountSeller", "ExpertSeller", "FeatureSeller", "IdleSeller",
    "LanguageModelBuyer", "MixedSeller", "RuleBuyer", "SellerMove", "compute_reward", "draw_profile", "eval_episodes",
    "conversation_to_episode", "eval_profiles", "expert_price", "extract_decision", "format_stats_table",
    "generate_dataset", "make_env", "parse_seller", "read_original_record",
]
