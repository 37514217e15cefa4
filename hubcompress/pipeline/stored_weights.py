"""What a model folder's weight files hold, read from the safetensors headers: tensor names and
dtypes, without loading a tensor (cheap enough to check inputs before a run starts).

Example:
    >>> import tempfile, pathlib, torch
    >>> from safetensors.torch import save_file
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> save_file({"a": torch.zeros(2, dtype=torch.float16), "b": torch.zeros(3, dtype=torch.float16),
    ...            "ids": torch.zeros(2, dtype=torch.int64)}, str(folder / "model.safetensors"))
    >>> sorted(stored_tensors(folder).items())
    [('a', 'float16'), ('b', 'float16'), ('ids', 'int64')]
    >>> stored_float_dtype(folder)
    'float16'
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from ..errors import ModelSourceError

# safetensors' header names -> torch's
_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "F8_E4M3": "float8_e4m3fn",
           "F8_E5M2": "float8_e5m2", "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8",
           "BOOL": "bool"}
_FLOATS = {"float64", "float32", "float16", "bfloat16", "float8_e4m3fn", "float8_e5m2"}


def stored_tensors(folder: str | Path) -> dict[str, str] | None:
    """Tensor name -> dtype name of every ``*.safetensors`` file in ``folder`` (shards included);
    None when the folder has none (a ``pytorch_model.bin`` checkpoint: its names need unpickling).

    Raises:
        ModelSourceError: a file's header cannot be read (truncated, or not safetensors).
    """
    from safetensors import SafetensorError, safe_open

    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        return None
    out: dict[str, str] = {}
    for file in files:
        try:
            with safe_open(str(file), "pt") as weights:
                for key in weights.keys():
                    raw = weights.get_slice(key).get_dtype()
                    out[key] = _DTYPES.get(raw, raw.lower())
        except (SafetensorError, OSError) as error:
            raise ModelSourceError(f"cannot read {file}: {error}. The file may be truncated: re-download or re-save "
                                   "the model, or pass another folder or hub id.") from None
    return out


def stored_float_dtype(folder: str | Path) -> str | None:
    """The dtype most of the folder's floating-point tensors are stored in (None: no safetensors)."""
    tensors = stored_tensors(folder)
    counts = Counter(dtype for dtype in (tensors or {}).values() if dtype in _FLOATS)
    return counts.most_common(1)[0][0] if counts else None
