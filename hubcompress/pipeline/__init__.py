"""The pipeline behind ``hubcompress run``: one module knows the order of the stages.

    teacher → compress → speedup → export → validate → card → push

Example:
    >>> from hubcompress.pipeline import STAGE_NAMES
    >>> STAGE_NAMES
    ['teacher', 'compress', 'speedup', 'export', 'validate', 'card', 'push']
"""

from __future__ import annotations

from .runner import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_GATE,
    EXIT_OK,
    STAGE_NAMES,
    STAGES,
    RunResult,
    open_run,
    reopen,
    run_pipeline,
    run_stages,
)

__all__ = ["EXIT_BAD_INPUT", "EXIT_FAILED", "EXIT_GATE", "EXIT_OK", "STAGES", "STAGE_NAMES", "RunResult",
           "open_run", "reopen", "run_pipeline", "run_stages"]
