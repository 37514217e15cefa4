"""`torchrun --nproc-per-node 2 -m hubcompress run ...` on two CPU processes (gloo), on the tiny model:
one complete output folder, the same masks on both ranks, the metrics of one process with the same
global batch; a rank killed in the compress stage fails the run without a half-written file, and
the same command then resumes and finishes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hubcompress.atomic import is_temporary
from hubcompress.pipeline import run_pipeline
from hubcompress.pipeline.artifacts import load_nested

from .conftest import write_recipe

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds a rank's process in /proc"),
              pytest.mark.timeout(300)]

# Taylor + AGP pruning, QAT and distillation: every compressor that decides from data. No ONNX export
# (its check is the one-process tests' business): the distributed part ends with compress.
RECIPE = """\
task: text-classification
data:
  files: {{train: data/train.jsonl, validation: data/validation.jsonl}}
  max_length: 16
pruning: {{pruner: TaylorPruner, heads: 0.5, ffn: 0.5, schedule: {{kind: agp, interval_steps: 2, total_times: 2}}}}
quantization: {{quantizer: QATQuantizer}}
distillation: {{distiller: DynamicLayerwiseDistiller}}
training: {{steps: {steps}, lr: 1.0e-3, batch_size: {batch}, device: cpu}}{teacher}
export: {{onnx: false}}
card: {{base_model: tester/tiny-bert, license: apache-2.0}}
"""


# From a base model without the head: the teacher's fine-tuning is data-parallel too.
TEACHER = "\nteacher: {finetune: {steps: 30, lr: 3.0e-3, batch_size: 8}}"


def _torchrun(inputs: Path, recipe: Path, output: Path, log: Path, model: str = "tiny-bert") -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1", "HUBCOMPRESS_DIST_TIMEOUT": "120", "HF_HUB_OFFLINE": "1"}
    # --standalone: a rendezvous on a free local port, so parallel test runs cannot collide.
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "hubcompress", "run", str(inputs / model), "--recipe", str(recipe), "--output", str(output),
               "--no-progress"]
    # A file, not a pipe: a full pipe would stall a rank.
    return subprocess.Popen(command, cwd=inputs, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)


def _finish(process: subprocess.Popen, log: Path, timeout: float = 240) -> int:
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        raise AssertionError(f"torchrun did not finish in {timeout} s:\n{log.read_text()[-3000:]}") from None


def _temporaries(folder: Path) -> list[str]:
    return [str(p.relative_to(folder)) for p in folder.rglob(".*") if is_temporary(p.name)]


def test_two_processes_write_one_folder_with_the_metrics_of_one(tiny_run: Path, tmp_path: Path) -> None:
    log, output = tmp_path / "torchrun.log", tmp_path / "two"
    code = _finish(_torchrun(tiny_run, write_recipe(tiny_run, RECIPE.format(steps=8, batch=8, teacher=""), "two.yaml"),
                             output, log), log)
    assert code == 0, log.read_text()[-4000:]
    text = log.read_text()
    assert text.count("compress: running") == 1  # rank 0 speaks for the run
    report = json.loads((output / "report.json").read_text())
    assert report["complete"] and report["gate"]["passed"]
    assert report["distributed"] == {"world_size": 2, "backend": "gloo", "global_batch_size": 16,
                                     "masks_agree": True, "weights_agree": True}
    assert report["hardware"]["processes"] == 2 and report["hardware"]["gpus"] == 0
    for name in ("config.json", "model.safetensors", "hubcompress.json", "recipe.yaml", "README.md"):
        assert (output / name).is_file(), name
    assert "2 processes on 1 machine (torch.distributed, gloo), global batch 16" in (output / "README.md").read_text()
    assert not _temporaries(output)

    # One process, the same global batch (16 rows a step): the same rows, the same masks, the same metrics.
    recipe = write_recipe(tiny_run, RECIPE.format(steps=8, batch=16, teacher=""), "one.yaml")
    one = run_pipeline(str(tiny_run / "tiny-bert"), recipe, tmp_path / "one", progress=False).report
    assert one["distributed"] == {"world_size": 1, "backend": None, "global_batch_size": 16, "masks_agree": None,
                                  "weights_agree": None}
    masks_two, masks_one = (load_nested(folder / ".hubcompress/compressed", "masks")
                            for folder in (output, tmp_path / "one"))
    assert masks_two.keys() == masks_one.keys()
    kept = {m: {t: int(v.sum()) for t, v in ts.items()} for m, ts in masks_two.items()}
    assert kept == {m: {t: int(v.sum()) for t, v in ts.items()} for m, ts in masks_one.items()}
    assert report["compression"]["loss_last"] == pytest.approx(one["compression"]["loss_last"], rel=0.05)
    assert report["speedup"]["params_after"] == one["speedup"]["params_after"]
    for name, metrics in one["quality"].items():
        for key, value in metrics.items():
            assert report["quality"][name][key] == pytest.approx(value, abs=0.05), (name, key)


def _rank_pid(launcher: int, rank: int) -> int | None:
    """The pid of the worker of ``rank`` among the launcher's children (its environment says RANK)."""
    for task in Path(f"/proc/{launcher}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                environment = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if f"RANK={rank}".encode() in environment:
                return int(child)
    return None


def test_a_killed_rank_fails_the_run_cleanly_and_a_rerun_resumes(tiny_run: Path, tmp_path: Path) -> None:
    if not Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").exists():
        pytest.skip("this kernel does not list a process's children in /proc")
    recipe = write_recipe(tiny_run, RECIPE.format(steps=60, batch=8, teacher=TEACHER))
    log, output = tmp_path / "killed.log", tmp_path / "out"
    process = _torchrun(tiny_run, recipe, output, log, "tiny-bert-base")
    deadline = time.time() + 180
    while "compress: running" not in log.read_text():
        assert process.poll() is None and time.time() < deadline, log.read_text()[-3000:]
        time.sleep(0.1)
    time.sleep(0.5)  # into the training loop
    pid = _rank_pid(process.pid, 1)
    assert pid is not None, log.read_text()[-3000:]
    os.kill(pid, signal.SIGKILL)
    assert _finish(process, log) != 0
    text = log.read_text()
    assert "compress: done" not in text, text[-3000:]
    # Nothing claims a compressed model: no checkpoint, compress not recorded, the report says unfinished.
    state = json.loads((output / ".hubcompress/state.json").read_text())
    assert state["stages"]["teacher"]["result"]["processes"] == 2 and "compress" not in state["stages"]
    assert (output / ".hubcompress/teacher/model.safetensors").is_file()  # the fine-tuned teacher, whole
    report = json.loads((output / "report.json").read_text())
    assert report["complete"] is False and report["distributed"] is None
    assert not (output / "model.safetensors").exists() and not (output / ".hubcompress/compressed").exists()
    assert not _temporaries(output)

    rerun = tmp_path / "rerun.log"
    code = _finish(_torchrun(tiny_run, recipe, output, rerun, "tiny-bert-base"), rerun)
    text = rerun.read_text()
    assert code == 0, text[-4000:]
    assert "teacher: skipped (done)" in text and "compress: done" in text
    report = json.loads((output / "report.json").read_text())
    assert report["complete"] and report["distributed"]["masks_agree"] and report["distributed"]["weights_agree"]
    assert report["compression"]["steps"] == 60


def test_depth_pruning_under_two_processes_drops_the_layers_one_process_drops(tiny_run: Path, tmp_path: Path) -> None:
    # A count: each rank ranks the layers by block influence on its own; the ranks must agree, and
    # with one process.
    text = RECIPE.format(steps=6, batch=8, teacher="").replace("pruner: TaylorPruner,", "pruner: TaylorPruner, drop_layers: 1,")
    assert "drop_layers: 1" in text
    log, output = tmp_path / "depth.log", tmp_path / "two"
    code = _finish(_torchrun(tiny_run, write_recipe(tiny_run, text, "depth-two.yaml"), output, log), log)
    assert code == 0, log.read_text()[-4000:]
    report = json.loads((output / "report.json").read_text())
    assert report["distributed"]["masks_agree"] is True and report["distributed"]["weights_agree"] is True
    depth = report["compression"]["depth"]
    assert depth["chosen_by"] == "block influence" and len(depth["dropped"]) == 1
    one = run_pipeline(str(tiny_run / "tiny-bert"), write_recipe(tiny_run, text, "depth-one.yaml"), tmp_path / "one",
                       progress=False).report
    assert one["compression"]["depth"]["dropped"] == depth["dropped"]
    assert json.loads((output / "config.json").read_text())["num_hidden_layers"] == depth["layers_before"] - 1
