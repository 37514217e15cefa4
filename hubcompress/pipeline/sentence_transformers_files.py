"""Keep a sentence-transformers model a sentence-transformers model: its modules (pooling mode,
normalization, max_seq_length, prompts, similarity function) are copied from the base folder to the
output folder, so ``SentenceTransformer(output, trust_remote_code=True)`` embeds like the original
pipeline did, with the compressed transformer in front.

Example:
    >>> import json, pathlib, tempfile
    >>> base, out = pathlib.Path(tempfile.mkdtemp()), pathlib.Path(tempfile.mkdtemp())
    >>> _ = (base / "modules.json").write_text(json.dumps([
    ...     {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
    ...     {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
    >>> (base / "1_Pooling").mkdir()
    >>> _ = (base / "1_Pooling" / "config.json").write_text('{"word_embedding_dimension": 384}')
    >>> copy_sentence_transformers_modules(base, out, hidden_width=288)
    ['modules.json', '1_Pooling/config.json']
    >>> json.loads((out / "1_Pooling" / "config.json").read_text())
    {'word_embedding_dimension': 288}
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..atomic import atomic_path, write_text_atomic
from ..errors import CheckpointError

MODULES = "modules.json"
TOP_LEVEL = ("config_sentence_transformers.json",)  # prompts, similarity function, versions
# The Transformer module's own settings (max_seq_length, do_lower_case, ...): ST writes one of these.
TRANSFORMER_CONFIGS = ("sentence_bert_config.json", "sentence_roberta_config.json", "sentence_distilbert_config.json",
                       "sentence_xlm-roberta_config.json", "sentence_camembert_config.json",
                       "sentence_xlnet_config.json", "sentence_albert_config.json", "sentence_t5_config.json",
                       "sentence_mpnet_config.json")
# Pooling configs state the token-embedding width (older and newer key); a narrowed stream changes it.
DIMENSION_KEYS = ("word_embedding_dimension", "embedding_dimension")


def _read_modules(path: Path) -> list[dict]:
    try:
        modules = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{path}: cannot read it ({error}); fix the base model's modules.json.") from error
    if not isinstance(modules, list) or not all(isinstance(m, dict) and "path" in m and "type" in m for m in modules):
        raise CheckpointError(f"{path}: expected a list of {{idx, name, path, type}} entries.")
    return modules


def copy_sentence_transformers_modules(base: Path, output: Path, *, hidden_width: int | None = None) -> list[str]:
    """Copy the base folder's sentence-transformers files to ``output`` (each file atomically);
    the transformer module moves to the folder's root. Returns the paths written, relative to
    ``output``; nothing when the base is not a sentence-transformers model."""
    base, output = Path(base), Path(output)
    if not (base / MODULES).exists():
        return []
    modules = _read_modules(base / MODULES)
    written: list[str] = []
    for entry in modules:
        source = base / entry["path"]
        if entry["type"].endswith("Transformer"):
            for name in TRANSFORMER_CONFIGS:
                if (source / name).exists():
                    write_text_atomic(output / name, (source / name).read_text(encoding="utf-8"))
                    written.append(name)
            entry["path"] = ""  # the compressed model lives at the root of the output folder
            continue
        if not entry["path"] or not source.is_dir():
            continue  # a module without files of its own (Normalize)
        for item in sorted(p for p in source.rglob("*") if p.is_file()):
            relative = item.relative_to(base)
            if item.name == "config.json" and entry["type"].endswith("Pooling") and hidden_width is not None:
                config = json.loads(item.read_text(encoding="utf-8"))
                for key in DIMENSION_KEYS:
                    if key in config:
                        config[key] = hidden_width
                write_text_atomic(output / relative, json.dumps(config, indent=2))
            else:
                with atomic_path(output / relative) as tmp:
                    shutil.copyfile(item, tmp)
            written.append(str(relative))
    for name in TOP_LEVEL:
        if (base / name).exists():
            write_text_atomic(output / name, (base / name).read_text(encoding="utf-8"))
            written.append(name)
    write_text_atomic(output / MODULES, json.dumps(modules, indent=2))
    return [MODULES, *written]
