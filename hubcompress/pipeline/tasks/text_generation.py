"""``text-generation``: a causal language model (GPT-2 family) trained and distilled on plain texts.

The loss is the next-token loss (labels are the tokens, padding -100), distilled layer by layer and
with KL on ``lm_head``'s logits. GPT-2 has no padding token: batches pad with its end-of-text token
(the run sets ``tokenizer.pad_token`` and ``config.pad_token_id`` to it, and the published folder
keeps that). Evaluation reads every next token of the eval texts: ``next_token_accuracy`` (top-1
is the true next token; the gate's primary metric, as higher is better for a drop in points),
top-5 accuracy, perplexity (exp of the mean token negative log-likelihood), and agreement with the
teacher (same top-1; top-1 among the teacher's top 5). Rows keep the top 5 per token, never the
vocabulary (:mod:`.lm_rows`).

Example:
    >>> import numpy as np
    >>> from hubcompress.pipeline.tasks import TASKS
    >>> logits = np.log(np.array([[[0.1, 0.8, 0.1], [0.7, 0.2, 0.1], [0.3, 0.3, 0.4]]]))
    >>> batch = {"input_ids": np.array([[0, 1, 0]]), "attention_mask": np.array([[1, 1, 0]])}
    >>> row = TASKS["text-generation"].rows({"logits": logits}, batch, [0], None, None)[0]
    >>> row.shape, float(row[0, 0]), round(float(np.exp(row[0, 1])), 2)
    ((1, 8), 1.0, 0.8)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..lm_batches import CausalEncoded
from .base import TaskSpec, labelled_loss, register_task
from .lm_rows import TOP_K, lm_parity, lm_quality, target_rows
from .plain_text import load_plain_texts


def next_token_rows(out: Any, batch: Any, index: Any, data: Any, pooling: Any) -> list[np.ndarray]:
    """Per text, a row per real token after the first: the model's guess at it from the tokens before."""
    logits, ids, mask = out["logits"], np.asarray(batch["input_ids"]), np.asarray(batch["attention_mask"])
    rows = []
    for row in range(len(ids)):
        real = np.flatnonzero(mask[row])  # contiguous: right or left padding
        rows.append(target_rows(logits[row, real[:-1]], ids[row, real[1:]], TOP_K))
    return rows


def next_token_quality(rows: dict[str, Any], teacher: dict[str, Any], ctx: Any) -> dict[str, Any]:
    found = lm_quality(rows["eval"], teacher["eval"])
    # Named for what it is: the top-1 guess of the next token (the gate's primary metric).
    return {"next_token_accuracy": found.pop("accuracy"), **found} if found else found


TEXT_GENERATION = register_task(TaskSpec(
    name="text-generation", auto_class="AutoModelForCausalLM", outputs=("logits",), row_name="next_token_top5",
    rows=next_token_rows, quality=next_token_quality, primary_metric="next_token_accuracy", agreement="argmax",
    loss=labelled_loss, has_task_loss=True, needs_labels=False, distill_head=("lm_head",),
    load_data=load_plain_texts,
    encode=lambda tokenizer, dataset, max_length: CausalEncoded(tokenizer, dataset.texts, max_length=max_length),
    against_teacher=("agreement_with_teacher", f"top1_in_teacher_top{TOP_K}"),
    parity=lm_parity, plain_text=True))
