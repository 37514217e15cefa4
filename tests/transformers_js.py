"""transformers.js (Node) on an output folder, through benchmarks/transformers_js/compare.py: every ONNX
file loads in its pipeline and gives what onnxruntime gives on the same file. Needs `node` and `npm
install` in benchmarks/transformers_js (not part of .ci/run: the package files are not in git);
without them the check reports that it did not run."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HERE = ROOT / "benchmarks" / "transformers_js"


def available() -> bool:
    return shutil.which("node") is not None and (HERE / "node_modules" / "@huggingface" / "transformers").is_dir()


def check(folder: Path, texts: list | None = None, tmp: Path | None = None) -> bool:
    """True when transformers.js agreed with onnxruntime on every file; False when it could not run here.

    Raises:
        AssertionError: transformers.js failed to load or run a file, or disagreed.
    """
    if not available():
        return False
    sys.path.insert(0, str(HERE))
    try:
        import compare
    finally:
        sys.path.remove(str(HERE))
    args = [str(folder), "--json-out", str((tmp or folder) / "transformers_js.json")]
    if texts is not None:
        (tmp or folder).joinpath("js_texts.json").write_text(json.dumps(texts))
        args += ["--texts", str((tmp or folder) / "js_texts.json")]
    code = compare.main(args)
    summary = json.loads((tmp or folder).joinpath("transformers_js.json").read_text())
    assert code == 0, summary["failures"]
    return True
