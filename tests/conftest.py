"""Shared test setup: no network (tiny tokenizers and models are built in-process), one torch thread."""
import os

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tiny models gain little from a second thread, and on a busy 2-core machine two threads made a tiny training
# step several times slower (the BC learning test: 358 s against about 40 s when the machine was quiet).
torch.set_num_threads(1)
