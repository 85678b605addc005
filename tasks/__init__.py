"""Built-in tasks, installed as `lmrl_lightning.tasks`; importing this package registers every task."""
from lmrl_lightning.tasks import maze, wordle

__all__ = ["maze", "wordle"]
