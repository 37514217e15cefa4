"""Doctest support: ``toy_folder``, a servable output folder built in milliseconds, for the examples.

The ONNX graph is hand-made (token vectors looked up in a 4-wide table, no export needed) and the
tokenizer is a word-level one; the folder follows the output-folder contract all the same.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from exporters.onnx.file_names import ONNX_FP32

_WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "fine", "day", "good", "film"]


def write_toy_folder(folder: Path) -> Path:
    """Write config.json, a tokenizer and onnx/model.onnx (feature extraction, no modules.json: mean
    pooling, normalised) into ``folder``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {word: index for index, word in enumerate(_WORDS)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])]
    )
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[PAD]", unk_token="[UNK]", model_max_length=16)
    tokenizer.save_pretrained(folder)

    table = np.random.default_rng(0).standard_normal((len(vocab), 4)).astype(np.float32)
    tokens = [helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", "sequence"])
              for name in ("input_ids", "attention_mask", "token_type_ids")]
    hidden = helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "sequence", 4])
    graph = helper.make_graph([helper.make_node("Gather", ["table", "input_ids"], ["last_hidden_state"])],
                              "toy", tokens, [hidden], initializer=[numpy_helper.from_array(table, "table")])
    (folder / "onnx").mkdir(parents=True, exist_ok=True)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), folder / ONNX_FP32)
    config = {"architectures": ["BertModel"], "model_type": "bert", "vocab_size": len(vocab),
              "max_position_embeddings": 16, "type_vocab_size": 2}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="session")
def _toy_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_toy_folder(tmp_path_factory.mktemp("doctest") / "toy")


@pytest.fixture(autouse=True)
def _add_toy_folder(request: pytest.FixtureRequest, doctest_namespace: dict[str, object]) -> None:
    # Only the examples that use it pay for building it (once per session).
    dtest = getattr(request.node, "dtest", None)
    if dtest is not None and any("toy_folder" in example.source for example in dtest.examples):
        doctest_namespace["toy_folder"] = request.getfixturevalue("_toy_folder")
