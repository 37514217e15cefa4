"""token-classification and question-answering end to end on tiny trained BERTs: run (pruning +
distillation) -> export (dynamic int8) -> validate, the task metrics of every artifact in report.json,
the gate on the primary metric, the card, and bad data named by file, split and column."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from typer.testing import CliRunner

from hubcompress.cli import app
from hubcompress.pipeline.validate import gate
from hubcompress.recipe import ValidationSection

from .. import transformers_js
from .token_tasks import NER_RECIPE, QA_RECIPE, make_token_task_inputs

ARTIFACTS = {"teacher", "student", "onnx_fp32", "onnx_int8"}


def cli(*args: str):
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def _inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_token_task_inputs(tmp_path_factory.mktemp("token-tasks"))


@pytest.fixture
def inputs(_inputs: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(_inputs, tmp_path / "inputs"))


def run(inputs: Path, model: str, recipe: str) -> tuple[object, Path]:
    path = inputs / "recipe.yaml"
    path.write_text(recipe)
    out = inputs / "out"
    return cli("run", str(inputs / model), "--recipe", str(path), "--output", str(out), "--no-progress"), out


def run_card_snippets(out: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> list[str]:
    """Each Python snippet of the card, run on the output folder instead of the hub repo; what each printed."""
    import re

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda repo, name, **kwargs: str(Path(repo) / name))
    printed = []
    for code in re.findall(r"```python\n(.*?)```", (out / "README.md").read_text(), re.S):
        capsys.readouterr()
        exec(code.replace(json.dumps(out.name), json.dumps(str(out))), {})  # noqa: S102 - the card's own code
        printed.append(capsys.readouterr().out.strip())
    return printed


def check_gate_holds_the_primary_metric(report: dict, primary: str) -> None:
    quality = report["quality"]
    drop = report["gate"]["verdicts"]["student"]["checks"][f"{primary}_drop_points"]
    assert drop["value"] == pytest.approx(100 * (quality["teacher"][primary] - quality["student"][primary]), abs=1e-3)
    # The same gate with a bound the student misses by half a point fails, naming the key.
    worse = {**quality, "student": {**quality["student"], primary: quality["teacher"][primary] - 0.005}}
    ctx = SimpleNamespace(recipe=SimpleNamespace(validation=ValidationSection(max_metric_drop=0.1)),
                          task=SimpleNamespace(primary_metric=primary))
    verdict = gate(ctx, worse, {})
    assert not verdict["passed"] and "validation.max_metric_drop" in verdict["reasons"][0]


def test_token_classification_run(inputs: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    result, out = run(inputs, "tiny-ner", NER_RECIPE)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    quality = report["quality"]
    assert set(quality) == ARTIFACTS
    for name in ARTIFACTS:
        assert {"precision", "recall", "f1", "accuracy"} <= set(quality[name]), name
    assert quality["teacher"]["f1"] > 0.8  # the tiny teacher really tags (an untrained head scores about 0)
    assert "agreement_with_teacher" in quality["onnx_int8"] and "agreement_with_teacher" not in quality["teacher"]
    assert report["parity_to_pytorch_student"]["onnx_fp32"]["argmax_agreement"] == 1.0
    assert report["gate"]["passed"], report["gate"]["reasons"]
    check_gate_holds_the_primary_metric(report, "f1")
    import onnxruntime as ort

    session = ort.InferenceSession(str(out / "onnx/model.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["logits"]
    card = (out / "README.md").read_text()
    assert "pipeline_tag: token-classification" in card and 'aggregation_strategy="simple"' in card
    assert report["consumers"]["passed"], report["consumers"]
    pipeline_entities, onnx_labels = run_card_snippets(out, monkeypatch, capsys)  # transformers, ONNX Runtime
    assert pipeline_entities.startswith("[") and "('[CLS]', '" in onnx_labels
    # The card's transformers.js snippet is that pipeline: the tagged tokens must be onnxruntime's.
    assert 'pipeline("token-classification"' in card
    transformers_js.check(out, ["alice went with erin in paris", "dave saw lima and rome"], out.parent)


def test_question_answering_run(inputs: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    result, out = run(inputs, "tiny-qa", QA_RECIPE)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    quality = report["quality"]
    assert set(quality) == ARTIFACTS
    for name in ARTIFACTS:
        assert {"exact_match", "f1"} <= set(quality[name]), name
    assert quality["teacher"]["exact_match"] > 0.3  # far above picking one of ~20 words at random
    assert 0 <= quality["onnx_int8"]["agreement_with_teacher"] <= 1
    # Rows are per window (several per long context), start and end logits each.
    assert report["eval"]["rows"] == 40
    parity = report["parity_to_pytorch_student"]
    assert parity["onnx_fp32"]["argmax_agreement"] == 1.0 and parity["onnx_fp32"]["span_logits"]["max_abs_diff"] < 1e-3
    assert report["gate"]["passed"], report["gate"]["reasons"]
    check_gate_holds_the_primary_metric(report, "f1")
    import onnxruntime as ort

    session = ort.InferenceSession(str(out / "onnx/model.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["start_logits", "end_logits"]
    card = (out / "README.md").read_text()
    assert "pipeline_tag: question-answering" in card and "AutoModelForQuestionAnswering" in card
    assert report["consumers"]["passed"], report["consumers"]
    answers = run_card_snippets(out, monkeypatch, capsys)  # transformers, ONNX Runtime: the same span
    assert len(answers) == 2 and answers[0] == answers[1]
    assert 'pipeline("question-answering"' in card
    transformers_js.check(out, tmp=out.parent)  # loads and answers (spans are decoded its own way)


NER_ONLY_EVAL = """\
task: token-classification
data: {files: {train: data/ner_train.jsonl, validation: data/ner_validation.jsonl}, tokens_column: words, tags_column: tags}
export: {onnx: false}
"""
QA_ONLY_EVAL = """\
task: question-answering
data: {files: {train: data/squad_train.jsonl, validation: data/squad_validation.jsonl}}
export: {onnx: false}
"""


@pytest.mark.parametrize("model, recipe, change, message", [
    ("tiny-ner", NER_ONLY_EVAL, ("tags_column: tags", "tags_column: labels"),
     "ner_train.jsonl (split 'train') has no column 'labels'; its columns are: words, tags. Set data.tags_column"),
    ("tiny-ner", NER_ONLY_EVAL, ("tokens_column: words", "tokens_column: text"), "Set data.tokens_column"),
    ("tiny-qa", QA_ONLY_EVAL, ("}}\n", "}, answers_column: answer}\n"),
     "has no column 'answer'; its columns are: id, question, context, answers. Set data.answers_column"),
    ("tiny-qa", QA_ONLY_EVAL, ("}}\n", "}, question_column: query}\n"), "Set data.question_column"),
])
def test_a_missing_column_exits_2_naming_file_split_and_key(inputs: Path, model: str, recipe: str,
                                                            change: tuple[str, str], message: str) -> None:
    result, out = run(inputs, model, recipe.replace(*change))
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert not (out / "report.json").exists()


def test_bad_rows_are_named_by_file_and_row(inputs: Path) -> None:
    rows = [json.loads(line) for line in (inputs / "data/ner_validation.jsonl").read_text().splitlines()]
    rows[2]["tags"] = rows[2]["tags"][:-1]
    rows[3]["tags"][0] = "B-ORG"
    (inputs / "data/ner_validation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result, _ = run(inputs, "tiny-ner", NER_ONLY_EVAL)
    assert result.exit_code == 2 and "ner_validation.jsonl row 3" in result.output and "tags" in result.output
    rows[2]["tags"] = rows[2]["tags"] + ["O"]
    (inputs / "data/ner_validation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result, _ = run(inputs, "tiny-ner", NER_ONLY_EVAL)
    assert result.exit_code == 2 and "row 4: tag 'B-ORG' is not one of the model's labels" in " ".join(
        result.output.split())
    squad = [json.loads(line) for line in (inputs / "data/squad_validation.jsonl").read_text().splitlines()]
    squad[0]["answers"]["answer_start"] = [squad[0]["answers"]["answer_start"][0] + 1]
    (inputs / "data/squad_validation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in squad))
    result, _ = run(inputs, "tiny-qa", QA_ONLY_EVAL)
    assert result.exit_code == 2 and "squad_validation.jsonl row 1: answer" in " ".join(result.output.split())


def test_spans_and_labels_are_aligned_to_sub_tokens(inputs: Path) -> None:
    from transformers import AutoTokenizer

    from hubcompress.pipeline.tasks.question_answering import QASplit, SpanEncoded
    from hubcompress.pipeline.tasks.token_classification import IGNORE, TaggedEncoded, TaggedSplit

    tokenizer = AutoTokenizer.from_pretrained(inputs / "tiny-ner")
    encoded = TaggedEncoded(tokenizer, TaggedSplit([["erin", "went", "to", "paris"]], [[1, 0, 0, 3]]), 16)
    # [CLS] er ##in went to par ##is [SEP]: the first sub-token of each word carries its tag
    assert encoded.token_labels[0] == [IGNORE, 1, IGNORE, 0, 0, 3, IGNORE, IGNORE]
    assert encoded.first_tokens[0] == [1, 3, 4, 5]
    context = "the a went to with and saw met in today later home was very happy alice went home"
    split = QASplit(["who is it ?"], [context], [[("alice", context.index("alice"))]], doc_stride=4)
    spans = SpanEncoded(tokenizer, split, 16)
    assert len(spans) > 1 and set(spans.example) == {0}  # one long context, several windows
    found = [(f, s, e) for f, (s, e) in enumerate(spans.positions) if s != 0]
    assert found and all(context[spans.offsets[f][s][0]:spans.offsets[f][e][1]] == "alice" for f, s, e in found)
    assert np.all([s == e == 0 for f, (s, e) in enumerate(spans.positions) if f not in {f for f, _, _ in found}])


def test_csv_and_parquet_files_hold_lists_and_answers(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from hubcompress.pipeline.tasks.records import load_records
    from hubcompress.recipe import DataSection

    (tmp_path / "ner.csv").write_text('words,tags\n"[""Ada"", ""wrote""]","[""B-PER"", ""O""]"\n')
    rows = [{"question": "who?", "context": "[1] Ada wrote it.", "answers": {"text": ["Ada"], "answer_start": [4]}}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "squad.parquet")
    ner = load_records(DataSection(files={"validation": str(tmp_path / "ner.csv")}),
                       {"data.tokens_column": "words", "data.tags_column": "tags"}, need_train=False,
                       structured=("words", "tags"))
    assert ner.splits["train"] is None and ner.splits["eval"].rows == [{"words": ["Ada", "wrote"], "tags": ["B-PER", "O"]}]
    squad = load_records(DataSection(files={"validation": str(tmp_path / "squad.parquet")}),
                         {"data.context_column": "context", "data.answers_column": "answers"}, need_train=False,
                         structured=("answers",))
    # a context that looks like JSON stays text; the answers are the nested object
    assert squad.splits["eval"].rows == [{"context": "[1] Ada wrote it.", "answers": rows[0]["answers"]}]


FROM_BASE = """\
task: token-classification
data: {files: {train: data/ner_train.jsonl, validation: data/ner_validation.jsonl}, tokens_column: words, tags_column: tags}
teacher: {finetune: {steps: 30, lr: 3.0e-3, batch_size: 16}}
pruning: {pruner: L1NormPruner, heads: 0.5}
export: {onnx: false}
"""


def test_a_tagger_teacher_is_fine_tuned_from_a_base_model(inputs: Path) -> None:
    result, _ = run(inputs, "tiny-base", FROM_BASE.replace("teacher: {finetune: {steps: 30, lr: 3.0e-3, batch_size: 16}}\n", ""))
    assert result.exit_code == 2 and "classifier.weight" in result.output and "teacher.finetune" in result.output
    result, out = run(inputs, "tiny-base", FROM_BASE)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    teacher = report["teacher"]
    # word accuracy over always answering the commonest tag ("O"), from the data's tag names
    assert teacher["source"] == "finetuned" and teacher["majority_class"] == "O" and teacher["passed"]
    assert report["quality"]["teacher"]["f1"] > 0.5
    assert json.loads((out / "config.json").read_text())["id2label"]["0"] == "O"


def test_span_heads_are_distilled_over_positions() -> None:
    import torch
    from transformers import BertConfig, BertForQuestionAnswering

    from hubcompress.compression.distillation import DISTILL_LOSSES
    from hubcompress.pipeline.compress import _distill_config

    from .token_tasks import TINY

    config = _distill_config(BertForQuestionAnswering(BertConfig(**TINY)), "question-answering")
    assert config[-1]["op_names"] == ["qa_outputs"] and config[-1]["apply_method"] == "kl_seq"
    teacher = torch.randn(2, 7, 2)
    assert float(DISTILL_LOSSES["kl_seq"](teacher, teacher, 2.0)) == pytest.approx(0.0, abs=1e-6)
    # the start distribution over the 7 positions, not a 2-way one per token
    student = teacher.clone()
    student[:, :, 1] += torch.arange(7.0)  # a different end distribution, the same start
    expected = DISTILL_LOSSES["kl"](student[..., 1], teacher[..., 1], 2.0) / 2  # batchmean over 2 x 2 rows
    assert float(DISTILL_LOSSES["kl_seq"](student, teacher, 2.0)) == pytest.approx(float(expected), rel=1e-5)


QA_FROM_BASE = """\
task: question-answering
data: {files: {train: data/squad_train.jsonl, validation: data/squad_validation.jsonl}, max_length: 32, doc_stride: 8}
teacher: {finetune: {steps: 60, lr: 3.0e-3, batch_size: 16}}
pruning: {pruner: L1NormPruner, heads: 0.5}
export: {onnx: false}
"""


def test_a_reader_teacher_is_fine_tuned_from_a_base_model(inputs: Path) -> None:
    result, out = run(inputs, "tiny-base", QA_FROM_BASE)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    teacher = report["teacher"]
    # start-token accuracy over always answering the commonest start ([CLS], position 0)
    assert teacher["source"] == "finetuned" and teacher["majority_class"] == 0 and teacher["passed"]
    assert report["quality"]["teacher"]["exact_match"] > 0.2


def test_a_hub_dataset_is_read_through_datasets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``data.dataset: org/name`` goes to datasets.load_dataset (a folder laid out like the repo loads alike);
    without a validation split its test split is the eval data; a missing split is named."""
    from hubcompress.errors import DataError
    from hubcompress.pipeline.tasks.records import load_records
    from hubcompress.recipe import DataSection

    (tmp_path / "org" / "ner").mkdir(parents=True)
    for split in ("train", "test"):
        (tmp_path / "org" / "ner" / f"{split}.jsonl").write_text(json.dumps({"tokens": ["Ada"], "ner_tags": [1]}))
    monkeypatch.chdir(tmp_path)
    found = load_records(DataSection(dataset="org/ner"), {"data.tokens_column": "tokens"})
    assert found.splits["eval"].places == ["org/ner test row 1"] and found.splits["train"].rows == [{"tokens": ["Ada"]}]
    with pytest.raises(DataError, match="has no split 'dev'.*its splits are: test, train"):
        load_records(DataSection(dataset="org/ner", eval_split="dev"), {"data.tokens_column": "tokens"})
