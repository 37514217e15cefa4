"""The "How to use" snippets of an image classifier: transformers' pipeline with the repository's
image processor, and ONNX Runtime fed by that processor (no tokenizer, no texts).

Example:
    >>> from model_cards.inputs import CardInputs
    >>> inputs = CardInputs(repo_id="me/vit", base_model="org/vit", pipeline_tag="image-classification",
    ...                     onnx_int8_path="onnx/model_quantized.onnx")
    >>> code = onnxruntime_image(inputs, inputs.onnx_int8_path).code
    >>> "AutoImageProcessor" in code and "tokenizer" not in code
    True
"""

from __future__ import annotations

from model_cards.inputs import CardInputs
from model_cards.snippets import Snippet, _q

# A runnable stand-in for the reader's own photo.
_IMAGE_LINES = ["from PIL import Image", "",
                'image = Image.new("RGB", (224, 224), "white")  # your photo: Image.open("photo.jpg")']


def transformers_image(inputs: CardInputs) -> Snippet:
    remote = ", trust_remote_code=True" if inputs.trust_remote_code else ""
    code = ["from transformers import pipeline", *_IMAGE_LINES[:1], "", _IMAGE_LINES[2],
            f'classifier = pipeline("image-classification", model={_q(inputs.repo_id)}{remote})',
            "print(classifier(image))"]
    intro = ("transformers' image-classification pipeline with the repository's image processor"
             + (" (`trust_remote_code=True`: the pruned layers differ in width, which `modeling_hubcompress.py` "
                "builds)." if inputs.trust_remote_code else "."))
    return Snippet("transformers", intro, "python", "\n".join(code))


def onnxruntime_image(inputs: CardInputs, path: str) -> Snippet:
    repo = _q(inputs.repo_id)
    code = ["import onnxruntime as ort", "from huggingface_hub import hf_hub_download",
            "from transformers import AutoImageProcessor", *_IMAGE_LINES[:1], "", _IMAGE_LINES[2],
            f"processor = AutoImageProcessor.from_pretrained({repo})",
            f'session = ort.InferenceSession(hf_hub_download({repo}, {_q(path)}), providers=["CPUExecutionProvider"])',
            'pixels = processor(image, return_tensors="np")["pixel_values"]',
            '(logits,) = session.run(["logits"], {"pixel_values": pixels})',
            "print(logits.argmax(-1))"]
    files = ", ".join(f"`{p}`" for p in (inputs.onnx_path, inputs.onnx_int8_path) if p)
    return Snippet("ONNX Runtime", f"The ONNX files ({files}) need only ONNX Runtime and the image processor.",
                   "python", "\n".join(code))
