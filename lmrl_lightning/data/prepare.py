"""`lmrl data`: generate a task's offline dataset and train the tokenizer that preset models use with it."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from lmrl_lightning.data.jsonl import iter_episodes
from lmrl_lightning.errors import LMRLError
from lmrl_lightning.models.tokenizer import save_tokenizer, train_bpe_tokenizer
from lmrl_lightning.registry import get_task

TOKENIZER_DIR = "tokenizer"
TRAIN_FILE = "train.jsonl"


def prepare_task_data(
    task: str,
    variant: Optional[str],
    out_dir: str | Path,
    n_episodes: Optional[int] = None,
    seed: int = 0,
    vocab_size: int = 512,
    progress: bool = True,
) -> dict[str, Any]:
    """Write `out_dir/train.jsonl` (the task's generator) and `out_dir/tokenizer/` (BPE trained on its texts).

    Returns the generator's statistics.
    """
    spec = get_task(task)
    variant = spec.check_variant(variant or spec.variants[0])
    if spec.generate_dataset is None:
        raise LMRLError(f"task {task!r} has no dataset generator")
    kwargs: dict[str, Any] = {"variant": variant, "seed": seed, "progress": progress}
    if n_episodes is not None:
        if n_episodes < 1:
            raise LMRLError(f"the number of episodes must be at least 1, got {n_episodes}")
        kwargs["n_episodes"] = n_episodes
    out_dir = Path(out_dir)
    stats = spec.generate_dataset(out_dir, **kwargs)
    texts = {t.text for e in iter_episodes(out_dir / TRAIN_FILE) for t in e.turns}
    texts.update(spec.candidate_actions or ())
    save_tokenizer(train_bpe_tokenizer(sorted(texts), vocab_size), out_dir / TOKENIZER_DIR)
    return stats
