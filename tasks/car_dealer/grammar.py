"""The seller moves the rule-based buyer understands, read from free text by keyword patterns.

One seller utterance may hold several moves; `parse_seller` finds all of them (case-insensitive, on the first
`MAX_SELLER_CHARS` characters). Text in which no move is found is `understood == False`: the buyer answers that it
does not follow, and loses patience. Nothing here raises on any input.

| move | recognised by (examples) |
|---|---|
| greet | a sentence starting with hi / hello / hey / good morning / welcome / greetings |
| ask about needs | "what kind/type/sort of car", "what are you looking for", "how can I help", "any preferences", "what features" |
| ask about budget | a question mentioning budget / price range / spend / afford, or "how much (are/can/would/do) you ..." |
| describe a feature | naming one of the eight features or a synonym ("rear camera", "GPS", "moonroof", "third row", "CarPlay") |
| name a model | a brand ("Toyota", "VW", "Benz") and/or a body type ("SUV", "pickup", "EV"); sets the car discussed |
| quote a price | a dollar amount: "$32,000", "$32k", "32,000 dollars", "32k"; "MSRP/list/sticker price" marks a list price |
| offer a discount | "$2,000 off", "a discount of $2,000", "10% off", "5 percent discount", "I can lower it to $30,000", or a discount word without an amount (5%) |
| hold firm | "final price", "best offer", "firm", "can't go lower", "no discounts", "non-negotiable", "take it or leave it" |
| compare models | "compare", "versus"/"vs", "better than", or two brands / body types in one utterance |
| close | "do we have a deal", "deal?", "ready to buy/sign", "shall we", "would you like to buy/take it", "how does that sound" |

In a sentence with a discount word, a dollar amount after "to"/"for"/"at"/"now"/"only"/"just"/"is"/":" ("lower it to
$30,000") is the new price, any other amount ("$2,000 off", "knock off another $500") is taken off; an amount after
"was"/"from"/"instead of" is a reference and ignored. A negated discount ("no discount", "can't discount") is a
firm hold. A question is never a discount ("any discount?"), but a lower price quoted in one ("how about $27,000?")
lowers the offer.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional

from lmrl_lightning.tasks.car_dealer.profiles import BODY_TYPES, BRAND_NAMES, FEATURES

# Longer text is read up to here: enough for any sensible utterance, and the patterns never scan a megabyte.
MAX_SELLER_CHARS = 2_000
DEFAULT_DISCOUNT = 0.05  # a discount offered without an amount
MAX_PRICE = 10_000_000  # larger amounts are not read as prices

FEATURE_SYNONYMS: dict[str, str] = {
    "backup camera": r"back-?up cam(era)?|rear(view| view)? camera|reverse camera|parking camera",
    "navigation system": r"navigation|\bnav\b|\bgps\b",
    "heated seats": r"heated (front |rear )?seats?|seat heat",
    "leather seats": r"leather",
    "third-row seating": r"third[- ]row|3rd[- ]row|seven seats|7 seats|seven-seater|7-seater",
    "blind spot monitoring": r"blind[- ]?spot",
    "sunroof": r"sun ?roof|moon ?roof|panoramic roof",
    "Apple CarPlay": r"car ?play",
}
BRAND_SYNONYMS: dict[str, str] = {name: re.escape(name) for name in BRAND_NAMES}
BRAND_SYNONYMS.update({"Volkswagen": r"volkswagen|\bvw\b", "Mercedes-Benz": r"mercedes(-benz)?|\bbenz\b"})
BODY_TYPE_SYNONYMS: dict[str, str] = {
    "luxury": r"luxury", "sedan": r"sedan|saloon", "convertible": r"convertible|cabrio(let)?",
    "truck": r"truck|pick-?up", "electric": r"electric|\bev\b", "SUV": r"\bsuv\b|crossover",
}
assert set(FEATURE_SYNONYMS) == set(FEATURES) and set(BODY_TYPE_SYNONYMS) == set(BODY_TYPES)

_I = re.IGNORECASE
_FEATURES = [(name, re.compile(pattern, _I)) for name, pattern in FEATURE_SYNONYMS.items()]
_BRANDS = [(name, re.compile(rf"\b({pattern})", _I)) for name, pattern in BRAND_SYNONYMS.items()]
_BODY_TYPES = [(name, re.compile(rf"\b({pattern})", _I)) for name, pattern in BODY_TYPE_SYNONYMS.items()]
_SENTENCES = re.compile(r"[^.!?\n]+[.!?]*")
_GREET = re.compile(r"^\s*(hi|hello|hey|howdy|welcome|greetings|good (morning|afternoon|evening))\b", _I)
_ASK_NEEDS = re.compile(
    r"what (kind|type|sort|model|make) of|what are you (looking|shopping)|what (brings|can i (do|get))|"
    r"how (can|may) i help|looking for\s*\?|any (particular|preferences|specific)|what features|"
    r"what do you (want|need|have in mind)|what are your (needs|preferences|requirements)|(must-haves|wish list)|"
    r"what (car|cars|vehicle|model) (do|would|are|were) you",
    _I)
_ASK_BUDGET = re.compile(r"budget|price range|spend|afford|how much (are|can|would|do|were|will) you", _I)
_MONEY = re.compile(
    r"\$\s*(?P<a>\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?\s*(?P<ak>k\b|thousand)?|"
    r"\b(?P<b>\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?\s*(?:(?P<bk>k\b|thousand)|dollars|bucks)", _I)
_PERCENT = re.compile(r"(\d{1,2}(?:\.\d+)?)\s*(%|percent)", _I)
_DISCOUNT = re.compile(
    r"discount|\boff\b|knock|rebate|reduc|lower|bring (it|the price) down|special (price|deal|offer)|"
    r"markdown|mark it down|cut the price|price cut", _I)
_NEGATED_DISCOUNT = re.compile(
    r"(no|not|n't|never|without|zero)\s+(\w+\s+){0,2}(discount|lower|reduc|rebate|go down)", _I)
_NEW_PRICE_BEFORE = re.compile(r"(\bto|\bfor|\bnow|\bat|\bonly|\bjust|\bis|\bbe|:)\s*$", _I)
_REFERENCE_PRICE_BEFORE = re.compile(r"(\bwas|\bfrom|instead of|originally|usually|normally)\s*$", _I)
_AMOUNT_OFF_AFTER = re.compile(r"^\s*(off|discount|rebate|savings?|less)\b", _I)
_LIST_PRICE = re.compile(r"msrp|list price|sticker|retail|lists? (for|at)", _I)
_HOLD_FIRM = re.compile(
    r"final (price|offer)|best (price|offer)|\bfirm\b|can(no|')t go (any )?lower|won't go (any )?lower|"
    r"not go (any )?lower|non-?negotiable|not negotiable|take it or leave it|lowest (i|we) can|that's the price|"
    r"price stands|no (more )?(discounts?|haggling)", _I)
_COMPARE = re.compile(r"compar|versus|\bvs\.?\b|better than|cheaper than|more than the|unlike the", _I)
_CLOSE = re.compile(
    r"(do we have a )?deal\s*\?|shall we|ready to (buy|sign|purchase|go)|sign (the )?(papers|paperwork|contract)|"
    r"would you like to (buy|purchase|take)|take it\s*\?|want to (buy|purchase) it|how does that sound|"
    r"interested in (buying|purchasing)|(buy|purchase) (it|the car) today", _I)


@dataclass
class SellerMove:
    """Every move found in one seller utterance."""

    greet: bool = False
    ask_needs: bool = False
    ask_budget: bool = False
    features: tuple[str, ...] = ()
    brands: tuple[str, ...] = ()
    body_types: tuple[str, ...] = ()
    price: Optional[int] = None  # the last price quoted (not an amount taken off)
    list_price: bool = False  # the price was named as MSRP / list / sticker price
    discount: bool = False
    discount_amount: Optional[int] = None
    discount_percent: Optional[float] = None
    hold_firm: bool = False
    compare: bool = False
    close: bool = False
    kinds: list[str] = field(default_factory=list)  # the moves found, for replies and tests

    @property
    def understood(self) -> bool:
        return bool(self.kinds)


def _amount(match: re.Match) -> Optional[int]:
    digits = (match.group("a") or match.group("b")).replace(",", "")
    if len(digits) > 9:
        return None
    value = int(digits) * (1000 if (match.group("ak") or match.group("bk")) else 1)
    return value if 0 < value <= MAX_PRICE else None


def _sentence_prices(sentence: str, discount_sentence: bool) -> tuple[Optional[int], Optional[int]]:
    """(the new price quoted, the amount taken off) in one sentence. In a discount sentence an amount is taken off
    unless it follows "to"/"for"/"at"/"now"/"only"/"just"/"is"/":" (a new price); an amount after "was"/"from"/
    "instead of" is a reference price and ignored. Amounts under $500 written without "$" or "k" are ignored
    (counts, model years)."""
    price = off = None
    for match in _MONEY.finditer(sentence):
        value = _amount(match)
        if value is None or (value < 500 and not (match.group("ak") or match.group("bk")) and "$" not in match.group(0)):
            continue
        before, after = sentence[:match.start()], sentence[match.end():]
        if _REFERENCE_PRICE_BEFORE.search(before):
            continue
        if discount_sentence and (_AMOUNT_OFF_AFTER.match(after) or not _NEW_PRICE_BEFORE.search(before)):
            off = (off or 0) + value
        else:
            price = value
    return price, off


def parse_seller(text: str) -> SellerMove:
    """All moves in a seller utterance (see the module docstring); never raises."""
    text = text[:MAX_SELLER_CHARS]
    move = SellerMove()
    for sentence in _SENTENCES.findall(text):
        is_question = sentence.rstrip().endswith("?")
        if _GREET.search(sentence):
            move.greet = True
        if _ASK_NEEDS.search(sentence):
            move.ask_needs = True
        if is_question and _ASK_BUDGET.search(sentence):
            move.ask_budget = True
        negated = bool(_NEGATED_DISCOUNT.search(sentence))
        if _HOLD_FIRM.search(sentence) or negated:
            move.hold_firm = True
        discount_sentence = bool(_DISCOUNT.search(sentence)) and not negated and not is_question
        price, off = _sentence_prices(sentence, discount_sentence)
        if price is not None:
            move.price = price
            move.list_price = move.list_price or bool(_LIST_PRICE.search(sentence))
        percent = _PERCENT.search(sentence)
        if discount_sentence:
            move.discount = True
            if off is not None:
                move.discount_amount = (move.discount_amount or 0) + off
            if percent is not None:
                move.discount_percent = min(float(percent.group(1)), 90.0) / 100
        if _CLOSE.search(sentence):
            move.close = True
    move.features = tuple(name for name, pattern in _FEATURES if pattern.search(text))
    move.brands = tuple(name for name, pattern in _BRANDS if pattern.search(text))
    move.body_types = tuple(name for name, pattern in _BODY_TYPES if pattern.search(text))
    move.compare = bool(_COMPARE.search(text)) or len(move.brands) > 1 or len(move.body_types) > 1
    if move.discount and move.price is None and move.discount_amount is None and move.discount_percent is None:
        move.discount_percent = DEFAULT_DISCOUNT
    move.kinds = [kind for kind, present in (
        ("greet", move.greet), ("ask_needs", move.ask_needs), ("ask_budget", move.ask_budget),
        ("features", bool(move.features)), ("model", bool(move.brands or move.body_types)),
        ("price", move.price is not None), ("discount", move.discount), ("hold_firm", move.hold_firm),
        ("compare", move.compare), ("close", move.close),
    ) if present]
    return move
