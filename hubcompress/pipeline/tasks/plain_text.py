"""What the language-model tasks share: they learn from plain texts (no label column), and their rows,
metrics and parity are per target token (:mod:`.lm_rows`).

Example:
    >>> from hubcompress.recipe import DataSection
    >>> plain_section(DataSection(files={"validation": "v.jsonl"})).label_column is None
    True
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hubcompress.recipe import DataSection

if TYPE_CHECKING:
    from ..context import RunContext


def plain_section(section: DataSection) -> DataSection:
    """The data section with its label column ignored: a language model's labels are its tokens."""
    return section.model_copy(update={"label_column": None})


def load_plain_texts(ctx: RunContext) -> Any:
    """The recipe's data (files, a built-in or hub dataset) as texts only; a train split only when the
    recipe trains."""
    from ..compress import needs_training
    from ..data import load_task_data

    return load_task_data(plain_section(ctx.recipe.data), base_dir=ctx.recipe_dir, seed=ctx.recipe.training.seed,
                          need_train=needs_training(ctx.recipe))
