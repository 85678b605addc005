"""Tokenisation and collation (spec §1.6-1.8): per-turn tokenisation, action mask, reward placement, the
next-action index, windowed chunks with bootstrapping, overflow handling and padding."""
from __future__ import annotations

import pytest
import torch

from lmrl_lightning.data.collate import collate_chunks
from lmrl_lightning.data.jsonl import DatasetError, read_episodes, write_episodes
from lmrl_lightning.data.tokenize import TurnTokenizer, episode_to_chunks
from lmrl_lightning.env import Episode, Turn
from lmrl_lightning.models.tokenizer import end_of_turn_id, train_bpe_tokenizer
from worked_example import TWENTY_Q


# A small maze-like episode: observation, move, ..., terminal observation.
MAZE = [
    ("You are at 1, 1.\n", False, 0.0),
    ("move up\n", True, -1.0),
    ("You are at 1, 2.\n", False, 0.0),
    ("move right\n", True, -1.0),
    ("You are at 2, 2.\n", False, 0.0),
    ("move down\n", True, -4.0),
    ("You are at 2, 1.\n", False, 0.0),
    ("move left\n", True, 0.0),
    ("Success\n", False, 0.0),
]


def make_episode(turns, done=True, source=None) -> Episode:
    return Episode([Turn(t, a, r) for t, a, r in turns], done, {}, source=source)


@pytest.fixture(scope="module")
def tok():
    texts = [t for t, _, _ in TWENTY_Q + MAZE] + ["Questions: Is it alive? No. Yes.\n", "move up move down\n"]
    return train_bpe_tokenizer(texts * 4, vocab_size=320)


@pytest.fixture(scope="module")
def enc(tok):
    return TurnTokenizer(tok)


def spans(enc, turns):
    """[(start, end)) token span of each turn, from the per-turn token lengths."""
    out, pos = [], 0
    for text, _, _ in turns:
        n = len(enc(text))
        out.append((pos, pos + n))
        pos += n
    return out


# ----------------------------------------------------------------------------------------------------------
# Per-turn tokenisation


def test_each_turn_tokenised_separately_and_concatenated(tok, enc):
    ep = make_episode(TWENTY_Q)
    (chunk,) = episode_to_chunks(ep, enc)
    per_turn = [tok.encode(t, add_special_tokens=False) for t, _, _ in TWENTY_Q]
    assert chunk.input_ids == [i for ids in per_turn for i in ids]
    # no separators, no BOS/EOS, no pad
    assert len(chunk.input_ids) == sum(len(ids) for ids in per_turn)
    assert tok.eos_token_id not in chunk.input_ids
    assert tok.pad_token_id not in chunk.input_ids
    # turn boundaries are pre-token boundaries: the whole history tokenised at once gives the same ids
    whole = tok.encode("".join(t for t, _, _ in TWENTY_Q), add_special_tokens=False)
    assert chunk.input_ids == whole
    assert tok.decode(chunk.input_ids) == "".join(t for t, _, _ in TWENTY_Q)


def test_newline_is_one_token_and_ends_every_turn(tok, enc):
    eot = end_of_turn_id(tok)
    assert tok.encode("\n", add_special_tokens=False) == [eot]
    for text, _, _ in TWENTY_Q + MAZE:
        ids = enc(text)
        assert ids[-1] == eot, text
        assert ids.count(eot) == 1, text  # the newline never merges into a word token
        assert len(ids) >= 2


def test_end_of_turn_id_rejects_tokenizer_without_newline_token(tok):
    class Merging:
        name_or_path = "fake"

        def encode(self, text, add_special_tokens=False):
            return [1, 2]

        def decode(self, ids):
            return "\n"

    with pytest.raises(ValueError, match="newline"):
        end_of_turn_id(Merging())


# ----------------------------------------------------------------------------------------------------------
# Spec §1.8 worked example, one whole-episode chunk


@pytest.fixture(scope="module")
def worked(tok, enc):
    ep = make_episode(TWENTY_Q, done=True)
    chunks = episode_to_chunks(ep, enc)
    assert len(chunks) == 1
    batch = collate_chunks(chunks, pad_id=tok.pad_token_id)
    return chunks[0], batch, spans(enc, TWENTY_Q)


def test_worked_example_token_layout(worked, tok):
    chunk, batch, sp = worked
    T = sp[-1][1]
    assert len(chunk.input_ids) == T
    is_action = [False] * T
    for (s, e), (_, act, _) in zip(sp, TWENTY_Q):
        for p in range(s, e):
            is_action[p] = act
    assert chunk.is_action == is_action
    expected_reward = [0.0] * T
    expected_reward[sp[1][1] - 1] = -1.0  # last token of "Is it alive?\n"
    assert chunk.rewards == expected_reward
    assert chunk.input_ids[sp[1][1] - 1] == end_of_turn_id(tok)
    assert chunk.done is True
    assert chunk.next_state_ids is None


def test_worked_example_shifted_arrays(worked):
    chunk, batch, sp = worked
    T = sp[-1][1]
    assert batch["input_ids"].shape == (1, T)
    assert batch["action_mask"].shape == (1, T - 1)
    assert batch["rewards"].shape == (1, T - 1)
    mask = batch["action_mask"][0].tolist()
    # action_mask[t] == is_action[t + 1], exactly
    assert mask == chunk.is_action[1:]
    # hand-derived: index t is an action step iff token t+1 lies inside a question's span
    q1, q2 = sp[1], sp[3]
    env_spans = [sp[0], sp[2], sp[4]]
    for t in range(T - 1):
        tok_pos = t + 1
        in_action = q1[0] <= tok_pos < q1[1] or q2[0] <= tok_pos < q2[1]
        in_env = any(s <= tok_pos < e for s, e in env_spans)
        assert in_action != in_env
        assert mask[t] == in_action, t
    assert sum(mask) == (q1[1] - q1[0]) + (q2[1] - q2[0])


def test_worked_example_reward_position(worked):
    _, batch, sp = worked
    rewards = batch["rewards"][0]
    idx = sp[1][1] - 1 - 1  # shifted index of the newline closing "Is it alive?\n"
    assert rewards[idx].item() == -1.0
    nonzero = torch.nonzero(rewards).flatten().tolist()
    assert nonzero == [idx]
    assert batch["action_mask"][0, idx].item() is True


def test_worked_example_next_action_index(worked):
    _, batch, sp = worked
    nai = batch["next_action_index"][0].tolist()
    q1, q2 = sp[1], sp[3]
    last_q1 = q1[1] - 2  # shifted index of q1's last token
    first_q2 = q2[0] - 1  # shifted index of q2's first token
    last_q2 = q2[1] - 2
    # the step after question 1 is question 2's first token: "No.\n" is skipped
    assert nai[last_q1] == first_q2
    assert first_q2 - last_q1 == (sp[2][1] - sp[2][0]) + 1
    # inside a question, the next action step is the next token
    for t in range(q1[0] - 1, last_q1):
        assert nai[t] == t + 1
    for t in range(first_q2, last_q2):
        assert nai[t] == t + 1
    # the last action step has no next action in the chunk
    assert nai[last_q2] == -1
    # environment positions before question 1 point to its first token; those after question 2 to -1
    for t in range(0, q1[0] - 1):
        assert nai[t] == q1[0] - 1
    for t in range(last_q2, len(nai)):
        assert nai[t] == -1


def test_worked_example_dones_and_no_next_state(worked):
    _, batch, _ = worked
    assert batch["dones"].tolist() == [True]
    assert batch["has_next_state"].tolist() == [False]
    assert batch["attention_mask"].all()
    assert batch["episode_cut"].tolist() == [False]  # done: no cut state
    assert batch["cut_state_ids"].shape == batch["cut_state_mask"].shape == (1, 1)
    assert not batch["cut_state_mask"].any()


def test_whole_truncated_episode_is_its_own_cut_state(enc):
    (chunk,) = episode_to_chunks(make_episode(TWENTY_Q, done=False), enc)
    assert chunk.episode_cut and chunk.cut_state_ids == chunk.input_ids and chunk.next_state_ids is None
    batch = collate_chunks([chunk], pad_id=0)
    assert batch["episode_cut"].tolist() == [True]
    assert torch.equal(batch["cut_state_ids"], batch["input_ids"])
    assert torch.equal(batch["cut_state_mask"], batch["attention_mask"])


# ----------------------------------------------------------------------------------------------------------
# Windowed chunks (one per action)


def _windowed_expectation(enc, turns, window):
    actions = [i for i, (_, a, _) in enumerate(turns) if a]
    out = []
    for a in actions:
        ctx = [enc(turns[j][0]) for j in range(max(0, a - window), a)]
        out.append((a, [i for ids in ctx for i in ids], enc(turns[a][0]), turns[a][2]))
    return out


@pytest.mark.parametrize("window", [1, 3])
def test_windowed_chunks_contents(enc, window):
    ep = make_episode(MAZE, done=True)
    chunks = episode_to_chunks(ep, enc, window=window)
    expected = _windowed_expectation(enc, MAZE, window)
    assert len(chunks) == 4
    for k, (chunk, (a, ctx, act, r)) in enumerate(zip(chunks, expected)):
        assert chunk.input_ids == ctx + act, k
        # the context (the environment's view, past moves included) is state; only the chunk's action is
        # an action, and its reward sits on its last token only
        assert chunk.is_action == [False] * len(ctx) + [True] * len(act), k
        assert chunk.rewards == [0.0] * (len(ctx) + len(act) - 1) + [r], k
        assert chunk.done is (k == 3), k
    if window == 1:
        # one observation + one action
        assert [len(c.input_ids) for c in chunks] == [len(enc(MAZE[a - 1][0])) + len(enc(MAZE[a][0])) for a in (1, 3, 5, 7)]
    if window == 3:
        # the third action's context is "You are at 1, 2.\n", "move right\n", "You are at 2, 2.\n"
        assert chunks[2].input_ids == enc(MAZE[2][0]) + enc(MAZE[3][0]) + enc(MAZE[4][0]) + enc(MAZE[5][0])


@pytest.mark.parametrize("window", [1, 3])
def test_windowed_next_state_is_next_chunks_context(enc, window):
    chunks = episode_to_chunks(make_episode(MAZE, done=True), enc, window=window)
    for cur, nxt in zip(chunks, chunks[1:]):
        n_ctx = nxt.is_action.index(True)
        assert n_ctx > 0
        assert cur.next_state_ids == nxt.input_ids[:n_ctx]
    assert chunks[-1].next_state_ids is None  # done: V(next) = 0
    assert [c.done for c in chunks] == [False, False, False, True]
    assert [c.cut_state_ids for c in chunks] == [None] * 4  # not cut


@pytest.mark.parametrize("window", [1, 3])
def test_windowed_total_reward_counted_once(enc, window):
    chunks = episode_to_chunks(make_episode(MAZE, done=True), enc, window=window)
    assert sum(sum(c.rewards) for c in chunks) == pytest.approx(-6.0)
    assert [sum(c.rewards) for c in chunks] == [-1.0, -1.0, -4.0, 0.0]


@pytest.mark.parametrize("window", [1, 3])
def test_truncated_episode_ending_with_observation_bootstraps(enc, window):
    turns = MAZE[:5]  # o0 a0 o1 a1 o2, cut by the horizon
    chunks = episode_to_chunks(make_episode(turns, done=False), enc, window=window)
    assert len(chunks) == 2
    assert not any(c.done for c in chunks)
    expected = [i for j in range(max(0, 5 - window), 5) for i in enc(turns[j][0])]
    assert chunks[-1].next_state_ids == expected
    if window == 1:
        assert chunks[-1].next_state_ids == enc("You are at 2, 2.\n")
    # every chunk, not only the last, knows the episode was cut and carries the state at the cut
    assert [c.cut_state_ids for c in chunks] == [expected, expected]
    batch = collate_chunks(chunks, pad_id=0)
    assert batch["has_next_state"].tolist() == [True, True]
    assert batch["dones"].tolist() == [False, False]
    n = len(expected)
    assert batch["next_state_ids"][1, :n].tolist() == expected
    assert batch["next_state_mask"][1].sum().item() == n
    assert batch["episode_cut"].tolist() == [True, True]
    assert batch["cut_state_ids"][:, :n].tolist() == [expected, expected]
    assert batch["cut_state_mask"].sum(1).tolist() == [n, n]


@pytest.mark.parametrize("window", [1, 3])
def test_truncated_episode_ending_with_action_has_no_next_state(enc, window):
    turns = MAZE[:4]  # o0 a0 o1 a1: cut right after an action
    chunks = episode_to_chunks(make_episode(turns, done=False), enc, window=window)
    assert len(chunks) == 2
    first_ctx = [i for j in range(max(0, 3 - window), 3) for i in enc(turns[j][0])]
    assert chunks[0].next_state_ids == first_ctx
    assert chunks[-1].next_state_ids is None
    assert chunks[-1].done is False
    # no observation after the cut: the state at the cut is the one right after the final action, the last chunk
    assert [c.cut_state_ids for c in chunks] == [chunks[-1].input_ids] * 2
    batch = collate_chunks(chunks, pad_id=0)
    assert batch["has_next_state"].tolist() == [True, False]
    assert batch["next_state_mask"][1].any().item() is False
    assert batch["episode_cut"].tolist() == [True, True]
    assert batch["cut_state_ids"][0].tolist() == batch["cut_state_ids"][1].tolist() == chunks[-1].input_ids


def test_window_must_be_positive(enc):
    with pytest.raises(ValueError, match="window"):
        episode_to_chunks(make_episode(MAZE), enc, window=0)


# ----------------------------------------------------------------------------------------------------------
# Overflow


@pytest.fixture()
def sourced_episode(tmp_path):
    """The worked example read back from line 2 of a file, so that it carries `file:line`."""
    path = tmp_path / "train.jsonl"
    write_episodes(path, [make_episode(MAZE), make_episode(TWENTY_Q)])
    eps = read_episodes(path)
    assert eps[1].source == f"{path}:2"
    return path, eps[1]


def test_overflow_error_names_file_line_and_field(enc, sourced_episode):
    path, ep = sourced_episode
    total = sum(len(enc(t)) for t, _, _ in TWENTY_Q)
    episode_to_chunks(ep, enc, max_length=total)  # exactly fits
    with pytest.raises(DatasetError) as info:
        episode_to_chunks(ep, enc, max_length=total - 1)
    msg = str(info.value)
    assert msg.startswith(f"{path}:2: field 'turns': ")
    assert str(total) in msg and str(total - 1) in msg
    assert "\n" not in msg


def test_overflow_error_windowed(enc, tmp_path):
    path = tmp_path / "maze.jsonl"
    write_episodes(path, [make_episode(MAZE)])
    (ep,) = read_episodes(path)
    with pytest.raises(DatasetError) as info:
        episode_to_chunks(ep, enc, window=3, max_length=6)
    msg = str(info.value)
    assert msg.startswith(f"{path}:1: field 'turns': ")
    assert "\n" not in msg


def test_overflow_truncate_keeps_last_tokens_and_reward_alignment(tok, enc, sourced_episode):
    _, ep = sourced_episode
    (full,) = episode_to_chunks(ep, enc)
    sp = spans(enc, TWENTY_Q)
    cut = sp[1][0] + 1  # drop "Questions:\n" and the first token of question 1
    max_length = len(full.input_ids) - cut
    (chunk,) = episode_to_chunks(ep, enc, max_length=max_length, overflow="truncate")
    assert len(chunk.input_ids) == max_length
    assert chunk.input_ids == full.input_ids[-max_length:]
    assert chunk.is_action == full.is_action[-max_length:]
    assert chunk.rewards == full.rewards[-max_length:]
    # the reward still sits on question 1's closing newline
    r_pos = sp[1][1] - 1 - cut
    assert chunk.rewards[r_pos] == -1.0
    assert chunk.input_ids[r_pos] == end_of_turn_id(tok)
    assert [i for i, r in enumerate(chunk.rewards) if r != 0] == [r_pos]
    batch = collate_chunks([chunk], pad_id=tok.pad_token_id)
    assert torch.nonzero(batch["rewards"][0]).flatten().tolist() == [r_pos - 1]
    assert batch["action_mask"][0].tolist() == chunk.is_action[1:]


def test_overflow_truncate_that_leaves_no_action_raises(enc, sourced_episode):
    path, ep = sourced_episode
    with pytest.raises(DatasetError, match=r"field 'turns': no action token"):
        episode_to_chunks(ep, enc, max_length=len(enc("Yes.\n")), overflow="truncate")


def test_overflow_truncate_windowed_next_state(enc):
    ep = make_episode(MAZE, done=True)
    chunks = episode_to_chunks(ep, enc, window=3, max_length=10, overflow="truncate")
    full = episode_to_chunks(ep, enc, window=3, max_length=10_000)
    for c, f in zip(chunks, full):
        assert c.input_ids == f.input_ids[-10:]
        assert c.rewards == f.rewards[-10:]
        assert c.rewards[-1] == f.rewards[-1]
        if f.next_state_ids is not None:
            assert c.next_state_ids == f.next_state_ids[-10:]
    cut = episode_to_chunks(make_episode(MAZE[:5], done=False), enc, window=3, max_length=10, overflow="truncate")
    uncut = episode_to_chunks(make_episode(MAZE[:5], done=False), enc, window=3, max_length=10_000)
    assert len(uncut[-1].next_state_ids) > 10
    assert [c.cut_state_ids for c in cut] == [uncut[-1].next_state_ids[-10:]] * 2  # the cut state as fitted


# ----------------------------------------------------------------------------------------------------------
# Collation and padding


def test_collate_padding_never_in_action_mask(tok, enc):
    short = episode_to_chunks(make_episode(MAZE), enc, window=1)[0]
    (long,) = episode_to_chunks(make_episode(TWENTY_Q), enc)
    # a short chunk ending in an action: its padding starts right after a reward-carrying action token
    pad = tok.pad_token_id
    batch = collate_chunks([short, long], pad_id=pad)
    T = len(long.input_ids)
    n = len(short.input_ids)
    assert n < T
    assert batch["input_ids"].shape == (2, T)
    assert batch["input_ids"][0, n:].tolist() == [pad] * (T - n)
    assert batch["attention_mask"][0].tolist() == [True] * n + [False] * (T - n)
    assert batch["attention_mask"][1].all()
    am = batch["action_mask"][0].tolist()
    assert am == short.is_action[1:] + [False] * (T - n)
    assert not any(am[n - 1 :])  # shifted index t >= n-1 predicts a padding token
    assert batch["rewards"][0, n - 1 :].abs().sum().item() == 0.0
    assert batch["rewards"][0, : n - 1].tolist() == short.rewards[1:]
    assert batch["rewards"][0, n - 2].item() == -1.0
    assert batch["next_action_index"][0, n - 2 :].tolist() == [-1] * (T - n + 1)
    # the unpadded row is unchanged by batching
    alone = collate_chunks([long], pad_id=pad)
    for key in ("input_ids", "action_mask", "rewards", "next_action_index"):
        assert torch.equal(batch[key][1], alone[key][0]), key
    assert batch["dones"].tolist() == [False, True]
    assert batch["has_next_state"].tolist() == [True, False]
    assert batch["episode_cut"].tolist() == [False, False]


def test_collate_padding_even_when_pad_is_an_action_token(enc):
    """Padding must be masked by the attention mask, not by the pad id's value."""
    short = episode_to_chunks(make_episode(MAZE), enc, window=1)[0]
    (long,) = episode_to_chunks(make_episode(TWENTY_Q), enc)
    pad = short.input_ids[-1]  # an id that also occurs in actions
    batch = collate_chunks([short, long], pad_id=pad)
    n = len(short.input_ids)
    assert not batch["action_mask"][0, n - 1 :].any()
    assert batch["attention_mask"][0].sum().item() == n


def test_an_action_with_sampled_tokens_is_chunked_as_sampled(tok, enc):
    """`Turn.token_ids` (an online rollout's non-canonical tokens) replace the text's encoding in the chunk, so an
    update scores the tokens the policy sampled; other turns keep their encoding."""
    text = "move up\n"
    spelled = tuple(i for ch in text for i in tok.encode(ch, add_special_tokens=False))
    assert tok.decode(list(spelled)) == text and list(spelled) != enc(text)
    episode = Episode([Turn("start\n", False), Turn(text, True, 1.0, spelled)], True, {})
    (chunk,) = episode_to_chunks(episode, enc)
    assert chunk.input_ids == enc("start\n") + list(spelled)
    assert chunk.is_action == [False] * len(enc("start\n")) + [True] * len(spelled)
