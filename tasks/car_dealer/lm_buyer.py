"""The language-model buyer: any local Hugging Face model directory, prompted as the original's buyer (spec §2.8)
and answering a whole batch of episodes in one `LanguageModelOracle.complete` call.

The prompt is the original's buyer view of the conversation: `"Start\\n"`, the buyer-info line
`"Personality: {p}. Prefers {brand} {type} with {features}. Budget: ${budget:,}\\n"`, then the seller's and the
buyer's lines alternately, each ending in a newline; the model writes the buyer's next line. The prompt is
left-truncated to `max_prompt_tokens` (the original: 896 of GPT-2's 1024) and the completion cut at its first
newline (the original stops generating there; the shared oracle stops at the model's end-of-text token).

Differences from the original: decoding is greedy (the shared oracle's; the original sampled at temperature 1), and
the decision re-prompt at the conversation limit is parsed with its `"Output: Decision="` prefix put back (the
original parsed the completion alone, which can never match its pattern, so that branch always gave reward 0).
"""
from __future__ import annotations

import os
from typing import Sequence, Union

from lmrl_lightning.env import TextHistory
from lmrl_lightning.lm_oracle import LanguageModelOracle
from lmrl_lightning.tasks.car_dealer.profiles import BuyerProfile

START_TEXT = "Start\n"
DECISION_PROMPT = "Output: Decision="
ORIGINAL_MAX_NEW_TOKENS = 127
ORIGINAL_MAX_PROMPT_TOKENS = 896


MAX_LINE_CHARS = 2_000  # longer lines are cut: a line of a megabyte would only be truncated away token by token


def _prompt_line(text: str) -> str:
    """A conversation line as the prompt holds it: one line, at most MAX_LINE_CHARS characters, valid UTF-8 (a lone
    surrogate, which a tokenizer cannot encode, becomes "?"), ending in a newline."""
    line = " ".join(text[:MAX_LINE_CHARS].splitlines()).strip()
    return line.encode("utf-8", errors="replace").decode("utf-8") + "\n"


class LanguageModelBuyer:
    """A buyer played by a language model (shared by every episode of every environment copy).

    Args:
        model_dir: a local model directory (`save_pretrained` layout); causal or seq2seq.
        device: where the model runs.
        batch_size: prompts per generate call.
        max_new_tokens: the longest buyer line, in tokens (the original: 127).
        max_prompt_tokens: prompts are left-truncated to this many tokens (the original: 896).
        oracle: an already loaded oracle, instead of `model_dir` (tests, sharing one model between tasks).
    """

    def __init__(
        self,
        model_dir: Union[str, os.PathLike, None] = None,
        *,
        device: str = "cpu",
        batch_size: int = 32,
        max_new_tokens: int = ORIGINAL_MAX_NEW_TOKENS,
        max_prompt_tokens: int = ORIGINAL_MAX_PROMPT_TOKENS,
        oracle: Union[LanguageModelOracle, None] = None,
    ) -> None:
        if oracle is None:
            if model_dir is None:
                raise ValueError("LanguageModelBuyer needs model_dir or oracle")
            oracle = LanguageModelOracle(model_dir, device=device, max_new_tokens=max_new_tokens,
                                         batch_size=batch_size)
        self.oracle = oracle
        self.max_prompt_tokens = max_prompt_tokens
        self.calls = 0  # generate batches asked for (complete calls), for tests and benchmarks

    def prompt(self, profile: BuyerProfile, history: TextHistory) -> str:
        """The buyer's view of a seller-side history (which starts with the start text and ends with the seller's
        line): start text, buyer-info line, then every line of the conversation."""
        lines = "".join(_prompt_line(text.text) for text in history[1:])
        return self._truncated(START_TEXT + profile.info_line() + lines)

    def decision_prompt(self, prompt: str, buyer_line: str) -> str:
        """The re-prompt at the conversation limit: the buyer's last line continued with `Output: Decision=`."""
        return self._truncated(prompt + buyer_line.rstrip("\n") + " " + DECISION_PROMPT)

    def complete(self, prompts: Sequence[str]) -> list[str]:
        """The buyer's line for each prompt (the completion up to its first newline), in one oracle call."""
        if not prompts:
            return []
        self.calls += 1
        return [completion.split("\n", 1)[0].strip() for completion in self.oracle.complete(list(prompts))]

    def _truncated(self, prompt: str) -> str:
        tokenizer = getattr(self.oracle, "tokenizer", None)
        if tokenizer is None:
            return prompt
        ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        if len(ids) <= self.max_prompt_tokens:
            return prompt
        return tokenizer.decode(ids[-self.max_prompt_tokens:])
