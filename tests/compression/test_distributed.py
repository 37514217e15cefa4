"""Two CPU processes (torch.distributed, gloo) train one fused recipe on different data: masks
and quantization scales agree across ranks, and PTQ ranges cover every rank's data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("dist_worker.py")
ROOT = Path(__file__).resolve().parents[2]


def test_two_ranks_agree_on_masks_and_scales(tmp_path):
    env = {**os.environ, "WORLD_SIZE": "2", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    logs = [tmp_path / f"rank{r}.log" for r in range(2)]  # files, not pipes: a full pipe would stall a rank
    files = [log.open("w") for log in logs]
    procs = [subprocess.Popen([sys.executable, str(WORKER), str(tmp_path)], env={**env, "RANK": str(r)},
                              stdout=files[r], stderr=subprocess.STDOUT) for r in range(2)]
    try:
        for p in procs:
            p.wait(timeout=180)
    finally:
        for p, f in zip(procs, files):
            if p.poll() is None:
                p.kill()
            f.close()
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log.read_text()[-3000:]
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2))
    assert r0["local_min"] != r1["local_min"]  # the ranks really saw different data
    differing = [k for k in r0["masks"] if r0["masks"][k] != r1["masks"].get(k)]
    assert not differing and len(r0["masks"]) == 5, differing  # weights, biases and the activation
    assert sum(r0["masks"]["4._input_"]) == 16
    differing = {k: (v, r1["scales"].get(k)) for k, v in r0["scales"].items() if v != r1["scales"].get(k)}
    assert not differing and len(r0["scales"]) == 6, differing
    # PTQ's range is the union of both ranks' data (all-reduced min / max), the same on both.
    assert r0["ptq_min"] == r1["ptq_min"] == pytest.approx(min(r0["local_min"], r1["local_min"]))
    assert r0["ptq_max"] == r1["ptq_max"] == pytest.approx(max(r0["local_max"], r1["local_max"]))
