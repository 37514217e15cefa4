"""Every shell command in the README runs, against a tiny model, so the README cannot drift.

The ```bash blocks are read from README.md; `make ...` lines (the set-up commands, which are the
suite itself) and commands that need a hub (`push`) are left out, `[...]` options are dropped, and
the commands run as written in a scratch folder where `recipes/minilm-embed.yaml` is the shipped
recipe on the tiny stand-in (tests/pipeline/stand_in.py) and the model id names the tiny model.
`serve` starts in the background on a free port; the `curl` lines then talk to it.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.pipeline.conftest import make_tiny_run_inputs
from tests.pipeline.stand_in import ROOT, write_stand_in

BIN = Path(sys.executable).parent
NEEDS_A_HUB = ("hubcompress push",)


def readme_commands(text: str) -> list[str]:
    """The commands of the README's ```bash blocks: continuations joined, comments and [options] dropped.

    Example:
        >>> readme_commands("```bash\\nhubcompress run m \\\\\\n  --output o [--push-to-hub x]  # hi\\nmake test\\n```\\n")
        ['hubcompress run m --output o']
    """
    commands = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#.*$", "", line)  # a comment after the command (quotes hold no " #" here)
            line = re.sub(r"\s*\[--[^\]]*\]", "", line).strip()  # [--optional flags], not JSON lists
            if line and not line.startswith("make ") and not line.startswith(NEEDS_A_HUB):
                commands.append(" ".join(line.split()))
    return commands


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_ready(port: int, server: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"the server exited: {server.stdout.read() if server.stdout else ''}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise AssertionError("the server did not become ready")


@pytest.mark.skipif(shutil.which("curl") is None, reason="the README's serving commands use curl")
def test_every_readme_command_runs(tmp_path: Path) -> None:
    commands = readme_commands((ROOT / "README.md").read_text())
    assert any(c.startswith("hubcompress run") for c in commands) and any("serve" in c for c in commands)
    work = tmp_path / "work"
    inputs = make_tiny_run_inputs(tmp_path / "inputs")
    write_stand_in(ROOT / "recipes/minilm-embed.yaml", inputs, work / "recipes/minilm-embed.yaml")
    (work / ".venv").mkdir()
    (work / ".venv/bin").symlink_to(BIN)  # the README's `.venv/bin/hubcompress` lines
    port = str(_free_port())
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "COLUMNS": "40", "HF_HUB_OFFLINE": "1"}
    server = None
    try:
        for command in commands:
            command = command.replace("sentence-transformers/all-MiniLM-L6-v2", str(inputs / "tiny-bert"))
            command = command.replace("8080", port)
            args = shlex.split(command)
            if args[0] == "python":
                args[0] = sys.executable
            if "serve" in args:
                server = subprocess.Popen(args, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                          text=True)
                _wait_ready(int(port), server)
                continue
            done = subprocess.run(args, cwd=work, env=env, capture_output=True, text=True, timeout=600)
            assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
            if args[0] == "curl":
                assert done.stdout.strip().startswith("{") and '"error"' not in done.stdout, (command, done.stdout)
            assert "Traceback" not in done.stdout + done.stderr, command
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
    assert (work / "out/demo/onnx/model_quantized.onnx").exists()
    assert (work / "model_repository/demo/config.pbtxt").exists()
