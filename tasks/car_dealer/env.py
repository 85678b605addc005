"""Car Dealer (spec §2.8): the agent is the seller, the environment a buyer, the seller speaks first.

The seller's history is `[Text("Start\\n"), seller_1 (action), buyer_1, seller_2 (action), ...]`; each buyer line
is shown with the decision tag removed. The buyer ends the negotiation by writing the original's
`Output: Decision=Accept MSRP=$X Buy Price=$Y` or `Output: Decision=Reject MSRP=$X` (`DECISION_PATTERN`); the
reward is then computed (`compute_reward`) and attached to the seller's last action (every other action earns 0).
When the conversation reaches `max_conversation_length` texts (not counting the start text; 50, so at most 25
seller turns) without a decision, the buyer is re-prompted for one (its last line followed by
`Output: Decision=`); if it still gives none, the episode ends with reward 0.

The buyer is the rule-based `RuleBuyer` by default, or a `LanguageModelBuyer`. `CarDealerEnv.step_many` steps
many environments at once and asks a language-model buyer for every live episode's line in one call.
"""
from __future__ import annotations

import random
import re
from typing import Any, Literal, Optional, Sequence

from lmrl_lightning.env import EpisodeOverError, Text, TextEnv, TextHistory
from lmrl_lightning.errors import LMRLError
from lmrl_lightning.tasks.car_dealer.buyer import Decision, RuleBuyer
from lmrl_lightning.tasks.car_dealer.lm_buyer import DECISION_PROMPT, START_TEXT, LanguageModelBuyer
from lmrl_lightning.tasks.car_dealer.profiles import BuyerProfile, draw_profile

MAX_CONVERSATION_LENGTH = 50
RewardMode = Literal["fancy", "revenue"]
REWARD_MODES: tuple[str, ...] = ("fancy", "revenue")
# The original's pattern; MSRP cannot be 0. Numbers of more than MAX_DIGITS digits are not read (no car costs that).
DECISION_PATTERN = re.compile(r"Output: Decision=(Accept|Reject) MSRP=\$([1-9][0-9,]*)( Buy Price=\$([0-9][0-9,]*))?")
MAX_DIGITS = 12
NO_REPLY = "..."


def extract_decision(line: str) -> tuple[Optional[Decision], str]:
    """The decision in a buyer line (None if there is none, or its numbers are unreadable) and the line without
    the decision tag (the text the seller sees)."""
    match = DECISION_PATTERN.search(line)
    if match is None:
        return None, line
    stripped = " ".join((line[:match.start()] + " " + line[match.end():]).split())
    msrp_digits = match.group(2).replace(",", "")
    price_digits = (match.group(4) or "").replace(",", "")
    if len(msrp_digits) > MAX_DIGITS or len(price_digits) > MAX_DIGITS:
        return None, stripped
    accept = match.group(1) == "Accept"
    price = int(price_digits) if accept and price_digits else None
    return Decision(accept, int(msrp_digits), price), stripped


def compute_reward(budget: float, decision: Decision, mode: RewardMode = "fancy") -> float:
    """The seller's reward for the buyer's decision (the original's `compute_reward`).

    fancy (default): bought: price / ((budget + msrp) / 2); not bought: -(budget - msrp) / msrp; 0 when msrp is 0
    or a purchase has no price. revenue: price / 1000 when bought, else 0.
    """
    if mode == "revenue":
        return decision.price / 1000.0 if decision.accept and decision.price is not None else 0.0
    if mode != "fancy":
        raise ValueError(f"unknown reward mode {mode!r}; valid: {', '.join(REWARD_MODES)}")
    if decision.msrp == 0:
        return 0.0
    if decision.accept:
        return 0.0 if decision.price is None else decision.price / ((budget + decision.msrp) * 0.5)
    return -(budget - decision.msrp) / decision.msrp


class CarDealerEnv(TextEnv):
    """One negotiation with one buyer.

    Args:
        reward_mode: "fancy" (the spec's default) or "revenue".
        max_conversation_length: texts after the start text before the buyer must decide (the original: 50).
        buyer: None for the rule-based buyer, or a `LanguageModelBuyer` (shared by every copy of the env).
        journal: when a dict, each finished episode's `{"buyer_info", "output"}` (the original's record of a
            conversation) is stored in it under the episode's reset seed; shared by every copy of the env.

    `reset(seed, options={"profile": buyer_info})` plays against that profile (the original's `buyer_info`
    mapping); without it the profile is drawn from the seed. The seed also picks the rule buyer's wording.
    """

    def __init__(
        self,
        reward_mode: RewardMode = "fancy",
        max_conversation_length: int = MAX_CONVERSATION_LENGTH,
        buyer: Optional[LanguageModelBuyer] = None,
        journal: Optional[dict[int, dict[str, Any]]] = None,
    ):
        if reward_mode not in REWARD_MODES:
            raise LMRLError(f"car_dealer: reward_mode {reward_mode!r} is not one of {', '.join(REWARD_MODES)}")
        if isinstance(max_conversation_length, bool) or not isinstance(max_conversation_length, int) \
                or max_conversation_length < 2:
            raise LMRLError(f"car_dealer: max_conversation_length must be an integer >= 2, got "
                            f"{max_conversation_length!r}")
        self.reward_mode = reward_mode
        self.max_conversation_length = max_conversation_length
        self.buyer = buyer
        self.journal = journal
        self.profile: Optional[BuyerProfile] = None
        self.seed: Optional[int] = None
        self.rule_buyer: Optional[RuleBuyer] = None
        self.decision: Optional[Decision] = None
        self.done = False

    def copy(self) -> "CarDealerEnv":
        """A fresh env sharing the language-model buyer and the journal (never a copy of a model)."""
        return CarDealerEnv(self.reward_mode, self.max_conversation_length, self.buyer, self.journal)

    def __deepcopy__(self, memo):  # TextEnv.copy's default would copy a language model
        return self.copy()

    def reset(self, seed: Optional[int] = None, options: Optional[dict[str, Any]] = None) -> TextHistory:
        options = options or {}
        self.seed = seed
        if options.get("profile") is not None:
            self.profile = BuyerProfile.from_buyer_info(options["profile"], "reset options.profile")
        else:
            self.profile = draw_profile(random.Random(seed))
        self.rule_buyer = RuleBuyer(self.profile, seed if seed is not None else random.randrange(2**31)) \
            if self.buyer is None else None
        self.decision, self.done = None, False
        self.n_texts = 1  # the conversation's texts so far, counted here: a caller may pass a cut history
        return (Text(START_TEXT, False),)

    def step(self, history: TextHistory) -> tuple[TextHistory, float, bool]:
        return self.step_many([self], [history])[0]

    @staticmethod
    def step_many(envs: Sequence["CarDealerEnv"], histories: Sequence[TextHistory]) -> list[tuple[TextHistory, float, bool]]:
        """`step` for many environments at once: the language-model buyers' lines come from one `complete` call per
        buyer (and one more for the decision re-prompts at the conversation limit)."""
        for env, history in zip(envs, histories):
            env._check_step(history)
        prompts = {i: env.buyer.prompt(env.profile, h) for i, (env, h) in enumerate(zip(envs, histories))
                   if env.buyer is not None}
        raw = _complete_grouped(envs, prompts)
        for i, env in enumerate(envs):
            if env.buyer is None:
                raw[i] = env.rule_buyer.respond(histories[i][-1].text)
        results: dict[int, tuple[TextHistory, float, bool]] = {}
        reprompts: dict[int, str] = {}
        shown: dict[int, TextHistory] = {}
        for i, (env, history) in enumerate(zip(envs, histories)):
            decision, line = extract_decision(raw[i])
            shown[i] = history + (Text((line.strip() or NO_REPLY) + "\n", False),)
            env.n_texts += 2  # the seller's line and the buyer's
            if decision is not None:
                results[i] = env._finish(shown[i], decision)
            elif env.n_texts - 1 >= env.max_conversation_length:
                if env.buyer is None:
                    results[i] = env._finish(shown[i], extract_decision(env.rule_buyer.forced_decision())[0])
                else:
                    reprompts[i] = env.buyer.decision_prompt(prompts[i], raw[i])
            else:
                results[i] = (shown[i], 0.0, False)
        for i, completion in _complete_grouped(envs, reprompts).items():
            results[i] = envs[i]._finish(shown[i], extract_decision(DECISION_PROMPT + completion)[0])
        return [results[i] for i in range(len(envs))]

    def _check_step(self, history: TextHistory) -> None:
        if self.profile is None:
            raise EpisodeOverError("step() before the first reset(); call reset() first")
        if self.done:
            raise EpisodeOverError("step() after the negotiation ended; call reset() first")
        if not history or not history[-1].is_action:
            raise ValueError("step() needs a history whose last text is the seller's action")

    def _finish(self, history: TextHistory, decision: Optional[Decision]) -> tuple[TextHistory, float, bool]:
        """End the episode with the buyer's decision (None: no decision, reward 0)."""
        self.decision, self.done = decision, True
        reward = 0.0 if decision is None else compute_reward(self.profile.budget, decision, self.reward_mode)
        if self.journal is not None and self.seed is not None:
            self.journal[self.seed] = self.record()
        return history, float(reward), True

    def record(self) -> dict[str, Any]:
        """The original's record of the episode's setting and outcome: `buyer_info` and `output` (None while no
        decision was made)."""
        output = None
        if self.decision is not None:
            output = {"car_bought": self.decision.accept, "msrp": self.decision.msrp,
                      "buy_price": self.decision.price}
        return {"buyer_info": self.profile.as_buyer_info() if self.profile else None, "output": output}

    def success(self) -> Optional[bool]:
        """A car was bought."""
        if self.profile is None:
            return None
        return bool(self.decision is not None and self.decision.accept)

    def end_message(self) -> Optional[str]:
        if self.profile is None:
            return None
        outcome = self.decision.output_text() if self.decision else "no decision"
        return f"buyer: {self.profile.info_line().strip()}\n{outcome}"


def _complete_grouped(envs: Sequence[CarDealerEnv], prompts: dict[int, str]) -> dict[int, str]:
    """Each prompt's completion, with one `complete` call per distinct buyer."""
    out: dict[int, str] = {}
    by_buyer: dict[int, list[int]] = {}
    for i in prompts:
        by_buyer.setdefault(id(envs[i].buyer), []).append(i)
    for indices in by_buyer.values():
        completions = envs[indices[0]].buyer.complete([prompts[i] for i in indices])
        out.update(zip(indices, completions))
    return out
