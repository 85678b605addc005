"""PPO (spec §3.6): online rounds of rollouts, KL-shaped rewards, GAE over action tokens, clipped updates.

Each round (one training epoch, see `online.py`):
  1. roll out `rollouts.episodes_per_round` episodes with the current policy;
  2. forward the current policy and the frozen reference (the BC policy it started from) over every chunk:
     log-probabilities of the action tokens, `logp` and `logp_ref`, and values V(h_t) from the value head on the
     policy's last hidden state;
  3. reward of each action token r_k - kl_coef * (logp_k - logp_ref_k) (the task reward sits on an action's
     last token);
  4. GAE over the episode's action tokens in order (environment tokens skipped, gamma and lambda per token),
     bootstrapping after the last one from V at the chain's last token times (1 - done); advantages whitened over
     the round (all ranks);
  5. `epochs` passes of minibatches of the clipped policy loss + value_coef * clipped value loss (+ an optional
     BC loss on offline data), one optimiser step each, by manual optimisation.
The KL coefficient is fixed, or adapted once per round towards `kl_target` (Ziegler et al.).

Rollouts that re-rank the task's candidate actions (decoding ``rerank``/``rerank_greedy``; a fixed set such as the
maze's moves, or each state's own such as a chess position's legal moves, which the update recomputes from the
chunk's texts) act with the re-ranker's distribution over the candidates, softmax(sum of the action's token
log-probs / temperature), not token by token:
then the ratio, the KL penalty and the entropy use that candidate-normalised log-probability of each action, placed
on the action's first token (its decision step; 0 on its other tokens), while GAE and the value loss stay per token.
Dropout is off in the policy (as TRL does): the ratio compares two passes that must be the same function.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, TypedDict, TypeVar

import torch
from torch.nn.utils.rnn import pad_sequence

from lmrl_lightning.algorithms.base import decay_groups
from lmrl_lightning.algorithms.bc import bc_loss
from lmrl_lightning.algorithms.online import OnlineModule, minibatch_plan
from lmrl_lightning.algorithms.packing import rows_hidden
from lmrl_lightning.validation import as_settings
from lmrl_lightning.algorithms.settings import BCRegularisation, Optimisation, PPOSettings
from lmrl_lightning.data.collate import collate_chunks
from lmrl_lightning.data.jsonl import read_episodes
from lmrl_lightning.data.tokenize import TokenChunk, TurnTokenizer
from lmrl_lightning.distributed import all_reduce
from lmrl_lightning.env import Episode, Text
from lmrl_lightning.errors import LMRLError
from lmrl_lightning.models.heads import frozen_copy, make_v_head
from lmrl_lightning.models.lora import AdapterView
from lmrl_lightning.policies.rerank import (
    chunk_candidate_logprobs, fits_on_chunk_cache, lm_features, prompt_budget, rerank_log_probs, state_candidate_scores,
    token_logprobs,
)
from lmrl_lightning.policies.sampling import eval_mode
from lmrl_lightning.algorithms.distinct import distinct_row_index

T = TypeVar("T")
# The log-probability given to the padding after a decision's own candidates (per-state candidates): a probability
# of 0 whose product with it in the entropy is 0, not NaN as with -inf.
PADDED = -1e9


# ---- pure functions -------------------------------------------------------------------------------------------
def gae(
    rewards: Sequence[float], values: Sequence[float], bootstrap: float, gamma: float, lam: float
) -> tuple[list[float], list[float]]:
    """Generalised advantage estimation over one episode's action tokens, in order.

    delta_k = r_k + gamma * V_{k+1} - V_k (V_{K} = `bootstrap`: 0 at a true end); A_k = delta_k + gamma * lam *
    A_{k+1}; returns R_k = A_k + V_k. Returns (advantages, returns).
    """
    advantages = [0.0] * len(rewards)
    next_value, next_advantage = bootstrap, 0.0
    for k in reversed(range(len(rewards))):
        delta = rewards[k] + gamma * next_value - values[k]
        next_advantage = delta + gamma * lam * next_advantage
        advantages[k] = next_advantage
        next_value = values[k]
    return advantages, [a + v for a, v in zip(advantages, values)]


def kl_k3(logp: torch.Tensor, logp_ref: torch.Tensor) -> torch.Tensor:
    """Per-token estimate of KL(pi || pi_ref) from samples of pi: exp(d) - 1 - d with d = logp_ref - logp (>= 0)."""
    d = logp_ref - logp
    return torch.expm1(d) - d


class ChunkScores(TypedDict):
    """One chunk's per-action-token quantities under the weights that collected the round (`PPO.score_chunks`)."""

    rewards: torch.Tensor  # [N] task reward (on an action's last token)
    logp: torch.Tensor  # [N] log-prob of the taken token (candidate decoding: of the action, on its first token)
    logp_ref: torch.Tensor  # [N] ... under the frozen reference
    values: torch.Tensor  # [N] V before each action token
    last_value: float  # V at the chunk's last token: the bootstrap of a cut episode
    decisions: int  # policy positions: action tokens, or candidate-action decisions (the KL's denominator)


def kl_shaped_rewards(
    task_rewards: torch.Tensor, logp: torch.Tensor, logp_ref: torch.Tensor, kl_coef: float
) -> torch.Tensor:
    """Reward of each action token: r_k - kl_coef * (logp_k - logp_ref_k) (a sample of the KL penalty)."""
    return task_rewards - kl_coef * (logp - logp_ref)


def split_by_sizes(items: Sequence[T], sizes: Sequence[int]) -> list[list[T]]:
    """`items` cut into consecutive groups of the given sizes (e.g. the round's chunks back into episodes)."""
    groups, start = [], 0
    for size in sizes:
        groups.append(list(items[start:start + size]))
        start += size
    return groups


def episode_targets(
    scores: Sequence[ChunkScores], done: bool, kl_coef: float, gamma: float, lam: float
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Advantages and returns of one episode, one tensor per chunk in chunk order: GAE over all the episode's
    action tokens with KL-shaped rewards, after the last one V = 0 at a true end, else the last chunk's last V."""
    logp, logp_ref, values, task_rewards = (
        torch.cat([s[key] for s in scores]) for key in ("logp", "logp_ref", "values", "rewards")
    )
    shaped = kl_shaped_rewards(task_rewards, logp, logp_ref, kl_coef)
    bootstrap = 0.0 if done else scores[-1]["last_value"]
    advantages, returns = gae(shaped.tolist(), values.tolist(), bootstrap, gamma, lam)
    sizes = [s["logp"].numel() for s in scores]
    return list(torch.tensor(advantages).split(sizes)), list(torch.tensor(returns).split(sizes))


def episode_kl_sum(scores: Sequence[ChunkScores]) -> float:
    """Sum over one episode's action tokens of the k3 estimate of KL(pi || pi_ref)."""
    return float(kl_k3(torch.cat([s["logp"] for s in scores]), torch.cat([s["logp_ref"] for s in scores])).sum())


def round_sums(
    advantages: torch.Tensor, returns: torch.Tensor, values: torch.Tensor, kl_sum: float, kl_count: int
) -> list[float]:
    """This rank's sums over its action tokens [N] that `round_stats` turns into statistics once summed over ranks:
    A, A^2, token count, KL, (R - V)^2, R^2, R, and the policy positions the KL is summed over (`kl_count`: action
    tokens, or candidate-action decisions)."""
    return [
        float(advantages.sum()), float((advantages**2).sum()), advantages.numel(), kl_sum,
        float(((returns - values) ** 2).sum()), float((returns**2).sum()), float(returns.sum()), kl_count,
    ]


@dataclass(frozen=True)
class RoundStats:
    action_tokens: float
    advantage_mean: float
    advantage_var: float
    kl: float  # mean per policy position: action token, or candidate-action decision
    explained_variance: float  # 1 - mean((R - V)^2) / Var(R); 0 when the returns do not vary


def round_stats(sums: Sequence[float]) -> RoundStats:
    """The round's statistics from the sums of `round_sums` (over all ranks)."""
    total, sq, count, kl_total, residual_sq, returns_sq, returns_total, kl_count = sums
    n = max(count, 1)
    mean = total / n
    returns_var = returns_sq / n - (returns_total / n) ** 2
    return RoundStats(
        action_tokens=count, advantage_mean=mean, advantage_var=sq / n - mean**2, kl=kl_total / max(kl_count, 1),
        explained_variance=1.0 - (residual_sq / n) / returns_var if returns_var > 0 else 0.0,
    )


def whiten(x: torch.Tensor, mean: float, var: float) -> torch.Tensor:
    return (x - mean) / (var + 1e-8) ** 0.5


def cat_or_empty(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat(list(tensors)) if tensors else torch.zeros(0)


def pack_minibatch(
    chunks: Sequence[TokenChunk], per_token: dict[str, Sequence[torch.Tensor]], rows: Sequence[int], pad_id: int
) -> dict[str, torch.Tensor]:
    """The collated chunks at `rows`, plus each per-chunk quantity of `per_token` ([N_i] per chunk, at its action
    tokens) laid out as a [B, T-1] float tensor on the batch's action mask (0 elsewhere)."""
    batch = collate_chunks([chunks[i] for i in rows], pad_id)
    mask = batch["action_mask"]
    for key, per_chunk in per_token.items():
        full = torch.zeros(mask.shape)
        full[mask] = torch.cat([per_chunk[i] for i in rows]).float()
        batch[key] = full
    return batch


def sample_batch(chunks: Sequence[TokenChunk], size: int, generator: torch.Generator, pad_id: int) -> dict:
    """`size` chunks drawn uniformly with replacement, collated (the offline BC term's minibatch)."""
    pick = torch.randint(len(chunks), (size,), generator=generator).tolist()
    return collate_chunks([chunks[i] for i in pick], pad_id)


def action_spans(is_action: Sequence[bool]) -> list[tuple[int, int]]:
    """(start, end) of each run of consecutive action tokens."""
    spans, start = [], None
    for i, flag in enumerate([*is_action, False]):
        if flag and start is None:
            start = i
        elif not flag and start is not None:
            spans.append((start, i))
            start = None
    return spans


def action_choices(
    ids: Sequence[int], is_action: Sequence[bool], candidates_at: Callable[[int], list[list[int]]]
) -> tuple[list[int], list[list[list[int]]]]:
    """Per step t of a chunk (t predicts token t + 1, as the action mask): the index of the candidate action that
    starts at token t + 1 among `candidates_at(t + 1)` (the candidates of the state it was chosen in), else -1; and
    the candidate set of each decision, in order. An action at the chunk's first token (cut by truncation, or
    without context) is no decision; any other action must be one of its candidates."""
    choices, sets = [-1] * (len(ids) - 1), []
    for start, end in action_spans(is_action):
        if start == 0:
            continue
        tokens, candidates = list(ids[start:end]), candidates_at(start)
        if tokens not in candidates:
            raise LMRLError(
                f"PPO with candidate-action decoding: action tokens {tokens} are none of the candidates of its "
                f"state {candidates}; roll out with decoding 'sample' to train on free text"
            )
        choices[start - 1] = candidates.index(tokens)
        sets.append(candidates)
    return choices, sets


def chunk_turns(ids: Sequence[int], is_action: Sequence[bool], stop: int) -> list[tuple[list[int], bool]]:
    """The turns of a chunk before token `stop`: (tokens, is_action) of each run of one kind."""
    turns: list[tuple[list[int], bool]] = []
    for token, flag in zip(ids[:stop], is_action[:stop]):
        if turns and turns[-1][1] == flag:
            turns[-1][0].append(token)
        else:
            turns.append(([token], flag))
    return turns


def action_rewards(chunk: TokenChunk) -> torch.Tensor:
    """The chunk's task reward at each action token after its first token, as `collate_chunks` lays them out."""
    return torch.tensor([r for r, a in zip(chunk.rewards[1:], chunk.is_action[1:]) if a], dtype=torch.float32)


# The batch keys the policy's and value head's outputs depend on (`forward_actions`).
MODEL_INPUTS = ("input_ids", "attention_mask", "action_mask", "choice")


def distinct_rows(
    batch: dict[str, torch.Tensor], keys: Sequence[str]
) -> tuple[Optional[dict[str, torch.Tensor]], Optional[torch.Tensor]]:
    """The batch's distinct rows (compared on `keys`) and, for each row, its index among them [B]; (None, None) when
    no two rows are the same."""
    present = [k for k in keys if k in batch]
    rows = batch[present[0]].shape[0]
    found = distinct_row_index(torch.cat([batch[k].reshape(rows, -1).long() for k in present], dim=1))
    if found is None:
        return None, None
    first, inverse = found
    return {k: batch[k][first] for k in present}, inverse


def shared_decisions(distinct_mask: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
    """For each decision of the full batch (row-major, as boolean indexing orders them), the index of the same
    decision among the distinct rows' decisions (`distinct_mask` [U, T]: where the distinct rows decide)."""
    counts = distinct_mask.sum(1)
    offsets = counts.cumsum(0) - counts
    row_counts = counts[inverse]
    starts = torch.repeat_interleave(offsets[inverse], row_counts)
    row_starts = torch.repeat_interleave(row_counts.cumsum(0) - row_counts, row_counts)
    return starts + torch.arange(len(starts), device=starts.device) - row_starts


def choice_batch(
    chunks: Sequence[TokenChunk], candidates_at: Callable[[TokenChunk, int], list[list[int]]], per_state: bool
) -> dict[str, torch.Tensor]:
    """`action_choices` of each chunk right-padded with -1 into "choice" [B, T-1] (the collated batch's shape); with
    per-state candidates also every decision's candidate set, flattened into tensors (see `candidate_sets`)."""
    width = max(len(c.input_ids) for c in chunks) - 1
    choice = torch.full((len(chunks), width), -1, dtype=torch.long)
    sets: list[list[list[int]]] = []
    for row, chunk in enumerate(chunks):
        choices, chunk_sets = action_choices(chunk.input_ids, chunk.is_action, lambda start: candidates_at(chunk, start))
        choice[row, :len(choices)] = torch.tensor(choices, dtype=torch.long)
        sets += chunk_sets
    if not per_state:
        return {"choice": choice}
    flat = [c for candidates in sets for c in candidates]
    tokens = torch.zeros((len(flat), max((len(c) for c in flat), default=1)), dtype=torch.long)
    for i, c in enumerate(flat):
        tokens[i, :len(c)] = torch.tensor(c, dtype=torch.long)
    return {"choice": choice, "candidate_tokens": tokens,
            "candidate_lengths": torch.tensor([len(c) for c in flat], dtype=torch.long),
            "candidate_counts": torch.tensor([len(c) for c in sets], dtype=torch.long)}


def candidate_sets(batch: dict[str, torch.Tensor]) -> list[list[list[int]]]:
    """The per-decision candidate sets that `choice_batch` flattened into the batch, in decision order."""
    tokens, lengths = batch["candidate_tokens"].tolist(), batch["candidate_lengths"].tolist()
    flat = [row[:n] for row, n in zip(tokens, lengths)]
    sets, start = [], 0
    for count in batch["candidate_counts"].tolist():
        sets.append(flat[start:start + count])
        start += count
    return sets


def decision_prompts(input_ids: torch.Tensor, choice: torch.Tensor, max_tokens: int) -> list[list[int]]:
    """The context of each decision (`choice` >= 0, row-major as boolean indexing orders them): the row's tokens
    up to the decision step, its last `max_tokens` kept (as the re-ranker keeps them)."""
    rows, steps = (choice >= 0).nonzero(as_tuple=True)
    return [input_ids[r, max(0, t + 1 - max_tokens):t + 1].tolist() for r, t in zip(rows.tolist(), steps.tolist())]


def spread(values: torch.Tensor, policy_mask: torch.Tensor, action_mask: torch.Tensor) -> torch.Tensor:
    """Quantities at the policy positions [M] laid on the action tokens [N] (0 at the others)."""
    full = torch.zeros(action_mask.shape, dtype=values.dtype, device=values.device)
    full[policy_mask] = values
    return full[action_mask]


def disable_dropout(model: torch.nn.Module) -> None:
    """Every dropout of `model` set to 0 (TRL's practice for PPO), including the float `attention_dropout` that
    Hugging Face attention layers read themselves."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        if isinstance(getattr(module, "attention_dropout", None), float):
            module.attention_dropout = 0.0


def ppo_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    clip: float = 0.2,
    clip_value: float = 0.2,
    value_coef: float = 1.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped policy loss + value_coef * clipped value loss, means over the policy positions (logp, old_logp,
    advantages: [M]; action tokens, or candidate-action decisions) and over action tokens (values... : [N]).

    L_pg = mean(max(-A rho, -A clip(rho, 1 - clip, 1 + clip))), rho = exp(logp - old_logp);
    L_v = 1/2 mean(max((V - R)^2, (V_clip - R)^2)), V_clip = old_V + clip(V - old_V, -clip_value, clip_value).
    """
    if logp.numel() == 0:
        raise ValueError("the minibatch has no action token")
    ratio = torch.exp(logp - old_logp)
    pg_loss = torch.max(-advantages * ratio, -advantages * ratio.clamp(1 - clip, 1 + clip)).mean()
    clipped_values = old_values + (values - old_values).clamp(-clip_value, clip_value)
    value_loss = 0.5 * torch.max((values - returns) ** 2, (clipped_values - returns) ** 2).mean()
    metrics = {
        "pg_loss": pg_loss.detach(),
        "value_loss": value_loss.detach(),
        "clip_fraction": ((ratio - 1).abs() > clip).float().mean().detach(),
        "approx_kl": (old_logp - logp).mean().detach(),
    }
    return pg_loss + value_coef * value_loss, metrics


def adapt_kl_coef(coef: float, kl: float, target: float, horizon: float, n_steps: int) -> float:
    """Ziegler et al.'s proportional controller: coef * (1 + clip(kl / target - 1, -0.2, 0.2) * n_steps / horizon)."""
    error = min(max(kl / target - 1.0, -0.2), 0.2)
    return coef * (1.0 + error * n_steps / horizon)


# ---- the module ---------------------------------------------------------------------------------------------------
class PPO(OnlineModule):
    """Proximal policy optimisation of the LM policy against the task's simulator (see the module docstring).

    Args (beyond `OnlineModule`'s):
        ppo: discounting, clipping, value loss, KL penalty and its controller (see `PPOSettings`).
        bc: an optional BC loss on offline episodes added to every update (None: none, as the paper's maze runs;
            see `BCRegularisation`).
    """

    rebuilt_submodels = {"reference": None}  # the KL reference: training only, the constructor's copy stands

    def __init__(
        self,
        *,
        optim: Optimisation = Optimisation(lr=1e-5),  # the paper's PPO scripts
        ppo: PPOSettings = PPOSettings(),
        bc: Optional[BCRegularisation] = None,
        **kwargs,
    ):
        ppo = as_settings(ppo, PPOSettings, "model.ppo")
        bc = as_settings(bc, BCRegularisation, "model.bc") if bc is not None else None
        super().__init__(optim=optim, **kwargs)
        self.ppo, self.bc = ppo, bc
        self.automatic_optimization = False
        # The ratio divides two passes of the policy (scoring, update): with dropout they would differ before any
        # step. Off for every pass, so train mode (gradient checkpointing) stays available.
        disable_dropout(self.model)
        # The KL reference: the BC policy PPO starts from; with LoRA, the base with the adapter switched off.
        self.reference = frozen_copy(self.model) if self.peft is None else AdapterView(self.model, None)
        self.value_head = make_v_head("linear", self.model.get_input_embeddings().weight.shape[1], ppo.value_bias)
        # Part of the state dict, so that a resumed run continues with the adapted coefficient.
        self.register_buffer("kl_coef", torch.tensor(float(ppo.kl_coef), dtype=torch.float64))
        self._bc_chunks: Optional[list[TokenChunk]] = None
        # Candidate-action rollouts: the decision's candidates as the re-ranker scored them, one fixed set (the maze's
        # moves, tokenised once) or each state's own (chess's legal moves, recomputed from the chunk's texts).
        self.reranked = self.rollout_decoding.reranks
        self.per_state = self.reranked and self.task_spec.state_candidate_actions is not None
        self.turn_tokens = TurnTokenizer(self.tokenizer)
        fixed = self.task_spec.candidate_actions if self.reranked and not self.per_state else None
        self.candidate_ids = [self.turn_tokens(c) for c in fixed] if fixed else None

    def optimizer_groups(self) -> list[dict]:
        """The base's groups, with the value head in groups of its own at `ppo.value_lr` when one is set."""
        if self.ppo.value_lr is None:
            return super().optimizer_groups()
        head = {id(p) for p in self.value_head.parameters()}
        named = list(self.named_parameters())
        return (decay_groups([(n, p) for n, p in named if id(p) not in head], self.optim.weight_decay)
                + decay_groups([(n, p) for n, p in named if id(p) in head], self.optim.weight_decay,
                               lr=self.ppo.value_lr))

    # ---- log-probabilities of the actions ---------------------------------------------------------------------
    @staticmethod
    def action_logprobs(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`model`'s last hidden states [B, T, d], and its logits [N, V] and log-probs [N] of the taken tokens at
        the batch's action steps (only those rows go through the output projection). Its callers match repeated
        rows themselves (`forward_actions`, `score_chunks`), so every row runs, with the padding skipped."""
        mask = batch["action_mask"]
        hidden = rows_hidden(model, batch["input_ids"], batch["attention_mask"])
        logits = model.get_output_embeddings()(hidden[:, :-1][mask]).float()
        logp = torch.log_softmax(logits, -1).gather(-1, batch["input_ids"][:, 1:][mask][:, None]).squeeze(-1)
        return hidden, logits, logp

    def policy_mask(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """[B, T-1]: where the policy chose, every action token, or each candidate action's decision step."""
        return batch["choice"] >= 0 if self.reranked else batch["action_mask"]

    def state_candidate_ids(self, chunk: TokenChunk, start: int) -> list[list[int]]:
        """The tokens of the candidate actions of the state in which the chunk's action at token `start` was chosen:
        the task's per-state candidates of the chunk's texts before it (decoded back from their tokens)."""
        history = tuple(
            Text(self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False), flag)
            for ids, flag in chunk_turns(chunk.input_ids, chunk.is_action, start)
        )
        return [self.turn_tokens(c) for c in self.task_spec.state_candidate_actions(history)]

    def decision_sets(self, batch: dict[str, torch.Tensor]) -> list[list[list[int]]]:
        """The candidates of each decision of the batch, in decision order: its state's own, or the task's set."""
        if self.per_state:
            return candidate_sets(batch)
        return [self.candidate_ids] * int((batch["choice"] >= 0).sum())

    def candidate_pass(self, model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """`model`'s last hidden states over the batch [B, T, d] and its re-ranker log-distribution over the
        candidates at each decision [D, C], at the rollouts' temperature (the greedy kinds: their unused temperature
        field, 1 by default); with per-state candidates, row i holds decision i's own candidates and `PADDED` after
        them. The candidates are scored on the KV cache of the pass over the chunks; where a context and a candidate
        would not fit the model's positions, after each context cut to fit, as the re-ranker cuts it."""
        ids, attention, choice = batch["input_ids"], batch["attention_mask"], batch["choice"]
        pad, temperature, sets = self.tokenizer.pad_token_id, self.rollout_decoding.temperature, self.decision_sets(batch)
        if fits_on_chunk_cache(model, choice, sets):
            hidden, flat = chunk_candidate_logprobs(model, pad, ids, attention, choice, sets)
            scores = flat.split([len(c) for c in sets])
        else:
            hidden = model.base_model(input_ids=ids, attention_mask=attention).last_hidden_state
            prompts = decision_prompts(ids, choice, prompt_budget(model, [c for cs in sets for c in cs]))
            scores = state_candidate_scores(lambda *args: lm_features(model, *args),
                                            lambda features, tokens, _ends: token_logprobs(features[0], tokens),
                                            pad, prompts, sets, ids.device)
        if not scores:
            return hidden, hidden.new_zeros((0, len(self.candidate_ids or [])))
        if not self.per_state:
            return hidden, rerank_log_probs(torch.stack(list(scores)), temperature)
        return hidden, pad_sequence([rerank_log_probs(s, temperature) for s in scores], batch_first=True,
                                    padding_value=PADDED)

    def forward_actions(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The policy's log-prob of each taken action at the policy positions [M], the logits of the distribution
        it was drawn from [M, K] (vocabulary or candidates), and V at every position [B, T].

        Rows with the same tokens run once and their outputs are shared (a minibatch of FO-Maze chunks repeats many
        of them); the gradient is the same, each copy's loss flowing back through the shared outputs. Per-state
        candidate sets travel flattened per decision, so their batches run every row."""
        distinct, inverse = (None, None) if self.per_state else distinct_rows(batch, MODEL_INPUTS)
        if distinct is None:
            return self.forward_rows(batch)
        logp, logits, values = self.forward_rows(distinct)
        take = shared_decisions(self.policy_mask(distinct), inverse)
        return logp[take], logits[take], values[inverse]

    def forward_rows(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`forward_actions` running every row."""
        if not self.reranked:
            hidden, logits, logp = self.action_logprobs(self.model, batch)
        else:
            # Gradient checkpointing drops the KV cache in train mode; with dropout off eval mode is the same function.
            with eval_mode(self.model):
                hidden, logits = self.candidate_pass(self.model, batch)
            logp = logits.gather(-1, batch["choice"][batch["choice"] >= 0][:, None]).squeeze(-1)
        value_input = hidden if self.ppo.value_trunk_grad else hidden.detach()
        return logp, logits, self.value_head(value_input).squeeze(-1).float()

    def reference_logprobs(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The frozen reference's log-prob of each taken action at the policy positions [M]."""
        if not self.reranked:
            return self.action_logprobs(self.reference, batch)[2]
        choice = batch["choice"]
        return self.candidate_pass(self.reference, batch)[1].gather(-1, choice[choice >= 0][:, None]).squeeze(-1)

    def collate(self, chunks: Sequence[TokenChunk]) -> dict[str, torch.Tensor]:
        """`collate_chunks`, plus under candidate decoding each decision step's candidate index ("choice")."""
        batch = collate_chunks(chunks, self.tokenizer.pad_token_id)
        if self.reranked:
            batch.update(self.choices(chunks))
        return batch

    def choices(self, chunks: Sequence[TokenChunk]) -> dict[str, torch.Tensor]:
        """`choice_batch` of `chunks` with this module's candidates (fixed, or each state's)."""
        candidates_at = self.state_candidate_ids if self.per_state else lambda chunk, start: self.candidate_ids
        return choice_batch(chunks, candidates_at, self.per_state)

    @torch.no_grad()
    def score_chunks(self, chunks: Sequence[TokenChunk]) -> list[ChunkScores]:
        """Per chunk, at its action steps: task reward, logp, logp_ref and V with the current weights (candidate
        decoding: the action's log-probs on its first token, 0 on the others); and V at its last token."""
        # What the networks compute depends on a chunk's tokens only, and a round repeats chunks many times (FO Maze:
        # 128 episodes, 11k chunks, 100 distinct): each distinct one is scored once, the rewards are each chunk's own.
        index: dict[tuple, int] = {}
        first = [index.setdefault((tuple(c.input_ids), tuple(c.is_action)), i) for i, c in enumerate(chunks)]
        distinct = sorted(set(first), key=lambda i: len(chunks[i].input_ids))
        # Batches of chunks of similar lengths (less padding to run through the model).
        scored: dict[int, ChunkScores] = {}
        with eval_mode(self.model, self.reference, self.value_head):
            for start in range(0, len(distinct), self.rollouts.batch_size):
                part = distinct[start:start + self.rollouts.batch_size]
                scored.update(zip(part, self.score_batch([chunks[i] for i in part])))
        return [scored[f] if f == i else {**scored[f], "rewards": action_rewards(chunks[i])}
                for i, f in enumerate(first)]

    def score_batch(self, part: Sequence[TokenChunk]) -> list[ChunkScores]:
        device = self.device
        batch = {k: v.to(device) for k, v in self.collate(part).items()}
        mask, policy_mask = batch["action_mask"], self.policy_mask(batch)
        logp, _, all_values = self.forward_actions(batch)
        logp, ref_logp = (spread(x, policy_mask, mask) for x in (logp, self.reference_logprobs(batch)))
        counts = mask.sum(1).tolist()
        last = batch["attention_mask"].sum(1) - 1
        last_values = all_values[torch.arange(len(part), device=device), last]
        per_chunk = zip(batch["rewards"][mask].split(counts), logp.split(counts), ref_logp.split(counts),
                        all_values[:, :-1][mask].split(counts), policy_mask.sum(1).tolist())
        return [{"rewards": r.cpu(), "logp": lp.cpu(), "logp_ref": rlp.cpu(), "values": v.cpu(),
                 "last_value": float(last_values[j]), "decisions": n}
                for j, (r, lp, rlp, v, n) in enumerate(per_chunk)]

    # ---- a round ---------------------------------------------------------------------------------------------
    def prepare_round(self, episodes: list[Episode], generator: torch.Generator) -> list[dict[str, torch.Tensor]]:
        per_episode = self.to_chunks(episodes)
        chunks = [c for cs in per_episode for c in cs]
        scores = self.score_chunks(chunks)
        scores_per_episode = split_by_sizes(scores, [len(cs) for cs in per_episode])
        kl_coef = float(self.kl_coef)
        advantages, returns = [], []
        for episode, episode_scores in zip(episodes, scores_per_episode):
            adv, ret = episode_targets(episode_scores, episode.done, kl_coef, self.ppo.gamma, self.ppo.lam)
            advantages += adv
            returns += ret
        values = [s["values"] for s in scores]
        stats = self.reduce_round_stats(advantages, returns, values, scores_per_episode)
        if self.ppo.whiten_advantages:
            advantages = [whiten(a, stats.advantage_mean, stats.advantage_var) for a in advantages]
        self._round.update(kl=stats.kl, kl_coef=kl_coef, action_tokens=stats.action_tokens,
                           explained_variance=stats.explained_variance)
        if self.ppo.kl_target is not None:
            self.kl_coef.fill_(adapt_kl_coef(
                kl_coef, stats.kl, self.ppo.kl_target, self.ppo.kl_horizon, self.updates.batch_size
            ))
        per_token = {"old_logp": [s["logp"] for s in scores], "old_values": values, "advantages": advantages,
                     "returns": returns}
        return self.minibatches(chunks, per_token, generator)

    @staticmethod
    def reduce_round_stats(
        advantages, returns, values, scores_per_episode: Sequence[Sequence[ChunkScores]]
    ) -> RoundStats:
        """The round's statistics over all ranks (whitening and the KL controller see the whole round); the KL per
        policy position: per action token, or per candidate-action decision."""
        kl_sum = sum(episode_kl_sum(s) for s in scores_per_episode)
        decisions = sum(s["decisions"] for ss in scores_per_episode for s in ss)
        return round_stats(all_reduce(round_sums(
            cat_or_empty(advantages), cat_or_empty(returns), cat_or_empty(values), kl_sum, decisions
        )))

    def minibatches(
        self, chunks: list[TokenChunk], per_token: dict[str, list[torch.Tensor]], generator: torch.Generator
    ) -> list[dict[str, torch.Tensor]]:
        """`epochs` shuffled passes over the round's chunks, as many minibatches on every rank (DDP lockstep), each
        with an offline BC minibatch when the BC term is on."""
        size = self.updates.batch_size
        n_batches = int(all_reduce([math.ceil(len(chunks) / size)], "max")[0])
        plan = minibatch_plan(len(chunks), size, n_batches, self.updates.epochs, generator)
        pad = self.tokenizer.pad_token_id
        batches = [pack_minibatch(chunks, per_token, rows, pad) for rows in plan]
        if self.reranked:
            for batch, rows in zip(batches, plan):
                batch.update(self.choices([chunks[i] for i in rows]))
        bc_chunks = self.offline_chunks()
        if bc_chunks:  # drawn after the plan, batch by batch: the generator's order of use is part of a replay
            for batch in batches:
                batch["bc"] = sample_batch(bc_chunks, self.bc.batch_size, generator, pad)
        return batches

    def offline_chunks(self) -> Optional[list[TokenChunk]]:
        if self.bc is None or self.bc.weight <= 0:
            return None
        if self._bc_chunks is None:
            self._bc_chunks = [c for cs in self.to_chunks(read_episodes(self.bc.data)) for c in cs]
        return self._bc_chunks

    # ---- an update -----------------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        optimizer = self.optimizers()
        scheduler = self.lr_schedulers()
        mask, policy_mask = batch["action_mask"], self.policy_mask(batch)
        logp, logits, all_values = self.forward_actions(batch)
        loss, metrics = ppo_loss(
            logp, batch["old_logp"][policy_mask], batch["advantages"][policy_mask], all_values[:, :-1][mask],
            batch["old_values"][mask], batch["returns"][mask], self.ppo.clip, self.ppo.clip_value,
            self.ppo.value_coef,
        )
        if "bc" in batch:
            bc_value = self.bc_term(batch["bc"])
            metrics["bc_loss"] = bc_value.detach()
            loss = loss + self.bc.weight * bc_value
        optimizer.zero_grad()
        self.manual_backward(loss)
        if self.ppo.grad_clip:
            self.clip_gradients(optimizer, gradient_clip_val=self.ppo.grad_clip, gradient_clip_algorithm="norm")
        optimizer.step()
        scheduler.step()
        with torch.no_grad():  # of the distribution the actions are drawn from: vocabulary or candidates
            metrics["entropy"] = -(torch.softmax(logits, -1) * torch.log_softmax(logits, -1)).sum(-1).mean()
        batch_size = batch["input_ids"].shape[0]
        self.log("train/loss", loss.detach(), prog_bar=True, batch_size=batch_size)
        for name, value in metrics.items():
            self.log(f"train/{name}", value, batch_size=batch_size)

    def bc_term(self, bc: dict[str, torch.Tensor]) -> torch.Tensor:
        """The BC loss on an offline minibatch."""
        bc_mask = bc["action_mask"]
        value, _ = bc_loss(self.action_logits(bc["input_ids"], bc["attention_mask"], bc_mask),
                           bc["input_ids"][:, 1:][bc_mask])
        return value
