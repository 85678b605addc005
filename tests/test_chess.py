"""Chess and Chess Endgames (spec §2.4, §2.5): the rules and rewards of the env, the text formats, the endgame
positions, the datasets' exclusion of the evaluation positions, the engine's processes, and re-ranking over the
legal moves. Needs Stockfish (CI installs it: apt-get install -y stockfish)."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import chess
import pytest
import torch

from lmrl_lightning.cli import main
from lmrl_lightning.data.jsonl import read_episodes
from lmrl_lightning.env import Episode, Text, Turn
from lmrl_lightning.errors import LMRLError
from lmrl_lightning.registry import get_task
from lmrl_lightning.rollout import rollout
from lmrl_lightning.tasks.chess import engine as engine_module
from lmrl_lightning.tasks.chess import positions
from lmrl_lightning.tasks.chess.engine import EnginePlayer, close_engines, engine_move, engine_pid
from lmrl_lightning.tasks.chess.env import (
    ChessEnv,
    EndgameEnv,
    episode_metrics,
    legal_actions_for_history,
    parse_move,
    spaced,
    unspaced,
)

def play(env: ChessEnv, action: str):
    return env.step(env_history(env) + (Text(action, True),))


def env_history(env: ChessEnv):
    return (Text(spaced(env.board.fen()), False),)


# ---- rules and rewards ---------------------------------------------------------------------------------------------
def test_illegal_or_unparseable_move_costs_minus_one_and_keeps_the_board():
    env = ChessEnv()
    start = env.reset(seed=0)
    for action in ("e 5\n", "Z z 9\n", "\n", "--\n", "0000\n", "N f 3 " * 1000 + "\n", "K e 2\n"):
        history, reward, done = play(env, action)
        assert (reward, done) == (-1.0, False), action
        assert history == start and env.board.fen() == chess.STARTING_FEN
    assert env.state.turns == 7


def test_mating_move_wins_plus_one():
    env = ChessEnv()
    env.reset(options={"fen": "6k1/5ppp/8/8/8/8/8/R5K1 w - - 0 1"})
    history, reward, done = play(env, "R a 8 #\n")
    assert (reward, done, env.success()) == (1.0, True, True)
    assert history[-1].text == spaced(env.board.fen()) and env.board.is_checkmate()


def test_being_mated_costs_minus_one():
    """Fool's mate: after 1. f3 e5, White's g4 lets full-strength Stockfish mate with Qh4#."""
    env = ChessEnv(opponent=EnginePlayer(nodes=1000))
    env.reset(options={"fen": "rnbqkbnr/pppp1ppp/8/4p3/8/5P2/PPPPP1PP/RNBQKBNR w KQkq - 0 2"})
    _, reward, done = play(env, "g 4\n")
    assert (reward, done, env.success()) == (-1.0, True, False)
    assert env.board.is_checkmate() and env.board.peek() == chess.Move.from_uci("d8h4")


def test_stalemating_move_is_a_draw_worth_zero():
    env = ChessEnv()
    env.reset(options={"fen": "k7/3Q4/8/8/8/8/8/7K w - - 0 1"})
    _, reward, done = play(env, "Q c 7\n")
    assert (reward, done, env.success()) == (0.0, True, False) and env.board.is_stalemate()


def test_the_move_cap_ends_the_game_after_max_moves_plus_one_turns():
    """The original ends a game once more than max_moves turns were played, illegal ones included: 401 illegal
    moves are the minimum return -401 of the normalisation."""
    env = ChessEnv(max_moves=3)
    env.reset(seed=0)
    dones = [play(env, "x\n")[2] for _ in range(4)]
    assert dones == [False, False, False, True]
    assert get_task("chess").normalisation["default"].minimum == -401.0


def test_a_legal_move_gets_a_reply_and_the_agent_sees_only_the_new_position():
    env = ChessEnv()
    env.reset(seed=0)
    history, reward, done = play(env, "N f 3\n")
    assert (reward, done) == (0.0, False) and len(history) == 1
    board = chess.Board(unspaced(history[0].text))
    assert board.turn == chess.WHITE and len(board.move_stack) == 0 and board.piece_at(chess.F3).symbol() == "N"
    assert env.board.fullmove_number == 2


# ---- text formats ---------------------------------------------------------------------------------------------------
def test_fen_observation_is_every_character_spaced():
    env = ChessEnv()
    (obs,) = env.reset(seed=0)
    assert obs == Text(" ".join(chess.STARTING_FEN) + "\n", False)
    assert obs.text.startswith("r n b q k b n r / p p p p p p p p / 8 /")
    assert "R   w   K Q k q   -   0   1\n" in obs.text  # a FEN space becomes three spaces
    assert unspaced(obs.text) == chess.STARTING_FEN


def test_san_spacing_round_trips_for_every_legal_move():
    """Every legal move of positions with castling, promotions, captures and checks: spaced SAN parses back to
    the same move, and the history's candidates are exactly these texts."""
    fens = [chess.STARTING_FEN, "r3k2r/pPpp1ppp/8/4pP2/8/8/P1PPPPPP/R3K2R w KQkq e6 0 1",
            "7k/P7/8/8/8/8/8/K6R w - - 0 1"]
    for fen in fens:
        board = chess.Board(fen)
        texts = legal_actions_for_history((Text(spaced(fen), False),))
        assert len(texts) == board.legal_moves.count()
        for move, text in zip(board.legal_moves, texts):
            assert text == " ".join(board.san(move)) + "\n"
            assert parse_move(board, text) == move
            assert parse_move(board, "".join(text.split())) == move  # unspaced SAN is read too
    assert "O - O\n" in legal_actions_for_history((Text(spaced(fens[1]), False),))
    assert "b x a 8 = Q +\n" in legal_actions_for_history((Text(spaced(fens[1]), False),))


def test_episode_metrics_count_unchanged_boards_as_illegal_moves():
    a, b = spaced(chess.STARTING_FEN), spaced("rnbqkbnr/pppp1ppp/8/4p3/8/5N2/PPPPPPPP/RNBQKB1R w KQkq - 0 2")
    episode = Episode([Turn(a, False), Turn("x\n", True, -1.0), Turn(a, False), Turn("N f 3\n", True), Turn(b, False)],
                      False, {"success": False})
    won = Episode([Turn(a, False), Turn("e 4\n", True, 1.0), Turn(b, False)], True, {"success": True})
    assert episode_metrics([episode, won]) == {"win_rate": 0.5, "illegal_move_rate": 1 / 3, "mean_length": 1.5}


# ---- endgame positions ----------------------------------------------------------------------------------------------
def _material(board: chess.Board) -> str:
    return "".join(sorted(p.symbol() for p in board.piece_map().values()))


def test_evaluation_positions_are_645_distinct_legal_quiet_endgames():
    fens = positions.eval_positions()
    assert len(fens) == positions.N_EVAL_POSITIONS == 645
    assert len({positions.position_key(f) for f in fens}) == 645
    setups = {"".join(sorted(s)) for s in positions.SETUPS}
    for fen in fens:
        board = chess.Board(fen)
        assert board.is_valid() and board.turn == chess.WHITE and not board.is_check() and not board.is_game_over()
        assert _material(board) in setups, fen


@pytest.mark.parametrize("setup", positions.SETUPS)
def test_training_positions_are_legal_quiet_and_of_the_setup(setup):
    for seed in range(20):
        board = chess.Board(positions.training_position(seed, setup))
        assert board.is_valid() and board.turn == chess.WHITE and not board.is_check()
        assert _material(board) == "".join(sorted(setup))


def test_training_positions_skip_evaluation_positions_by_construction(monkeypatch):
    """A draw that hits an evaluation position is drawn again: make seed 3's first draw an evaluation position."""
    first = positions.training_position(3)
    monkeypatch.setattr(positions, "eval_position_keys", lambda: frozenset({positions.position_key(first)}))
    second = positions.training_position(3)
    assert positions.position_key(second) != positions.position_key(first)


def test_endgames_data_never_starts_from_an_evaluation_position(tmp_path):
    out = tmp_path / "endgames"
    assert main(["data", "endgames", "--out", str(out), "--episodes", "4", "--vocab-size", "300"]) == 0
    episodes = read_episodes(out / "train.jsonl")
    assert len(episodes) == 4
    evaluation = positions.eval_position_keys()
    for episode in episodes:
        start = unspaced(episode.turns[0].text)
        assert start == episode.meta["fen"] and positions.position_key(start) not in evaluation
        assert 0.0 <= episode.meta["epsilon"] <= 1.0 and episode.meta["setup"] in positions.SETUPS
        assert len(episode.meta["opponent_moves"]) == episode.num_actions


def test_chess_data_records_the_agent_strength_and_the_opponent_moves(tmp_path):
    from lmrl_lightning.tasks.chess.datagen import generate_dataset

    stats = generate_dataset(tmp_path, n_episodes=1, task="chess", progress=False)
    (episode,) = read_episodes(tmp_path / "train.jsonl")
    assert 800 <= episode.meta["agent_elo"] <= 1600 and episode.meta["engine_elo"] >= 1350
    replies = episode.meta["opponent_moves"]
    assert len(replies) == episode.num_actions and all(r is not None for r in replies[:-1])
    assert stats["mean_length"]["paper"] == 46.7 and stats["n_episodes"]["ours"] == 1


def test_evaluation_protocols_follow_the_paper():
    chess_task, endgames = get_task("chess"), get_task("endgames")
    assert chess_task.default_eval_episodes == 1000 and endgames.default_eval_episodes == 645
    norm = endgames.normalisation["default"]
    assert (norm.minimum, norm.dataset_average, norm.maximum) == (-1.0, 0.586, 1.0)
    assert chess_task.normalisation["default"](0.21) == pytest.approx(50.0)
    specs = endgames.eval_episodes("default", 645)
    assert [s.options["fen"] for s in specs] == list(positions.eval_positions())


# ---- the engine process ---------------------------------------------------------------------------------------------
def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except (FileNotFoundError, ProcessLookupError):  # gone before or while its stat was read
        return False


def _children(pid: int) -> set[int]:
    out = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                out.add(int(entry))
    return out


def test_one_engine_is_reused_across_envs_and_closed_on_demand():
    close_engines()
    before = _children(os.getpid())
    envs = [ChessEnv(), EndgameEnv()]
    for env in envs + [envs[0].copy()]:
        env.reset(seed=1)
        play(env, spaced(env.board.san(next(iter(env.board.legal_moves)))))
    pid = engine_pid()
    assert _children(os.getpid()) - before == {pid}
    close_engines()
    deadline = time.time() + 5
    while _alive(pid) and time.time() < deadline:
        time.sleep(0.05)
    assert not _alive(pid) and engine_pid() is None
    # No child is left that was not there before (an earlier test's child may have ended meanwhile).
    assert not _children(os.getpid()) - before


@pytest.mark.parametrize("ending", ["KeyboardInterrupt", "RuntimeError", "sys.exit(3)"])
def test_the_engine_is_closed_when_the_interpreter_ends_badly(tmp_path, ending):
    """A script that plays one engine move and then dies by an exception or Ctrl-C exits promptly (no hang on
    python-chess's engine thread) and leaves no Stockfish behind."""
    script = tmp_path / "die.py"
    script.write_text(textwrap.dedent(f"""
        import sys, chess
        from lmrl_lightning.tasks.chess.engine import EnginePlayer, engine_move, engine_pid
        engine_move(chess.Board(), EnginePlayer(nodes=100))
        print(engine_pid(), flush=True)
        raise {ending} if "{ending}" != "sys.exit(3)" else sys.exit(3)
    """))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    pid = int(done.stdout.split()[0])
    deadline = time.time() + 5
    while _alive(pid) and time.time() < deadline:
        time.sleep(0.05)
    assert not _alive(pid)


def test_a_killed_worker_leaves_no_engine_behind(tmp_path):
    """SIGKILL runs no hook: Stockfish reads end-of-file on its input and quits by itself."""
    script = tmp_path / "hang.py"
    script.write_text(textwrap.dedent("""
        import time, chess
        from lmrl_lightning.tasks.chess.engine import EnginePlayer, engine_move, engine_pid
        engine_move(chess.Board(), EnginePlayer(nodes=100))
        print(engine_pid(), flush=True)
        time.sleep(60)
    """))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    pid = int(proc.stdout.readline())
    proc.kill()
    proc.wait(timeout=10)
    deadline = time.time() + 10
    while _alive(pid) and time.time() < deadline:
        time.sleep(0.05)
    assert not _alive(pid)


def test_missing_stockfish_is_one_line_with_the_install_command(monkeypatch):
    monkeypatch.setattr(engine_module, "STOCKFISH_PATHS", ("/nonexistent/stockfish",))
    monkeypatch.setenv("LMRL_STOCKFISH", "/nonexistent/too")
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(LMRLError, match=r"apt-get install -y stockfish") as info:
        get_task("chess").make_env("default")
    assert "\n" not in str(info.value)


def test_bad_engine_settings_are_one_line_errors():
    with pytest.raises(LMRLError, match="engine.elo must be an integer >= 1350, got 1200"):
        EnginePlayer(elo=1200)
    with pytest.raises(LMRLError, match="unknown option 'depth'"):
        get_task("chess").make_env("default", depth=3)
    with pytest.raises(LMRLError, match="env_options.opponent: unknown field 'time'"):
        get_task("endgames").make_env("default", opponent={"time": 0.1})


def test_full_strength_moves_are_deterministic_whatever_was_searched_before():
    board = chess.Board("r1bqkbnr/pppp1ppp/2n5/4p3/4P3/5N2/PPPP1PPP/RNBQKB1R w KQkq - 2 3")
    player = EnginePlayer(nodes=2000)
    first = engine_move(board, player)
    engine_move(chess.Board(), EnginePlayer(nodes=5000))  # fills the hash with another game
    assert engine_move(board, player) == first


# ---- re-ranking over the legal moves --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def endgames_data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("chess") / "endgames"
    assert main(["data", "endgames", "--out", str(out), "--episodes", "3", "--vocab-size", "300"]) == 0
    return out


def test_reranking_plays_only_legal_moves(endgames_data, monkeypatch):
    """Per-state candidates: an untrained model re-ranking the position's legal moves never plays an illegal
    one, greedy or sampled, plain or value-guided."""
    from lmrl_lightning.algorithms import BC, MCReturns
    from lmrl_lightning.evaluation import EvaluationProtocol, evaluate_module
    from lmrl_lightning.models.backbone import BackboneConfig
    from lmrl_lightning.policies import Decoding

    task = get_task("endgames")
    monkeypatch.setattr(task, "make_env", lambda variant, **kw: EndgameEnv(max_moves=4))
    backbone = BackboneConfig("tiny", tokenizer=str(endgames_data / "tokenizer"), max_positions=256)
    bc = BC(backbone=backbone)
    for kind in ("rerank_greedy", "rerank"):
        episodes = evaluate_module(bc, EvaluationProtocol("endgames", episodes=3, decoding=Decoding(kind)))
        assert episode_metrics(episodes)["illegal_move_rate"] == 0.0
    mc = MCReturns(backbone=backbone)
    episodes = evaluate_module(mc, EvaluationProtocol("endgames", episodes=2, decoding=Decoding("rerank", beta=1.0)))
    assert episode_metrics(episodes)["illegal_move_rate"] == 0.0


def test_ppo_scores_each_decision_over_its_own_legal_moves(endgames_data, monkeypatch):
    """PPO rolling out with re-ranking over the legal moves: the update's distribution at each decision is the
    re-ranker's over that position's legal moves (recomputed from the chunk's text), and a round trains."""
    import lightning as L

    from lmrl_lightning.algorithms import PPO
    from lmrl_lightning.models.backbone import BackboneConfig
    from lmrl_lightning.policies import Decoding

    task = get_task("endgames")
    monkeypatch.setattr(task, "make_env", lambda variant, **kw: EndgameEnv(max_moves=2))
    backbone = BackboneConfig("tiny", tokenizer=str(endgames_data / "tokenizer"), max_positions=256)
    ppo = PPO(backbone=backbone, rollouts={"task": "endgames", "decoding": {"kind": "rerank"}, "episodes_per_round": 4,
                                           "batch_size": 4}, updates={"batch_size": 4})
    policy = ppo.policy(Decoding("rerank"), task.rerank_candidates())
    episodes = rollout(task.make_env("default"), policy, task.eval_episodes("default", 3), batch_size=3)
    chunks = [c for cs in ppo.to_chunks(episodes) for c in cs]
    batch = ppo.collate(chunks)
    with torch.no_grad():
        log_dist = ppo.candidate_pass(ppo.model, batch)[1]
    histories = [tuple(Text(t.text, t.is_action) for t in e.turns[k - 1:k]) for e in episodes
                 for k, t in enumerate(e.turns) if t.is_action]
    texts, scores = policy.state_scores(histories)
    assert log_dist.shape[0] == len(histories) and len(histories) > 3
    for row, (moves, score) in enumerate(zip(texts, scores)):
        expected = torch.log_softmax(score[:len(moves)], -1)
        assert torch.allclose(log_dist[row, :len(moves)], expected, atol=1e-5)
        assert (log_dist[row, len(moves):] == -1e9).all()
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(ppo)
    assert trainer.global_step >= 1 and ppo.round_history[0]["episodes"] == 4


def test_play_shows_the_board_each_move(capsys, monkeypatch):
    """`lmrl play chess` draws the board (rank 8 on top, White upper case) before each move, then the agent's text;
    an illegal move costs -1 and leaves the same board."""
    import io
    import sys

    from lmrl_lightning.cli import main

    monkeypatch.setattr(sys, "stdin", io.StringIO("e4\nKe3\n\n"))
    assert main(["play", "chess"]) == 0
    out = capsys.readouterr().out
    assert out.count("  a b c d e f g h") == 3
    assert "8 r n b q k b n r\n7 p p p p p p p p\n" in out and "\n1 R N B Q K B N R\n" in out
    assert "4 . . . . P . . ." in out  # e4 was played
    assert "reward -1, return so far -1" in out  # Ke3 is illegal after 1. e4
    assert "White to move; the agent reads:\nr n b q k b n r / p p p p p p p p / 8" in out
