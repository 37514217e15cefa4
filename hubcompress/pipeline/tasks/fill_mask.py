"""``fill-mask``: a masked language model (BERT's MLM head) trained and distilled on plain texts.

Training masks a fresh 15% of the tokens per batch (80/10/10 as BERT); the loss is the head's MLM
loss, distilled layer by layer and with KL on the head's logits. Evaluation masks one fixed copy of
each eval text (15% of its tokens, at least one): accuracy is how often the top-1 guess is the
original token, besides top-5 accuracy, the masked tokens' perplexity, and agreement with the
teacher (same top-1; top-1 among the teacher's top 5). Rows keep the top 5 per masked token, not
the vocabulary (:mod:`.lm_rows`).

Example:
    >>> import numpy as np
    >>> from hubcompress.pipeline.tasks import TASKS
    >>> spec = TASKS["fill-mask"]
    >>> spec.auto_class, spec.primary_metric, spec.distill_head[0]
    ('AutoModelForMaskedLM', 'accuracy', 'cls')
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..lm_batches import MaskedEncoded, first_tokens
from .base import TaskSpec, labelled_loss, register_task
from .lm_rows import TOP_K, lm_parity, lm_quality, target_rows
from .plain_text import load_plain_texts

# The module whose output is the MLM logits, by architecture (the first the model has is distilled).
MLM_HEADS = ("cls", "lm_head", "vocab_projector", "generator_lm_head", "predictions", "lm_predictions", "decoder")


def masked_rows(out: Any, batch: Any, index: Any, data: MaskedEncoded, pooling: Any) -> list[np.ndarray]:
    """Per text, the masked tokens' rows (:func:`.lm_rows.target_rows`)."""
    logits = out["logits"]
    rows = []
    for row, (i, start) in enumerate(zip(index, first_tokens(batch["attention_mask"]))):
        positions, true_ids = data.eval_targets[i]
        rows.append(target_rows(logits[row, [start + p for p in positions]], np.asarray(true_ids), TOP_K))
    return rows


def masked_quality(rows: dict[str, Any], teacher: dict[str, Any], ctx: Any) -> dict[str, Any]:
    return lm_quality(rows["eval"], teacher["eval"])


FILL_MASK = register_task(TaskSpec(
    name="fill-mask", auto_class="AutoModelForMaskedLM", outputs=("logits",), row_name="masked_token_top5",
    rows=masked_rows, quality=masked_quality, primary_metric="accuracy", agreement="argmax",
    loss=labelled_loss, has_task_loss=True, needs_labels=False, distill_head=MLM_HEADS,
    load_data=load_plain_texts,
    encode=lambda tokenizer, dataset, max_length: MaskedEncoded(tokenizer, dataset.texts, max_length=max_length),
    against_teacher=("agreement_with_teacher", f"top1_in_teacher_top{TOP_K}"),
    parity=lm_parity, plain_text=True,
    # The MLM head's decoder shares its weight with the word embeddings: speedup cannot narrow the hidden
    # stream through that tie, so the pruned width would stay in the model as zeros.
    hidden_refusal="fill-mask models tie the LM head's decoder to the word embeddings, and speedup cannot narrow "
                   "the hidden width through that tie (the student would keep it, zeroed). Remove pruning.hidden "
                   "and prune heads and ffn instead."))
