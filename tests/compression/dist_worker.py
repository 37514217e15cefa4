"""One rank of the 2-process test (run by test_distributed.py, not collected by pytest).

Each rank trains the same model on its own data through DistributedDataParallel (gloo, CPU)
with Taylor + AGP pruning and QAT fused, then calibrates a fresh model with PTQ; it writes its
masks, scales and local data ranges to ``<out>/rank<r>.json``.
"""

from __future__ import annotations

import json
import os
import sys

import torch
import torch.distributed as dist
from torch import nn

from hubcompress.compression import AGPPruner, PtqQuantizer, QATQuantizer, TaylorPruner, TorchEvaluator


def model() -> nn.Module:
    torch.manual_seed(0)  # the same initial weights on every rank
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))


def batches(rank: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(100 + rank)  # each rank sees other data, on another scale
    return [(torch.randn(16, 16, generator=g) * (1 + rank), torch.randint(0, 4, (16,), generator=g)) for _ in range(4)]


def main(out: str) -> None:
    # A file rendezvous: no TCP port to pick (and race for) up front.
    dist.init_process_group("gloo", init_method=f"file://{os.path.join(out, 'rendezvous')}",
                            rank=int(os.environ["RANK"]), world_size=int(os.environ["WORLD_SIZE"]))
    rank = dist.get_rank()
    data = batches(rank)

    def training_func(model, optimizers, training_step, lr_schedulers, max_steps, max_epochs):
        ddp = nn.parallel.DistributedDataParallel(model, broadcast_buffers=False)
        for i in range(max_steps):
            optimizers.zero_grad()
            training_step(data[i % len(data)], ddp).backward()
            optimizers.step()

    def step(batch, m):
        return nn.functional.cross_entropy(m(batch[0]), batch[1])

    net = model()
    evaluator = TorchEvaluator(training_func, torch.optim.SGD(net.parameters(), lr=0.05), step)
    taylor = TaylorPruner(net, [{"op_names": ["0", "2"], "sparse_ratio": 0.5},
                                {"op_names": ["4"], "target_names": ["_input_"], "sparse_ratio": 0.5}],
                          evaluator, training_steps=2)
    pruner = AGPPruner(taylor, interval_steps=2, total_times=2)
    quantizer = QATQuantizer.from_compressor(pruner, [{"op_types": ["Linear"], "target_names": ["_input_", "weight"],
                                                       "quant_dtype": "int8"}])
    quantizer.compress(max_steps=6)
    masks = {f"{m}.{t}": mask.contiguous().flatten().tolist() for m, ts in taylor.get_masks().items()
             for t, mask in ts.items()}
    scales = {f"{m}.{t}": e["scale"].flatten().tolist() for m, ts in quantizer.get_calibration_config().items()
              for t, e in ts.items()}

    net2 = model()
    ptq = PtqQuantizer(net2, [{"op_names": ["0"], "target_names": ["_input_"], "quant_dtype": "uint8"}],
                       TorchEvaluator(training_func, torch.optim.SGD(net2.parameters(), lr=0.05), step))
    _, calibration = ptq.compress(max_steps=4)
    entry = calibration["0"]["_input_"]
    result = {"masks": masks, "scales": scales, "ptq_min": float(entry["tracked_min"]),
              "ptq_max": float(entry["tracked_max"]), "local_min": min(float(x.min()) for x, _ in data),
              "local_max": max(float(x.max()) for x, _ in data)}
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump(result, f)
    dist.barrier()
    # Leave without running C++ destructors: on a loaded machine gloo's threads sometimes abort
    # the process at teardown ("terminate called without an active exception"), after the work.
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1])
