"""``image-classification`` (ViT): images through the model's image processor, the classifier's
logits, accuracy and macro F1 against the labels, agreement with the teacher's argmax.

The data is an image folder per split (``data.files: {train: images/train, validation:
images/validation}``, one subfolder per class, read by ``datasets``' ``imagefolder``) or a hub
dataset with an image and a label column (``data.image_column``, ``data.label_column``).

Example:
    >>> from PIL import Image
    >>> from transformers import ViTImageProcessor
    >>> processor = ViTImageProcessor(size={"height": 8, "width": 8})
    >>> split = ImageSplit([Image.new("RGB", (20, 10))] * 3, labels=[0, 1, 0])
    >>> batches = ImageBatches(processor, split)
    >>> [tuple(b["pixel_values"].shape) for _, b in batches.eval_batches(2)]
    [(2, 3, 8, 8), (1, 3, 8, 8)]
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ...errors import DataError
from ..batches import shuffled_indices
from .base import TaskSpec, labelled_loss, register_task
from .text_classification import classification_quality

logger = logging.getLogger(__name__)


@dataclass
class ImageSplit:
    """Images (PIL) and their integer class labels, row by row."""

    images: list[Any]
    labels: list[int] | None = None

    def __len__(self) -> int:
        return len(self.images)


@dataclass
class ImageData:
    """What the pipeline trains and evaluates on, and how the card names it (the ``TaskData`` of images)."""

    train: ImageSplit | None
    eval: ImageSplit
    name: str
    dataset_id: str
    label_names: list[str] | None


class ImageBatches:
    """A split's images made into ``pixel_values`` batches by the image processor, batch by batch
    (the processed tensors are not kept: an epoch of 224x224 images would fill the memory)."""

    def __init__(self, processor: Any, split: ImageSplit):
        self.processor, self.split = processor, split
        self.labels = torch.tensor(split.labels, dtype=torch.long) if split.labels is not None else None

    def __len__(self) -> int:
        return len(self.split)

    def batch(self, index: Sequence[int], *, pad_to: int | None = None, with_labels: bool = False) -> dict[str, torch.Tensor]:
        images = [self.split.images[i].convert("RGB") for i in index]
        batch = {"pixel_values": self.processor(images, return_tensors="pt")["pixel_values"]}
        if with_labels and self.labels is not None:
            batch["labels"] = self.labels[list(index)]
        return batch

    def eval_batches(self, batch_size: int) -> Iterator[tuple[list[int], dict[str, torch.Tensor]]]:
        for start in range(0, len(self), batch_size):
            index = list(range(start, min(start + batch_size, len(self))))
            yield index, self.batch(index)

    def train_batches(self, batch_size: int, seed: int, *, with_labels: bool) -> Iterator[dict[str, torch.Tensor]]:
        """Shuffled batches, epoch after epoch, forever (the trainer decides when to stop)."""
        for index in shuffled_indices(len(self), batch_size, seed):
            yield self.batch(index, with_labels=with_labels)


def _load_split(section: Any, split: str, base_dir: Path | None) -> tuple[Any, str]:
    from ..data_files import load_dataset, resolve_data_path

    if section.files:
        if split not in section.files:
            raise DataError(f"data.files has no split {split!r} (data.train_split / data.eval_split); it names: "
                            f"{', '.join(section.files)}. Add the image folder or set the split key in the recipe.")
        value = section.files[split]
        folder = resolve_data_path(value if isinstance(value, str) else value[0], split, base_dir)
        if not folder.is_dir():
            raise DataError(f"data.files.{split}: {folder} is a file; image-classification reads a folder of images "
                            "with one subfolder per class (e.g. images/train/cat/1.jpg).")
        where, args = f"data.files.{split} ({folder})", {"path": "imagefolder", "data_dir": str(folder), "split": "train"}
    elif section.dataset:
        where, args = f"data.dataset {section.dataset!r}, split {split!r}", {"path": section.dataset, "split": split}
    else:
        raise DataError("image-classification reads image folders (data.files: {train: <folder>, validation: "
                        "<folder>}) or a hub dataset (data.dataset: org/name); the recipe gives neither.")
    return load_dataset(**args, where=where, fix="Fix the folder, or check the hub id and the network "
                        "(HF_HUB_OFFLINE=1 reads only the datasets cache)."), where


def _label_names(dataset: Any, column: str) -> list[str] | None:
    feature = dataset.features.get(column)
    return list(feature.names) if hasattr(feature, "names") else None


def load_image_data(ctx: Any) -> ImageData:
    """The recipe's train and eval images, labels as the model's classes (by name) or the data's."""
    section = ctx.recipe.data
    splits: dict[str, ImageSplit | None] = {"train": None}
    names: list[str] | None = None
    label2id = {str(k): int(v) for k, v in (getattr(ctx.model_config, "label2id", None) or {}).items()} \
        if not ctx.missing_head else {}
    for key, split, limit in (("train", section.train_split, section.max_train_samples),
                              ("eval", section.eval_split, section.max_eval_samples)):
        if key == "train" and not ctx.needs_train_split and not (section.files and split in section.files):
            continue
        dataset, where = _load_split(section, split, ctx.recipe_dir)
        for column in (section.image_column, section.label_column):
            if column not in dataset.column_names:
                raise DataError(f"{where} has no column {column!r} (data.image_column / data.label_column); its "
                                f"columns: {', '.join(dataset.column_names)}. Set the key in the recipe.")
        if len(dataset) == 0:
            raise DataError(f"{where} has no images. Add images, or point it at another folder.")
        if limit is not None and limit < len(dataset):
            dataset = dataset.select(sorted(random.Random(ctx.recipe.training.seed).sample(range(len(dataset)), limit)))
        split_names = _label_names(dataset, section.label_column)
        names = names or split_names
        labels = [int(y) for y in dataset[section.label_column]]
        if split_names and label2id and set(split_names) <= set(label2id):
            # The model names the same classes, maybe in another order: map by name.
            labels = [label2id[split_names[y]] for y in labels]
        splits[key] = ImageSplit(list(dataset[section.image_column]), labels)
    if label2id and names and set(names) <= set(label2id):
        names = [name for name, _ in sorted(label2id.items(), key=lambda item: item[1])]
    if section.files:  # images/validation: the data set is "images", its split "validation"
        value = section.files[section.eval_split]
        path = Path(value if isinstance(value, str) else value[0])
        dataset_id = path.parent.name or path.name
    else:
        dataset_id = str(section.dataset)
    logger.info("images %s: %s train, %d eval", dataset_id, len(splits["train"]) if splits["train"] else "no",
                len(splits["eval"]))
    return ImageData(train=splits["train"], eval=splits["eval"], name=dataset_id, dataset_id=dataset_id,
                     label_names=names)


def _blank_images(ctx: Any, count: int) -> dict[str, torch.Tensor]:
    from PIL import Image

    # Tracing needs shapes only; the processor resizes to the model's input size.
    return {"pixel_values": ctx.tokenizer([Image.new("RGB", (64, 64))] * count, return_tensors="pt")["pixel_values"]}


def _eval_images(ctx: Any, size: int, seq: int) -> dict[str, torch.Tensor]:
    images = [ctx.data.eval.images[i % len(ctx.data.eval)].convert("RGB") for i in range(size)]
    return {"pixel_values": ctx.tokenizer(images, return_tensors="pt")["pixel_values"]}


IMAGE_CLASSIFICATION = register_task(TaskSpec(
    name="image-classification", auto_class="AutoModelForImageClassification", outputs=("logits",),
    row_name="logits", rows=lambda out, batch, index, data, pooling: list(out["logits"]),
    quality=classification_quality, primary_metric="accuracy", agreement="argmax",
    loss=labelled_loss, has_task_loss=True, needs_labels=True, distill_head="classifier",
    load_data=load_image_data, encode=lambda processor, split, max_length: ImageBatches(processor, split),
    finetunes_teacher=True, against_teacher=("agreement_with_teacher",), modality="image",
    trace_inputs=lambda ctx: _blank_images(ctx, 2), latency_inputs=_eval_images))
