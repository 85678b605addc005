"""Scripted sellers: the dataset's three styles (the original's GPT-3.5 seller backgrounds, spec §2.8), a mixture of
them, the expert that defines the normalisation's maximum and the idle seller that defines its minimum.

Sellers are `PrivilegedPolicy`s: they read the buyer's profile from the environment (as a seller who listened to the
buyer's answers would know it; every style asks about needs and budget first) and draw their episode's settings
(list-price markup, discount step, chattiness) from the episode's reset seed, their wording from the turn's seed.

* `DiscountSeller` ("never talks about features and loves to give discounts"): quotes a high list price, then
  takes something off every turn, now and then asking whether the buyer has a deal.
* `FeatureSeller` ("never gives discounts and loves to talk about features"): describes the wanted features (and
  some the buyer never asked for) one by one, then quotes and holds firm.
* `ConciseSeller` ("never gives discounts, never talks about features, very concise"): asks, quotes, holds firm.
* `MixedSeller`: one of the three styles per episode, uniformly (the dataset's seller).
* `ExpertSeller`: knows the buyer's rules: pitches the preferred model with every wanted feature and quotes the
  buyer's willingness to pay, the price at which the fancy reward is highest (`expert_price`).
* `IdleSeller`: says nothing the buyer understands until the buyer walks out.
"""
from __future__ import annotations

import random
from typing import Optional
from lmrl_lightning.env import PrivilegedPolicy, TextEnv, TextHistory
from lmrl_lightning.tasks.car_dealer.buyer import (
    FEATURE_FLOOR,
    FEATURE_GAIN,
    STRETCH,
    spoken_list,
)
from lmrl_lightning.tasks.car_dealer.profiles import FEATURES, BuyerProfile


def _profile(env: TextEnv) -> BuyerProfile:
    profile = getattr(env, "profile", None)
    if profile is None:
        raise TypeError(f"a scripted seller plays in a reset CarDealerEnv, got {type(env).__name__}")
    return profile


def _episode_rng(seed: Optional[int], name: str) -> random.Random:
    """The seller's per-episode settings: from the episode's reset seed, independent of the buyer's draws."""
    return random.Random(f"{name}:{seed}")


def _turn(history: TextHistory) -> int:
    return sum(text.is_action for text in history)


def _money(value: float) -> str:
    return f"${int(round(value)):,}"


class ScriptedSeller(PrivilegedPolicy):
    """A seller whose t-th utterance is `say(t, profile, settings, rng)`; `settings` are drawn once per episode."""

    name = "scripted"

    def action(self, env: TextEnv, history: TextHistory, seed: int) -> str:
        profile = _profile(env)
        settings = self.settings(profile, _episode_rng(getattr(env, "seed", None), self.name))
        return self.say(_turn(history), profile, settings, random.Random(seed)).strip() + "\n"

    def settings(self, profile: BuyerProfile, rng: random.Random) -> dict:
        return {}

    def say(self, turn: int, profile: BuyerProfile, settings: dict, rng: random.Random) -> str:
        raise NotImplementedError


GREETINGS = ("Hello! What kind of car are you looking for?", "Hi there, welcome! What are you looking for today?",
             "Good morning! How can I help you?", "Welcome to our dealership! What kind of vehicle do you have in mind?")
BUDGET_QUESTIONS = ("What's your budget?", "How much are you looking to spend?", "What price range are you thinking of?",
                    "Do you have a budget in mind?")
PITCHES = ("We have {car} right here on the lot.", "I have just the car for you: {car}.",
           "Let me show you {car}.", "This {model} is one of our best sellers.")
FOLLOW_UPS = ("Is there anything else you're looking for?", "Any particular preferences besides that?",
              "What features do you care about most?")


def _pitch(profile: BuyerProfile, rng: random.Random) -> str:
    return rng.choice(PITCHES).format(car=f"{profile.brand} {profile.body_type}", model=profile.car)


class DiscountSeller(ScriptedSeller):
    """Never talks about features, loves discounts (see the module docstring)."""

    name = "discount"

    def settings(self, profile, rng):
        return {"markup": rng.uniform(1.1, 1.6), "step": rng.uniform(0.02, 0.06), "close": rng.uniform(0.1, 0.4),
                "follow_ups": rng.randint(1, 3)}

    def say(self, turn, profile, settings, rng):
        opening = [rng.choice(GREETINGS), rng.choice(BUDGET_QUESTIONS), _pitch(profile, rng)]
        opening += [rng.choice(FOLLOW_UPS) for _ in range(settings["follow_ups"])]
        if turn < len(opening):
            return opening[turn]
        price = round(profile.budget * settings["markup"], -2)
        k = turn - len(opening)  # discounts given so far
        if k == 0:
            return rng.choice(("The price is {p}.", "This one is {p}.", "It lists at {p}.")).format(p=_money(price))
        before, after = price * (1 - settings["step"]) ** (k - 1), price * (1 - settings["step"]) ** k
        offer = rng.choice((
            f"I can give you {_money(before - after)} off.",
            f"Tell you what, I can lower it to {_money(after)} for you.",
            f"Special price for you: {_money(after)}.",
            f"I'll knock off another {_money(before - after)}.",
        ))
        if rng.random() < settings["close"]:
            offer += " " + rng.choice(("Do we have a deal?", "How does that sound?", "Shall we sign the papers?"))
        return offer


class FeatureSeller(ScriptedSeller):
    """Never gives discounts, loves to talk about features (see the module docstring)."""

    name = "feature"

    def settings(self, profile, rng):
        extras = [f for f in FEATURES if f not in profile.features]
        talk = list(profile.features) + rng.sample(extras, k=rng.randint(0, 3))
        rng.shuffle(talk)
        # Each feature is described, and some praised again in a second turn.
        talk = [f for feature in talk for f in [feature] * (1 + (rng.random() < 0.8))]
        return {"markup": rng.uniform(0.95, 1.3), "talk": talk}

    def say(self, turn, profile, settings, rng):
        opening = [rng.choice(GREETINGS), rng.choice(BUDGET_QUESTIONS), _pitch(profile, rng)]
        if turn < len(opening):
            return opening[turn]
        talk = settings["talk"]
        k = turn - len(opening)
        if k < len(talk):
            return rng.choice(("It comes with {f}.", "You'll love the {f} on this one.",
                               "It also has {f}, which our customers really like.")).format(f=talk[k])
        price = _money(round(profile.budget * settings["markup"], -2))
        if k == len(talk):
            return rng.choice(("With all of that, the price is {p}.", "All of this for {p}.")).format(p=price)
        return rng.choice((
            f"I'm sorry, {price} is my final price; it's worth it for the {rng.choice(talk)}.",
            f"We don't do discounts, but the {spoken_list(talk[:2])} make it worth every penny. Do we have a deal?",
            f"{price} is a firm price for a car this well equipped.",
        ))


class ConciseSeller(ScriptedSeller):
    """No discounts, no features, very concise (see the module docstring)."""

    name = "concise"

    def settings(self, profile, rng):
        return {"markup": rng.uniform(0.8, 1.2)}

    def say(self, turn, profile, settings, rng):
        price = _money(round(profile.budget * settings["markup"], -2))
        script = [rng.choice(("Hello. What car do you want?", "Hi. What are you looking for?")),
                  rng.choice(("Budget?", "Your budget?")),
                  rng.choice((f"{profile.car}: {price}.", f"The {profile.car} is {price}."))]
        if turn < len(script):
            return script[turn]
        return rng.choice(("Final price.", "That's my best price.", "Deal?", "Firm price. Deal?"))


class MixedSeller(ScriptedSeller):
    """One of the three dataset styles per episode, uniformly; `style_of` names it (recorded in the dataset)."""

    name = "mixed"
    STYLES: tuple[ScriptedSeller, ...] = (DiscountSeller(), FeatureSeller(), ConciseSeller())

    def style_of(self, episode_seed: Optional[int]) -> ScriptedSeller:
        """The style played in the episode reset with `episode_seed`."""
        return _episode_rng(episode_seed, self.name).choice(self.STYLES)

    def action(self, env, history, seed):
        return self.style_of(getattr(env, "seed", None)).action(env, history, seed)


def expert_price(profile: BuyerProfile) -> int:
    """The rule buyer's willingness to pay for its preferred model once every wanted feature is described (to the
    $100 below): the price at which the fancy reward is highest, 2p / (budget + p) with p at most 1.155 budget."""
    return int(profile.budget * STRETCH * (FEATURE_FLOOR + FEATURE_GAIN)) // 100 * 100


class ExpertSeller(ScriptedSeller):
    """The best scripted seller (see `expert_plan`): the normalisation's maximum."""

    name = "expert"

    def say(self, turn, profile, settings, rng):
        script = ["Hello! What kind of car are you looking for, and what features do you need?",
                  "What's your budget?",
                  f"I have {profile.brand} {profile.body_type} with {spoken_list(profile.features)}."]
        if turn < len(script):
            return script[turn]
        if turn == len(script):
            return f"The price is {_money(expert_price(profile))}."
        return "That's my final price."


class IdleSeller(ScriptedSeller):
    """Says nothing the buyer understands (the normalisation's minimum: the buyer walks out)."""

    name = "idle"

    def say(self, turn, profile, settings, rng):
        return rng.choice(("Hmm.", "Let me check something.", "One moment."))


SELLERS: dict[str, type[ScriptedSeller]] = {
    cls.name: cls for cls in (DiscountSeller, FeatureSeller, ConciseSeller, MixedSeller, ExpertSeller, IdleSeller)
}
