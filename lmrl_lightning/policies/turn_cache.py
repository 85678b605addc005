"""KV caches carried from one decoding call to the next, found again by their tokens.

A multi-turn history mostly grows: this turn's prompt is the last prompt, the turn the policy wrote and the env's
reply. Re-running the whole prompt every turn makes a rollout's cost grow with the square of its length (the
prefill dominates a rollout's profile). `TurnCache` keeps, for every sequence a decoding call ran, the keys and
values of its tokens, and the next call starts each prompt from the longest prefix it shares with any kept
sequence, running only the rest. That covers a history that extends its own last turn, and also prompts that only
begin alike: a fully observed task's next prompt is a new observation whose opening words every episode's
observations share (the maze's "The goal is at position ... Your current position is at position"), or the very
observation another episode saw a turn earlier. A history whose window has started to slide (its first tokens
dropped) shares little and runs nearly whole.

Kept rows are valid only for the weights that computed them: the cache is emptied whenever any parameter of the
policy's networks is replaced or changed in place (an optimiser step, `load_state_dict`, a move to another device),
which `weights_version` detects through the tensors' storage and version counters.
"""
from __future__ import annotations

import bisect
from contextlib import contextmanager
from typing import Iterator, Optional, Sequence

import torch
from torch.nn.utils.rnn import pad_sequence
from transformers import DynamicCache

# One row's keys and values: per cache of the state, per layer, (keys [heads, length, d], values [heads, length, d]).
RowKV = list[list[tuple[torch.Tensor, torch.Tensor]]]


def weights_version(modules: Sequence[torch.nn.Module]) -> tuple:
    """Changes whenever a parameter of `modules` is replaced or modified in place."""
    return tuple((p.data_ptr(), p._version) for m in modules for p in m.parameters())


@contextmanager
def carried(turn_cache: Optional["TurnCache"], modules: Sequence[torch.nn.Module]) -> Iterator[None]:
    """One decoding call's use of `turn_cache` (None: none): emptied first if a weight of `modules` changed, the
    rows the call kept replacing the previous call's at its end."""
    if turn_cache is None:
        yield
        return
    turn_cache.begin(weights_version(modules))
    yield
    turn_cache.end()


def common_prefix_length(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    """How many first tokens `a` and `b` share (a bisection over slice comparisons, which run in C: histories of
    a thousand tokens cost ten of them, not a thousand Python steps)."""
    low, high = 0, min(len(a), len(b))
    while low < high:
        mid = (low + high + 1) // 2
        if a[:mid] == b[:mid]:
            low = mid
        else:
            high = mid - 1
    return low


class _KeptRow:
    """One kept row, cut out of its call's caches only when a later prompt continues it: a call keeps every row it
    ran, a lookup continues one of the two next to the prompt in sorted order, and cutting every row's real columns
    out layer by layer was a tenth of a maze rollout."""

    __slots__ = ("_layers", "_index", "_columns", "_kv")

    def __init__(self, layers: list[list[tuple[torch.Tensor, torch.Tensor]]], index: int, columns: torch.Tensor):
        self._layers, self._index, self._columns, self._kv = layers, index, columns, None

    def kv(self) -> RowKV:
        if self._kv is None:
            i, real = self._index, self._columns
            self._kv = [[(k[i][:, real], v[i][:, real]) for k, v in cache_layers] for cache_layers in self._layers]
            self._layers = None  # the row's own copy replaces its share of the batch's tensors
        return self._kv


class TurnCache:
    """The rows of the last decoding call's KV caches, by token sequence (see the module's docstring).

    A call `begin`s (dropping everything if the weights changed), finds its prompts' prefixes (`longest_prefix`)
    and gathers their keys and values (`past`), `keep`s each row it ran (prompt plus the tokens it fed), and `end`s:
    the rows it kept replace the previous call's, so the memory held is at most one call's caches.

    The kept sequences are held sorted: the one sharing the longest prefix with a prompt is next to the prompt's
    place in that order (a sequence between them shares at least as much), so a lookup is one bisection and two
    comparisons, and keeping a call's rows costs one sort, not work per token.
    """

    def __init__(self) -> None:
        self._sorted: list[tuple[int, ...]] = []
        self._rows: list[_KeptRow] = []
        self._kept: dict[tuple[int, ...], _KeptRow] = {}
        self._version: Optional[tuple] = None

    def begin(self, version: tuple) -> None:
        if version != self._version:
            self._sorted, self._rows = [], []
        self._version, self._kept = version, {}

    def longest_prefix(self, prompt: Sequence[int]) -> tuple[int, Optional[RowKV]]:
        """The longest prefix of `prompt` that a kept sequence begins with, leaving at least one token of `prompt`
        to run: its length and that sequence's rows, or (0, None)."""
        key = tuple(prompt)
        at = bisect.bisect_left(self._sorted, key)
        best, row = 0, None
        for i in (at - 1, at):
            if 0 <= i < len(self._sorted):
                n = min(common_prefix_length(self._sorted[i], key), len(key) - 1)
                if n > best:
                    best, row = n, self._rows[i]
        return (best, row.kv()) if row is not None else (0, None)

    def past(self, found: Sequence[tuple[int, RowKV]], device) -> list[DynamicCache]:
        """Caches (one per cache of the decoding state) holding the keys and values of the `found` prefixes
        (`longest_prefix`'s answers, none empty), left-padded to the longest: [rows, heads, longest, d] a layer."""
        caches = []
        for c, layers in enumerate(found[0][1]):
            cache_layers = []
            for layer in range(len(layers)):
                keys = [kv[c][layer][0][:, :n].transpose(0, 1) for n, kv in found]
                values = [kv[c][layer][1][:, :n].transpose(0, 1) for n, kv in found]
                cache_layers.append(tuple(
                    pad_sequence(x, batch_first=True, padding_side="left").transpose(1, 2).to(device)
                    for x in (keys, values)
                ))
            caches.append(DynamicCache(ddp_cache_data=cache_layers))
        return caches

    def keep(self, caches: Sequence[DynamicCache], rows: torch.Tensor, columns: torch.Tensor,
             sequences: Sequence[list[int]]) -> None:
        """Keep the rows `rows` of the decoding state's `caches`, whose real tokens are the True `columns`
        ([len(rows), width]) and are `sequences` (prompt then fed tokens); each is found again by any prefix of
        it. The rows are copied out of `caches` in one operation a layer (the decoder goes on
        growing and reordering its caches); each row's real columns are cut out when a prompt continues it."""
        layers = [[(layer.keys.index_select(0, rows), layer.values.index_select(0, rows)) for layer in cache.layers]
                  for cache in caches]
        for i, ids in enumerate(sequences):
            key = tuple(ids)
            if key and key not in self._kept:
                self._kept[key] = _KeptRow(layers, i, columns[i])

    def end(self) -> None:
        """This call's rows replace the previous call's."""
        self._sorted = sorted(self._kept)
        self._rows = [self._kept[ids] for ids in self._sorted]
        self._kept = {}
