"""Batches of plain texts for language models: masked (BERT's MLM) and causal (GPT-2's next token).

Both learn from texts alone, so their labels come from the tokens themselves:

- :class:`MaskedEncoded` trains on a fresh 15% of the tokens per batch (80% ``[MASK]``, 10% a random
  token, 10% kept, as BERT did; seeded, so a rerun draws the same masks) and evaluates on one fixed
  masked copy of each text (15% of its tokens, at least one, all ``[MASK]``).
- :class:`CausalEncoded` labels every real token with itself (the model shifts) and padding with
  -100; the eval batches are the texts as they are, every next token a target.

Example:
    >>> from transformers import BertTokenizerFast
    >>> import tempfile, pathlib
    >>> vocab = pathlib.Path(tempfile.mkdtemp()) / "vocab.txt"
    >>> _ = vocab.write_text("\\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b", "c"]))
    >>> enc = MaskedEncoded(BertTokenizerFast(str(vocab)), ["a b c a b c a", "b"], max_length=16)
    >>> [len(positions) for positions, _ in enc.eval_targets]
    [1, 1]
    >>> _, batch = next(enc.eval_batches(2))
    >>> int((batch["input_ids"] == 4).sum())
    2
    >>> sorted(next(enc.train_batches(2, seed=0, with_labels=False)))
    ['attention_mask', 'input_ids', 'labels', 'token_type_ids']
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from ..errors import DataError
from .batches import Encoded, shuffled_indices

MASK_FRACTION = 0.15  # BERT's share of masked tokens
# Of the masked tokens: [MASK], a random token, the token kept (BERT's 80/10/10).
MASK_TOKEN_SHARE, RANDOM_TOKEN_SHARE = 0.8, 0.1
EVAL_MASK_SEED = 0  # the eval copies are the same whatever the recipe's seed: runs stay comparable
IGNORE = -100  # the label transformers' losses skip


def _special_mask(tokenizer: Any, ids: Sequence[int]) -> list[int]:
    return tokenizer.get_special_tokens_mask(list(ids), already_has_special_tokens=True)


class MaskedEncoded(Encoded):
    """Texts for a masked language model: random masks for training, a fixed masked copy for eval.

    ``eval_targets[i]`` is ``(positions, original ids)`` of the masked tokens of text ``i``, counted
    from its first token (padding not counted).
    """

    def __init__(self, tokenizer: Any, texts: Sequence[str], *, max_length: int = 128):
        if tokenizer.mask_token_id is None:
            raise DataError(f"the tokenizer ({type(tokenizer).__name__}) has no mask token, so it cannot serve task "
                            "fill-mask: start from a masked language model (BERT, RoBERTa, ...) and its tokenizer.")
        super().__init__(tokenizer, texts, max_length=max_length)
        self.candidates = [[j for j, special in enumerate(_special_mask(tokenizer, f["input_ids"])) if not special]
                           for f in self.features]
        self.eval_targets: list[tuple[list[int], list[int]]] = []
        for i, (feature, candidates) in enumerate(zip(self.features, self.candidates)):
            rng = random.Random(EVAL_MASK_SEED * 1_000_003 + i)
            count = min(len(candidates), max(1, round(MASK_FRACTION * len(candidates))))
            positions = sorted(rng.sample(candidates, count))
            self.eval_targets.append((positions, [feature["input_ids"][p] for p in positions]))

    def batch(self, index: Sequence[int], *, pad_to: int | None = None, with_labels: bool = False,
              masked: bool = True) -> dict[str, torch.Tensor]:
        """Eval batches hold the masked copies (``masked=False``: the texts as they are)."""
        batch = super().batch(index, pad_to=pad_to)
        if masked:
            offsets = first_tokens(batch["attention_mask"])
            for row, i in enumerate(index):
                for position in self.eval_targets[i][0]:
                    batch["input_ids"][row, offsets[row] + position] = self.tokenizer.mask_token_id
        return batch

    def train_batches(self, batch_size: int, seed: int, *, with_labels: bool) -> Iterator[dict[str, torch.Tensor]]:
        """Shuffled batches with fresh masks and their ``labels`` (the loss needs them whatever ``with_labels``)."""
        generator = torch.Generator().manual_seed(seed)
        for index in shuffled_indices(len(self), batch_size, seed):
            yield self._masked_for_training(index, generator)

    def _masked_for_training(self, index: list[int], generator: torch.Generator) -> dict[str, torch.Tensor]:
        batch = super().batch(index)
        ids = batch["input_ids"]
        candidate = torch.zeros_like(ids, dtype=torch.bool)
        offsets = first_tokens(batch["attention_mask"])
        for row, i in enumerate(index):
            candidate[row, [offsets[row] + j for j in self.candidates[i]]] = True
        chosen = candidate & (torch.rand(ids.shape, generator=generator) < MASK_FRACTION)
        if not chosen.any():  # a batch without a target has no loss: mask one token of each row that has one
            for row in range(ids.shape[0]):
                positions = candidate[row].nonzero().flatten()
                if len(positions):
                    chosen[row, positions[torch.randint(len(positions), (1,), generator=generator)]] = True
        labels = torch.where(chosen, ids, torch.full_like(ids, IGNORE))
        draw = torch.rand(ids.shape, generator=generator)
        replaced = ids.clone()
        replaced[chosen & (draw < MASK_TOKEN_SHARE)] = self.tokenizer.mask_token_id
        randomised = chosen & (draw >= MASK_TOKEN_SHARE) & (draw < MASK_TOKEN_SHARE + RANDOM_TOKEN_SHARE)
        replaced[randomised] = torch.randint(len(self.tokenizer), ids.shape, generator=generator)[randomised]
        return {**batch, "input_ids": replaced, "labels": labels}


class CausalEncoded(Encoded):
    """Texts for a causal language model: every real token is a target of the one before it."""

    def __init__(self, tokenizer: Any, texts: Sequence[str], *, max_length: int = 128):
        if tokenizer.pad_token_id is None:
            raise DataError(f"the tokenizer ({type(tokenizer).__name__}) has neither a pad nor an end-of-text token "
                            "to pad batches with: set tokenizer.pad_token and save the tokenizer into the model folder.")
        super().__init__(tokenizer, texts, max_length=max_length)

    def batch(self, index: Sequence[int], *, pad_to: int | None = None, with_labels: bool = False) -> dict[str, torch.Tensor]:
        batch = super().batch(index, pad_to=pad_to)
        if with_labels:
            # Padding is the end-of-text token for GPT-2: the mask, not the id, says which is padding.
            batch["labels"] = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, IGNORE)
        return batch

    def train_batches(self, batch_size: int, seed: int, *, with_labels: bool) -> Iterator[dict[str, torch.Tensor]]:
        """Shuffled batches with their ``labels`` (the loss needs them whatever ``with_labels``)."""
        for index in shuffled_indices(len(self), batch_size, seed):
            yield self.batch(index, with_labels=True)


def first_tokens(attention_mask: Any) -> list[int]:
    """Where each row's first real token is (0 when padded on the right, later when on the left), for a
    tensor or an array.

    Example:
        >>> first_tokens(np.array([[1, 1, 0], [0, 1, 1]]))
        [0, 1]
    """
    mask = np.asarray(attention_mask)
    return [int(row.argmax()) if row.any() else 0 for row in mask]
