"""Reader of the original's Car Dealer files (`car-dealer/train.json`, `eval.json`; spec §2.8), into our episodes.

The original file is one JSON list of conversations:

    [{"buyer_info": {"personality": ..., "preferred_brands": "a Toyota", "preferred_type": ..., "preferred_features":
      [...], "budget": 50000},
      "lines": [{"role": "Dealer" | "Seller" | "Buyer", "text": "..."}, ...],
      "output": {"car_bought": bool, "msrp": int, "buy_price": int | null}},   # absent: unfinished
     ...]

Each conversation becomes the seller's episode as the original's `create_trajectory_from_conversation` builds it:
the start text, then every line (the seller's as actions, the buyer's as observations, consecutive lines of one
side joined with a space), each ending in a newline; the fancy reward (or revenue) of `output` on the last seller
line; `done` when `output` is present. The start text is ours (`"Start\\n"`, spec §2.8; the original's code at HEAD
writes "Beginning of Conversation"), so imported and generated data train the same model. Extra keys of a line
(the GPT-3.5 files' `purchase_prob`, `purchase_price`) are ignored.

Every conversation is checked and then validated by the JSONL reader's rules (`jsonl.parse_episode`); an error is
one line `file: record N: field: what is wrong`.

    lmrl data car_dealer --from-original train.json --out data/car_dealer_original
writes a dataset directory (train.jsonl, tokenizer, stats, manifest) that `lmrl fit` reads like a generated one.
"""
from __future__ import annotations

import json
from typing import Any, Iterator, Optional

from lmrl_lightning.data.jsonl import parse_episode
from lmrl_lightning.env import Episode
from lmrl_lightning.errors import LMRLError
from lmrl_lightning.tasks.car_dealer.buyer import Decision
from lmrl_lightning.tasks.car_dealer.env import RewardMode, compute_reward
from lmrl_lightning.tasks.car_dealer.lm_buyer import START_TEXT

SELLER_ROLES = ("Dealer", "Seller")  # the original writes "Dealer" (its Role.SELLER's name); its docstrings "Seller"
BUYER_ROLE = "Buyer"


def _number(value: Any, where: str, allow_none: bool = False) -> Optional[int]:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1e12 or value != value:
        raise LMRLError(f"{where}: expected a number of dollars, got {str(value)[:40]!r}")
    return int(value)


def conversation_to_episode(conversation: Any, where: str, reward_mode: RewardMode = "fancy") -> Episode:
    """One conversation of the original format as the seller's episode (see the module docstring)."""
    if not isinstance(conversation, dict):
        raise LMRLError(f"{where}: expected a conversation object, got {type(conversation).__name__}")
    for key in ("buyer_info", "lines"):
        if key not in conversation:
            raise LMRLError(f"{where}: missing field '{key}'")
    info = conversation["buyer_info"]
    if not isinstance(info, dict) or "budget" not in info:
        raise LMRLError(f"{where}: buyer_info: expected an object with a budget")
    budget = _number(info["budget"], f"{where}: buyer_info.budget")
    lines = conversation["lines"]
    if not isinstance(lines, list) or not lines:
        raise LMRLError(f"{where}: lines: expected a non-empty list of {{role, text}} objects")
    texts: list[list[Any]] = []  # [text, is_action] with consecutive lines of one side joined
    for k, line in enumerate(lines):
        field = f"{where}: lines[{k}]"
        if not isinstance(line, dict) or not isinstance(line.get("role"), str) or not isinstance(line.get("text"), str):
            raise LMRLError(f"{field}: expected an object with string fields role and text")
        if line["role"] not in (*SELLER_ROLES, BUYER_ROLE):
            raise LMRLError(f"{field}.role: {line['role'][:20]!r} is not one of {', '.join((*SELLER_ROLES, BUYER_ROLE))}")
        is_action, text = line["role"] in SELLER_ROLES, " ".join(line["text"].split("\n")).strip()
        if texts and texts[-1][1] == is_action:
            texts[-1][0] = f"{texts[-1][0]} {text}".strip()
        else:
            texts.append([text, is_action])
    if not any(is_action for _, is_action in texts):
        raise LMRLError(f"{where}: lines: no line of the seller (role Dealer or Seller)")
    output, reward = conversation.get("output"), 0.0
    if output is not None:
        if not isinstance(output, dict) or not isinstance(output.get("car_bought"), bool):
            raise LMRLError(f"{where}: output: expected an object with car_bought (true/false), msrp and buy_price")
        msrp = _number(output.get("msrp"), f"{where}: output.msrp")
        price = _number(output.get("buy_price"), f"{where}: output.buy_price", allow_none=True)
        reward = compute_reward(budget, Decision(output["car_bought"], msrp, price), reward_mode)
    turns = [{"text": START_TEXT, "is_action": False, "reward": 0.0}]
    turns += [{"text": (text or "...") + "\n", "is_action": is_action, "reward": 0.0} for text, is_action in texts]
    last_action = max(k for k, turn in enumerate(turns) if turn["is_action"])
    turns[last_action]["reward"] = reward
    meta = {"buyer_info": info, "output": output, "success": bool(output and output["car_bought"])}
    # The JSONL reader's rules (alternation, texts, rewards), so an imported episode is exactly as valid as a file's.
    record = json.dumps({"turns": turns, "done": output is not None, "meta": meta}, ensure_ascii=False)
    return parse_episode(record, where)


def read_original_record(record: Any, where: str) -> Iterator[Episode]:
    """`TaskSpec.read_original`: one conversation of an original file (an element of its JSON list), fancy reward."""
    yield conversation_to_episode(record, where)
