"""What a run has finished, kept in ``<output>/.hubcompress/state.json`` so a rerun resumes.

A stage counts as done only once its outputs are in place and its entry is written; the state
file itself is replaced atomically. A rerun with another recipe or model refuses to mix the two
runs' artifacts (``--fresh`` starts over).

Example:
    >>> import tempfile, pathlib
    >>> state = RunState.open(pathlib.Path(tempfile.mkdtemp()), digest="abc", source="org/m")
    >>> state.finish("compress", {"steps": 10}, seconds=1.5)
    >>> RunState.open(state.output, digest="abc", source="org/m").done("compress")
    True
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..atomic import remove_temporaries, write_json_atomic
from ..errors import OutputFolderError

logger = logging.getLogger(__name__)

WORK_DIR = ".hubcompress"


def recipe_digest(recipe_json: str, source: str, revision: str | None) -> str:
    """Identifies a run: the resolved recipe plus the model it was run on."""
    return hashlib.sha256(f"{recipe_json}\n{source}\n{revision}".encode()).hexdigest()[:16]


@dataclass
class RunState:
    output: Path
    digest: str
    source: str
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)
    recipe_dir: str | None = None  # where relative data paths of the recipe resolve
    writer: bool = True  # False on ranks other than 0 of a launched run: rank 0 alone writes the state

    @property
    def path(self) -> Path:
        return self.output / WORK_DIR / "state.json"

    @property
    def work(self) -> Path:
        """Where intermediate stage outputs live (not published)."""
        return self.output / WORK_DIR

    @classmethod
    def open(cls, output: Path, *, digest: str, source: str, fresh: bool = False, adopt: bool = False) -> RunState:
        """The folder's state; ``adopt`` takes the saved run whatever its digest (the folder's own
        recipe.yaml is being rerun, possibly read by a newer schema)."""
        state = cls(Path(output), digest, source)
        if fresh and state.work.exists():
            shutil.rmtree(state.work)
        removed = remove_temporaries(output)
        if removed:
            logger.warning("removed %d temporary file(s) an interrupted run left in %s: %s", len(removed), output,
                           ", ".join(removed[:5]))
        if state.path.exists():
            saved = json.loads(state.path.read_text())
            if adopt:
                state.digest = saved.get("digest", digest)
            elif saved.get("digest") != digest:
                raise OutputFolderError(
                    f"{output} holds a run of another recipe or model ({saved.get('source')}); resuming would mix "
                    "the two. Pass another --output, or --fresh to start this folder over.")
            state.stages = saved.get("stages", {})
            state.recipe_dir = saved.get("recipe_dir")
        return state

    def done(self, stage: str) -> bool:
        return bool(self.stages.get(stage, {}).get("done"))

    def result(self, stage: str) -> dict[str, Any]:
        return self.stages.get(stage, {}).get("result", {})

    def finish(self, stage: str, result: dict[str, Any], *, seconds: float) -> None:
        self.stages[stage] = {"done": True, "result": result, "seconds": round(seconds, 2),
                              "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        self.save()

    def invalidate_from(self, stages: list[str]) -> None:
        """Forget ``stages`` (a stage redone makes the ones after it stale)."""
        for name in stages:
            self.stages.pop(name, None)
        self.save()

    def save(self) -> None:
        if not self.writer:
            return
        write_json_atomic(self.path, {"digest": self.digest, "source": self.source, "recipe_dir": self.recipe_dir,
                                      "stages": self.stages})
