"""A run started by a launcher (torchrun, accelerate launch): one process per device, data-parallel
in the stages that train (teacher, compress), rank 0 alone in the others.

The launcher sets ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` (and the rendezvous address); the
process group is made from them, gloo on CPUs and NCCL on GPUs, each rank on GPU ``LOCAL_RANK``.
Its collectives time out after ``HUBCOMPRESS_DIST_TIMEOUT`` seconds (default 900), so a rank whose
peer hangs fails instead of waiting forever (a peer that dies is noticed at once: its sockets close).

Example (no launcher: one process, nothing to set up):
    >>> launch = start_launch("auto")
    >>> launch.world_size, launch.is_main, launch.backend
    (1, True, None)
"""

from __future__ import annotations

import datetime
import logging
import os
import platform
import signal
import socket
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from ..errors import EXIT_FAILED, RecipeError

logger = logging.getLogger(__name__)

TIMEOUT_ENV = "HUBCOMPRESS_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 900.0  # longer than any wait between two collectives of a sound run (loading a model)
PARALLEL_STAGES = ("teacher", "compress")  # the stages every rank runs; the others run on rank 0 alone


@dataclass(frozen=True)
class Launch:
    """Where this process stands in the run: its rank among ``world_size`` and the backend."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    backend: str | None = None  # None: one process, no process group

    @property
    def parallel(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes files and runs the stages after compress."""
        return self.rank == 0


def timeout_seconds() -> float:
    """The process group's timeout: ``HUBCOMPRESS_DIST_TIMEOUT`` seconds, else 900."""
    value = os.environ.get(TIMEOUT_ENV)
    try:
        return float(value) if value else DEFAULT_TIMEOUT_S
    except ValueError:
        raise RecipeError(f"{TIMEOUT_ENV}={value!r} is not a number of seconds.") from None


def start_launch(device: str) -> Launch:
    """Join the launcher's process group (made once per process), or ``Launch()`` without a launcher.
    ``device`` is the recipe's ``training.device``: NCCL when it runs on GPUs, else gloo."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Launch()
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    cuda = device != "cpu" and torch.cuda.is_available()
    if not dist.is_initialized():
        if cuda:
            if local_rank >= torch.cuda.device_count():
                raise RecipeError(f"LOCAL_RANK {local_rank} but torch sees {torch.cuda.device_count()} GPU(s): start "
                                  "at most one process per GPU (--nproc-per-node), or set training.device: cpu.")
            torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(seconds=timeout_seconds()))
        _exit_on_sigterm()
        logger.info("rank %d of %d joined the process group (%s)", dist.get_rank(), dist.get_world_size(),
                    dist.get_backend())
    ignored = [name for name in ("ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED")
               if os.environ.get(name, "").lower() in ("1", "true")]
    if ignored and rank == 0:
        logger.warning("%s: hubcompress trains data-parallel only (a full copy of the model on every device); "
                       "the accelerate config's sharding is not used", ", ".join(ignored))
    return Launch(dist.get_world_size(), dist.get_rank(), local_rank, str(dist.get_backend()))


def _exit_on_sigterm() -> None:
    # torchrun and accelerate stop the other ranks with SIGTERM when one fails; exiting (rather than
    # dying on the signal) runs the atomic writers' clean-up, so no temporary file is left behind.
    def stop(signum: int, frame: Any) -> None:
        logger.error("rank %s: stopped by the launcher (another process failed); rerun the same command to "
                     "resume from the finished stages", os.environ.get("RANK"))
        raise SystemExit(EXIT_FAILED)

    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, stop)


def device_of(device: str, launch: Launch) -> torch.device:
    """The device this process trains on: ``auto`` and ``cuda`` mean its own GPU (``cuda:LOCAL_RANK``)."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RecipeError("training.device is cuda but torch sees no GPU; set it to auto or cpu.")
    if device == "cuda" and launch.parallel:
        return torch.device("cuda", launch.local_rank)
    return torch.device(device)


def barrier(launch: Launch) -> None:
    """Wait for every rank (a no-op in one process, or once the group is left)."""
    if launch.parallel and dist.is_initialized():
        if dist.get_backend() == "nccl":
            dist.barrier(device_ids=[launch.local_rank])
        else:
            dist.barrier()


def from_main(launch: Launch, value: Any) -> Any:
    """Rank 0's ``value`` (any picklable object) on every rank; ``value`` itself in one process."""
    if not (launch.parallel and dist.is_initialized()):
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def leave(launch: Launch) -> None:
    """After the data-parallel stages: wait for every rank (rank 0 has written their results), then
    leave the process group; rank 0 goes on alone, the others are done."""
    if launch.parallel and dist.is_initialized():
        barrier(launch)
        dist.destroy_process_group()
        if launch.is_main:
            # The other processes of this machine are done: their cores are rank 0's for the stages
            # it runs alone (torchrun gives each process cores / processes threads; validation took
            # twice as long on the demo without this).
            local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
            torch.set_num_threads(min(os.cpu_count() or 1, torch.get_num_threads() * local))


def cpu_name() -> str:
    """The CPU's model name (latencies mean little without it).

    Example:
        >>> isinstance(cpu_name(), str)
        True
    """
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _this_machine(device: torch.device) -> dict[str, Any]:
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return {"host": socket.gethostname(), "cpu": cpu_name(), "gpu": gpu}


def hardware(launch: Launch, device: torch.device) -> dict[str, Any]:
    """What the training ran on, over every rank: ``{"cpu", "gpu", "gpus", "processes", "nodes"}``
    (``gpu`` None on CPUs). A collective under a launcher: every rank must call it.

    Example:
        >>> info = hardware(Launch(), torch.device("cpu"))
        >>> info["gpu"], info["gpus"], info["processes"], info["nodes"]
        (None, 0, 1, 1)
    """
    mine = _this_machine(device)
    every = [mine]
    if launch.parallel and dist.is_initialized():
        every = [None] * launch.world_size
        dist.all_gather_object(every, mine)
    gpus = [m["gpu"] for m in every if m["gpu"]]
    return {"cpu": mine["cpu"], "gpu": ", ".join(sorted(set(gpus))) or None, "gpus": len(gpus),
            "processes": len(every), "nodes": len({m["host"] for m in every})}
