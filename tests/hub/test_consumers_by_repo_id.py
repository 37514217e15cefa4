"""Consumers load what we publish by repo id, from a process that has never heard of hubcompress.

Hand-built folders (tiny BERT + tokenizer + ONNX, a remote-code variant, a sentence-transformers
save) are pushed with push_folder to the fake hub, then loaded by repo id in a subprocess with
transformers, sentence-transformers, and huggingface_hub + ONNX Runtime. Each output must equal
the same call on the local folder, and the fake hub must have answered every request (no missing
endpoint, no server error): that is what makes it fit to test the model card's snippets.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from consumer_fixtures import SENTENCES, ConsumerHub
from consumers import consumer_env, python_blocks, run_without_hubcompress
from fake_hub import FAKE_TOKEN, FakeHub

TOLERANCE = 1e-5

# Appended to every consumer script: it proves the process could not import the project, and saves
# the arrays the script put in `outputs` for the test to compare.
EPILOGUE = """
import importlib.util, json as _json, numpy as _np
try:
    import hubcompress
    _importable = True
except ModuleNotFoundError:
    _importable = False
assert not _importable and importlib.util.find_spec("hubcompress") is None, "hubcompress was importable"
_np.savez("outputs.npz", **{k: _np.asarray(v) for k, v in outputs.items()})
print("INFO " + _json.dumps(info))
"""


def run_consumer(setup: ConsumerHub, code: str, *, token_free: bool = False,
                 offline: bool = False) -> tuple[dict[str, np.ndarray], dict]:
    env = consumer_env(setup.hub, setup.home, token=None if token_free else FAKE_TOKEN)
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    result = run_without_hubcompress(code + EPILOGUE, env, setup.workdir)
    assert result.returncode == 0, f"consumer failed:\n{result.stderr[-8000:]}"
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("INFO ")]
    with np.load(setup.workdir / "outputs.npz") as saved:
        outputs = {name: saved[name] for name in saved.files}
    assert not setup.hub.unanswered(), setup.hub.unanswered()
    return outputs, json.loads(line[len("INFO "):])


def assert_pairs_equal(outputs: dict[str, np.ndarray], pairs: list[tuple[str, str]]) -> None:
    for hub_name, local_name in pairs:
        hub, local = outputs[hub_name], outputs[local_name]
        assert hub.shape == local.shape, (hub_name, hub.shape, local.shape)
        diff = float(np.abs(hub - local).max())
        assert diff <= TOLERANCE, f"{hub_name} vs {local_name}: max abs diff {diff}"
    # Same outputs would also come from two equally broken loads: make sure they see the text.
    first = outputs[pairs[0][0]]
    assert not np.allclose(first[0], first[1]), "different sentences gave the same output"


TRANSFORMERS = """
import torch
from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

sentences = {sentences!r}
outputs, info = {{}}, {{}}
for where, bert, custom in [("hub", {bert_repo!r}, {custom_repo!r}), ("local", {bert_dir!r}, {custom_dir!r})]:
    # A card pins the revision of remote code; for a local folder transformers ignores it.
    pinned = {{"revision": {custom_commit!r}}} if where == "hub" else {{}}
    tokenizer = AutoTokenizer.from_pretrained(bert)
    batch = tokenizer(sentences, padding=True, return_tensors="pt")
    outputs[f"input_ids_{{where}}"] = batch["input_ids"].numpy()
    loads = {{
        "base": lambda: AutoModel.from_pretrained(bert),
        "classifier": lambda: AutoModelForSequenceClassification.from_pretrained(bert),
        "custom_base": lambda: AutoModel.from_pretrained(custom, trust_remote_code=True),
        "custom_classifier": lambda: AutoModelForSequenceClassification.from_pretrained(custom, trust_remote_code=True),
        "custom_without_trust": lambda: AutoModel.from_pretrained(custom, trust_remote_code=False),
        "custom_pinned": lambda: AutoModel.from_pretrained(custom, trust_remote_code=True, **pinned),
    }}
    for name, load in loads.items():
        model = load().eval()
        info[f"{{name}}_{{where}}"] = [type(model).__name__, type(model).__module__]
        with torch.no_grad():
            out = model(**batch)
        outputs[f"{{name}}_{{where}}"] = (out.logits if hasattr(out, "logits") else out.last_hidden_state).numpy()
"""


def transformers_code(setup: ConsumerHub) -> str:
    return TRANSFORMERS.format(sentences=SENTENCES, bert_repo=setup.repos["bert"], custom_repo=setup.repos["custom"],
                               bert_dir=str(setup.folders.bert), custom_dir=str(setup.folders.custom),
                               custom_commit=setup.commits["custom"])


def test_transformers_loads_by_repo_id_with_and_without_remote_code(consumer_hub: ConsumerHub) -> None:
    # Anonymous, as most people who download a public model are.
    start = len(consumer_hub.hub.requests)
    outputs, info = run_consumer(consumer_hub, transformers_code(consumer_hub), token_free=True)

    names = ["input_ids", "base", "classifier", "custom_base", "custom_classifier", "custom_without_trust",
             "custom_pinned"]
    assert_pairs_equal(outputs, [(f"{n}_hub", f"{n}_local") for n in names[1:]])
    assert np.array_equal(outputs["input_ids_hub"], outputs["input_ids_local"])
    assert info["custom_base_hub"][0] == "CustomBertModel"
    assert info["custom_classifier_hub"][0] == "CustomBertForSequenceClassification"
    # The class came from the repo's modeling_custom.py, downloaded and imported by transformers.
    module = info["custom_base_hub"][1]
    assert module.startswith("transformers_modules.") and module.endswith(".modeling_custom")
    assert info["custom_without_trust_hub"] == ["BertModel", "transformers.models.bert.modeling_bert"]
    assert info["custom_pinned_hub"][0] == "CustomBertModel"
    assert consumer_hub.commits["custom"] in info["custom_pinned_hub"][1]  # the code of that very commit
    assert info["base_hub"][0] == "BertModel" and info["classifier_hub"][0] == "BertForSequenceClassification"
    hub = consumer_hub.hub
    assert not any(r["authorized"] for r in hub.requests[start:])
    assert hub.calls("cdn"), "weights should have come from the CDN, as LFS files do on the real hub"
    assert any(r["path"].endswith("/modeling_custom.py") for r in hub.calls("resolve"))


def test_a_second_load_works_offline_from_the_cache(consumer_hub: ConsumerHub) -> None:
    online, _ = run_consumer(consumer_hub, transformers_code(consumer_hub))
    before = len(consumer_hub.hub.requests)

    offline, info = run_consumer(consumer_hub, transformers_code(consumer_hub), offline=True)

    assert len(consumer_hub.hub.requests) == before, "an offline load must not reach the hub"
    assert info["custom_base_hub"][0] == "CustomBertModel"
    assert_pairs_equal({**{f"{k}_online": v for k, v in online.items()}, **offline},
                       [("base_hub", "base_hub_online"), ("custom_classifier_hub", "custom_classifier_hub_online")])
    # The probes of optional files that 404'd online were remembered (X-Repo-Commit on the 404).
    cache = consumer_hub.home / "hub" / f"models--{consumer_hub.repos['bert'].replace('/', '--')}"
    assert list(cache.glob(".no_exist/*/special_tokens_map.json"))


SENTENCE_TRANSFORMERS = """
from sentence_transformers import SentenceTransformer

outputs, info = {{}}, {{}}
for where, source in [("hub", {repo!r}), ("local", {folder!r})]:
    model = SentenceTransformer(source, trust_remote_code=True, device="cpu")
    info[where] = [type(module).__name__ for module in model]
    outputs[where] = model.encode({sentences!r}, convert_to_numpy=True)
"""


def test_sentence_transformers_loads_by_repo_id(consumer_hub: ConsumerHub) -> None:
    code = SENTENCE_TRANSFORMERS.format(repo=consumer_hub.repos["sentence"],
                                        folder=str(consumer_hub.folders.sentence), sentences=SENTENCES)

    outputs, info = run_consumer(consumer_hub, code)

    assert_pairs_equal(outputs, [("hub", "local")])
    assert info["hub"] == info["local"] == ["Transformer", "Pooling", "Normalize"]
    assert np.allclose(np.linalg.norm(outputs["hub"], axis=1), 1.0, atol=1e-5)
    requested = {r["path"].rsplit("/resolve/", 1)[-1].split("/", 1)[-1] for r in consumer_hub.hub.calls("resolve")}
    assert {"modules.json", "1_Pooling/config.json", "config_sentence_transformers.json"} <= requested


ONNX_RUNTIME = """
from pathlib import Path

import numpy as np
import onnxruntime as ort
from huggingface_hub import hf_hub_download, snapshot_download
from tokenizers import Tokenizer

outputs, info = {{}}, {{}}
snapshot, local = Path(snapshot_download({repo!r})), Path({folder!r})
sources = {{
    "hub": (hf_hub_download({repo!r}, "onnx/model_quantized.onnx"), snapshot / "onnx/model.onnx",
            hf_hub_download({repo!r}, "tokenizer.json")),
    "local": (local / "onnx/model_quantized.onnx", local / "onnx/model.onnx", local / "tokenizer.json"),
}}
inputs = [("input_ids", "ids"), ("attention_mask", "attention_mask"), ("token_type_ids", "type_ids")]
for where, (quantized, fp32, tokenizer_file) in sources.items():
    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
    encodings = tokenizer.encode_batch({sentences!r})
    feeds = {{name: np.array([getattr(e, attr) for e in encodings], dtype=np.int64) for name, attr in inputs}}
    for name, path in [("int8", quantized), ("fp32", fp32)]:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        outputs[f"{{name}}_{{where}}"] = session.run(None, feeds)[0]
info["snapshot_files"] = sorted(p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file())
"""


def test_onnx_runtime_loads_by_repo_id(consumer_hub: ConsumerHub) -> None:
    code = ONNX_RUNTIME.format(repo=consumer_hub.repos["bert"], folder=str(consumer_hub.folders.bert),
                               sentences=SENTENCES)

    outputs, info = run_consumer(consumer_hub, code)

    assert_pairs_equal(outputs, [("fp32_hub", "fp32_local"), ("int8_hub", "int8_local")])
    local = sorted(p.relative_to(consumer_hub.folders.bert).as_posix()
                   for p in consumer_hub.folders.bert.rglob("*") if p.is_file())
    assert set(local) <= set(info["snapshot_files"])


CARD = '''---
library_name: transformers
---
# tiny-bert

Run it with ONNX Runtime alone:

```python
import numpy as np
import onnxruntime as ort
from huggingface_hub import hf_hub_download
from tokenizers import Tokenizer

model = hf_hub_download("{repo}", "onnx/model_quantized.onnx")
tokenizer = Tokenizer.from_file(hf_hub_download("{repo}", "tokenizer.json"))
encoding = tokenizer.encode("A cat runs fast!")
feeds = {{"input_ids": np.array([encoding.ids]), "attention_mask": np.array([encoding.attention_mask]),
         "token_type_ids": np.array([encoding.type_ids])}}
```

```bash
pip install onnxruntime
```

```python
session = ort.InferenceSession(model)
print(session.run(None, feeds)[0].shape)
```
'''


def test_card_snippets_run_by_repo_id(consumer_hub: ConsumerHub) -> None:
    blocks = python_blocks(CARD.format(repo=consumer_hub.repos["bert"]))
    assert len(blocks) == 2

    result = run_without_hubcompress("\n".join(blocks), consumer_env(consumer_hub.hub, consumer_hub.home),
                                     consumer_hub.workdir)

    assert result.returncode == 0, result.stderr[-8000:]
    assert result.stdout.strip().endswith("(1, 7, 32)")
    assert not consumer_hub.hub.unanswered()


def test_the_project_cannot_be_imported_in_a_consumer_process(fake_hub: FakeHub, tmp_path: Path) -> None:
    code = """
import importlib.util, json, os, sys
found = {name: importlib.util.find_spec(name) is not None for name in ("hubcompress", "exporters", "model_cards")}
try:
    import hubcompress.hub
    error = None
except ModuleNotFoundError as e:
    error = str(e)
print(json.dumps({"found": found, "error": error, "cwd": os.getcwd(), "endpoint": os.environ["HF_ENDPOINT"]}))
raise RuntimeError("shown in stderr")
"""
    result = run_without_hubcompress(code, consumer_env(fake_hub, tmp_path / "home"), tmp_path)

    report = json.loads(result.stdout)
    assert report["found"] == {"hubcompress": False, "exporters": False, "model_cards": False}
    assert report["error"] and "hubcompress" in report["error"]
    assert report["cwd"] == str(tmp_path.resolve()) and report["endpoint"] == fake_hub.endpoint
    # A failing snippet's traceback shows its own lines, numbered as written.
    assert result.returncode == 1
    assert 'File "<snippet>", line 10' in result.stderr and 'raise RuntimeError("shown in stderr")' in result.stderr
    assert 'File "<string>"' not in result.stderr  # the prelude's own frame is left out
    with pytest.raises(ValueError, match="outside the repository"):
        run_without_hubcompress("pass", {}, Path(__file__).parent)


def test_consumer_env_points_everything_at_the_fake_hub(fake_hub: FakeHub, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in [("SENTENCE_TRANSFORMERS_HOME", "/elsewhere"), ("TRANSFORMERS_OFFLINE", "1"),
                        ("PYTHONPATH", "/work"), ("HUGGINGFACE_HUB_CACHE", "/elsewhere")]:
        monkeypatch.setenv(name, value)

    env = consumer_env(fake_hub, tmp_path, token=None)

    assert env["HF_ENDPOINT"] == fake_hub.endpoint and env["HF_HUB_OFFLINE"] == "0"
    assert env["HF_HOME"] == str(tmp_path) and env["HF_HUB_CACHE"] == str(tmp_path / "hub")
    assert env["HF_MODULES_CACHE"] == str(tmp_path / "modules") and env["HF_HUB_DISABLE_XET"] == "1"
    assert "127.0.0.1" in env["NO_PROXY"]
    for gone in ("HF_TOKEN", "SENTENCE_TRANSFORMERS_HOME", "TRANSFORMERS_OFFLINE", "PYTHONPATH",
                 "HUGGINGFACE_HUB_CACHE"):
        assert gone not in env, gone
    assert consumer_env(fake_hub, tmp_path)["HF_TOKEN"] == FAKE_TOKEN


@pytest.mark.parametrize(("markdown", "expected"), [
    ("```python\na = 1\n```\ntext\n```py\nb = 2\n```\n", ["a = 1\n", "b = 2\n"]),
    ("```bash\npip install x\n```\n```\nplain\n```\n```json\n{}\n```\n", []),
    ("````markdown\n```python\nnot = 'taken'\n```\n````\n```python\nyes = 1\n```\n", ["yes = 1\n"]),
    ("  ```python\n  indented = 1\n    deeper = 2\n  ```\n", ["indented = 1\n  deeper = 2\n"]),
    ("~~~python\nx = '```'\n~~~\n", ["x = '```'\n"]),
    ("```python title=\"load.py\"\nc = 3\n```", ["c = 3\n"]),
    ("```Python\nd = 4\n```\n```python\nunclosed = 5\n", ["d = 4\n", "unclosed = 5\n"]),
    ("```python\n```\n", [""]),
])
def test_python_blocks(markdown: str, expected: list[str]) -> None:
    assert python_blocks(markdown) == expected
