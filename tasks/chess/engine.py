"""Stockfish through python-chess: the player settings, and this process's engine, started once and always closed.

Every Stockfish move in the task (the environment's opponent, the data generators' players, the evaluation
positions' filter) goes through `engine_move`, which asks this process's single engine with the player's options
for that one search (python-chess restores the engine's configuration afterwards). So a worker holds one engine
process, reused across episodes, rollout batches and players, however many environments it copies.

Closing. python-chess runs each engine's event loop on a non-daemon thread, and Python joins non-daemon threads
*before* `atexit` handlers run: an engine left open makes the interpreter hang at exit, after an exception or a
Ctrl-C included. The engine is therefore closed by a hook that `threading` runs before it joins its threads (the
hook concurrent.futures uses), and `close_engines()` closes it on demand. A process killed outright (SIGKILL, a
killed DDP rank) cannot run hooks; Stockfish then reads end-of-file on its input, which it treats as `quit`.

Determinism. Searches are limited by nodes, never by time, with `Threads 1`, and each full-strength search starts
from a cleared hash table (`ucinewgame`, a 1 MB table), so a full-strength move depends only on the position and the
node budget, not on machine load or on which other games shared the engine. Stockfish 15.1's strength handicap
(`UCI_LimitStrength`/`UCI_Elo`, `Skill Level` < 20) picks among its best moves with a generator seeded by the
clock, so handicapped moves are not reproducible, whatever the seed: no option of 15.1 changes that.
"""
from __future__ import annotations

import os
import shutil
import threading
from dataclasses import dataclass
from typing import Any, Optional

import chess
import chess.engine

from lmrl_lightning.errors import LMRLError
from lmrl_lightning.validation import check_int

STOCKFISH_PATHS = ("/usr/games/stockfish", "/usr/local/bin/stockfish")
INSTALL_HINT = "install it with: apt-get install -y stockfish"
# Stockfish 15.1's UCI_Elo range (ucioption.cpp); python-chess refuses values outside it.
MIN_ELO, MAX_ELO = 1350, 2850
COMMAND_TIMEOUT_S = 600.0
HASH_MB = 1  # cleared before every search (see the module docstring): small, so that clearing costs nothing


@dataclass(frozen=True)
class EnginePlayer:
    """How one Stockfish player searches.

    Args:
        elo: play at this UCI_Elo with UCI_LimitStrength on (Stockfish 15.1: 1350..2850); None: no Elo handicap.
        skill_level: Stockfish's Skill Level 0..20 (20: no handicap); used only when `elo` is None.
        nodes: nodes searched per move (a node limit, not a time limit, so that play does not depend on load).
    """

    elo: Optional[int] = None
    skill_level: int = 20
    nodes: int = 1000

    def __post_init__(self) -> None:
        if self.elo is not None:
            check_int("engine.elo", self.elo, low=MIN_ELO)
            if self.elo > MAX_ELO:
                raise LMRLError(
                    f"engine.elo must be at most {MAX_ELO} (Stockfish 15.1's UCI_Elo range), got {self.elo}"
                )
        check_int("engine.skill_level", self.skill_level, low=0)
        if self.skill_level > 20:
            raise LMRLError(f"engine.skill_level must be 0..20, got {self.skill_level}")
        check_int("engine.nodes", self.nodes)

    def options(self) -> dict[str, Any]:
        """The UCI options of this player's searches."""
        if self.elo is not None:
            return {"UCI_LimitStrength": True, "UCI_Elo": self.elo, "Skill Level": 20}
        return {"UCI_LimitStrength": False, "Skill Level": self.skill_level}

    @property
    def deterministic(self) -> bool:
        """Whether this player's move is a function of the position (no strength handicap, see module docstring)."""
        return self.elo is None and self.skill_level == 20


def stockfish_path() -> str:
    """Where the Stockfish binary is; a one-line LMRLError saying how to install it when it is missing."""
    for path in (os.environ.get("LMRL_STOCKFISH"), *STOCKFISH_PATHS, shutil.which("stockfish")):
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    raise LMRLError(f"the chess tasks need Stockfish, which is not installed; {INSTALL_HINT}")


class _EngineHolder:
    """This process's engine: started on first use, restarted in a forked child (never the parent's), closed once."""

    def __init__(self) -> None:
        self.engine: Optional[chess.engine.SimpleEngine] = None
        self.owner_pid: Optional[int] = None
        self.lock = threading.Lock()
        self.hook_registered = False

    def get(self) -> chess.engine.SimpleEngine:
        with self.lock:
            if self.engine is None or self.owner_pid != os.getpid():
                self.engine = self._start()
                self.owner_pid = os.getpid()
            return self.engine

    def _start(self) -> chess.engine.SimpleEngine:
        # python-chess's 10 s default timeout per command fires on a starved machine (a nice-19 run beside a
        # training job); searches are node-limited, so a long wait means load, not a stuck engine.
        engine = chess.engine.SimpleEngine.popen_uci(stockfish_path(), timeout=COMMAND_TIMEOUT_S)
        try:
            engine.configure({"Threads": 1, "Hash": HASH_MB})
        except BaseException:
            engine.close()
            raise
        if not self.hook_registered:
            _register_shutdown_hook(close_engines)
            self.hook_registered = True
        return engine

    def close(self) -> None:
        with self.lock:
            engine, owned = self.engine, self.owner_pid == os.getpid()
            self.engine = self.owner_pid = None
        if engine is not None and owned:
            engine.close()  # kills the process if it is searching; ends the event loop thread


_HOLDER = _EngineHolder()
_HANDICAPPED_GAME = object()


def _register_shutdown_hook(hook) -> None:
    # threading._register_atexit runs before non-daemon threads are joined (see the module docstring); it is
    # private, so fall back to atexit (which runs too late to prevent the hang, but still closes the process).
    register = getattr(threading, "_register_atexit", None)
    try:
        if register is None:
            raise RuntimeError
        register(hook)
    except RuntimeError:
        import atexit

        atexit.register(hook)


def close_engines() -> None:
    """Close this process's engine (a later move starts a new one); safe to call any number of times."""
    _HOLDER.close()


def engine_pid() -> Optional[int]:
    """The process id of this process's running engine, None when none is running."""
    engine = _HOLDER.engine
    if engine is None or _HOLDER.owner_pid != os.getpid():
        return None
    return engine.transport.get_pid()


def engine_move(board: chess.Board, player: EnginePlayer) -> chess.Move:
    """`player`'s move in `board` (which must not be over), searched by this process's engine from a cleared hash."""
    limit = chess.engine.Limit(nodes=player.nodes)
    # A new `game` object sends ucinewgame: the hash is cleared, so a deterministic player's move does not depend on
    # the searches before it (other games, other players). Handicapped players are random anyway (see the module
    # docstring): they skip the clearing, which costs more than their search.
    game = object() if player.deterministic else _HANDICAPPED_GAME
    result = _HOLDER.get().play(board, limit, game=game, options=player.options())
    if result.move is None:
        raise RuntimeError(f"Stockfish returned no move in {board.fen()}")
    return result.move
