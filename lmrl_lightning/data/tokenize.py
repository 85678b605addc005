"""From text episodes to token chunks (spec §1.6-1.8).

Each turn is tokenised on its own (no separators, no BOS/EOS), `is_action` is repeated over its tokens and an
action's reward sits on its last token. An episode becomes either one chunk (the agent saw the whole
history) or one chunk per action whose context is the last `window` texts before it (the agent saw only
those, as the maze environment does); each chunk then carries the next chunk's context so that a value
method can bootstrap into it. Every chunk of a truncated episode (`done` false) also carries the state at the cut,
so that a Monte-Carlo return can bootstrap past the cut from any of its actions.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Optional, Sequence

from lmrl_lightning.data.jsonl import DatasetError
from lmrl_lightning.env import Episode

Overflow = Literal["error", "truncate"]


@dataclass
class TokenChunk:
    """One training sequence.

    Attributes:
        input_ids, is_action, rewards: per token; rewards are non-zero only on the last token of an action.
        done: the episode truly ends after this chunk's last action (a value after it is 0).
        next_state_ids: tokens of the agent's context before its next action (the next chunk's prefix), to
            bootstrap from; None when the episode ends here or was cut right after this chunk's action.
        later_actions: (token count, reward) of each of the episode's actions after this chunk, so that a
            Monte-Carlo return can reach past the chunk (empty for a whole-episode chunk).
        source: `file:line` of the episode, for error messages.
        cut_state_ids: None when the episode ended (done); for a truncated episode, the tokens of the state the
            agent would act in after its final action, the same list in each of its chunks: its last chunk's
            `next_state_ids`, or when there is none (a whole-episode chunk, or an episode cut right after an
            action) its last chunk's `input_ids` (the state ends at the chunk's last token).
    """

    input_ids: list[int]
    is_action: list[bool]
    rewards: list[float]
    done: bool
    next_state_ids: Optional[list[int]]
    source: Optional[str] = None
    later_actions: Sequence[tuple[int, float]] = ()
    cut_state_ids: Optional[list[int]] = None

    @property
    def episode_cut(self) -> bool:
        """The episode was truncated (cut, not ended): a return bootstraps from `cut_state_ids`."""
        return self.cut_state_ids is not None


class TurnTokenizer:
    """Tokenises turn texts one at a time, with a cache: task texts repeat a lot (maze observations)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self._cache: dict[str, list[int]] = {}

    def __call__(self, text: str) -> list[int]:
        ids = self._cache.get(text)
        if ids is None:
            ids = self.tokenizer.encode(text, add_special_tokens=False)
            self._cache[text] = ids
        return ids

    def segment(self, segment) -> list[int]:
        """The tokens of a history segment or recorded turn (`Text`, `Turn`): those a policy sampled for it where it
        carries them (`token_ids`), else its text's encoding."""
        return list(segment.token_ids) if segment.token_ids is not None else self(segment.text)


def _flatten(episode: Episode, turn_ids: Sequence[list[int]], lo: int, hi: int):
    ids, is_action, rewards = [], [], []
    for turn, t_ids in zip(episode.turns[lo:hi], turn_ids[lo:hi]):
        ids += t_ids
        is_action += [turn.is_action] * len(t_ids)
        rewards += [0.0] * (len(t_ids) - 1) + [turn.reward if turn.is_action else 0.0]
    return ids, is_action, rewards


def _fit(chunk: TokenChunk, max_length: int, overflow: Overflow, what: str) -> TokenChunk:
    n = len(chunk.input_ids)
    if n <= max_length:
        return chunk
    if overflow == "error":
        raise DatasetError(
            f"{chunk.source or '<episode>'}: field 'turns': {what} is {n} tokens, longer than max_length "
            f"{max_length}; raise max_length or set overflow='truncate' to keep the last {max_length} tokens"
        )
    cut = n - max_length
    if not any(chunk.is_action[cut:]):
        raise DatasetError(
            f"{chunk.source or '<episode>'}: field 'turns': no action token is left after truncating {what} "
            f"to max_length {max_length}"
        )
    chunk.input_ids, chunk.is_action, chunk.rewards = chunk.input_ids[cut:], chunk.is_action[cut:], chunk.rewards[cut:]
    return chunk


def episode_to_chunks(
    episode: Episode,
    tokenize: TurnTokenizer,
    window: Optional[int] = None,
    max_length: int = 512,
    overflow: Overflow = "error",
) -> list[TokenChunk]:
    """Turn one episode into token chunks (see the module docstring).

    window=None gives one chunk holding the whole episode. window=k gives one chunk per action: the k texts
    before it (the environment's view), then the action. Chunks longer than max_length raise a
    `DatasetError` naming the episode's file and line, or are left-truncated with overflow='truncate'.
    """
    turn_ids = [tokenize.segment(t) for t in episode.turns]
    if window is None:
        chunks = [_whole_episode_chunk(episode, turn_ids, max_length, overflow)]
    elif window < 1:
        raise ValueError(f"window must be at least 1, got {window}")
    else:
        chunks = _action_chunks(episode, turn_ids, window, max_length, overflow)
    if not episode.done and chunks:
        _mark_cut(chunks)
    return chunks


def _mark_cut(chunks: Sequence[TokenChunk]) -> None:
    """Give each chunk of a truncated episode the state at the cut (see `TokenChunk.cut_state_ids`): one list,
    shared, fixed after the chunks were fitted to max_length."""
    last = chunks[-1]
    state = last.next_state_ids if last.next_state_ids is not None else last.input_ids
    for chunk in chunks:
        chunk.cut_state_ids = state


def _whole_episode_chunk(
    episode: Episode, turn_ids: Sequence[list[int]], max_length: int, overflow: Overflow
) -> TokenChunk:
    ids, is_action, rewards = _flatten(episode, turn_ids, 0, len(turn_ids))
    chunk = TokenChunk(ids, is_action, rewards, episode.done, None, episode.source)
    return _fit(chunk, max_length, overflow, "the episode")


def _action_chunks(
    episode: Episode, turn_ids: Sequence[list[int]], window: int, max_length: int, overflow: Overflow
) -> list[TokenChunk]:
    """One chunk per action: the last `window` texts before it, then the action."""
    actions = [i for i, t in enumerate(episode.turns) if t.is_action]
    action_summaries = [(len(turn_ids[a]), episode.turns[a].reward) for a in actions]

    def context_ids(before: int) -> list[int]:
        return _flatten(episode, turn_ids, max(0, before - window), before)[0]

    chunks = []
    for k, a in enumerate(actions):
        # The context is the state the agent acted in (past moves included, as in the original's
        # [state, action] chunks): only this chunk's action is an action, so that each action carries loss and
        # reward in exactly one chunk.
        context = context_ids(a)
        ids = context + turn_ids[a]
        is_action = [False] * len(context) + [True] * len(turn_ids[a])
        rewards = [0.0] * (len(ids) - 1) + [episode.turns[a].reward]
        last = k == len(actions) - 1
        next_state = _next_state_ids(episode, actions, k, context_ids)
        chunk = TokenChunk(
            ids, is_action, rewards, episode.done and last, next_state, episode.source, action_summaries[k + 1:]
        )
        chunks.append(_fit(chunk, max_length, overflow, f"the transition of action {k}"))
        _fit_next_state(chunk, k, max_length, overflow)
    return chunks


def _next_state_ids(
    episode: Episode, actions: Sequence[int], k: int, context_ids: Callable[[int], list[int]]
) -> Optional[list[int]]:
    """The context of the agent's next decision after action `k`, or None at a true episode end (or when the
    episode was cut right after the action, with no observation to act on)."""
    if k + 1 < len(actions):
        return context_ids(actions[k + 1])
    if not episode.done and actions[k] + 1 < len(episode.turns):
        return context_ids(len(episode.turns))  # truncated episode: the state the agent would act in next
    return None


def _fit_next_state(chunk: TokenChunk, k: int, max_length: int, overflow: Overflow) -> None:
    """Refuse, or left-truncate, a bootstrap context longer than `max_length` (as `_fit` does a chunk)."""
    next_state = chunk.next_state_ids
    if next_state is None or len(next_state) <= max_length:
        return
    if overflow == "error":
        raise DatasetError(
            f"{chunk.source or '<episode>'}: field 'turns': the context before action {k + 1} is "
            f"{len(next_state)} tokens, longer than max_length {max_length}"
        )
    chunk.next_state_ids = next_state[-max_length:]
