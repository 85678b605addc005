"""The rule-based buyer (the default simulator): a utility over price, budget, model and feature match and patience,
replying in sentences coloured by its personality and ending the negotiation with the original's decision line.

Rules (identical for every personality; the personality changes only the wording):

* The car discussed starts as the buyer's preferred model; a seller naming a brand and/or body type switches it
  (when models are compared, the one the buyer prefers wins if named). A new model resets the price.
* The first price quoted for the car is its list price (MSRP); a lower price later, an amount or a percentage off
  lowers the offer; a higher price than the offer is ignored and costs patience.
* Willingness to pay: `WTP = budget * STRETCH * fit`, with `fit` = brand factor (1 or `OTHER_BRAND`) x body-type
  factor (1 or `OTHER_TYPE`) x feature factor (`FEATURE_FLOOR` plus `FEATURE_GAIN` times the share of wanted
  features the seller has described). The original's buyers "prefer not to pay more than the budget, but can be
  convinced": STRETCH is 1.1, so WTP runs from 0.6 to 1.155 times the budget.
* Each seller turn costs one unit of patience; a turn the buyer does not understand, an exact repeat, a feature the
  buyer does not want or a list price above `MSRP_CAP` x budget costs one more. Patience starts at
  `PATIENCE_BASE + PATIENCE_PER_FEATURE` per wanted feature.
* With an offer on the table: at most `GOOD_DEAL` x WTP, the buyer accepts at once; at most WTP, it asks once for a
  better price and accepts after the seller's next discount, firm hold or closing question; above WTP, it says it
  is too much, and walks out after `MAX_REFUSALS` firm holds or closing questions at such a price (a turn that
  also lowers the price does not count).
* When patience runs out (or the env forces a decision at the 50-text limit) the buyer accepts an offer within
  WTP and otherwise rejects.
* The decision line is `Output: Decision=Accept MSRP=$X Buy Price=$Y` or `Output: Decision=Reject MSRP=$X`. X is the
  list price clipped into [`MSRP_FLOOR`, `MSRP_CAP`] x budget, or the budget itself when no price was ever quoted;
  Y is the offer. The clip bounds the fancy reward: a refused seller earns (msrp - budget) / msrp, which an absurd
  sticker price would push towards 1 (and a $1 one towards minus the budget); clipped, a refusal earns between -1
  and 1/3, a sale at most 2 x 1.155 / 2.155 = 1.072, and a seller who never names a price earns exactly 0.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Optional

from lmrl_lightning.tasks.car_dealer.grammar import SellerMove, parse_seller
from lmrl_lightning.tasks.car_dealer.profiles import BuyerProfile, brand_name, with_article

STRETCH = 1.1
OTHER_BRAND = 0.8
OTHER_TYPE = 0.8
FEATURE_FLOOR = 0.85
FEATURE_GAIN = 0.2
GOOD_DEAL = 0.85
MAX_REFUSALS = 2
PATIENCE_BASE = 16
PATIENCE_PER_FEATURE = 2
MSRP_FLOOR = 0.5
MSRP_CAP = 1.5


def spoken_list(items) -> str:
    """"a", "a and b", "a, b and c"."""
    items = list(items)
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


@dataclass(frozen=True)
class Decision:
    """The buyer's decision: bought or not, the MSRP, and the price paid when bought."""

    accept: bool
    msrp: int
    price: Optional[int] = None

    def output_text(self) -> str:
        """The original's decision line."""
        if self.accept:
            return f"Output: Decision=Accept MSRP=${self.msrp:,} Buy Price=${self.price:,}"
        return f"Output: Decision=Reject MSRP=${self.msrp:,}"


# Wording by personality: an opening and a closing remark (either may be absent) around the buyer's sentences;
# "uncommunicative" adds nothing, "talkative" adds small talk.
PERSONALITY_STYLE: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "abusive": (("Listen, you crook.", "Ugh, you again.", "Shut up and listen."),
                ("Don't waste my time, idiot.", "Pathetic.", "")),
    "angry": (("This is ridiculous!", "I'm already fed up!", "Come on!"), ("Hurry up!", "I'm losing my temper.", "")),
    "insulting": (("Wow, you're not very bright, are you?", "Are all salesmen this slow?", ""),
                  ("Even a child could sell better.", "Try to keep up.", "")),
    "polite": (("Thank you.", "That's kind of you.", "Thanks for explaining."), ("Thanks for your help.", "", "")),
    "respectful": (("I appreciate your time.", "Thank you, I understand.", "I see, thank you."),
                   ("I respect your work.", "I appreciate it.", "")),
    "rude": (("Whatever.", "Yeah, yeah.", "Ugh."), ("Get on with it.", "", "")),
    "sarcastic": (("Oh, wonderful.", "Wow, what a surprise.", "Oh great."),
                  ("I'm thrilled, really.", "Truly the deal of the century.", "")),
    "talkative": (("Oh, hello there! I've been looking at cars all week, you know.", "Well, let me think about that.",
                   "You know, my brother-in-law sells cars too."),
                  ("Anyway, my neighbour just bought one, funny story.", "Sorry, I do go on.", "")),
    "toxic": (("This dealership is garbage.", "You people are all the same.", "Ugh, what a dump."),
              ("You people are the worst.", "Whatever, loser.", "")),
    "uncommunicative": (("",), ("",)),
}


@dataclass
class NegotiationState:
    """What the buyer remembers of the negotiation."""

    brand: str  # brand name without article
    body_type: str
    patience: float
    list_price: Optional[int] = None
    offer: Optional[int] = None
    described: set[str] = field(default_factory=set)  # wanted features the seller described
    asked_for_better: bool = False
    refusals: int = 0
    last_seller_text: str = ""
    decision: Optional[Decision] = None


class RuleBuyer:
    """One episode's buyer. `respond(seller_text)` returns the buyer's line; when it decides, the line ends with the
    decision (`Decision.output_text`), which the environment strips from what the seller sees.

    Args:
        profile: what the buyer wants and can pay.
        seed: seeds the choice of wording only (never a rule).
    """

    def __init__(self, profile: BuyerProfile, seed: int = 0):
        self.profile = profile
        self.wording = random.Random(seed)
        self.state = NegotiationState(brand_name(profile.brand), profile.body_type,
                                      PATIENCE_BASE + PATIENCE_PER_FEATURE * len(profile.features))

    # ---- the utility -----------------------------------------------------------------------------------------

    def fit(self) -> float:
        """How well the discussed car fits: brand x body type x described-feature factors."""
        s, p = self.state, self.profile
        coverage = len(s.described) / len(p.features)
        return ((1.0 if s.brand == brand_name(p.brand) else OTHER_BRAND)
                * (1.0 if s.body_type == p.body_type else OTHER_TYPE)
                * (FEATURE_FLOOR + FEATURE_GAIN * coverage))

    def willingness_to_pay(self) -> int:
        """The most the buyer pays for the discussed car as it knows it now."""
        return int(self.profile.budget * STRETCH * self.fit())

    def msrp(self) -> int:
        """The MSRP the decision reports: the list price clipped into [MSRP_FLOOR, MSRP_CAP] x budget, or the budget
        when no price was quoted."""
        budget = self.profile.budget
        if self.state.list_price is None:
            return budget
        return int(min(max(self.state.list_price, MSRP_FLOOR * budget), MSRP_CAP * budget))

    # ---- one turn ----------------------------------------------------------------------------------------------

    def respond(self, seller_text: str) -> str:
        """The buyer's reply to one seller utterance (any text; never raises)."""
        if self.state.decision is not None:
            raise RuntimeError("the buyer has already decided")
        move = parse_seller(seller_text)
        s = self.state
        s.patience -= 1 + (not move.understood) + (seller_text.strip() == s.last_seller_text.strip())
        s.last_seller_text = seller_text
        parts = self._acknowledge(move)
        parts += self._negotiate(move)
        if s.decision is None and s.patience <= 0:
            parts.append(self._say("out_of_patience"))
            self._decide_now()
        return self._styled(parts)

    def forced_decision(self) -> str:
        """The decision line when the env re-prompts at the conversation limit (spec §2.8): an offer within
        willingness to pay is accepted, anything else rejected."""
        if self.state.decision is None:
            self._decide_now()
        return self.state.decision.output_text()

    def _acknowledge(self, move: SellerMove) -> list[str]:
        """Sentences answering the non-price moves, updating the car and the described features."""
        s, p, parts = self.state, self.profile, []
        if not move.understood:
            return [self._say("confused")]
        if move.greet:
            parts.append(self._say("greet"))
        if move.brands or move.body_types:
            parts += self._switch_model(move)
        if move.features:
            wanted = [f for f in move.features if f in p.features]
            unwanted = [f for f in move.features if f not in p.features]
            s.described.update(wanted)
            if wanted:
                parts.append(self._say("wanted_feature", feature=spoken_list(wanted)))
            if unwanted:
                s.patience -= 1
                parts.append(self._say("unwanted_feature", feature=spoken_list(unwanted)))
        if move.ask_needs:
            parts.append(self._say("needs", car=f"{p.brand} {p.body_type}", features=spoken_list(p.features)))
        if move.ask_budget:
            parts.append(self._say("budget", budget=f"${p.budget:,}"))
        return parts

    def _switch_model(self, move: SellerMove) -> list[str]:
        s, p = self.state, self.profile
        preferred_brand = brand_name(p.brand)
        brand = preferred_brand if preferred_brand in move.brands else (move.brands[0] if move.brands else s.brand)
        body = p.body_type if p.body_type in move.body_types else (move.body_types[0] if move.body_types else s.body_type)
        if (brand, body) != (s.brand, s.body_type):
            s.brand, s.body_type = brand, body
            s.list_price = s.offer = None
            s.asked_for_better, s.refusals = False, 0
        if (brand, body) == (preferred_brand, p.body_type):
            return [self._say("right_model", car=f"{with_article(brand)} {body}")] if move.compare else []
        return [self._say("wrong_model", car=f"{p.brand} {p.body_type}")]

    def _negotiate(self, move: SellerMove) -> list[str]:
        """Price moves and the decision rules (see the module docstring)."""
        s, parts = self.state, []
        discounted = False
        if move.price is not None:
            if s.offer is None:
                s.list_price = s.offer = move.price
                if move.price > MSRP_CAP * self.profile.budget:
                    s.patience -= 1
                    parts.append(self._say("overpriced"))
            elif move.price < s.offer:
                s.offer, discounted = move.price, True
            elif move.price > s.offer:
                s.patience -= 1
                parts.append(self._say("price_raised", price=f"${s.offer:,}"))
        if s.offer is not None and (move.discount_amount or move.discount_percent):
            if move.discount_amount:
                s.offer = max(s.offer - move.discount_amount, 0)
            if move.discount_percent:
                s.offer = int(round(s.offer * (1 - move.discount_percent)))
            discounted = True
        elif move.discount and s.offer is None:
            parts.append(self._say("discount_without_price"))
        if s.offer is None:
            if move.close or move.hold_firm:
                parts.append(self._say("ask_price"))
            return parts
        wtp = self.willingness_to_pay()
        pressed = move.hold_firm or move.close
        if s.offer <= GOOD_DEAL * wtp or (s.offer <= wtp and s.asked_for_better and (discounted or pressed)):
            parts.append(self._say("accept", price=f"${s.offer:,}"))
            s.decision = Decision(True, self.msrp(), s.offer)
        elif s.offer <= wtp:
            s.asked_for_better = True
            parts.append(self._say("haggle", price=f"${s.offer:,}"))
        else:
            if pressed and not discounted:
                s.refusals += 1
            if s.refusals >= MAX_REFUSALS:
                parts.append(self._say("walk_out", price=f"${s.offer:,}"))
                s.decision = Decision(False, self.msrp())
            else:
                parts.append(self._say("too_expensive", price=f"${s.offer:,}"))
        return parts

    def _decide_now(self) -> None:
        s = self.state
        if s.offer is not None and s.offer <= self.willingness_to_pay():
            s.decision = Decision(True, self.msrp(), s.offer)
        else:
            s.decision = Decision(False, self.msrp())

    # ---- wording -----------------------------------------------------------------------------------------------

    def _say(self, what: str, **slots: str) -> str:
        return self.wording.choice(PHRASES[what]).format(**slots)

    def _styled(self, parts: list[str]) -> str:
        """The sentences with the personality's opening and closing remarks, plus the decision line if any."""
        openers, closers = PERSONALITY_STYLE[self.profile.personality]
        words = [self.wording.choice(openers), *(parts or [self._say("go_on")]), self.wording.choice(closers)]
        text = " ".join(w for w in words if w)
        if self.state.decision is not None:
            text = f"{text} {self.state.decision.output_text()}"
        return text


PHRASES: dict[str, tuple[str, ...]] = {
    "confused": ("I don't understand what you mean.", "What are you talking about?", "That makes no sense to me."),
    "greet": ("Hi.", "Hello.", "Hey."),
    "needs": ("I'm looking for {car} with {features}.", "I want {car}, with {features}.",
              "I'd like {car} that has {features}."),
    "budget": ("My budget is {budget}.", "I can spend about {budget}.", "I have {budget} to spend."),
    "wanted_feature": ("Good, I need the {feature}.", "The {feature} is exactly what I want.",
                       "I'm glad it has the {feature}."),
    "unwanted_feature": ("I don't care about the {feature}.", "The {feature}? Not interested.",
                         "Skip the {feature}, I don't need that."),
    "right_model": ("I'd go for {car}.", "{car} is what I want."),
    "wrong_model": ("I really wanted {car}.", "That's not what I asked for; I want {car}.",
                    "Hmm, I'd rather have {car}."),
    "overpriced": ("That's way out of my league.", "I'd never spend anything close to that."),
    "price_raised": ("You just raised the price? It was {price}.", "Nice try, you offered {price} before."),
    "discount_without_price": ("A discount on what? Tell me the price first.",),
    "ask_price": ("So what's the price?", "How much is it, then?", "You haven't told me the price."),
    "accept": ("Alright, {price} works for me. I'll take it.", "Deal, I'll buy it for {price}.",
               "Fine, {price} it is."),
    "haggle": ("{price} is close, but can you do better?", "Hmm, {price}. Any chance of a better price?",
               "Can you go a bit lower than {price}?"),
    "too_expensive": ("{price} is too much for me.", "{price}? That's way over what I want to pay.",
                      "I can't pay {price}."),
    "walk_out": ("I'm not paying {price}. I'm leaving.", "Forget it, {price} is too much. Goodbye.",
                 "No deal at {price}. I'm out."),
    "go_on": ("Go on.", "And?", "Okay."),
    "out_of_patience": ("I've heard enough.", "I'm done talking.", "That's enough of this."),
}
