"""Tiny language models for the fill-mask and text-generation tests: a 2-layer BertForMaskedLM with a
WordPiece vocabulary and a 2-layer GPT2LMHeadModel with a word-level tokenizer (built offline with
`tokenizers`, saved as a PreTrainedTokenizerFast; GPT-2's end-of-text token and no pad token, as the
real one), each trained for a few seconds on texts that walk a cycle of words, so the teacher guesses
masked and next tokens far better than chance.

The trained weights are cached per process: every copy of the inputs costs one save.
"""

from __future__ import annotations

import functools
import json
import random
from pathlib import Path

CYCLE = ["north", "east", "south", "west", "red", "green", "blue", "one", "two", "three", "cat", "dog"]
EOS = "<|endoftext|>"
BERT = {"vocab_size": 5 + len(CYCLE), "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
        "intermediate_size": 64, "max_position_embeddings": 64}
GPT2 = {"vocab_size": 2 + len(CYCLE), "n_embd": 32, "n_layer": 2, "n_head": 4, "n_inner": 64, "n_positions": 64,
        "bos_token_id": 0, "eos_token_id": 0}


def cycle_texts(n: int, seed: int) -> list[str]:
    """Texts of 4-12 consecutive words of :data:`CYCLE` from a random start (each word fixes the next)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        start = rng.randrange(len(CYCLE))
        out.append(" ".join(CYCLE[(start + j) % len(CYCLE)] for j in range(rng.randint(4, 12))))
    return out


def bert_tokenizer(folder: Path):
    from transformers import BertTokenizerFast

    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *CYCLE]))
    return BertTokenizerFast(str(vocab))


def gpt2_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {EOS: 0, "<unk>": 1, **{w: i + 2 for i, w in enumerate(CYCLE)}}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=core, eos_token=EOS, bos_token=EOS, unk_token="<unk>",
                                   model_max_length=64)


def _train(model, batches, steps: int, lr: float) -> dict:
    import torch

    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: threads only fight over the shared cores (25x slower under load)
    try:
        for _ in range(steps):
            loss = model(**batches()).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@functools.cache
def _trained_mlm() -> dict:
    import tempfile

    import torch
    from transformers import BertConfig, BertForMaskedLM

    from hubcompress.pipeline.lm_batches import MaskedEncoded

    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = bert_tokenizer(Path(tmp))
    torch.manual_seed(0)
    data = MaskedEncoded(tokenizer, cycle_texts(96, 0), max_length=16)
    batches = data.train_batches(16, seed=0, with_labels=True)
    # About 30% top-1 (72% top-5) on masked validation tokens; chance is 1 in 12.
    return _train(BertForMaskedLM(BertConfig(**BERT)), lambda: next(batches), steps=200, lr=3e-3)


@functools.cache
def _trained_causal() -> dict:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from hubcompress.pipeline.lm_batches import CausalEncoded

    tokenizer = gpt2_tokenizer()
    tokenizer.pad_token = EOS
    torch.manual_seed(0)
    data = CausalEncoded(tokenizer, cycle_texts(96, 0), max_length=16)
    batches = data.train_batches(16, seed=0, with_labels=True)
    # Every next token right on validation (each word fixes the next).
    return _train(GPT2LMHeadModel(GPT2Config(**GPT2)), lambda: next(batches), steps=40, lr=1e-2)


def save_mlm(folder: Path) -> Path:
    """A trained tiny BertForMaskedLM and its tokenizer in ``folder``."""
    from transformers import BertConfig, BertForMaskedLM

    folder.mkdir(parents=True, exist_ok=True)
    bert_tokenizer(folder).save_pretrained(folder)
    model = BertForMaskedLM(BertConfig(**BERT))
    model.load_state_dict(_trained_mlm())
    model.save_pretrained(folder)
    return folder


def save_causal(folder: Path) -> Path:
    """A trained tiny GPT2LMHeadModel and its tokenizer (no pad token, like GPT-2's) in ``folder``."""
    from transformers import GPT2Config, GPT2LMHeadModel

    folder.mkdir(parents=True, exist_ok=True)
    gpt2_tokenizer().save_pretrained(folder)
    model = GPT2LMHeadModel(GPT2Config(**GPT2))
    model.load_state_dict(_trained_causal())
    model.save_pretrained(folder)
    return folder


def make_lm_run_inputs(root: Path) -> Path:
    """``tiny-mlm/``, ``tiny-gpt2/`` and ``texts/{train,validation}.jsonl`` (a ``text`` column only)."""
    save_mlm(root / "tiny-mlm")
    save_causal(root / "tiny-gpt2")
    (root / "texts").mkdir(parents=True)
    for split, n, seed in (("train", 96, 0), ("validation", 32, 1)):
        (root / "texts" / f"{split}.jsonl").write_text("".join(json.dumps({"text": t}) + "\n"
                                                               for t in cycle_texts(n, seed)))
    return root


FILL_MASK_RECIPE = """\
task: fill-mask
data:
  files: {train: texts/train.jsonl, validation: texts/validation.jsonl}
  max_length: 16
pruning: {pruner: TaylorPruner, heads: 0.5, ffn: 0.5, schedule: {kind: agp, interval_steps: 2, total_times: 2}}
distillation: {distiller: DynamicLayerwiseDistiller}
training: {steps: 8, lr: 1.0e-3, batch_size: 16, device: cpu}
export: {int8: dynamic}
validation: {max_metric_drop: 60}
card: {base_model: tester/tiny-mlm, license: apache-2.0}
"""

GENERATION_RECIPE = FILL_MASK_RECIPE.replace("task: fill-mask", "task: text-generation").replace(
    "tester/tiny-mlm", "tester/tiny-gpt2")
