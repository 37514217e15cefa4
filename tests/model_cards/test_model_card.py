"""model_cards: metadata, template, plot, offline validation, atomic writes, leaf-package rule."""

from __future__ import annotations

import ast
import doctest
import importlib
import logging
from pathlib import Path

import pytest
from huggingface_hub import EvalResult, ModelCard, ModelCardData

import model_cards
from model_cards import CardInputs, CardValidationError, Metric, build_card, validate_card, write_card
from model_cards.snippets import build_snippets

BASE = "sentence-transformers/all-MiniLM-L6-v2"


def _metric(value: float) -> Metric:
    return Metric("accuracy", value, "BBC News", "bbcnews", "text-classification", dataset_split="validation")


def _inputs(**overrides: object) -> CardInputs:
    values: dict = dict(
        repo_id="me/minilm-small", base_model=BASE, int8=True, library_name="transformers",
        pipeline_tag="text-classification", tags=["bert"], datasets=["bbcnews"], license="apache-2.0",
        language="en", teacher_metrics=[_metric(0.9612)], student_metrics=[_metric(0.95)],
        onnx_int8_metrics=[_metric(0.948)], size_bytes_before=90_000_000, size_bytes_after=30_000_000,
        params_before=22_700_000, params_after=9_000_000,
        layers=[{"layer": i, "heads": 12 - i, "heads_total": 12, "ffn": 1536 - 100 * i, "ffn_total": 1536}
                for i in range(3)],
        latencies_ms={"teacher (PyTorch fp32)": 10.0, "student (ONNX int8)": 2.5},
        cpu_name="Test CPU @ 2.0GHz", latency_setup="batch 1, 128 tokens",
        recipe_yaml="pruning:\n  - sparse_ratio: 0.5\n", versions={"torch": "2.13.0"},
        onnx_int8_path="onnx/model_quantized.onnx", auto_class="AutoModelForSequenceClassification",
        trust_remote_code=True,
    )
    values.update(overrides)
    return CardInputs(**values)


def test_metadata_names_base_model_relation_and_eval_results() -> None:
    card = build_card(_inputs())
    data = card.data

    assert data.base_model == BASE and data.base_model_relation == "quantized"
    assert data.model_name == "minilm-small"
    names = {r.metric_name: r.metric_value for r in data.eval_results}
    assert names == {"accuracy": 0.95, "accuracy (ONNX int8)": 0.948, f"accuracy (teacher: {BASE})": 0.9612}
    assert {"hubcompress", "int8", "onnx", "bert"} <= set(data.tags)
    model_index = data.to_dict()["model-index"]
    assert model_index[0]["name"] == "minilm-small"
    validate_card(card)


def test_relation_is_finetune_without_int8_and_checked() -> None:
    assert build_card(_inputs(int8=False)).data.base_model_relation == "finetune"
    with pytest.raises(ValueError, match="base_model_relation 'pruned'"):
        build_card(_inputs(base_model_relation="pruned"))


def test_template_renders_the_tables_and_snippets() -> None:
    text = str(build_card(_inputs()))

    assert "| accuracy | BBC News (validation) | 0.9612 | 0.9500 | 0.9480 | -0.0112 |" in text
    assert "| weights | 85.8 MiB | 28.6 MiB | 3.00× smaller |" in text
    assert "| 1 | 11 / 12 | 1436 / 1536 |" in text
    assert "Measured on Test CPU @ 2.0GHz (batch 1, 128 tokens)" in text
    assert "| student (ONNX int8) | 2.50 | 4.00× |" in text
    assert 'AutoModelForSequenceClassification.from_pretrained("me/minilm-small", trust_remote_code=True)' in text
    assert 'hf_hub_download("me/minilm-small", "onnx/model_quantized.onnx")' in text
    assert 'pipeline("text-classification", "me/minilm-small", { dtype: "q8" })' in text
    assert "hubcompress serve me/minilm-small --int8" in text
    assert "```yaml\npruning:\n  - sparse_ratio: 0.5\n```" in text
    assert "| torch | 2.13.0 |" in text


def test_minimal_inputs_render_without_empty_sections() -> None:
    text = str(build_card(CardInputs(repo_id="me/x", base_model="org/base", onnx_path=None)))

    assert "## How to use" in text
    for absent in ("## Evaluation", "## Latency", "## Per-layer", "## Recipe", "onnxruntime", "model-index",
                   "trust_remote_code", "transformers.js", "SentenceTransformer"):
        assert absent not in text


@pytest.mark.parametrize(("pooling", "tools"), [
    ({"modes": ["cls"], "normalize": True}, ["sentence-transformers", "transformers", "ONNX Runtime",
                                             "transformers.js", "hubcompress serve"]),
    ({"modes": ["max"], "normalize": False}, ["sentence-transformers", "transformers", "ONNX Runtime",
                                              "hubcompress serve"]),  # transformers.js pools mean or cls only
    ({"modes": ["cls", "mean"], "normalize": True}, ["sentence-transformers", "hubcompress serve"]),
])
def test_embedding_snippets_follow_the_pooling(pooling: dict, tools: list[str]) -> None:
    inputs = _inputs(pipeline_tag="feature-extraction", auto_class="AutoModel", sentence_transformers=True, library_name=None,
                     pooling=pooling)
    snippets = build_snippets(inputs)
    assert [s.tool for s in snippets] == tools
    code = "\n".join(s.code for s in snippets)
    if pooling["modes"] == ["cls"]:
        assert "tokens[:, 0]" in code and "normalize" in code and 'pooling: "cls", normalize: true' in code
    card = build_card(inputs)
    assert card.data.library_name == "sentence-transformers" and "sentence-transformers" in card.data.tags


def test_write_card_writes_readme_and_plot_atomically(tmp_path: Path) -> None:
    readme = write_card(_inputs(), tmp_path)

    plot = tmp_path / "assets" / "layer_widths.png"
    assert readme == tmp_path / "README.md"
    assert plot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert "![Per-layer kept heads and FFN width](assets/layer_widths.png)" in readme.read_text()
    assert ModelCard.load(readme).data.base_model == BASE
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["README.md", "assets", "layer_widths.png"]


def test_invalid_card_leaves_the_previous_readme(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    readme = write_card(_inputs(), tmp_path)
    before = readme.read_bytes()

    def reject(card: ModelCard) -> None:
        raise CardValidationError("no")

    monkeypatch.setattr("model_cards.card.validate_card", reject)
    with pytest.raises(CardValidationError):
        write_card(_inputs(student_metrics=[_metric(0.5)]), tmp_path)
    assert readme.read_bytes() == before
    assert not list(tmp_path.glob(".README.md.*"))


def test_without_matplotlib_the_card_has_no_plot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    def no_matplotlib(*args: object) -> None:
        raise ImportError("No module named 'matplotlib'")

    monkeypatch.setattr("model_cards.card.plot_layer_widths", no_matplotlib)
    with caplog.at_level(logging.WARNING, logger="model_cards"):
        readme = write_card(_inputs(), tmp_path)
    assert "matplotlib is not installed" in caplog.text
    assert "assets/" not in readme.read_text() and "| 2 | 10 / 12 |" in readme.read_text()


def test_bad_layers_name_the_index_and_key() -> None:
    with pytest.raises(ValueError, match=r"layers\[1\]: missing key 'ffn'"):
        build_card(_inputs(layers=[{"layer": 0, "heads": 1, "ffn": 2}, {"layer": 1, "heads": 1}]))
    with pytest.raises(ValueError, match=r"layers\[0\]: unknown key 'width'"):
        build_card(_inputs(layers=[{"layer": 0, "heads": 1, "ffn": 2, "width": 3}]))


@pytest.mark.parametrize(
    ("front_matter", "problem"),
    [
        ("base_model: org/base\nbase_model_relation: pruned", "base_model_relation: 'pruned'"),
        ("base_model_relation: finetune", "set without base_model"),
        ("base_model: not a repo id!", "is not a hub repo id"),
        ("tags: [1, 2]", "tags: must be"),
    ],
)
def test_offline_validation_finds_what_the_hub_rejects(front_matter: str, problem: str) -> None:
    with pytest.raises(CardValidationError, match=problem):
        validate_card(ModelCard(f"---\n{front_matter}\n---\n# x\n"))


def test_offline_validation_finds_an_incomplete_eval_result() -> None:
    result = EvalResult(task_type="text-classification", dataset_type="d", dataset_name=None,  # type: ignore[arg-type]
                        metric_type="accuracy", metric_value=0.9)
    card = ModelCard("---\nlicense: mit\n---\n# x\n")
    card.data = ModelCardData(model_name="x", eval_results=[result])  # the dataclass does not check
    with pytest.raises(CardValidationError, match="name"):
        validate_card(card)


def test_model_cards_never_imports_hubcompress() -> None:
    for source in Path(model_cards.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n.split(".")[0] == "hubcompress" for n in names), source


@pytest.mark.parametrize("module", ["model_cards.inputs", "model_cards.card", "model_cards.plots", "model_cards.snippets",
                                    "model_cards.validate", "model_cards._io", "model_cards"])
def test_docstring_examples_run(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0


@pytest.mark.parametrize(("task", "call"), [
    ("token-classification", 'const tagger = await pipeline("token-classification", "me/minilm-small", { dtype: "q8" });'),
    ("fill-mask", "unmasker.tokenizer.mask_token"),
    ("question-answering", 'await reader("Where is the park?", '),
])
def test_token_level_tasks_get_a_transformers_js_snippet(task: str, call: str) -> None:
    snippets = {s.tool: s for s in build_snippets(_inputs(pipeline_tag=task))}
    assert "transformers.js" in snippets and call in snippets["transformers.js"].code
    assert snippets["transformers.js"].language == "js"
