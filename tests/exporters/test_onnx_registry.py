from __future__ import annotations

import ast
import doctest
from pathlib import Path

import numpy as np
import pytest
from transformers import GPT2Config, ViTConfig

import exporters.errors
import exporters.onnx.atomic_files
import exporters.onnx.model_configs
import exporters.onnx.report
from exporters.errors import ExportError, UnsupportedModelType
from exporters.onnx import OnnxConfig, get_export_config, register_export_config, registered_export_configs
from exporters.onnx.model_configs import BertOnnxConfig

PACKAGE_DIR = Path(exporters.errors.__file__).parent
WORKER_ALLOWED_IMPORTS = {"__future__", "json", "logging", "sys", "time", "pathlib", "typing", "numpy", "onnxruntime"}


def test_builtin_configs_cover_the_encoders_and_tasks() -> None:
    registry = registered_export_configs()
    for model_type in ("bert", "roberta", "distilbert", "electra", "gpt2"):
        assert (model_type, "feature-extraction") in registry
        assert (model_type, "text-classification") in registry
    assert ("vit", "image-classification") in registry

    bert = get_export_config("bert", "feature-extraction")
    assert bert.input_names == ["input_ids", "attention_mask", "token_type_ids"]
    assert bert.output_names == ["last_hidden_state", "pooler_output"]
    assert bert.dynamic_axes["input_ids"] == {0: "batch", 1: "sequence"}
    assert get_export_config("distilbert").input_names == ["input_ids", "attention_mask"]
    assert get_export_config("gpt2").FORWARD_KWARGS == {"use_cache": False}


def test_unknown_model_type_says_how_to_register_one() -> None:
    with pytest.raises(UnsupportedModelType) as caught:
        get_export_config("mamba-9000", "feature-extraction")
    message = str(caught.value)
    assert "mamba-9000" in message and "@register_export_config('mamba-9000')" in message
    assert "bert" in message  # lists what is known
    assert isinstance(caught.value, ExportError) and isinstance(caught.value, KeyError)


def test_unknown_task_lists_the_known_tasks() -> None:
    with pytest.raises(UnsupportedModelType, match="text-classification"):
        get_export_config("bert", "image-segmentation")


def test_decorator_registers_and_refuses_to_overwrite_another_class() -> None:
    @register_export_config("tiny-test-encoder")
    class TinyOnnxConfig(OnnxConfig):
        SUPPORTED_TASKS = {"feature-extraction": {"hidden": {0: "batch"}}}

        @property
        def inputs(self):
            return {"x": {0: "batch"}}

    config = get_export_config("tiny-test-encoder")
    assert isinstance(config, TinyOnnxConfig) and config.model_type == "tiny-test-encoder"
    register_export_config("tiny-test-encoder")(TinyOnnxConfig)  # same class again: harmless
    with pytest.raises(ValueError, match="already registered"):
        register_export_config("tiny-test-encoder")(BertOnnxConfig)
    with pytest.raises(ValueError, match="at least one model_type"):
        register_export_config()


def test_text_dummy_inputs_pad_the_tail_of_later_rows() -> None:
    config = get_export_config("bert")  # no model config: default sizes
    inputs = config.generate_dummy_inputs(3, 10, padded=True, seed=5)
    mask = inputs["attention_mask"]
    assert {name: array.shape for name, array in inputs.items()} == {name: (3, 10) for name in config.input_names}
    assert all(array.dtype == np.int64 for array in inputs.values())
    assert mask[0].all() and not mask[-1].all()
    lengths = mask.sum(axis=1)
    assert (np.diff(lengths) <= 0).all()  # non-increasing
    assert (inputs["input_ids"][mask == 0] == 0).all()  # pad id where masked
    assert (inputs["token_type_ids"][mask == 0] == 0).all()
    again = config.generate_dummy_inputs(3, 10, padded=True, seed=5)
    assert all(np.array_equal(inputs[name], again[name]) for name in inputs)


def test_dummy_inputs_read_sizes_from_the_model_config() -> None:
    gpt2_config = GPT2Config(vocab_size=50, n_embd=8, n_layer=1, n_head=2, pad_token_id=7)
    gpt2 = get_export_config("gpt2", "text-classification", gpt2_config)
    inputs = gpt2.generate_dummy_inputs(2, 6, padded=True)
    assert sorted(inputs) == ["attention_mask", "input_ids"]
    assert inputs["input_ids"].max() < 50
    assert ((inputs["input_ids"] == 7) == (inputs["attention_mask"] == 0)).all()  # pad id exactly where masked
    vit = get_export_config("vit", "image-classification", ViTConfig(image_size=16, patch_size=8, num_channels=3))
    pixels = vit.generate_dummy_inputs(4)["pixel_values"]
    assert pixels.shape == (4, 3, 16, 16) and pixels.dtype == np.float32


def test_exporters_never_imports_hubcompress_and_the_worker_stays_light() -> None:
    for source in PACKAGE_DIR.rglob("*.py"):
        tree = ast.parse(source.read_text())
        modules = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        modules |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert not any(name.split(".")[0] == "hubcompress" for name in modules), source
        if source.name == "validate_worker.py":
            # Run by file path in a fresh interpreter: no torch, no imports from this package.
            assert {name.split(".")[0] for name in modules} <= WORKER_ALLOWED_IMPORTS


@pytest.mark.parametrize(
    "module", [exporters.errors, exporters.onnx.atomic_files, exporters.onnx.model_configs, exporters.onnx.report]
)
def test_cheap_docstring_examples_run(module: object) -> None:
    failures, tried = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert tried > 0 and failures == 0
