"""The task registry: one entry per task (see ``base.py``); importing this package registers the
built-in ones.

Example:
    >>> from hubcompress.pipeline.tasks import TASKS
    >>> {'feature-extraction', 'text-classification', 'fill-mask', 'text-generation'} <= set(TASKS)
    True
"""

from __future__ import annotations

# each module registers its entry
from . import feature_extraction, text_classification  # noqa: F401
from . import fill_mask, text_generation  # noqa: F401
from . import question_answering, token_classification  # noqa: F401
from . import image_classification  # noqa: F401
from .base import TASKS, Rows, TaskSpec, flat, register_task, stacked

__all__ = ["TASKS", "Rows", "TaskSpec", "flat", "register_task", "stacked"]
