"""Run an output folder's model card the way a reader would: push the folder to a local Hub-API
server (the test suite's fake hub), then run each ```python block of its README.md by repo id in a
fresh process that cannot import hubcompress. Prints one line per snippet and exits 1 if any fails.

    .venv/bin/python benchmarks/card_snippets.py out/demo

The card names the repo it was written for (``--push-to-hub`` / ``push.repo_id``, else the folder's
name); the folder is pushed under that id.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "hub"))

from consumers import consumer_env, python_blocks, run_without_hubcompress  # noqa: E402
from fake_hub import FakeHub  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    args = parser.parse_args()
    card = (args.folder / "README.md").read_text()
    blocks = python_blocks(card)
    repo = re.search(r'from_pretrained\("([^"]+)"', card) or re.search(r'SentenceTransformer\("([^"]+)"', card)
    if repo is None or not blocks:
        print(f"{args.folder}/README.md has no python snippet naming a repo")
        return 1
    repo_id = repo.group(1) if "/" in repo.group(1) else f"tester/{repo.group(1)}"
    with tempfile.TemporaryDirectory() as tmp, FakeHub(Path(tmp) / "hub", lfs_threshold=1024) as hub:
        os.environ.update(HF_ENDPOINT=hub.endpoint, HF_TOKEN="hf_fake", HF_HUB_OFFLINE="0", HF_HUB_DISABLE_XET="1")
        from huggingface_hub import HfApi

        api = HfApi(endpoint=hub.endpoint, token="hf_fake")
        api.create_repo(repo_id, exist_ok=True)
        api.upload_folder(folder_path=str(args.folder), repo_id=repo_id, ignore_patterns=[".hubcompress/*"])
        env = consumer_env(hub, Path(tmp) / "home")
        work = Path(tmp) / "work"
        work.mkdir()
        failed = 0
        for index, block in enumerate(blocks):
            code = block.replace(f'"{repo.group(1)}"', f'"{repo_id}"')
            start = time.perf_counter()
            done = run_without_hubcompress(code, env, work)
            status = "ok" if done.returncode == 0 else "FAILED"
            first = next((line for line in code.splitlines() if "from_pretrained" in line or "Session" in line
                          or "SentenceTransformer(" in line), code.splitlines()[0])
            print(f"snippet {index + 1}: {status} in {time.perf_counter() - start:.1f} s  ({first.strip()[:80]})")
            if done.returncode:
                failed += 1
                print(done.stderr[-2000:])
        return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
