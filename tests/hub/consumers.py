"""Run code as someone who downloads our models would: a fresh process that has never heard of hubcompress.

The people we publish for load a repo by id with their own tools (transformers, sentence-transformers,
huggingface_hub + ONNX Runtime). These helpers let a test do the same against the fake hub:

- `consumer_env`: the environment of such a process (hub, caches, token, nothing inherited that
  would send it elsewhere);
- `run_without_hubcompress`: runs code in it, with the project's packages made unimportable;
- `python_blocks`: the ```python blocks of a model card, to run them as a reader would paste them.

Example:
    >>> python_blocks("Load it:\\n```python\\nprint(1)\\n```\\n")
    ['print(1)\\n']
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from fake_hub import FAKE_TOKEN, FakeHub, hub_environment
REPO_ROOT = Path(__file__).resolve().parents[2]
SNIPPET_FILENAME = "<snippet>"


def _project_packages() -> tuple[str, ...]:
    """The top-level packages this project installs (hubcompress and its leaf packages)."""
    try:
        listed = metadata.distribution("hubcompress").read_text("top_level.txt") or ""
    except metadata.PackageNotFoundError:
        listed = ""
    return tuple(sorted({"hubcompress", *listed.split()}))


BLOCKED_PACKAGES = _project_packages()

# Runs before the code. The editable install's import hook still sits on sys.meta_path, so the
# packages are made unimportable the way CPython spells "absent on purpose": None in sys.modules
# (`import` raises ModuleNotFoundError, importlib.util.find_spec returns None). The code comes in
# argv and gets a linecache entry, and the excepthook prints tracebacks with Python's traceback
# module (the default C printer reads only files on disk), so a failing line is shown, numbered
# as the test wrote it, without this prelude's own frame.
_PRELUDE = """\
import linecache as _hc_linecache, sys as _hc_sys, traceback as _hc_traceback
for _hc_name in {blocked!r}:
    _hc_sys.modules[_hc_name] = None
_hc_code = _hc_sys.argv.pop(1)
_hc_linecache.cache[{filename!r}] = (len(_hc_code), None, _hc_code.splitlines(True), {filename!r})
def _hc_excepthook(kind, error, tb, _print=_hc_traceback.print_exception):
    while tb is not None and tb.tb_frame.f_code.co_filename == "<string>":
        tb = tb.tb_next
    _print(kind, error, tb)
_hc_sys.excepthook = _hc_excepthook
_hc_compiled = compile(_hc_code, {filename!r}, "exec")
del _hc_linecache, _hc_sys, _hc_traceback, _hc_name, _hc_code, _hc_excepthook
exec(_hc_compiled)
"""


def consumer_env(hub: FakeHub, home: Path, *, token: str | None = FAKE_TOKEN) -> dict[str, str]:
    """The environment of a process that loads models from `hub`, with HF_HOME and every cache under `home`.

    Args:
        hub: the running fake hub.
        home: a fresh folder (HF_HOME): the hub cache, transformers' remote-code modules, the token file.
        token: HF_TOKEN; None makes an anonymous client, like most people downloading a public model.

    Returns:
        A complete environment for `subprocess.run(env=...)`: this process's own, minus what would
        point the child at another hub, cache or Python path, plus the fake hub's settings.
    """
    env = {name: value for name, value in os.environ.items() if name not in ("PYTHONPATH", "PYTHONHOME")}
    for name, value in hub_environment(hub, home, token=token).items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    # Progress bars would bury a failing run's traceback in the stderr an assertion shows.
    env.update(HF_HUB_DISABLE_PROGRESS_BARS="1", TOKENIZERS_PARALLELISM="false")
    return env


def run_without_hubcompress(code: str, env: dict[str, str], cwd: Path,
                            timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run `code` with this interpreter in a subprocess where the project's packages cannot be imported.

    `import hubcompress` (and `exporters`, `model_cards`) raises ModuleNotFoundError there; the
    process runs isolated (`-I`: no PYTHONPATH, no current folder on sys.path) from `cwd`, which
    must lie outside the repository. The result is returned whatever the exit status: callers
    assert on it and put `result.stderr` in the assertion message.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     run_without_hubcompress("import hubcompress", dict(os.environ), Path(folder)).returncode
        1
    """
    cwd = Path(cwd).resolve()
    if cwd.is_relative_to(REPO_ROOT):
        raise ValueError(f"run consumers outside the repository ({REPO_ROOT}), not in {cwd}")
    prelude = _PRELUDE.format(blocked=BLOCKED_PACKAGES, filename=SNIPPET_FILENAME)
    return subprocess.run([sys.executable, "-I", "-c", prelude, code], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, check=False)


_FENCE_OPEN = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})\s*(?P<info>[^\n]*)$")
_PYTHON_INFO = {"python", "py", "python3"}


def python_blocks(markdown: str) -> list[str]:
    """The contents of the ```python fenced code blocks of `markdown`, in order (CommonMark fences).

    A block closes at a fence of the same character at least as long as the one that opened it,
    so a ```python example quoted inside a ````markdown block is not taken; the opening fence's
    indentation is removed from the block's lines; an unclosed block runs to the end of the text.
    """
    blocks: list[str] = []
    lines = markdown.splitlines(keepends=True)
    i = 0
    while i < len(lines):
        opening = _FENCE_OPEN.match(lines[i].rstrip("\r\n"))
        i += 1
        if opening is None or (opening["fence"][0] == "`" and "`" in opening["info"]):
            continue
        fence, indent = opening["fence"], len(opening["indent"])
        language = opening["info"].strip().split(" ")[0].strip("{}.").lower() if opening["info"].strip() else ""
        body: list[str] = []
        while i < len(lines):
            stripped = lines[i].rstrip("\r\n")
            closing = stripped.lstrip(" ")
            i += 1
            if (len(stripped) - len(closing) <= 3 and closing.startswith(fence[0] * len(fence))
                    and not closing.strip(fence[0]).strip()):
                break
            body.append(_dedent(lines[i - 1], indent))
        if language in _PYTHON_INFO:
            blocks.append("".join(body))
    return blocks


def _dedent(line: str, width: int) -> str:
    removable = len(line) - len(line.lstrip(" "))
    return line[min(width, removable):]
