"""A fuzz test of bad input: malformed recipes, config lists, model folders and data files, each run
through the real command line. Every one must end with exit code 2, a message that names the culprit
(the file, and the key / line / config index / module / column / split where one applies), no
Python traceback, and nothing published in the output folder.

The inputs are generated here, in tmp_path; the tiny model folder is built once per session and
copied only by the cases that damage it. Most cases fail before the model loads; the rest load a
2-layer BERT, so the whole file runs in well under a minute.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hubcompress.cli import app

from .conftest import WORDS

TRACEBACK = "Traceback (most recent call last)"
# What a failed run may leave in its fresh output folder: its own bookkeeping, nothing published.
BOOKKEEPING = {".hubcompress", "recipe.yaml"}
TINY_MODULE = "bert.encoder.layer.0.output.dense"  # a Linear of the tiny BERT


@dataclass
class Workspace:
    """One case's folder, and the session's tiny model and data (read only: copy before damaging)."""

    tmp: Path
    inputs: Path

    @property
    def model(self) -> Path:
        return self.inputs / "tiny-bert"

    @property
    def out(self) -> Path:
        return self.tmp / "out"

    def data(self, split: str) -> str:
        return str(self.inputs / "data" / f"{split}.jsonl")

    def write(self, name: str, content: str | bytes) -> Path:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        return path

    def model_copy(self) -> Path:
        return Path(shutil.copytree(self.model, self.tmp / "model"))

    def run(self, recipe: Path, model: Path | str | None = None) -> list[str]:
        return ["run", str(self.model if model is None else model), "--recipe", str(recipe),
                "--output", str(self.out), "--no-progress"]


@dataclass
class Call:
    args: list[str]
    expect: tuple[str, ...]  # substrings of the error message: the culprit, and where
    out: Path | None = None  # the output folder that must hold nothing published
    located: str | None = None  # "recipe.yaml:LINE: key", where `run` does not say it yet (see below)


CaseFn = Callable[[Workspace], Call]
CASES: dict[str, CaseFn] = {}


def case(fn: CaseFn) -> CaseFn:
    CASES[fn.__name__.removeprefix("case_").replace("_", "-")] = fn
    return fn


# --- recipes ----------------------------------------------------------------------------------------
ONESHOT = """\
task: text-classification
pruning: {pruner: L1NormPruner, heads: 0.5}
export: {int8: none}
card: {base_model: tester/tiny-bert}
"""


def trains(ws: Workspace, *, train: str | None = None, validation: str | None = None, extra: str = "",
           section: str = "distillation: {distiller: DynamicLayerwiseDistiller}\n") -> str:
    """A recipe that trains (so its data loads before anything is compressed or written)."""
    train, validation = train or ws.data("train"), validation or ws.data("validation")
    return (f"task: text-classification\n"
            f"data:\n  files: {{train: {json.dumps(train)}, validation: {json.dumps(validation)}}}\n"
            f"  max_length: 16\n{extra}"
            f"{section}"
            "training: {steps: 1, batch_size: 16, device: cpu}\n"
            "export: {int8: none}\n")


def recipe_case(text: str | bytes, *expect: str) -> CaseFn:
    def build(ws: Workspace) -> Call:
        recipe = ws.write("recipe.yaml", text)
        return Call(ws.run(recipe), (str(recipe), *expect), ws.out)

    return build


CASES.update({
    "recipe-binary-garbage": recipe_case(bytes(range(256)) * 4, "binary"),
    "recipe-not-utf8": recipe_case(b"task: text-classification\n# caf\xe9\n", "UTF-8"),
    "recipe-empty": recipe_case("", "empty"),
    "recipe-not-a-mapping": recipe_case("- task\n- pruning\n", "mapping"),
    "recipe-yaml-syntax": recipe_case("task: text-classification\npruning: {pruner: L1NormPruner\n",
                                      "recipe.yaml:3", "YAML"),
    "recipe-unknown-top-key": recipe_case(ONESHOT + "trainer: {steps: 3}\n", "recipe.yaml:5: trainer", "unknown key"),
    "recipe-unknown-nested-key": recipe_case(ONESHOT + "training: {step: 3}\n", "recipe.yaml:5: training.step",
                                             "'steps'"),
    "recipe-string-for-float": recipe_case(ONESHOT + "training: {lr: fast}\n", "recipe.yaml:5: training.lr"),
    "recipe-negative-batch-size": recipe_case(ONESHOT + "training: {batch_size: -4}\n",
                                              "recipe.yaml:5: training.batch_size"),
    "recipe-ratio-above-one": recipe_case(ONESHOT.replace("heads: 0.5", "heads: 1.5"), "recipe.yaml:2: pruning.heads"),
    "recipe-unknown-pruner": recipe_case(ONESHOT.replace("L1NormPruner", "L1NormPrunr"), "recipe.yaml:2",
                                         "pruning.pruner", "'L1NormPruner'"),
    "recipe-unknown-quantizer": recipe_case(ONESHOT + "quantization: {quantizer: QATQuantiser}\n",
                                            "quantization.quantizer", "'QATQuantizer'"),
    "recipe-unknown-distiller": recipe_case(ONESHOT + "distillation: {distiller: LayerwiseDistiller}\n",
                                            "distillation.distiller"),
    "recipe-unknown-task": recipe_case(ONESHOT.replace("text-classification", "summarization"),
                                       "recipe.yaml:1: task"),
    "recipe-steps-and-epochs": recipe_case(ONESHOT + "training: {steps: 3, epochs: 1}\n", "training", "'steps'",
                                           "'epochs'"),
    "recipe-trains-without-data": recipe_case(ONESHOT + "distillation: {distiller: DynamicLayerwiseDistiller}\n",
                                              "'data'"),
    "recipe-qat-without-quantization": recipe_case(ONESHOT.replace("int8: none", "int8: qat"), "export.int8",
                                                   "quantization"),
})


@case
def case_recipe_is_a_folder(ws: Workspace) -> Call:
    folder = ws.tmp / "recipes"
    folder.mkdir()
    return Call(ws.run(folder), (str(folder), "folder"), ws.out)


@case
def case_recipe_missing(ws: Workspace) -> Call:
    return Call(ws.run(ws.tmp / "no-such-recipe.yaml"), ("no-such-recipe.yaml", "no such recipe"), ws.out)


# --- config lists inside recipes (checked against the model's modules) -------------------------------
def config_list_case(section: str, entry: str, *expect: str, index: int = 1) -> CaseFn:
    """``entry`` as config_list[index] of ``section`` (a good entry before it, when index is 1)."""
    def build(ws: Workspace) -> Call:
        if section == "pruning":
            good = "    - {op_types: [Linear], sparse_ratio: 0.5, exclude_op_names_re: ['.*classifier.*']}\n"
            head = "task: text-classification\npruning:\n  pruner: L1NormPruner\n  config_list:\n"
            text = head + (good if index else "") + f"    - {entry}\n" + "export: {int8: none}\n"
            line = 5 + index
        else:
            good = "    - {op_types: [Linear], target_names: [weight], quant_dtype: int8}\n"
            body = f"quantization:\n  quantizer: QATQuantizer\n  config_list:\n{good if index else ''}    - {entry}\n"
            text = trains(ws, section=body)
            line = 8 + index
        recipe = ws.write("recipe.yaml", text)
        key = f"{section}.config_list[{index}]"
        return Call(ws.run(recipe), (key, *expect), ws.out, located=f"{recipe}:{line}: {key}")

    return build


CASES.update({
    "config-op-names-no-module": config_list_case(
        "pruning", "{op_names: [bert.encoder.layer.7.output.dense], sparse_ratio: 0.5}", "op_names",
        "bert.encoder.layer.7.output.dense"),
    "config-op-names-re-matches-nothing": config_list_case(
        "pruning", "{op_names_re: ['^decoder\\..*'], sparse_ratio: 0.5}", "op_names_re", "^decoder"),
    "config-sparse-ratio-above-one": config_list_case(
        "pruning", f"{{op_names: [{TINY_MODULE}], sparse_ratio: 1.5}}", "sparse_ratio", "1.5"),
    "config-sparse-ratio-negative": config_list_case(
        "pruning", f"{{op_names: [{TINY_MODULE}], sparse_ratio: -0.1}}", "sparse_ratio", "-0.1"),
    "config-sparse-ratio-string": config_list_case(
        "pruning", f"{{op_names: [{TINY_MODULE}], sparse_ratio: half}}", "sparse_ratio", "half", index=0),
    "config-unknown-key": config_list_case(
        "pruning", f"{{op_names: [{TINY_MODULE}], sparse_ratio: 0.5, sparsity_rato: 0.1}}", "sparsity_rato"),
    "config-bad-granularity": config_list_case(
        "pruning", f"{{op_names: [{TINY_MODULE}], sparse_ratio: 0.5, granularity: diagonal}}", "granularity",
        "diagonal"),
    "config-bad-target-names": config_list_case(
        "pruning", f"{{op_names: [{TINY_MODULE}], sparse_ratio: 0.5, target_names: [weights]}}", "target_names",
        "weights"),
    "config-op-types-no-class": config_list_case(
        "pruning", "{op_types: [Conv2d], sparse_ratio: 0.5}", "op_types", "Conv2d"),
    "config-bad-quant-dtype": config_list_case(
        "quantization", f"{{op_names: [{TINY_MODULE}], target_names: [weight], quant_dtype: float16}}", "quant_dtype",
        "float16"),
})


# --- model folders --------------------------------------------------------------------------------
def model_case(damage: Callable[[Workspace], Path], *expect: str, recipe: str = ONESHOT) -> CaseFn:
    def build(ws: Workspace) -> Call:
        model = damage(ws)
        return Call(ws.run(ws.write("recipe.yaml", recipe), model), (str(model), *expect), ws.out)

    return build


def _without(*names: str) -> Callable[[Workspace], Path]:
    def damage(ws: Workspace) -> Path:
        model = ws.model_copy()
        for name in names:
            (model / name).unlink(missing_ok=True)
        return model

    return damage


def _config_not_json(ws: Workspace) -> Path:
    model = ws.model_copy()
    (model / "config.json").write_text('{"model_type": "bert", "hidden_size": 32,\n')
    return model


def _truncated_weights(ws: Workspace) -> Path:
    model = ws.model_copy()
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:2000])
    return model


def _other_shape(ws: Workspace) -> Path:
    model = ws.model_copy()
    config = json.loads((model / "config.json").read_text())
    config["intermediate_size"] = 48  # the weights are 64 wide
    (model / "config.json").write_text(json.dumps(config))
    return model


def _t5(ws: Workspace) -> Path:
    from transformers import T5Config, T5ForSequenceClassification

    model = ws.tmp / "tiny-t5"
    config = T5Config(vocab_size=5 + len(WORDS), d_model=16, d_kv=4, d_ff=32, num_layers=1, num_heads=4,
                      num_labels=2, id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1})
    T5ForSequenceClassification(config).save_pretrained(model)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (ws.model / name).exists():
            shutil.copy(ws.model / name, model / name)
    return model


def _a_file(ws: Workspace) -> Path:
    return ws.write("model.safetensors", b"\x00" * 64)


CASES.update({
    "model-missing": model_case(lambda ws: ws.tmp / "no-such-model", "no such folder"),
    "model-is-a-file": model_case(_a_file, "file"),
    "model-no-config": model_case(_without("config.json"), "config.json"),
    "model-config-not-json": model_case(_config_not_json, "config.json"),
    "model-truncated-weights": model_case(_truncated_weights, "model.safetensors"),
    "model-weights-of-another-shape": model_case(_other_shape, "config.json", "intermediate.dense.weight",
                                                 "[64, 32]"),
    "model-unsupported-type": model_case(_t5, "'t5'", "ONNX", "export.onnx"),
    "model-unsupported-type-no-export": model_case(_t5, "pruning.heads", "'t5'", "config_list",
                                                   recipe=ONESHOT.replace("int8: none", "onnx: false")),
    "model-no-tokenizer": model_case(_without("tokenizer.json", "tokenizer_config.json", "vocab.txt",
                                              "special_tokens_map.json"), "tokenizer"),
})


# --- data files -----------------------------------------------------------------------------------
def _rows(labels: tuple[str, ...] = ("negative", "positive"), **override: object) -> str:
    rows = [{"text": f"good film {i}", "label": labels[i % len(labels)], **override} for i in range(20)]
    return "".join(json.dumps(r) + "\n" for r in rows)


def data_case(name: str, content: str | bytes | None, *expect: str, split: str = "train",
              recipe: Callable[[Workspace, dict[str, str]], str] | None = None) -> CaseFn:
    """The ``split`` file replaced by ``content`` (``None``: a file that does not exist)."""
    def build(ws: Workspace) -> Call:
        path = ws.tmp / "data" / name
        if content is not None:
            ws.write(f"data/{name}", content)
        files = {split: str(path)}
        text = recipe(ws, files) if recipe else trains(ws, **files)
        return Call(ws.run(ws.write("recipe.yaml", text)), (name, *expect), ws.out)

    return build


def _eval_only(ws: Workspace, files: dict[str, str]) -> str:
    # One-shot pruning: no training, so the validation data is first read by the validate stage.
    return (f"task: text-classification\ndata:\n  files: {{validation: {json.dumps(files['validation'])}}}\n"
            "  max_length: 16\npruning: {pruner: L1NormPruner, heads: 0.5}\n"
            "validation: {max_metric_drop: 50}\nexport: {int8: none}\n")


CASES.update({
    "data-missing": data_case("no-such-train.jsonl", None, "data.files.train", "not found"),
    "data-empty": data_case("train.jsonl", "", "no rows"),
    "data-no-text-column": data_case("train.jsonl", _rows().replace('"text"', '"sentence"'), "'text'", "sentence",
                                     "data.text_column"),
    "data-no-label-column": data_case("validation.jsonl", _rows().replace('"label"', '"stars"'), "'label'",
                                      "data.label_column", split="validation"),
    "data-label-not-in-model": data_case("train.jsonl", _rows(("negative", "neutral")), "row 2", "'neutral'"),
    "data-not-utf8": data_case("train.jsonl", b'{"text": "caf\xe9 film", "label": "positive"}\n', "UTF-8"),
    "data-line-not-json": data_case("train.jsonl", _rows().replace('"label": "positive"}', '"label": positive}', 1),
                                    "train.jsonl:2", "JSON"),
    "data-parquet-garbage": data_case("train.parquet", b"PAR1 this is not parquet " * 8, "parquet"),
    "data-csv-header-only": data_case("train.csv", "text,label\n", "no rows"),
    "data-eval-only-missing": data_case("no-such-validation.jsonl", None, "data.files.validation", "not found",
                                        split="validation", recipe=_eval_only),
    "data-eval-only-no-label-column": data_case("validation.jsonl", _rows().replace('"label"', '"stars"'),
                                                "'label'", split="validation", recipe=_eval_only),
})


# --- recipe check: the same exit code and message as run ------------------------------------------
def check_case(run_case: str) -> CaseFn:
    def build(ws: Workspace) -> Call:
        call = CASES[run_case](ws)
        recipe, model = call.args[call.args.index("--recipe") + 1], call.args[1]
        return Call(["recipe", "check", recipe, "--model", model], call.expect + (call.located or "",))

    return build


for _name in ("recipe-yaml-syntax", "recipe-unknown-nested-key", "recipe-unknown-pruner", "recipe-trains-without-data",
              "config-op-names-no-module", "config-sparse-ratio-above-one", "config-bad-quant-dtype", "data-missing"):
    CASES[f"check-{_name}"] = check_case(_name)


# --- push, serve, export-triton on a folder that is not a run's output ----------------------------
@case
def case_push_not_an_output_folder(ws: Workspace) -> Call:
    return Call(["push", str(ws.model), "tester/tiny"], (str(ws.model), "recipe.yaml", "report.json", "--force"))


@case
def case_serve_without_onnx(ws: Workspace) -> Call:
    return Call(["serve", str(ws.model), "--port", "1"], ("onnx/model.onnx",))


@case
def case_export_triton_without_onnx(ws: Workspace) -> Call:
    repository = ws.tmp / "repository"
    return Call(["export-triton", str(ws.model), "--repository", str(repository)], ("onnx/model.onnx",), repository)


# Through a real process on a 40-column terminal: the message must come out whole, not wrapped mid-name.
SUBPROCESS = ("recipe-unknown-nested-key", "model-missing", "data-no-text-column", "config-op-names-no-module")


# --- running them ---------------------------------------------------------------------------------
def invoke(call: Call, *, via_subprocess: bool = False, cwd: Path | None = None) -> tuple[int, str]:
    if via_subprocess:
        env = {**os.environ, "COLUMNS": "40", "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
        done = subprocess.run([sys.executable, "-m", "hubcompress", *call.args], capture_output=True, text=True,
                              env=env, cwd=cwd, timeout=120)
        return done.returncode, done.stdout + done.stderr
    result = CliRunner().invoke(app, call.args, catch_exceptions=False)
    return result.exit_code, result.output


def error_lines(output: str) -> list[str]:
    # In-process, another library's progress bar may share the line the error starts on.
    return [line[line.index("error:"):] for line in output.splitlines() if "error:" in line]


def published(folder: Path | None) -> list[str]:
    """What a failed command left in its fresh output folder, beyond the run's bookkeeping."""
    if folder is None or not folder.exists():
        return []
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if p.is_file() and p.relative_to(folder).parts[0] not in BOOKKEEPING)


@pytest.fixture
def workspace(_tiny_run_inputs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Workspace:
    monkeypatch.chdir(tmp_path)  # relative paths of the commands resolve in the case's own folder
    return Workspace(tmp_path, _tiny_run_inputs)


def _check(name: str, ws: Workspace, *, via_subprocess: bool = False) -> None:
    call = CASES[name](ws)
    code, output = invoke(call, via_subprocess=via_subprocess, cwd=ws.tmp)
    assert TRACEBACK not in output, output
    assert code == 2, output
    for part in call.expect:
        assert part in output, f"{part!r} not in the message:\n{output}"
    assert published(call.out) == [], output


def test_there_are_enough_cases() -> None:
    assert len(CASES) >= 40


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_exits_2_and_names_the_culprit(name: str, workspace: Workspace) -> None:
    _check(name, workspace)


@pytest.mark.parametrize("name", SUBPROCESS)
def test_bad_input_in_a_narrow_terminal(name: str, workspace: Workspace) -> None:
    _check(name, workspace, via_subprocess=True)


def test_recipe_check_says_what_run_says(workspace: Workspace) -> None:
    for name in ("recipe-unknown-nested-key", "recipe-unknown-pruner", "recipe-trains-without-data"):
        run_call, check_call = CASES[name](workspace), CASES[f"check-{name}"](workspace)
        shutil.rmtree(workspace.out, ignore_errors=True)
        run_message, check_message = error_lines(invoke(run_call)[1]), error_lines(invoke(check_call)[1])
        assert run_message and run_message == check_message


def test_push_force_pushes_a_folder_that_is_not_a_run_output(workspace: Workspace,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import hubcompress.hub

    pushed = []

    @dataclass
    class Pushed:
        commit_url: str = "http://hub/commit/1"
        pr_url: str | None = None

    def fake_push(folder: Path, repo_id: str, **kwargs: object) -> Pushed:
        pushed.append((Path(folder), repo_id))
        return Pushed()

    monkeypatch.setattr(hubcompress.hub, "push_folder", fake_push)
    result = CliRunner().invoke(app, ["push", str(workspace.model), "tester/tiny", "--force"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert pushed == [(workspace.model, "tester/tiny")]


@pytest.mark.parametrize("name", ["config-op-names-no-module", "config-bad-quant-dtype", "data-missing"])
def test_run_locates_a_config_list_error_in_the_recipe_file(name: str, workspace: Workspace) -> None:
    call = CASES[name](workspace)
    code, output = invoke(call)
    assert code == 2 and (call.located or "recipe.yaml:3: data.files.train") in output, output
    assert error_lines(output) == error_lines(invoke(CASES[f"check-{name}"](workspace))[1])
