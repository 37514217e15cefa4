"""Hand-built model folders, in the layouts consumers load by repo id (see test_consumers_by_repo_id.py).

Each builder writes one folder from scratch, with nothing of hubcompress in it, so the tests
prove that the fake hub serves what transformers, sentence-transformers and ONNX Runtime need,
independently of what the pipeline happens to write today:

- `build_tiny_bert`: a tiny BertForSequenceClassification (save_pretrained) and its fast tokenizer,
  plus `onnx/model.onnx` (the base model's last_hidden_state) and `onnx/model_quantized.onnx`;
- `build_custom_code`: the same weights with `modeling_custom.py` and an `auto_map`, which
  transformers only imports with trust_remote_code=True (it falls back to BertModel otherwise);
- `build_sentence_transformer`: a sentence-transformers save (Transformer, CLS pooling, Normalize).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from fake_hub import FakeHub

# Whole words and "##" pieces, so that words outside the list still split into known pieces
# instead of all becoming [UNK] (which would make every sentence look the same to the model).
_WORDS = ("the a hub model loads from its repo id and gives same outputs small fast text cat dog "
          "runs on every machine no one has heard of it").split()
_PIECES = [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"] + list("abcdefghijklmnopqrstuvwxyz")
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *_WORDS, *_PIECES, ".", ",", "!", "?"]

SENTENCES = ["The small model loads from its repo id.", "A cat runs fast!", "Nobody here has heard of hubcompress."]


@dataclass(frozen=True)
class ConsumerFolders:
    """The folders built here (fixture `consumer_folders`); shared by the session: do not modify them."""

    bert: Path  # BertForSequenceClassification + tokenizer + onnx/model.onnx, onnx/model_quantized.onnx
    custom: Path  # the same weights, auto_map -> modeling_custom.py (remote code)
    sentence: Path  # a sentence-transformers save: Transformer, CLS pooling, Normalize


@dataclass(frozen=True)
class ConsumerHub:
    """A fake hub holding the consumer folders as repos (fixture `consumer_hub`)."""

    hub: FakeHub
    folders: ConsumerFolders
    repos: dict[str, str]  # field name in ConsumerFolders -> repo id
    commits: dict[str, str]  # field name in ConsumerFolders -> the sha its push created
    home: Path  # HF_HOME of consumer processes: empty, so every file comes from the hub
    workdir: Path  # their cwd, outside the repository


MODELING_CUSTOM = '''"""A custom-code variant of BERT: transformers imports this file only with trust_remote_code."""

from __future__ import annotations

import transformers


class CustomBertModel(transformers.BertModel):
    pass


class CustomBertForSequenceClassification(transformers.BertForSequenceClassification):
    pass
'''


def build_tiny_bert(folder: Path, *, with_onnx: bool = True) -> Path:
    """Write a tiny BERT classifier, its tokenizer and (optionally) its ONNX exports to `folder`."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64, num_labels=3)
    model = BertForSequenceClassification(config).eval()
    model.save_pretrained(folder)
    vocab_file = folder.parent / f"{folder.name}-vocab.txt"
    vocab_file.write_text("\n".join(VOCAB) + "\n")
    BertTokenizerFast(vocab_file=str(vocab_file), do_lower_case=True, model_max_length=64).save_pretrained(folder)
    vocab_file.unlink()
    if with_onnx:
        export_onnx(model.bert, folder / "onnx")
    return folder


def export_onnx(bert: object, onnx_dir: Path) -> None:
    """`model.onnx` (fp32, TorchScript exporter: fast and stable for BERT) and a dynamic int8 copy."""
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    class LastHiddenState(torch.nn.Module):
        # ONNX outputs are positional tensors; the ModelOutput dataclass has to be unpacked.
        def __init__(self, inner: torch.nn.Module):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    token_type_ids: torch.Tensor) -> torch.Tensor:
            return self.inner(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state

    onnx_dir.mkdir(parents=True, exist_ok=True)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    # Sizes above 1 on the dynamic axes: a size-1 axis gets frozen into the graph.
    example = tuple(torch.ones(2, 5, dtype=torch.long) for _ in names)
    axes = {name: {0: "batch", 1: "sequence"} for name in [*names, "last_hidden_state"]}
    torch.onnx.export(LastHiddenState(bert).eval(), example, str(onnx_dir / "model.onnx"), input_names=names,
                      output_names=["last_hidden_state"], dynamic_axes=axes, opset_version=17, dynamo=False)
    quantize_dynamic(onnx_dir / "model.onnx", onnx_dir / "model_quantized.onnx", weight_type=QuantType.QInt8)


def build_custom_code(tiny_bert: Path, folder: Path) -> Path:
    """A copy of `tiny_bert` whose config points AutoModel* at a modeling file in the repo."""
    shutil.copytree(tiny_bert, folder, ignore=shutil.ignore_patterns("onnx"))
    (folder / "modeling_custom.py").write_text(MODELING_CUSTOM)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "modeling_custom.CustomBertModel",
                          "AutoModelForSequenceClassification": "modeling_custom.CustomBertForSequenceClassification"}
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return folder


def build_sentence_transformer(tiny_bert: Path, folder: Path) -> Path:
    """A sentence-transformers save of `tiny_bert`'s encoder: CLS pooling, then L2 normalisation."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    encoder = Transformer(str(tiny_bert), max_seq_length=64)
    pooling = Pooling(encoder.get_embedding_dimension(), pooling_mode="cls")
    SentenceTransformer(modules=[encoder, pooling, Normalize()], device="cpu").save(str(folder))
    return folder
