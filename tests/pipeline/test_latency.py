"""The validate stage's latency figures: every artifact timed in turns, so a stall hits them alike."""

from __future__ import annotations

import time

from hubcompress.pipeline import validate


def test_artifacts_take_turns_and_a_one_off_stall_does_not_become_the_median(monkeypatch) -> None:
    monkeypatch.setattr(validate.time, "sleep", lambda seconds: None)  # the pause between blocks

    def busy(seconds: float) -> None:  # time.sleep is patched (one module); wait on the clock instead
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            pass
    calls: list[str] = []
    stalls = {"count": 0}

    def runner(name: str, seconds: float):
        def run() -> None:
            calls.append(name)
            if name == "fast" and len([c for c in calls if c == "fast"]) in range(2, 8):
                stalls["count"] += 1
                busy(0.03)  # the first block of "fast" meets a stall of the machine
            busy(seconds)
        return run

    result = validate._latencies_ms({"fast": runner("fast", 0.001), "slow": runner("slow", 0.005)})
    per_block = validate.LATENCY_RUNS + 1  # one untimed warm-up call, then the timed ones
    assert len(calls) == 2 * validate.LATENCY_ROUNDS * per_block
    # The runners alternate in blocks: fast, slow, fast, slow, ...
    blocks = [calls[i] for i in range(0, len(calls), per_block)]
    assert blocks == ["fast", "slow"] * validate.LATENCY_ROUNDS
    assert stalls["count"] == validate.LATENCY_RUNS + 1
    # 1 ms and 5 ms calls (busy waits: never shorter, longer on a loaded machine); the stalled block
    # (31 ms calls) is outvoted by the other rounds, so it is not the fast runner's median.
    assert result["fast"] < 15 and result["slow"] >= 5
