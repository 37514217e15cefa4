"""Distances between batches of embeddings (one row per text), as distillation ``apply_method``\\ s:
``cosine`` (each text's embedding points where the teacher's does) and ``relational`` (the batch's
texts are as similar to each other as the teacher finds them).

Layerwise MSE asks every hidden value to match; a student pruned to a quarter of its heads cannot,
and what it gets close to is the training text's subspace. These two ask for what an embedding is
used for, the direction of each text and the similarities between texts, so they carry over to
text the student was not distilled on better than matching values does. ``relational`` compares
only the n × n similarity matrices, so student and teacher widths may differ.

Rows are the last dim; leading dims are flattened into rows (a ``[batch, dim]`` sentence embedding
is the intended target, e.g. the ``sentence_embedding`` of a sentence-transformers ``Pooling``).

Example:
    >>> import torch
    >>> teacher = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    >>> float(DISTILL_LOSSES["cosine"](3 * teacher, teacher, 1.0))  # the same directions
    0.0
    >>> float(DISTILL_LOSSES["relational"](teacher, teacher, 1.0))
    0.0
    >>> # all-equal rows: pair similarities 1, 1, 1 against 0, 0.7071, 0.7071
    >>> round(float(DISTILL_LOSSES["relational"](torch.ones(3, 2), teacher, 1.0)), 4)  # (1 + 2 * 0.2929²) / 3
    0.3905
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .losses import DISTILL_LOSSES, register_distill_loss


def _rows(x: torch.Tensor) -> torch.Tensor:
    return x.float().reshape(-1, x.shape[-1])


@register_distill_loss("cosine")
def _cosine(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    # 1 - cos per row, averaged: 0 for the same directions, 1 for orthogonal ones; norms do not count.
    return (1 - F.cosine_similarity(_rows(student), _rows(teacher), dim=-1, eps=1e-8)).mean()


def similarity_matrix(rows: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of every pair of rows (``[n, dim]`` → ``[n, n]``)."""
    unit = F.normalize(_rows(rows), dim=-1, eps=1e-8)
    return unit @ unit.T


@register_distill_loss("relational")
def _relational(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    s, t = similarity_matrix(student), similarity_matrix(teacher)
    if len(s) != len(t):
        raise ValueError(f"relational loss: the student has {len(s)} rows and the teacher {len(t)}; "
                         "distill targets of the same batch")
    # Off the diagonal only: a row's similarity to itself is 1 for both and would dilute the mean.
    off = ~torch.eye(len(s), dtype=torch.bool, device=s.device)
    if not off.any():
        return (s - t).sum() * 0.0  # one row: no pair to compare, but keep the graph
    return F.mse_loss(s[off], t[off])
