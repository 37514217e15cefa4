"""Serving language models: ``fill-mask`` (the top 5 fillers of each mask token, as transformers'
fill-mask pipeline answers) and ``text-generation`` (a greedy continuation, as its text-generation
pipeline answers with ``do_sample=False``).

Generation runs the exported graph once per new token on the whole sequence so far (the graph has
no past key/values): slow for long continuations, but exact. Each ``/predict`` call generates its
texts together, in the request's own thread of work, outside the batcher; ``max_new_tokens`` (a
request parameter, default :data:`DEFAULT_NEW_TOKENS`) is capped at :data:`MAX_NEW_TOKENS` and by
the model's length limit.

Example:
    >>> import numpy as np
    >>> top_fillers(np.array([0.1, 0.6, 0.3]), k=2)
    [(1, 0.6), (2, 0.3)]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from hubcompress.serving.postprocess import softmax
from hubcompress.serving.request_errors import InvalidRequest
from hubcompress.serving.tasks import ServedTask, register_served_task

if TYPE_CHECKING:
    from hubcompress.serving.runtime import ServedModel
    from hubcompress.serving.text_encoding import EncodedTexts

FILL_MASK_TOP_K = 5  # what transformers' fill-mask pipeline returns by default
DEFAULT_NEW_TOKENS = 20
MAX_NEW_TOKENS = 256  # each new token is one more run over the whole sequence


def top_fillers(probabilities: np.ndarray, k: int) -> list[tuple[int, float]]:
    """The ``k`` most probable token ids and their probabilities, most probable first."""
    order = np.argsort(-probabilities, kind="stable")[:k]
    return [(int(i), round(float(probabilities[i]), 6)) for i in order]


def _parameter(encoded: EncodedTexts, name: str, default: int, high: int) -> int:
    value = getattr(encoded, "parameters", {}).get(name, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InvalidRequest(f"parameters.{name} must be a whole number of at least 1, got {value!r}")
    return min(value, high)


def _fill_mask_answer(model: ServedModel, probabilities: np.ndarray, encoded: EncodedTexts) -> dict[str, Any]:
    tokenizer = model.encoder.tokenizer
    mask_id = tokenizer.mask_token_id
    ids, attention = encoded.feeds["input_ids"], encoded.feeds.get("attention_mask", np.ones_like(encoded.feeds["input_ids"]))
    k = _parameter(encoded, "top_k", FILL_MASK_TOP_K, probabilities.shape[-1])
    answers: list[Any] = []
    for row in range(len(ids)):
        real = ids[row][attention[row] == 1]
        positions = np.flatnonzero(ids[row] == mask_id)
        if not len(positions):
            raise InvalidRequest(f"inputs[{row}] has no mask token: write {tokenizer.mask_token} where the word to "
                                 "fill in goes")
        per_mask = []
        for position in positions:
            fillers = []
            for token, score in top_fillers(probabilities[row, position], k):
                filled = real.copy()
                filled[position] = token
                # As transformers' pipeline: the other masks stay masked in the sequence of a multi-mask text.
                fillers.append({"score": score, "token": token, "token_str": tokenizer.decode([token]),
                                "sequence": tokenizer.decode(filled.tolist(), skip_special_tokens=True)})
            per_mask.append(fillers)
        answers.append(per_mask[0] if len(per_mask) == 1 else per_mask)
    return {"predictions": answers, "truncated": list(encoded.truncated)}


def _last_token_logits(model: ServedModel, feeds: Mapping[str, np.ndarray],
                       outputs: Mapping[str, np.ndarray]) -> np.ndarray:
    """The logits each row's last real token gives the next token (padding on the right)."""
    logits = outputs["logits"]
    mask = feeds.get("attention_mask", np.ones(logits.shape[:2], dtype=np.int64))
    last = np.maximum(mask.sum(-1) - 1, 0)
    return logits[np.arange(len(logits)), last]


def _step_feeds(model: ServedModel, sequences: list[list[int]]) -> dict[str, np.ndarray]:
    longest = max(len(s) for s in sequences)
    ids = np.full((len(sequences), longest), model.encoder.pad_token_id, dtype=np.int64)
    mask = np.zeros_like(ids)
    for row, sequence in enumerate(sequences):
        ids[row, :len(sequence)], mask[row, :len(sequence)] = sequence, 1
    feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    return {spec.name: feeds[spec.name] for spec in model.signature.inputs}


def _generation_answer(model: ServedModel, next_logits: np.ndarray, encoded: EncodedTexts) -> dict[str, Any]:
    tokenizer = model.encoder.tokenizer
    wanted = _parameter(encoded, "max_new_tokens", DEFAULT_NEW_TOKENS, MAX_NEW_TOKENS)
    ids, attention = encoded.feeds["input_ids"], encoded.feeds.get("attention_mask", np.ones_like(encoded.feeds["input_ids"]))
    prompts = [ids[row][attention[row] == 1].tolist() for row in range(len(ids))]
    sequences = [list(p) for p in prompts]
    live = [len(s) < model.max_tokens for s in sequences]
    guesses = dict(enumerate(next_logits.argmax(-1).tolist()))  # row -> its next token
    for step in range(wanted):
        for row, guess in guesses.items():
            if live[row]:
                sequences[row].append(guess)
                live[row] = guess != tokenizer.eos_token_id and len(sequences[row]) < model.max_tokens
        rows = [row for row in range(len(sequences)) if live[row]]
        if not rows or step + 1 == wanted:
            break
        feeds = _step_feeds(model, [sequences[row] for row in rows])
        guesses = dict(zip(rows, _last_token_logits(model, feeds, model.run(feeds)).argmax(-1).tolist()))
    answers = []
    for prompt, sequence, text, cut in zip(prompts, sequences, encoded.texts, encoded.truncated):
        # As transformers' pipeline: the prompt as sent, then what decoding the whole sequence adds to it.
        # A truncated prompt is answered as the model saw it.
        whole = tokenizer.decode(sequence, skip_special_tokens=True)
        added = whole[len(tokenizer.decode(prompt, skip_special_tokens=True)):]
        answers.append({"generated_text": whole if cut else text + added, "new_tokens": len(sequence) - len(prompt),
                        "truncated": cut})
    return {"predictions": answers}


register_served_task(ServedTask(
    name="fill-mask", head_suffixes=("ForMaskedLM",), output="probabilities", source="logits",
    derive=lambda model, feeds, outputs: softmax(outputs["logits"]), predict=_fill_mask_answer, per_token=True))

register_served_task(ServedTask(
    name="text-generation", head_suffixes=("LMHeadModel", "ForCausalLM"), output="next_token_logits",
    source="logits", derive=_last_token_logits, predict=_generation_answer))
