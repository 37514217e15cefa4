"""Output folders as the pipeline writes them, built from tiny BERTs; the serving tests' helpers.

Each folder holds config.json (+ weights), a small WordPiece tokenizer built offline, and
onnx/model.onnx (fp32) + onnx/model_quantized.onnx (int8, with its onnx/model_int8.onnx alias),
exported with exporters.onnx.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import torch

LABELS = {0: "negative", 1: "neutral", 2: "positive"}
MAX_POSITIONS = 64
_WORDS = """the a an and or but not no is was are were be been have has had do does did this that these those
it its he she they we you i me my your our their his her them us what which who when where why how all any
some many much more most very too so just only also than then there here now new old good bad great poor best
worst fine nice awful terrible wonderful boring funny sad happy dull brilliant movie film story plot actor actress
cast scene scenes music script director ending character characters performance acting time day night year life
love hate like enjoy enjoyed watch watched see saw make made feel felt think thought long short slow fast
beautiful ugly smart stupid strong weak real fake true false big small little first last best worse better
one two three four five ten hundred minutes hours world people man woman child family friend friends war city
house home book words way work end start middle side kind sort lot bit thing things nothing everything something
quite rather really truly simply almost never always often sometimes again still even ever yet well""".split()


@dataclass(frozen=True)
class ServedFolder:
    """A folder on disk and the torch model it was exported from."""

    path: Path
    model: torch.nn.Module

    def onnx_session(self, int8: bool = False):
        """A plain ONNX Runtime session on the folder's file: the reference the server must match."""
        from exporters.onnx import ONNX_FP32, ONNX_INT8

        return _session(str(self.path / (ONNX_INT8 if int8 else ONNX_FP32)))


def build_tokenizer():
    """A BERT-style WordPiece tokenizer over a few hundred words; letters and ``##`` letters make
    every lowercase word encodable without [UNK]."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    letters = [chr(code) for code in range(ord("a"), ord("z") + 1)]
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *letters, *("##" + ch for ch in letters),
              *"0123456789.,!?'-", *_WORDS]
    vocab = {token: index for index, token in enumerate(dict.fromkeys(tokens))}
    core = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    core.normalizer = normalizers.BertNormalizer(lowercase=True)
    core.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    core.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    core.decoder = decoders.WordPiece()
    return PreTrainedTokenizerFast(tokenizer_object=core, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]", model_max_length=MAX_POSITIONS)


def build_folder(folder: Path, task: str, seed: int) -> ServedFolder:
    """Write an output folder the way the pipeline will: weights, config, tokenizer, fp32 and int8 ONNX."""
    from transformers import BertConfig, BertForSequenceClassification, BertModel

    from exporters.onnx import (
        ONNX_FP32,
        ONNX_INT8,
        export_config_for_model,
        export_onnx,
        quantize_dynamic_int8,
        write_int8_aliases,
    )

    tokenizer = build_tokenizer()
    config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                        vocab_size=len(tokenizer), max_position_embeddings=MAX_POSITIONS,
                        num_labels=len(LABELS), id2label=LABELS, label2id={v: k for k, v in LABELS.items()})
    torch.manual_seed(seed)
    model = (BertForSequenceClassification(config) if task == "text-classification" else BertModel(config)).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    export_onnx(model, None, folder / ONNX_FP32, config=export_config_for_model(model, task))
    quantize_dynamic_int8(folder / ONNX_FP32, folder / ONNX_INT8)
    write_int8_aliases(folder)
    return ServedFolder(folder, model)


def encode_alone(folder: ServedFolder, text: str) -> dict[str, np.ndarray]:
    """What the model's own tokenizer makes of one text, as the graph's int64 inputs."""
    tokenizer = _tokenizer(str(folder.path))
    ids = np.array([tokenizer(text, truncation=True, max_length=MAX_POSITIONS)["input_ids"]], dtype=np.int64)
    return {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}


@dataclass(frozen=True)
class LiveServer:
    url: str
    app: object  # the FastAPI app; ``app.state.batcher.stats`` counts batches

    @property
    def host_port(self) -> str:
        return self.url.removeprefix("http://")


@cache
def _session(path: str):
    import onnxruntime as ort

    return ort.InferenceSession(path, providers=["CPUExecutionProvider"])


@cache
def _tokenizer(path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


# Texts for requests: in-vocabulary words, a word only letter pieces can spell, and lengths that differ.
LIVE_TEXTS = ["a good movie", "the worst film of the year, truly awful acting", "zyxw", "fine"]
