"""Built-in tasks, installed as `lmrl_lightning.tasks`; importing this package registers every task."""
from lmrl_lightning.tasks import car_dealer, chess, maze, questions, textnav, wordle

BUILTIN_TASKS = (maze.TASK, wordle.TASK, *chess.TASKS, car_dealer.TASK, textnav.TASK, *questions.TASKS)

__all__ = ["BUILTIN_TASKS", "car_dealer", "chess", "maze", "questions", "textnav", "wordle"]
