"""Tokenised texts and the batches cut from them, for training and for evaluation.

Example:
    >>> from transformers import BertTokenizerFast
    >>> import tempfile, pathlib
    >>> vocab = pathlib.Path(tempfile.mkdtemp()) / "vocab.txt"
    >>> _ = vocab.write_text("\\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b"]))
    >>> tok = BertTokenizerFast(str(vocab))
    >>> enc = Encoded(tok, ["a b a", "b"], labels=[1, 0], max_length=8)
    >>> [b["input_ids"].shape[1] for _, b in enc.eval_batches(2)]
    [5]
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from typing import Any

import torch


class Encoded:
    """Texts tokenised once (truncated to ``max_length``); batches are padded to their longest row
    or to ``pad_to``."""

    def __init__(self, tokenizer: Any, texts: Sequence[str], *, labels: Sequence[int] | None = None,
                 text_pairs: Sequence[str] | None = None, max_length: int = 128):
        self.tokenizer = tokenizer
        args = (list(texts), list(text_pairs)) if text_pairs is not None else (list(texts),)
        enc = tokenizer(*args, truncation=True, max_length=max_length)
        self.features = [{k: enc[k][i] for k in enc} for i in range(len(texts))]
        self.labels = torch.tensor(list(labels), dtype=torch.long) if labels is not None else None
        self.max_length = max_length

    def __len__(self) -> int:
        return len(self.features)

    def batch(self, index: Sequence[int], *, pad_to: int | None = None, with_labels: bool = False) -> dict[str, torch.Tensor]:
        rows = [self.features[i] for i in index]
        batch = dict(self.tokenizer.pad(rows, padding="max_length" if pad_to else True, max_length=pad_to,
                                        return_tensors="pt"))
        if with_labels and self.labels is not None:
            batch["labels"] = self.labels[list(index)]
        return batch

    def eval_batches(self, batch_size: int) -> Iterator[tuple[list[int], dict[str, torch.Tensor]]]:
        """Batches of similar length (less padding), with the row indices they hold."""
        order = sorted(range(len(self)), key=lambda i: len(self.features[i]["input_ids"]))
        for start in range(0, len(order), batch_size):
            index = order[start:start + batch_size]
            yield index, self.batch(index)

    def train_batches(self, batch_size: int, seed: int, *, with_labels: bool) -> Iterator[dict[str, torch.Tensor]]:
        """Shuffled batches, epoch after epoch, forever (the trainer decides when to stop)."""
        for index in shuffled_indices(len(self), batch_size, seed):
            yield self.batch(index, with_labels=with_labels)


def shuffled_indices(rows: int, batch_size: int, seed: int) -> Iterator[list[int]]:
    """The row indices of shuffled batches of ``batch_size`` (at most ``rows``), epoch after epoch,
    forever; each epoch a new seeded order, its last incomplete batch left out.

    Example:
        >>> from itertools import islice
        >>> [len(b) for b in islice(shuffled_indices(5, 2, seed=0), 4)]
        [2, 2, 2, 2]
        >>> sorted(sum(islice(shuffled_indices(4, 2, seed=0), 2), []))  # one epoch: every row once
        [0, 1, 2, 3]
    """
    rng = random.Random(seed)
    size = min(batch_size, rows)
    while True:
        order = list(range(rows))
        rng.shuffle(order)
        for start in range(0, len(order) - size + 1, size):
            yield order[start:start + size]
