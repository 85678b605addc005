from lmrl_lightning.data.jsonl import DatasetError, iter_episodes, read_episodes, write_episodes

__all__ = ["DatasetError", "iter_episodes", "read_episodes", "write_episodes"]
