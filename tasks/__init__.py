"""Built-in tasks, installed as `lmrl_lightning.tasks`; importing this package registers every task."""
from lmrl_lightning.tasks import maze, wordle

BUILTIN_TASKS = (maze.TASK, wordle.TASK)

__all__ = ["BUILTIN_TASKS", "maze", "wordle"]
