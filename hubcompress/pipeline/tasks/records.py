"""A recipe's data as rows of named columns, read through ``datasets.load_dataset``: local files
(``data.files``: csv / json / jsonl / parquet) or a hub dataset (``data.dataset: org/name``, with
``data.config`` and ``data.revision``; datasets honours ``HF_HUB_OFFLINE`` and its cache). The tasks whose rows are not one text and one
label (token classification's word and tag lists, SQuAD's nested answers) read their data here.

Example:
    >>> import json, pathlib, tempfile
    >>> from hubcompress.recipe import DataSection
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> for split in ("train", "validation"):
    ...     _ = (folder / f"{split}.jsonl").write_text(json.dumps({"tokens": ["Ada", "wrote"], "tags": ["B-PER", "O"]}))
    >>> section = DataSection(files={"train": str(folder / "train.jsonl"), "validation": str(folder / "validation.jsonl")})
    >>> found = load_records(section, {"data.tokens_column": "tokens", "data.tags_column": "tags"})
    >>> found.splits["eval"].rows[0]["tags"], found.splits["eval"].places[0].endswith("validation.jsonl row 1")
    (['B-PER', 'O'], True)
"""

from __future__ import annotations

import json
import logging
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import DataError
from ...recipe import DataSection
from ..data_files import load_dataset

logger = logging.getLogger(__name__)

_HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")


@dataclass
class RecordSplit:
    """One split's rows (only the columns asked for), where each row came from, and datasets'
    column types (``features``: a ``ClassLabel`` names the classes behind integer ids)."""

    rows: list[dict[str, Any]]
    places: list[str]
    features: Any = None


@dataclass
class Records:
    """The ``train`` (None when absent and not needed) and ``eval`` splits, and how cards name the data."""

    splits: dict[str, RecordSplit | None]
    name: str
    dataset_id: str


def _paths(section: DataSection, split: str) -> list[str]:
    value = section.files[split]
    return [value] if isinstance(value, str) else list(value)


def _from_files(section: DataSection, split: str, base_dir: Path | None) -> tuple[Any, list[str]]:
    import datasets

    from ..data_files import read_file, resolve_data_path

    paths = [resolve_data_path(p, split, base_dir) for p in _paths(section, split)]
    if len({p.suffix.lower() for p in paths}) > 1:
        raise DataError(f"data.files.{split}: {', '.join(map(str, paths))}: name files of one format with its suffix.")
    parts = [read_file(path, str(path), split) for path in paths]
    # One place per row: the file and the row within it.
    places = [f"{path.name} row {i}" for path, part in zip(paths, parts) for i in range(1, len(part) + 1)]
    return (parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)), places


def _hub_reader(section: DataSection) -> tuple[Any, set[str]]:
    """Read the hub dataset once (``data.config``, ``data.revision``); a split is then looked up in it.
    Without a ``validation`` split, the ``test`` split is the held-out data (as for the other tasks)."""
    config, revision = getattr(section, "config", None), getattr(section, "revision", None)
    found = load_dataset(section.dataset, name=config, revision=revision,
                  where=f"data.dataset {section.dataset!r}" + (f" (data.config {config!r})" if config else ""))
    available = set(found)

    def read(split: str) -> tuple[Any, list[str]]:
        if split not in available and split == "validation" and "test" in available:
            logger.warning("hub dataset %s has no validation split; evaluating on its test split", section.dataset)
            split = "test"
        if split not in available:
            raise DataError(f"hub dataset {section.dataset!r} has no split {split!r} (data.train_split / "
                            f"data.eval_split); its splits are: {', '.join(sorted(available))}. Set the key.")
        dataset = found[split]
        return dataset, [f"{section.dataset} {split} row {i}" for i in range(1, len(dataset) + 1)]

    return read, available


def _column(value: Any, place: str) -> Any:
    # CSV cells are text: a list column is written as JSON there.
    if isinstance(value, str) and value.lstrip()[:1] in "[{":
        try:
            return json.loads(value)
        except ValueError:
            raise DataError(f"{place}: cannot read {value[:60]!r} as a JSON list or object. Fix the cell.") from None
    return value


def load_records(section: DataSection, columns: dict[str, str], *, base_dir: Path | None = None, seed: int = 0,
                 need_train: bool = True, structured: tuple[str, ...] = ()) -> Records:
    """Read the recipe's train and eval splits, keeping ``columns`` (recipe key -> column name);
    a text cell of a ``structured`` column (lists, objects: CSV has no other way to write them) is read
    as JSON.

    ``max_train_samples`` / ``max_eval_samples`` keep a seeded random subset of rows.

    Raises:
        DataError: no source, a missing file, split or column; the message names the recipe key to fix.
    """
    if section.files:
        missing = [s for s in (section.eval_split,) + ((section.train_split,) if need_train else ())
                   if s not in section.files]
        if missing:
            raise DataError(f"data.files has no split {missing[0]!r} (data.eval_split / data.train_split); it names: "
                            f"{', '.join(section.files)}. Add the file or set the split key in the recipe.")
        read = lambda split: _from_files(section, split, base_dir)  # noqa: E731
        available = set(section.files)
        first = Path(_paths(section, section.train_split if section.train_split in available else section.eval_split)[0])
        name, dataset_id = first.name, first.stem
    elif section.dataset and _HUB_ID.fullmatch(section.dataset):
        read, available = _hub_reader(section)
        available = available | ({"validation"} if "test" in available else set())  # a copy: read keeps its own
        name = dataset_id = section.dataset
    else:
        raise DataError("this task reads data.files (csv / json / jsonl / parquet) or a hub dataset (data.dataset: "
                        f"org/name); the recipe gives {section.dataset!r}. Set one of them.")
    out: dict[str, RecordSplit | None] = {}
    for key, split, limit in (("train", section.train_split, section.max_train_samples),
                              ("eval", section.eval_split, section.max_eval_samples)):
        optional = key == "train" and not need_train
        if optional and available is not None and split not in available:
            out[key] = None
            continue
        try:
            dataset, places = read(split)
        except DataError:
            if not optional:
                raise
            out[key] = None  # a hub dataset without that split: nothing trains on it
            continue
        for recipe_key, column in columns.items():
            if column not in dataset.column_names:
                raise DataError(f"{places[0].rsplit(' row ', 1)[0] if places else split} (split {split!r}) has no "
                                f"column {column!r}; its columns are: {', '.join(dataset.column_names)}. Set "
                                f"{recipe_key} in the recipe.")
        if len(dataset) == 0:
            raise DataError(f"split {split!r} of {name} has no rows. Add rows, or name another split.")
        index = list(range(len(dataset)))
        if limit is not None and limit < len(index):
            index = sorted(random.Random(seed).sample(index, limit))
        wanted = list(dict.fromkeys(columns.values()))
        table = dataset.select_columns(wanted).select(index)
        rows = [{c: _column(row[c], f"{places[i]}, column {c!r}") if c in structured else row[c] for c in wanted}
                for i, row in zip(index, table)]
        out[key] = RecordSplit(rows, [places[i] for i in index], table.features)
    logger.info("data %s: %s train rows, %d eval rows", name,
                len(out["train"].rows) if out["train"] is not None else "no", len(out["eval"].rows))
    return Records(out, name, dataset_id)
