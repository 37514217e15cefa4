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

logger = logging.getLogger(__name__)

# datasets' packaged builder for each file suffix.
BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
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


def _load(*args: Any, where: str, **kwargs: Any) -> Any:
    import datasets

    try:
        return datasets.load_dataset(*args, **kwargs)
    except FileNotFoundError as error:
        raise DataError(f"{where}: not found ({error}). Fix the path or the hub id.") from None
    except Exception as error:  # noqa: BLE001 - datasets raises many types; all mean "cannot read it"
        cause = error.__cause__ or error.__context__ or error
        detail = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        raise DataError(f"{where}: cannot read it ({type(error).__name__}: {detail}). Fix the data, or check the "
                        "hub id and the network (HF_HUB_OFFLINE=1 reads only the datasets cache).") from None


def _paths(section: DataSection, split: str) -> list[str]:
    value = section.files[split]
    return [value] if isinstance(value, str) else list(value)


def _from_files(section: DataSection, split: str, base_dir: Path | None) -> tuple[Any, list[str]]:
    from ..data_files import resolve_data_path

    paths = [resolve_data_path(p, split, base_dir) for p in _paths(section, split)]
    builders = {BUILDERS.get(p.suffix.lower()) for p in paths}
    if None in builders or len(builders) > 1:
        raise DataError(f"data.files.{split}: {', '.join(map(str, paths))}: name files of one format with its suffix "
                        f"({', '.join(BUILDERS)}).")
    where = f"data.files.{split} ({', '.join(map(str, paths))})"
    dataset = _load(builders.pop(), data_files={split: [str(p) for p in paths]}, split=split, where=where)
    # One place per row: the file and the row within it (datasets concatenates the files in order).
    places = []
    for path in paths:
        count = len(_load(BUILDERS[path.suffix.lower()], data_files={split: [str(path)]}, split=split, where=where)) \
            if len(paths) > 1 else len(dataset)
        places += [f"{path.name} row {i}" for i in range(1, count + 1)]
    return dataset, places


def _hub_reader(section: DataSection) -> tuple[Any, set[str]]:
    """Read the hub dataset once (``data.config``, ``data.revision``); a split is then looked up in it.
    Without a ``validation`` split, the ``test`` split is the held-out data (as for the other tasks)."""
    config, revision = getattr(section, "config", None), getattr(section, "revision", None)
    found = _load(section.dataset, name=config, revision=revision,
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
