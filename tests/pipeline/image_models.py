"""A tiny ViT image classifier (trained to tell red squares from blue ones), its untrained base
model and image folders, for the image-classification tests and the shipped recipes' stand-ins."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

SIZE = 16
CLASSES = ("blue", "red")


def _image(cls: str, rng: np.random.Generator):
    from PIL import Image

    # Red or blue squares with noise: a few steps of training separate them.
    pixels = rng.integers(0, 90, size=(SIZE, SIZE, 3), dtype=np.uint8)
    pixels[..., 0 if cls == "red" else 2] += 150
    return Image.fromarray(pixels)


def _write_images(root: Path, per_class: dict[str, int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    for split, count in per_class.items():
        for cls in CLASSES:
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(count):
                _image(cls, rng).save(folder / f"{i}.png")


def _tiny_vit(root: Path, *, head: bool) -> Path:
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor, ViTModel

    torch.manual_seed(0)
    config = ViTConfig(image_size=SIZE, patch_size=4, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                       intermediate_size=64, num_labels=2, id2label=dict(enumerate(CLASSES)),
                       label2id={c: i for i, c in enumerate(CLASSES)})
    processor = ViTImageProcessor(size={"height": SIZE, "width": SIZE})
    folder = root / ("tiny-vit" if head else "tiny-vit-base")
    if not head:
        ViTModel(config, add_pooling_layer=False).save_pretrained(folder)
        processor.save_pretrained(folder)
        return folder
    model = ViTForImageClassification(config)
    # A few steps on the train images, so the teacher beats the majority class.
    from PIL import Image

    images, labels = [], []
    for label, cls in enumerate(CLASSES):
        for path in sorted((root / "images" / "train" / cls).iterdir()):
            images.append(Image.open(path).convert("RGB"))
            labels.append(label)
    pixels = processor(images, return_tensors="pt")["pixel_values"]
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(15):
        loss = model(pixel_values=pixels, labels=torch.tensor(labels)).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def make_vit_inputs(root: Path) -> Path:
    """Write under ``root``: ``images/{train,validation}/{blue,red}/*.png``, ``tiny-vit/`` (a trained
    classifier with its image processor) and ``tiny-vit-base/`` (a ViTModel without head)."""
    _write_images(root / "images", {"train": 24, "validation": 12}, seed=0)
    _tiny_vit(root, head=True)
    _tiny_vit(root, head=False)
    return root
