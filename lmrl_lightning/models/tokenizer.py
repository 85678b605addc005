"""Task tokenizers for models trained from scratch: byte-level BPE trained on the task's own texts.

The newline that ends every turn must stay a token of its own, so that "sample until end of turn" is "sample
until that token" and a turn's tokens never merge with the next turn's.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from lmrl_lightning.env import END_OF_TURN
from lmrl_lightning.errors import LMRLError

PAD_TOKEN = "<|pad|>"
EOS_TOKEN = "<|endoftext|>"


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on `texts` (a task's turns) with pad and end-of-text specials."""
    tok = Tokenizer(models.BPE())
    # Split newlines off as their own pre-tokens so BPE can never merge them into words.
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(END_OF_TURN, behavior="isolated"), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN, PAD_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS_TOKEN, bos_token=EOS_TOKEN, pad_token=PAD_TOKEN)


def end_of_turn_id(tokenizer) -> int:
    """The id of the newline token that ends a turn; a tokenizer that cannot encode it alone is rejected."""
    ids = tokenizer.encode(END_OF_TURN, add_special_tokens=False)
    if len(ids) != 1 or tokenizer.decode(ids) != END_OF_TURN:
        raise LMRLError(
            f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} does not encode a newline as one token "
            f"(got ids {ids}); turns end with a newline, so this model cannot be used"
        )
    return ids[0]


def save_tokenizer(tokenizer: PreTrainedTokenizerFast, directory: str | Path) -> Path:
    directory = Path(directory)
    tokenizer.save_pretrained(str(directory))
    return directory
