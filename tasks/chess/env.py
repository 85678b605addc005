"""Chess against Stockfish (spec §2.4), from the initial position or from a given FEN (Endgames, spec §2.5).

Text format (the original's `preprocess_state_og` / `preprocess_move`): an observation is the position's FEN with
every character separated by a space, so a space of the FEN becomes three spaces, plus the end-of-turn newline:
`"r n b q k b n r / p p ... w   K Q k q   -   0   1\\n"`. An action is a move in SAN with its characters
space-separated, `"N f 3\\n"`; the env removes all whitespace before parsing, so `"Nf3"` is read too. The agent
sees only the current position (the env returns the new FEN alone, no move history).

Rewards and termination (the original's `ChessEnv.step` and `FenChessHistoryEnv`; the agent plays White):
* an illegal or unparseable move: -1, not terminal, the board unchanged (the agent tries again);
* a legal move that ends the game: +1 if it mates, 0 otherwise (stalemate, insufficient material, the 75-move
  rule, fivefold repetition), done;
* otherwise the opponent replies: -1 and done if that mates the agent, 0 and done if the game is then drawn,
  else 0;
* every agent turn, illegal ones included, counts towards the cap: the episode ends after `max_moves` + 1 turns
  (the original ends it once more than 400 moves were made), so the lowest return is -(max_moves + 1) = -401.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import chess

from lmrl_lightning.env import EpisodeOverError, Text, TextEnv, TextHistory
from lmrl_lightning.tasks.chess.engine import EnginePlayer, engine_move, stockfish_path

MAX_MOVES = 400
ILLEGAL_MOVE_REWARD = -1.0
WIN_REWARD = 1.0
LOSS_REWARD = -1.0
DRAW_REWARD = 0.0
MOVE_REWARD = 0.0
REWARDS = frozenset({ILLEGAL_MOVE_REWARD, WIN_REWARD, LOSS_REWARD, DRAW_REWARD, MOVE_REWARD})
# Longer text is no SAN move (the longest, e.g. "Qa1xb2+" or "exd8=Q#", has 7 characters): read as illegal
# without asking the parser to scan a million characters.
MAX_SAN_CHARS = 12

# The opponent of the paper's "Elo 1200" Stockfish: 15.1 accepts UCI_Elo 1350 at least, the setting nearest 1200
# (see the package docstring); the node limit replaces the original's 100 ms per move: at UCI_Elo 1350 Stockfish
# 15.1 picks its move among its 4 best at depth 1 (Skill Level 0), and 400 nodes reach depth 2 or more in every
# position we probed, so more time or nodes would not change its play.
OPPONENT = EnginePlayer(elo=1350, nodes=400)


def spaced(text: str) -> str:
    """`"Nf3"` -> `"N f 3\\n"`: a FEN or a SAN move as the agent sees or writes it."""
    return " ".join(text) + "\n"


def unspaced(text: str) -> str:
    """The FEN or SAN in a spaced text: single spaces and the newline removed, the FEN's field separators kept
    (three spaces, read back as one)."""
    return text.rstrip("\n").replace("   ", "\0").replace(" ", "").replace("\0", " ")


def observation(board: chess.Board) -> str:
    return spaced(board.fen())


def board_from_observation(text: str) -> chess.Board:
    """The position of an observation text (ValueError when it holds no valid FEN)."""
    return chess.Board(unspaced(text))


def board_diagram(text: str) -> str:
    """An observation as `lmrl play` shows it: the board (White's pieces upper case, rank 8 at the top, files and
    ranks labelled), whose move it is, then the text the agent reads; text holding no FEN is shown as it is."""
    try:
        board = board_from_observation(text)
    except ValueError:
        return text
    rows = [f"{8 - i} {row}" for i, row in enumerate(str(board).splitlines())]
    side = "White" if board.turn == chess.WHITE else "Black"
    return "\n".join([*rows, "  a b c d e f g h", f"{side} to move; the agent reads:", text.rstrip("\n")]) + "\n"


def legal_move_texts(board: chess.Board) -> tuple[str, ...]:
    """Every legal move of `board` as an action text (`"N f 3\\n"`), in python-chess's move order."""
    return tuple(spaced(board.san(move)) for move in board.legal_moves)


def legal_actions_for_history(history: Sequence[Text]) -> tuple[str, ...]:
    """The candidate actions of the state a history ends in: the legal moves of its last observation's position
    (re-ranking decoding; an unreadable observation has none)."""
    for text in reversed(history):
        if not text.is_action:
            try:
                return legal_move_texts(board_from_observation(text.text))
            except ValueError:
                return ()
    return ()


def parse_move(board: chess.Board, action: str) -> Optional[chess.Move]:
    """The legal move an action text names in `board`, or None (unparseable, illegal, ambiguous, a null move)."""
    san = "".join(action.split())
    if not san or len(san) > MAX_SAN_CHARS:
        return None
    try:
        move = board.parse_san(san)
    except ValueError:  # python-chess's Invalid/Illegal/AmbiguousMoveError are ValueErrors
        return None
    return move if move and board.is_legal(move) else None


@dataclass
class GameState:
    """The position and counters of the game being played."""

    board: chess.Board
    turns: int = 0
    done: bool = False
    won: bool = False
    moves: list[str] = field(default_factory=list)  # SAN of both sides, for the end message


class ChessEnv(TextEnv):
    """One game as White against a Stockfish opponent.

    Args:
        opponent: the opponent's settings (default: `OPPONENT`, UCI_Elo 1350, 1000 nodes a move).
        max_moves: agent turns before the cap (paper: 400); the episode ends after max_moves + 1 turns.
        start_fen: the starting position when reset is given none (default: the initial position).

    `reset(seed, options={"fen": ...})` starts from that position (White to move); other options are kept in
    `options` for scripted players (the datasets' `agent_elo`, `epsilon`). `opponent_move` may be overridden
    (tests, scripted opponents).
    """

    def __init__(self, opponent: EnginePlayer = OPPONENT, max_moves: int = MAX_MOVES, start_fen: Optional[str] = None):
        stockfish_path()  # fail now, with the install command, rather than at the first opponent move
        self.opponent = opponent
        self.max_moves = max_moves
        self.start_fen = start_fen or chess.STARTING_FEN
        self.state: Optional[GameState] = None
        self.options: dict[str, Any] = {}  # the reset options of the game (players read e.g. "agent_elo")

    @property
    def board(self) -> chess.Board:
        """The current position (after `reset`)."""
        if self.state is None:
            raise EpisodeOverError("no game yet; call reset() first")
        return self.state.board

    def reset(self, seed: Optional[int] = None, options: Optional[dict[str, Any]] = None) -> TextHistory:
        self.options = dict(options or {})
        fen = self.options.get("fen") or self.start_position(seed)
        self.state = GameState(start_board(fen))
        return (Text(observation(self.state.board), False),)

    def start_position(self, seed: Optional[int]) -> str:
        """The FEN a game starts from when reset names none (here always `start_fen`; Endgames draws one)."""
        return self.start_fen

    def step(self, history: TextHistory) -> tuple[TextHistory, float, bool]:
        state = self._playing_state(history)
        state.turns += 1
        move = parse_move(state.board, history[-1].text)
        reward = ILLEGAL_MOVE_REWARD if move is None else self._play(state, move)
        if state.turns > self.max_moves:
            state.done = True
        return (Text(observation(state.board), False),), reward, state.done

    def _playing_state(self, history: TextHistory) -> GameState:
        if self.state is None:
            raise EpisodeOverError("step() before the first reset(); call reset() first")
        if self.state.done:
            raise EpisodeOverError("step() after the game ended; call reset() first")
        if not history or not history[-1].is_action:
            raise ValueError("step() needs a history whose last text is the agent's action")
        return self.state

    def _play(self, state: GameState, move: chess.Move) -> float:
        """Push the agent's legal move and the opponent's reply; the reward of the agent's turn."""
        state.moves.append(state.board.san(move))
        state.board.push(move)
        if state.board.is_game_over():
            state.done, state.won = True, state.board.is_checkmate()
            return WIN_REWARD if state.won else DRAW_REWARD
        reply = self.opponent_move(state.board)
        state.moves.append(state.board.san(reply))
        state.board.push(reply)
        if state.board.is_game_over():
            state.done = True
            return LOSS_REWARD if state.board.is_checkmate() else DRAW_REWARD
        return MOVE_REWARD

    def opponent_move(self, board: chess.Board) -> chess.Move:
        """Black's reply in `board` (Stockfish with the `opponent` settings)."""
        return engine_move(board, self.opponent)

    def success(self) -> Optional[bool]:
        return None if self.state is None else self.state.won

    def end_message(self) -> Optional[str]:
        if self.state is None:
            return None
        outcome = self.state.board.outcome()
        result = outcome.result() if outcome else "unfinished (move cap)"
        return f"{self.state.board}\nresult {result}; moves: {' '.join(self.state.moves)}"


def start_board(fen: str) -> chess.Board:
    """The board of a start FEN: a valid position with White to move (ValueError otherwise)."""
    board = chess.Board(fen)
    if board.turn != chess.WHITE or not board.is_valid() or board.is_game_over():
        raise ValueError(f"start position {fen!r} must be a valid, unfinished position with White to move")
    return board


def episode_metrics(episodes: Sequence) -> dict[str, float]:
    """Win rate, illegal-move rate (share of agent turns that left the board unchanged) and mean game length
    (agent turns) over recorded episodes (`Episode`s), as the paper's Tables 6-7 report them.

    A legal move always changes the FEN that follows it, an illegal one never does, so the transcript alone tells
    them apart."""
    wins = turns = illegal = 0
    for episode in episodes:
        wins += bool(episode.meta.get("success", False))
        texts = episode.turns
        for k, text in enumerate(texts):
            if text.is_action and 0 < k < len(texts) - 1:
                turns += 1
                illegal += texts[k + 1].text == texts[k - 1].text
    n = max(len(episodes), 1)
    return {"win_rate": wins / n, "illegal_move_rate": illegal / max(turns, 1), "mean_length": turns / n}


class EndgameEnv(ChessEnv):
    """Chess Endgames (spec §2.5): a game from `reset`'s `fen` option, or else from a random training position of
    one of the four setups drawn by the seed (never an evaluation position, see `positions`)."""

    def start_position(self, seed: Optional[int]) -> str:
        from lmrl_lightning.tasks.chess.positions import training_position

        return training_position(seed)
