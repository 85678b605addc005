"""Built-in tasks, installed as `lmrl_lightning.tasks`; importing this package registers every task."""
from lmrl_lightning.tasks import chess, maze, wordle

BUILTIN_TASKS = (maze.TASK, wordle.TASK, *chess.TASKS)

__all__ = ["BUILTIN_TASKS", "chess", "maze", "wordle"]
