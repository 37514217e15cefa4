"""A hub dataset (``data.dataset: org/name``, with ``data.config`` and ``data.revision``) read
through ``datasets.load_dataset``: its split names, the datasets cache, ``HF_HUB_OFFLINE`` and
private repos (the token of ``huggingface-cli login``) all work as datasets makes them work.

Example (a local folder laid out like a dataset repository loads the same way):
    >>> import json, os, pathlib, tempfile
    >>> from hubcompress.recipe import DataSection
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> (root / "org" / "films").mkdir(parents=True)
    >>> for split in ("train", "test"):
    ...     _ = (root / "org" / "films" / f"{split}.jsonl").write_text(json.dumps({"text": "good", "label": 1}))
    >>> previous = os.getcwd()
    >>> os.chdir(root)
    >>> splits, names = hub_splits(DataSection(dataset="org/films"), need_train=True)
    >>> os.chdir(previous)
    >>> sorted(splits), splits["validation"].places, names
    (['train', 'validation'], ['org/films test row 1'], None)
"""

from __future__ import annotations

import logging
from typing import Any

from hubcompress.errors import DataError
from hubcompress.recipe import DataSection

from .data_files import RawSplit, raw_split

logger = logging.getLogger(__name__)


def _load(section: DataSection) -> Any:
    import datasets

    shown = f"hub dataset {section.dataset!r}" + (f" (config {section.config!r})" if section.config else "")
    try:
        return datasets.load_dataset(section.dataset, name=section.config, revision=section.revision)
    except Exception as error:  # noqa: BLE001 - offline, missing repo, auth, bad config: one answer for the user
        detail = (str(error).strip().splitlines() or [""])[0]
        raise DataError(f"data.dataset: could not load {shown} ({type(error).__name__}: {detail}). Check the id, "
                        "data.config and data.revision and the network (HF_HUB_OFFLINE=1 reads only the datasets "
                        "cache), or use data.files with local files instead.") from None


def _pick_eval(available: list[str], section: DataSection) -> str:
    if section.eval_split in available:
        return section.eval_split
    if section.eval_split == "validation" and "test" in available:
        # Many hub datasets publish only train and test; test is then the held-out data.
        logger.warning("hub dataset %s has no validation split; evaluating on its test split", section.dataset)
        return "test"
    raise DataError(f"hub dataset {section.dataset!r} has no split {section.eval_split!r} (data.eval_split); its "
                    f"splits are: {', '.join(available)}. Set data.eval_split in the recipe to one of them.")


def hub_splits(section: DataSection, need_train: bool) -> tuple[dict[str, RawSplit], list[str] | None]:
    """The train (when present or needed) and eval splits as raw splits, keyed ``train_split`` and
    ``eval_split``, and the class names when the label column is a ``ClassLabel``.

    Raises:
        DataError: the dataset cannot be loaded, lacks a split or a column, or a row lacks text or label.
    """
    found = _load(section)
    available = list(found)
    evals = _pick_eval(available, section)
    wanted = {section.eval_split: evals}
    if section.train_split in available:
        wanted[section.train_split] = section.train_split
    elif need_train:
        raise DataError(f"hub dataset {section.dataset!r} has no split {section.train_split!r} (data.train_split) and "
                        f"the recipe trains; its splits are: {', '.join(available)}. Set data.train_split in the "
                        "recipe to one of them.")
    out, names = {}, None
    for key, split in wanted.items():
        dataset = found[split]
        feature = dataset.features.get(section.label_column) if section.label_column else None
        names = names or (list(feature.names) if hasattr(feature, "names") else None)
        rows = [(f"row {i}", record) for i, record in enumerate(dataset, start=1)]
        if not rows:
            raise DataError(f"hub dataset {section.dataset!r}: split {split!r} has no rows. Set data.{'eval' if key == section.eval_split else 'train'}_split to another split.")
        out[key] = raw_split(list(dataset.column_names), rows, f"{section.dataset} {split}", section)
    return out, names
