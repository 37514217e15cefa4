"""The card's snippets for token-level tasks: ``token-classification`` (transformers' pipeline with
``aggregation_strategy="simple"``; ONNX Runtime with each token's label) and ``question-answering``
(transformers 5 has no question-answering pipeline any more, so both snippets pick the best span by
hand: the most likely start among the context tokens, then the most likely end at most 30 tokens on).

Example:
    >>> from model_cards.inputs import CardInputs
    >>> snippet = transformers_token(CardInputs(repo_id="me/ner", base_model="org/b", pipeline_tag="token-classification",
    ...                                         auto_class="AutoModelForTokenClassification"))
    >>> snippet.code.splitlines()[2]
    'ner = pipeline("token-classification", model="me/ner", aggregation_strategy="simple")'
"""

from __future__ import annotations

from model_cards.inputs import CardInputs
from model_cards.snippets import EXAMPLE_TEXTS, Snippet, _q

TOKEN_TASKS = ("token-classification", "question-answering")
QUESTION = "Where is the park?"
CONTEXT = "The park lies in the middle of the old town, next to the river."

# The best span of one question's logits (numpy or torch alike): a start among the context tokens,
# then an end no earlier and at most 30 tokens later (the length transformers' pipeline allowed).
_SPAN_LINES = [
    "context_tokens = np.array([s == 1 for s in inputs.sequence_ids(0)])",
    "start = int(np.where(context_tokens, start_logits, -1e4).argmax())",
    "window = np.where(context_tokens[start:start + 30], end_logits[start:start + 30], -1e4)",
    "end = start + int(window.argmax())",
    "offsets = inputs[\"offset_mapping\"][0]",
    "print(context[offsets[start][0]:offsets[end][1]])",
]


def transformers_token(inputs: CardInputs) -> Snippet:
    repo = _q(inputs.repo_id)
    remote = ", trust_remote_code=True" if inputs.trust_remote_code else ""
    why = (" (with `trust_remote_code=True`: the pruned layers differ in width, which `modeling_hubcompress.py` "
           "builds)" if inputs.trust_remote_code else "")
    if inputs.pipeline_tag == "token-classification":
        code = ["from transformers import pipeline", "",
                f'ner = pipeline("token-classification", model={repo}, aggregation_strategy="simple"{remote})',
                f"print(ner({_q(EXAMPLE_TEXTS[0])}))"]
        return Snippet("transformers", f"transformers' `token-classification` pipeline{why}: entities with their "
                       "character offsets.", "python", "\n".join(code))
    code = ["import numpy as np", "import torch", "from transformers import AutoModelForQuestionAnswering, AutoTokenizer",
            "", f"tokenizer = AutoTokenizer.from_pretrained({repo})",
            f"model = AutoModelForQuestionAnswering.from_pretrained({repo}{remote}).eval()",
            f"question, context = {_q(QUESTION)}, {_q(CONTEXT)}",
            'inputs = tokenizer(question, context, truncation="only_second", return_offsets_mapping=True, '
            'return_tensors="pt")',
            "with torch.no_grad():",
            '    out = model(**{k: v for k, v in inputs.items() if k != "offset_mapping"})',
            "start_logits, end_logits = out.start_logits[0].numpy(), out.end_logits[0].numpy()",
            *_SPAN_LINES]
    return Snippet("transformers", f"`AutoModelForQuestionAnswering`{why}; transformers 5 has no question-answering "
                   "pipeline, so the answer span is picked by hand.", "python", "\n".join(code))


def onnxruntime_token(inputs: CardInputs, path: str) -> Snippet:
    repo = _q(inputs.repo_id)
    code = ["import json", "import numpy as np", "import onnxruntime as ort",
            "from huggingface_hub import hf_hub_download", "from transformers import AutoTokenizer", "",
            f"tokenizer = AutoTokenizer.from_pretrained({repo})",
            f'session = ort.InferenceSession(hf_hub_download({repo}, {_q(path)}), providers=["CPUExecutionProvider"])']
    if inputs.pipeline_tag == "token-classification":
        code += [f'id2label = json.load(open(hf_hub_download({repo}, "config.json")))["id2label"]',
                 f'inputs = tokenizer({_q(EXAMPLE_TEXTS[0])}, return_tensors="np")',
                 '(logits,) = session.run(["logits"], {i.name: inputs[i.name] for i in session.get_inputs()})',
                 'tokens = tokenizer.convert_ids_to_tokens(inputs["input_ids"][0])',
                 "print([(token, id2label[str(i)]) for token, i in zip(tokens, logits[0].argmax(-1))])"]
        what = "each token's label"
    else:
        code.remove("import json")
        code += [f"question, context = {_q(QUESTION)}, {_q(CONTEXT)}",
                 'inputs = tokenizer(question, context, truncation="only_second", return_offsets_mapping=True, '
                 'return_tensors="np")',
                 'feeds = {i.name: inputs[i.name] for i in session.get_inputs()}',
                 'start_logits, end_logits = (x[0] for x in session.run(["start_logits", "end_logits"], feeds))',
                 *_SPAN_LINES]
        what = "the answer span"
    return Snippet("ONNX Runtime", f"`{path}` needs only ONNX Runtime and the tokenizer; the snippet prints {what}.",
                   "python", "\n".join(code))
