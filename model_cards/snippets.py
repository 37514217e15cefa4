"""The card's "How to use": one snippet per tool a downloader already has (transformers,
sentence-transformers, ONNX Runtime, OpenVINO, transformers.js, hubcompress serve), generated from what the
repository actually holds, so each snippet runs as written (the test suite runs the Python ones
against a pushed repository).

Example:
    >>> from model_cards.inputs import CardInputs
    >>> snippets = build_snippets(CardInputs(repo_id="me/x", base_model="org/b", pipeline_tag="feature-extraction",
    ...                                      sentence_transformers=True, trust_remote_code=True))
    >>> [s.tool for s in snippets]
    ['sentence-transformers', 'transformers', 'ONNX Runtime', 'transformers.js', 'hubcompress serve']
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from model_cards.inputs import CardInputs

EXAMPLE_TEXTS = ["A fine day for a walk in the park.", "The weather is lovely today."]


@dataclass(frozen=True)
class Snippet:
    """One way to load the model: which tool, a sentence about it, the code and its language."""

    tool: str
    intro: str
    language: str
    code: str


def _q(value: str) -> str:
    return json.dumps(value)  # a quoted string literal in Python and JavaScript alike


def _pooling_mode(inputs: CardInputs) -> str | None:
    """The one pooling mode the snippets write out by hand (mean, cls or max), else None."""
    modes = list((inputs.pooling or {}).get("modes") or ["mean"])
    return modes[0] if len(modes) == 1 and modes[0] in ("mean", "cls", "max") else None


def _normalize(inputs: CardInputs) -> bool:
    return bool((inputs.pooling or {"normalize": True}).get("normalize", False))


def _torch_pooling(mode: str, normalize: bool) -> list[str]:
    lines = ['mask = inputs["attention_mask"].unsqueeze(-1).to(tokens.dtype)']
    if mode == "mean":
        lines.append("embeddings = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # mean pooling")
    elif mode == "cls":
        lines.append("embeddings = tokens[:, 0]  # the first token's vector (CLS pooling)")
    else:
        lines.append("embeddings = tokens.masked_fill(mask == 0, float('-inf')).max(1).values  # max pooling")
    if normalize:
        lines.append("embeddings = torch.nn.functional.normalize(embeddings, dim=-1)")
    return lines


def _numpy_pooling(mode: str, normalize: bool) -> list[str]:
    lines = ['mask = inputs["attention_mask"][..., None].astype(tokens.dtype)']
    if mode == "mean":
        lines.append("embeddings = (tokens * mask).sum(1) / np.maximum(mask.sum(1), 1e-9)  # mean pooling")
    elif mode == "cls":
        lines.append("embeddings = tokens[:, 0]  # the first token's vector (CLS pooling)")
    else:
        lines.append("embeddings = np.where(mask > 0, tokens, -np.inf).max(1)  # max pooling")
    if normalize:
        lines.append("embeddings /= np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)")
    return lines


def _transformers(inputs: CardInputs) -> Snippet | None:
    if inputs.pipeline_tag in _LM_PIPELINE_CALLS:
        return _transformers_lm(inputs)
    if inputs.pipeline_tag == "image-classification":
        from model_cards.image_snippets import transformers_image  # it imports this module

        return transformers_image(inputs)
    if inputs.pipeline_tag in _TOKEN_TASKS:
        from model_cards.token_snippets import transformers_token  # it imports this module

        return transformers_token(inputs)
    repo, auto = _q(inputs.repo_id), inputs.auto_class
    embeddings = inputs.pipeline_tag == "feature-extraction"
    mode = _pooling_mode(inputs)
    if embeddings and mode is None:
        return None  # pooling this model's way by hand would be long: sentence-transformers does it
    remote = ", trust_remote_code=True" if inputs.trust_remote_code else ""
    code = ["import torch", f"from transformers import {auto}, AutoTokenizer", "",
            f"tokenizer = AutoTokenizer.from_pretrained({repo})",
            f"model = {auto}.from_pretrained({repo}{remote}).eval()",
            f'inputs = tokenizer({json.dumps(EXAMPLE_TEXTS)}, padding=True, truncation=True, return_tensors="pt")',
            "with torch.no_grad():"]
    if embeddings:
        code += ["    tokens = model(**inputs).last_hidden_state", *_torch_pooling(mode, _normalize(inputs)),
                 "print(embeddings.shape)"]
    elif inputs.pipeline_tag == "text-classification":
        code += ["    probabilities = model(**inputs).logits.softmax(-1)",
                 "print([model.config.id2label[int(i)] for i in probabilities.argmax(-1)])"]
    else:
        code += ["    outputs = model(**inputs)", "print(outputs[0].shape)"]
    intro = (f"`{auto}` with `trust_remote_code=True`: the pruned layers differ in width, which the stock "
             "config cannot state, so config.json lists the narrowed modules and `modeling_hubcompress.py` "
             "(torch and transformers only) builds them. Without remote code transformers refuses the weights."
             if inputs.trust_remote_code else
             f"`{auto}`: config.json states the compressed shapes, so the stock class loads it.")
    return Snippet("transformers", intro, "python", "\n".join(code))


def _sentence_transformers(inputs: CardInputs) -> Snippet | None:
    if not inputs.sentence_transformers:
        return None
    remote = ", trust_remote_code=True" if inputs.trust_remote_code else ""
    code = ["from sentence_transformers import SentenceTransformer", "",
            f"model = SentenceTransformer({_q(inputs.repo_id)}{remote})",
            f"embeddings = model.encode({json.dumps(EXAMPLE_TEXTS)})",
            "print(model.similarity(embeddings, embeddings))"]
    return Snippet("sentence-transformers", "The base model's pooling, normalization and max_seq_length are kept "
                   "(modules.json).", "python", "\n".join(code))


def _onnxruntime(inputs: CardInputs) -> Snippet | None:
    path = inputs.onnx_int8_path or inputs.onnx_path
    if not path:
        return None
    if inputs.pipeline_tag in _LM_ONNX_LINES:
        return _onnxruntime_lm(inputs, path)
    if inputs.pipeline_tag == "image-classification":
        from model_cards.image_snippets import onnxruntime_image  # it imports this module

        return onnxruntime_image(inputs, path)
    if inputs.pipeline_tag in _TOKEN_TASKS:
        from model_cards.token_snippets import onnxruntime_token  # it imports this module

        return onnxruntime_token(inputs, path)
    repo = _q(inputs.repo_id)
    embeddings = inputs.pipeline_tag == "feature-extraction"
    mode = _pooling_mode(inputs)
    if embeddings and mode is None:
        return None
    code = ["import numpy as np", "import onnxruntime as ort", "from huggingface_hub import hf_hub_download",
            "from transformers import AutoTokenizer", "",
            f"tokenizer = AutoTokenizer.from_pretrained({repo})",
            f'session = ort.InferenceSession(hf_hub_download({repo}, {_q(path)}), providers=["CPUExecutionProvider"])',
            f'inputs = tokenizer({json.dumps(EXAMPLE_TEXTS)}, padding=True, truncation=True, return_tensors="np")',
            "feeds = {i.name: inputs[i.name] for i in session.get_inputs()}"]
    if embeddings:
        code += ['(tokens,) = session.run(["last_hidden_state"], feeds)', *_numpy_pooling(mode, _normalize(inputs)),
                 "print(embeddings.shape)"]
    elif inputs.pipeline_tag == "text-classification":
        code += ['(logits,) = session.run(["logits"], feeds)', "print(logits.argmax(-1))"]
    else:
        code += ["outputs = session.run(None, feeds)", "print(outputs[0].shape)"]
    files = ", ".join(f"`{p}`" for p in (inputs.onnx_path, inputs.onnx_int8_path) if p)
    return Snippet("ONNX Runtime", f"The ONNX files ({files}) need only ONNX Runtime and the tokenizer.", "python",
                   "\n".join(code))


def _openvino(inputs: CardInputs) -> Snippet | None:
    xml = inputs.openvino_int8_path or inputs.openvino_path
    if not xml or inputs.pipeline_tag == "image-classification":  # its snippet feeds a tokenizer's output
        return None
    repo = _q(inputs.repo_id)
    embeddings = inputs.pipeline_tag == "feature-extraction"
    mode = _pooling_mode(inputs)
    if embeddings and mode is None:
        return None
    weights = xml.rsplit(".", 1)[0] + ".bin"
    code = ["import numpy as np", "import openvino as ov", "from huggingface_hub import hf_hub_download",
            "from transformers import AutoTokenizer", "",
            f"tokenizer = AutoTokenizer.from_pretrained({repo})",
            f"xml = hf_hub_download({repo}, {_q(xml)})",
            f"hf_hub_download({repo}, {_q(weights)})  # the weights: OpenVINO reads them from beside the .xml",
            "# f32 as validated: on a CPU with bf16 OpenVINO would compute the float layers in bf16",
            'model = ov.Core().compile_model(xml, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})',
            f'inputs = tokenizer({json.dumps(EXAMPLE_TEXTS)}, padding=True, truncation=True, return_tensors="np")',
            "outputs = model({port.get_any_name(): inputs[port.get_any_name()] for port in model.inputs})"]
    if embeddings:
        code += ['tokens = outputs["last_hidden_state"]', *_numpy_pooling(mode, _normalize(inputs)),
                 "print(embeddings.shape)"]
    elif inputs.pipeline_tag == "text-classification":
        code += ['logits = outputs["logits"]', "print(logits.argmax(-1))"]
    else:
        code += ["print(outputs[model.outputs[0]].shape)"]
    files = ", ".join(f"`{p}`" for p in (inputs.openvino_path, inputs.openvino_int8_path) if p)
    return Snippet("OpenVINO", f"The OpenVINO IR files ({files}, each with its `.bin`) need only the `openvino` "
                   "package and the tokenizer; the int8 file was quantized with NNCF on real text.", "python",
                   "\n".join(code))


# transformers.js pipelines of the token-level tasks (checked against onnxruntime on the same files by
# benchmarks/transformers_js/compare.py): the variable, then the call on it.
_JS_TOKEN_CALLS = {
    "token-classification": ("tagger", 'const tokens = await tagger("My name is Sarah and I live in London.");'),
    "fill-mask": ("unmasker", "const fillers = await unmasker(`A fine day for a ${unmasker.tokenizer.mask_token} "
                              "in the park.`);"),
    "question-answering": ("reader", 'const answer = await reader("Where is the park?", "The park lies in the '
                                     'middle of the old town, next to the river.");'),
}


def _transformers_js(inputs: CardInputs) -> Snippet | None:
    if not (inputs.onnx_path or inputs.onnx_int8_path) or inputs.pipeline_tag not in ("feature-extraction",
                                                                                       "text-classification",
                                                                                       *_JS_TOKEN_CALLS):
        return None
    dtype = "q8" if inputs.onnx_int8_path else "fp32"
    texts = json.dumps(EXAMPLE_TEXTS)
    if inputs.pipeline_tag in _JS_TOKEN_CALLS:
        name, call = _JS_TOKEN_CALLS[inputs.pipeline_tag]
        code = ['import { pipeline } from "@huggingface/transformers";', "",
                f"const {name} = await pipeline({_q(inputs.pipeline_tag)}, {_q(inputs.repo_id)}, {{ dtype: \"{dtype}\" }});",
                call]
    elif inputs.pipeline_tag == "feature-extraction":
        mode = _pooling_mode(inputs)
        if mode not in ("mean", "cls"):
            return None
        options = f"{{ pooling: {_q(mode)}, normalize: {'true' if _normalize(inputs) else 'false'} }}"
        call = f"const extractor = await pipeline(\"feature-extraction\", {_q(inputs.repo_id)}, {{ dtype: \"{dtype}\" }});"
        code = ['import { pipeline } from "@huggingface/transformers";', "", call,
                f"const embeddings = await extractor({texts}, {options});"]
    else:
        code = ['import { pipeline } from "@huggingface/transformers";', "",
                f"const classifier = await pipeline(\"text-classification\", {_q(inputs.repo_id)}, "
                f"{{ dtype: \"{dtype}\" }});",
                f"const labels = await classifier({texts});"]
    return Snippet("transformers.js", f'`dtype: "{dtype}"` picks `{inputs.onnx_int8_path or inputs.onnx_path}` '
                   '("fp32": `onnx/model.onnx`, "q8": `onnx/model_quantized.onnx`).', "js", "\n".join(code))


def _serve(inputs: CardInputs) -> Snippet | None:
    if not (inputs.onnx_path or inputs.onnx_int8_path):
        return None
    int8 = " --int8" if inputs.onnx_int8_path else ""
    body = _SERVE_BODIES.get(inputs.pipeline_tag or "", '{"inputs": ["A fine day for a walk."]}')
    code = [f"hubcompress serve {inputs.repo_id}{int8} --port 8080", f"curl -s localhost:8080/predict -d '{body}'"]
    runtimes = ("the ONNX or OpenVINO file that ran fastest in validation (`--backend onnxruntime|openvino` to choose)"
                if inputs.openvino_path or inputs.openvino_int8_path else "the ONNX file")
    return Snippet("hubcompress serve", "An HTTP server (Open Inference Protocol / KServe v2, plus `/predict`) "
                   f"over {runtimes}, with dynamic batching.", "bash", "\n".join(code))


# Language models: transformers' own pipeline does the post-processing (top fillers, greedy decoding).
_LM_PIPELINE_CALLS = {
    "fill-mask": ['fill = pipeline("fill-mask", model={repo}{remote})',
                  'print(fill(f"A fine day for a {{fill.tokenizer.mask_token}} in the park."))'],
    "text-generation": ['generate = pipeline("text-generation", model={repo}{remote})',
                        'print(generate("A fine day for a", max_new_tokens=20, do_sample=False)[0]["generated_text"])'],
}
_LM_ONNX_LINES = {
    "fill-mask": ['inputs = tokenizer(f"A fine day for a {tokenizer.mask_token} in the park.", return_tensors="np")',
                  "(logits,) = session.run([\"logits\"], {i.name: inputs[i.name] for i in session.get_inputs()})",
                  'print(tokenizer.decode(logits[inputs["input_ids"] == tokenizer.mask_token_id].argmax(-1)))'],
    # No past key/values in the file: each new token runs the whole sequence again.
    "text-generation": ['ids = tokenizer("A fine day for a", return_tensors="np")["input_ids"]',
                        "for _ in range(20):",
                        '    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}',
                        "    (logits,) = session.run([\"logits\"], {i.name: feeds[i.name] for i in session.get_inputs()})",
                        "    ids = np.concatenate([ids, logits[:, -1:].argmax(-1)], axis=1)",
                        "print(tokenizer.decode(ids[0]))"],
}
# Token-level tasks: their snippets live in model_cards/token_snippets.py.
_TOKEN_TASKS = ("token-classification", "question-answering")
_SERVE_BODIES = {"question-answering": '{"inputs": [{"question": "Where is the park?", "context": "The park lies in the '
                                       'middle of the old town, next to the river."}]}',
                 "fill-mask": '{"inputs": ["A fine day for a [MASK] in the park."]}',
                 "text-generation": '{"inputs": ["A fine day for a"], "parameters": {"max_new_tokens": 20}}',
                 # images travel base64-encoded; the shell splices the file in between the quotes
                 "image-classification": '{"inputs": ["\'"$(base64 -w0 photo.jpg)"\'"]}'}


def _transformers_lm(inputs: CardInputs) -> Snippet:
    remote = ", trust_remote_code=True" if inputs.trust_remote_code else ""
    code = ["from transformers import pipeline", "",
            *(line.format(repo=_q(inputs.repo_id), remote=remote) for line in _LM_PIPELINE_CALLS[inputs.pipeline_tag])]
    intro = (f"transformers' `{inputs.pipeline_tag}` pipeline ({inputs.auto_class}"
             + (", with `trust_remote_code=True`: the pruned layers differ in width, which `modeling_hubcompress.py` "
                "builds)" if inputs.trust_remote_code else ")")
             + (". The tokenizer pads with its end-of-text token (GPT-2 has no padding token)."
                if inputs.pipeline_tag == "text-generation" else "."))
    return Snippet("transformers", intro, "python", "\n".join(code))


def _onnxruntime_lm(inputs: CardInputs, path: str) -> Snippet:
    repo = _q(inputs.repo_id)
    code = ["import numpy as np", "import onnxruntime as ort", "from huggingface_hub import hf_hub_download",
            "from transformers import AutoTokenizer", "",
            f"tokenizer = AutoTokenizer.from_pretrained({repo})",
            f'session = ort.InferenceSession(hf_hub_download({repo}, {_q(path)}), providers=["CPUExecutionProvider"])',
            *_LM_ONNX_LINES[inputs.pipeline_tag]]
    note = " The file has no past key/values: each new token runs the whole sequence again (greedy, exact)." \
        if inputs.pipeline_tag == "text-generation" else ""
    return Snippet("ONNX Runtime", f"The ONNX file `{path}` needs only ONNX Runtime and the tokenizer.{note}", "python",
                   "\n".join(code))


def build_snippets(inputs: CardInputs) -> list[Snippet]:
    """The snippets that apply to this repository, most used tool first."""
    makers = (_sentence_transformers, _transformers, _onnxruntime, _openvino, _transformers_js, _serve)
    return [s for s in (make(inputs) for make in makers) if s is not None]
