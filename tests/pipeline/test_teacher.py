"""A base model run as a classifier (issue 11): the missing head is bad input unless the recipe
fine-tunes a teacher; the teacher stage fine-tunes, saves and, on a rerun, reloads it; a teacher no
better than the majority class stops the run before compression; float16-stored weights train in
float32."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from hubcompress.cli import app
from hubcompress.pipeline import STAGES, compress, open_run, run_stages, shrink, teacher
from hubcompress.pipeline.precision import Precision
from hubcompress.recipe import parse_recipe

from .conftest import CLASSIFY, EMBED, write_recipe

NO_ONNX = CLASSIFY.replace("export: {int8: dynamic}", "export: {onnx: false, int8: none}")
FINETUNE = "teacher: {finetune: {steps: 30, lr: 3.0e-3, batch_size: 16}}\n"


def cli(*args: str):
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def test_a_base_model_without_a_teacher_section_is_bad_input(tiny_run: Path) -> None:
    base = tiny_run / "tiny-bert-base"
    recipe = write_recipe(tiny_run, CLASSIFY)
    out = tiny_run / "out"
    result = cli("run", str(base), "-r", str(recipe), "-o", str(out), "--no-progress")
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())  # rich wraps long lines
    assert "classifier.weight, classifier.bias are not in the checkpoint" in message
    assert str(base) in message and "teacher: {finetune: {epochs: 1}}" in message
    assert not (out / "recipe.yaml").exists()  # refused when the run opened, before any stage
    check = cli("recipe", "check", str(recipe), "--model", str(base))
    assert check.exit_code == 2 and "classifier.weight" in " ".join(check.output.split()), check.output
    # The model with its head passes both.
    assert cli("recipe", "check", str(recipe), "--model", str(tiny_run / "tiny-bert")).exit_code == 0
    check = cli("recipe", "check", str(write_recipe(tiny_run, CLASSIFY + FINETUNE, "t.yaml")), "--model", str(base))
    assert check.exit_code == 0 and "teacher: fine-tuned for 30 steps from a new head" in check.output, check.output


def _sentence_transformers_files(folder: Path) -> Path:
    """Make ``folder`` a sentence-transformers model (modules.json, mean pooling), as all-MiniLM-L6-v2 is."""
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling/config.json").write_text('{"word_embedding_dimension": 32, "pooling_mode_mean_tokens": true}')
    return folder


def test_the_teacher_is_finetuned_once_and_the_student_distils_from_it(tiny_run: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    base, out = _sentence_transformers_files(tiny_run / "tiny-bert-base"), tiny_run / "out"
    recipe = write_recipe(tiny_run, NO_ONNX + FINETUNE + "validation: {max_metric_drop: 60.0}\n")
    handed: dict[str, torch.nn.Module] = {}
    real_compress = shrink.compress_model

    def spy(model, teacher_model, *args, **kwargs):
        handed.update(student=type(model)(model.config), teacher=teacher_model)
        handed["student"].load_state_dict(model.state_dict())  # as it starts, before pruning changes it
        return real_compress(model, teacher_model, *args, **kwargs)

    def dies(ctx):
        raise RuntimeError("killed in speedup")

    monkeypatch.setattr(shrink, "compress_model", spy)
    monkeypatch.setattr("hubcompress.pipeline.runner.STAGES",
                        [s if s.name != "speedup" else type(s)("speedup", dies) for s in STAGES])
    with pytest.raises(RuntimeError, match="killed"):
        run_stages(open_run(str(base), recipe, out, progress=False))
    state = json.loads((out / ".hubcompress/state.json").read_text())["stages"]
    assert list(state) == ["teacher", "compress"]
    made = state["teacher"]["result"]
    assert made["source"] == "finetuned" and made["steps"] == 30 and made["missing_head"] == ["classifier.weight",
                                                                                             "classifier.bias"]
    assert made["accuracy"] >= made["majority_baseline"] + 0.05 and made["passed"]
    saved = (out / ".hubcompress/teacher/model.safetensors").read_bytes()
    from safetensors.torch import load_file

    weights = load_file(str(out / ".hubcompress/teacher/model.safetensors"))
    for name in ("classifier.weight", "bert.encoder.layer.0.output.dense.weight"):  # the fine-tuned weights
        assert torch.equal(handed["teacher"].state_dict()[name], weights[name])
        assert torch.equal(handed["student"].state_dict()[name], weights[name])
    assert handed["teacher"].config.id2label == {0: "negative", 1: "positive"}  # the data's classes

    # The rerun resumes after compress, and never trains the teacher again.
    monkeypatch.undo()

    def no_training(*args, **kwargs):
        raise AssertionError("the teacher was trained again")

    monkeypatch.setattr(teacher, "finetune_model", no_training)
    result = run_stages(open_run(str(base), recipe, out, progress=False))
    assert result.skipped == ["teacher", "compress"] and result.ran == ["speedup", "validate", "card"]
    # A run killed after the teacher was saved but before the stage was recorded reloads it too.
    ctx = open_run(str(base), recipe, out, progress=False)
    ctx.state.invalidate_from(["teacher"])
    assert run_stages(ctx).ran == ["teacher"]
    assert (out / ".hubcompress/teacher/model.safetensors").read_bytes() == saved

    report = json.loads((out / "report.json").read_text())
    assert report["teacher"]["source"] == "finetuned" and report["teacher"]["lr"] == 3.0e-3
    # validate measures (and gates the student against) the same fine-tuned teacher
    assert report["quality"]["teacher"]["accuracy"] == report["teacher"]["accuracy"]
    drop = report["gate"]["verdicts"]["student"]["checks"]["accuracy_drop_points"]
    student = report["quality"]["student"]["accuracy"]
    assert drop["value"] == pytest.approx(100 * (report["teacher"]["accuracy"] - student), abs=1e-3)
    # A classifier outputs logits: the base's sentence-transformers modules would make it an embedder.
    assert not (out / "modules.json").exists() and not (out / "1_Pooling").exists()
    card = (out / "README.md").read_text()
    assert "library_name: transformers" in card
    assert "distilled from a teacher fine-tuned from the original model in the same run" in card
    assert "fine-tuned in this run on the training data (30 steps, learning rate 0.003, batch size 16" in card
    assert f"accuracy {report['teacher']['accuracy']:.4f}" in card


def _random_head(tiny_run: Path) -> Path:
    from transformers import BertForSequenceClassification

    folder = Path(shutil.copytree(tiny_run / "tiny-bert", tiny_run / "random-head"))
    config = BertForSequenceClassification.from_pretrained(folder).config
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(folder)  # every weight, the head too, untrained
    return folder


@pytest.mark.parametrize("case", ["random head in the checkpoint", "teacher fine-tuned too little"])
def test_a_teacher_no_better_than_the_majority_class_stops_the_run(tiny_run: Path, case: str) -> None:
    if case == "random head in the checkpoint":
        model, text, advice = _random_head(tiny_run), CLASSIFY, "add `teacher: {finetune: {epochs: 1}}`"
    else:
        model, advice = tiny_run / "tiny-bert-base", "Fine-tune it longer"
        text = CLASSIFY + "teacher: {finetune: {steps: 1, lr: 1.0e-6, batch_size: 16}}\n"
    out = tiny_run / "out"
    result = cli("run", str(model), "-r", str(write_recipe(tiny_run, text)), "-o", str(out), "--no-progress")
    assert result.exit_code == 1, result.output
    message = " ".join(result.output.split())
    assert "majority-class baseline 50.0%" in message and "validation.min_teacher_margin 5" in message
    assert advice in message
    report = json.loads((out / "report.json").read_text())
    assert not report["gate"]["passed"] and "majority-class baseline" in report["gate"]["reasons"][0]
    assert report["teacher"]["majority_baseline"] == 0.5 and not report["teacher"]["passed"]
    state = out / ".hubcompress/state.json"  # no stage finished: nothing compressed
    assert not state.exists() or json.loads(state.read_text())["stages"] == {}
    assert not (out / "model.safetensors").exists()


def test_float16_weights_are_trained_in_float32(tiny_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import BertModel

    folder = Path(shutil.copytree(tiny_run / "tiny-bert-base", tiny_run / "half"))
    BertModel.from_pretrained(folder).half().save_pretrained(folder)
    seen: dict[str, object] = {}
    real_compress, real_loop = shrink.compress_model, compress.training_func

    def spy_compress(model, teacher_model, *args, **kwargs):
        seen.update(student=next(model.parameters()).dtype, teacher=next(teacher_model.parameters()).dtype)
        return real_compress(model, teacher_model, *args, **kwargs)

    def spy_loop(*args, **kwargs):
        run = real_loop(*args, **kwargs)

        def wrapped(model, optimizers, training_step, *rest):
            def step(batch, m):
                seen.update(trained=next(m.parameters()).dtype, autocast=torch.is_autocast_enabled("cpu"))
                return training_step(batch, m)
            return run(model, optimizers, step, *rest)
        return wrapped

    monkeypatch.setattr(shrink, "compress_model", spy_compress)
    monkeypatch.setattr(compress, "training_func", spy_loop)
    recipe = write_recipe(tiny_run, EMBED.replace("export: {int8: dynamic}", "export: {onnx: false, int8: none}"))
    out = tiny_run / "out"
    result = cli("run", str(folder), "-r", str(recipe), "-o", str(out), "--no-progress")
    assert result.exit_code == 0, result.output
    assert seen == {"student": torch.float32, "teacher": torch.float32, "trained": torch.float32, "autocast": False}
    report = json.loads((out / "report.json").read_text())
    assert report["dtype"] == {"stored": "float16", "weights": "float32", "autocast": None, "exported": "float32"}
    assert "the base model stores its weights in float16; training and evaluation ran in float32" in \
        (out / "README.md").read_text()


def test_bfloat16_trains_float32_weights_under_autocast(tiny_run: Path) -> None:
    from transformers import AutoTokenizer, BertModel

    from hubcompress.pipeline.batches import Encoded

    folder = tiny_run / "tiny-bert-base"
    model, teacher_model = BertModel.from_pretrained(folder), BertModel.from_pretrained(folder)
    train = Encoded(AutoTokenizer.from_pretrained(folder), ["good film", "the plot was awful"] * 8, max_length=16)
    recipe = parse_recipe("task: feature-extraction\ndata: {dataset: bbcnews}\ndistillation: {}\n"
                          "training: {steps: 2, batch_size: 8, dtype: bfloat16}\n")
    seen = []
    hook = model.encoder.layer[0].output.dense.register_forward_hook(
        lambda module, args, output: seen.append((module.weight.dtype, output.dtype)))
    result = compress.compress_model(model, teacher_model.requires_grad_(False), recipe, train, progress=False,
                                     precision=Precision(autocast=torch.bfloat16))
    hook.remove()
    assert result.steps == 2 and seen and set(seen) == {(torch.float32, torch.bfloat16)}
    assert next(model.parameters()).dtype == torch.float32


def test_without_safetensors_the_configs_architectures_decide(tiny_run: Path, tmp_path: Path) -> None:
    from transformers import AutoConfig

    from hubcompress.pipeline.heads import missing_head

    for name, expected in (("tiny-bert-base", ["classifier.weight", "classifier.bias"]), ("tiny-bert", [])):
        folder = tmp_path / name
        folder.mkdir()
        shutil.copy(tiny_run / name / "config.json", folder)  # e.g. a pytorch_model.bin checkpoint: no headers
        config = AutoConfig.from_pretrained(folder)
        assert missing_head(folder, config, "AutoModelForSequenceClassification") == expected, name
