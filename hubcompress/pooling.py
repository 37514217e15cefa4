"""How a model folder turns token vectors into one sentence embedding: its sentence-transformers
``Pooling`` (and ``Normalize``) modules, read from ``modules.json``, computed one way for training,
validation and serving.

Example:
    >>> import numpy as np
    >>> from hubcompress.pooling import Pooling
    >>> hidden = np.array([[[3.0, 4.0], [100.0, 100.0]]])
    >>> Pooling(("mean",), normalize=True)(hidden, np.array([[1, 0]])).tolist()
    [[0.6000000238418579, 0.800000011920929]]
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

import numpy as np
import torch

from .errors import PoolingConfigError

# sentence-transformers' pooling modes, in the order its old boolean config keys concatenate them.
POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")
LEGACY_MODE_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
MODULES_FILE = "modules.json"
# The class names (last part of modules.json's "type") this module reproduces.
_INPUT_MODULE, _POOLING_MODULE, _NORMALIZE_MODULE = "Transformer", "Pooling", "Normalize"


@dataclass(frozen=True)
class Pooling:
    """Sentence-transformers' ``Pooling`` (modes concatenated in order), then ``Normalize`` if asked.

    Args:
        modes: some of :data:`POOLING_MODES`; their vectors are concatenated in this order.
        normalize: L2-normalise the concatenation (a ``Normalize`` module follows the pooling).
        include_prompt: recorded from the config; it only matters when a prompt is prepended to
            the text, which hubcompress never does.

    Rows whose mask is all padding give zeros in every mode (sentence-transformers gives the first
    token for ``cls`` and ``-inf`` for ``max`` there), so no output is ever NaN or infinite.

    Example:
        >>> import torch
        >>> hidden = torch.tensor([[[1.0, 5.0], [3.0, 1.0], [9.0, 9.0]]])
        >>> mask = torch.tensor([[1, 1, 0]])
        >>> Pooling(("cls", "max"), normalize=False)(hidden, mask)
        tensor([[1., 5., 3., 5.]])
    """

    modes: tuple[str, ...] = ("mean",)
    normalize: bool = True
    include_prompt: bool = True

    def __post_init__(self) -> None:
        modes = (self.modes,) if isinstance(self.modes, str) else tuple(self.modes)
        unknown = [mode for mode in modes if mode not in POOLING_MODES]
        if not modes or unknown:
            raise PoolingConfigError(f"pooling modes must be some of {list(POOLING_MODES)}, got {list(modes)}")
        object.__setattr__(self, "modes", modes)

    @classmethod
    def from_folder(cls, folder: str | os.PathLike[str]) -> Pooling:
        """The pooling a sentence-transformers model folder declares.

        Reads ``modules.json`` and the ``config.json`` of its ``Pooling`` module (the
        sentence-transformers 6 keys ``pooling_mode`` / ``include_prompt``, or the older boolean
        ``pooling_mode_*_token(s)`` keys). A folder without ``modules.json`` is a plain transformers
        folder: it gets mean pooling and normalisation, what all-MiniLM-style embedders use.

        Raises:
            PoolingConfigError: a file is not valid JSON or not the expected shape, or a module
                other than Transformer, Pooling and Normalize (e.g. Dense) takes part.

        Example:
            >>> import json, pathlib, tempfile
            >>> folder = pathlib.Path(tempfile.mkdtemp())
            >>> Pooling.from_folder(folder)
            Pooling(modes=('mean',), normalize=True, include_prompt=True)
            >>> modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            ...            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
            >>> _ = (folder / "modules.json").write_text(json.dumps(modules))
            >>> (folder / "1_Pooling").mkdir()
            >>> _ = (folder / "1_Pooling" / "config.json").write_text('{"embedding_dimension": 8, "pooling_mode": "cls"}')
            >>> Pooling.from_folder(folder)
            Pooling(modes=('cls',), normalize=False, include_prompt=True)
        """
        root = Path(folder)
        modules_path = root / MODULES_FILE
        if not modules_path.is_file():
            return cls()
        modules = _read_json(modules_path)
        if not isinstance(modules, list) or not all(isinstance(m, dict) and "type" in m for m in modules):
            raise PoolingConfigError(f"{modules_path}: expected a list of modules, each with a 'type' "
                                     "(as sentence-transformers saves it); re-save the model with it")
        pooling: dict[str, Any] | None = None
        pooling_path = modules_path
        normalize = False
        for module in modules:
            kind = str(module["type"]).rsplit(".", 1)[-1]
            if kind == _INPUT_MODULE and pooling is None and not normalize:
                continue
            if kind == _POOLING_MODULE and pooling is None:
                pooling_path = root / str(module.get("path", "")) / "config.json"
                pooling = _read_json(pooling_path, named_by=modules_path)
                if not isinstance(pooling, dict):
                    raise PoolingConfigError(f"{pooling_path}: expected a JSON object with the pooling settings")
                continue
            if kind == _NORMALIZE_MODULE and pooling is not None and not normalize and _normalizes_the_embedding(
                    root / str(module.get("path", "")) / "config.json"):
                normalize = True
                continue
            raise PoolingConfigError(
                f"{modules_path}: module {module.get('name', module.get('idx'))!r} ({module['type']}) is not "
                "supported yet: hubcompress reproduces a Transformer, then Pooling, then an optional Normalize, "
                "and would make embeddings that differ from sentence-transformers'")
        if pooling is None:
            raise PoolingConfigError(f"{modules_path} has no Pooling module: the model makes no sentence "
                                     "embedding that hubcompress can reproduce")
        return cls(_modes_of(pooling, pooling_path), normalize, bool(pooling.get("include_prompt", True)))

    def to_dict(self) -> dict[str, Any]:
        """Plain data for report.json and the card.

        Example:
            >>> Pooling().to_dict()
            {'modes': ['mean'], 'normalize': True, 'include_prompt': True}
        """
        return {"modes": list(self.modes), "normalize": self.normalize, "include_prompt": self.include_prompt}

    def width(self, hidden_size: int) -> int:
        """The embedding width for token vectors of ``hidden_size`` (modes are concatenated); -1 stays -1.

        Example:
            >>> Pooling(("cls", "mean")).width(384)
            768
        """
        return hidden_size * len(self.modes) if hidden_size >= 0 else hidden_size

    @overload
    def __call__(self, token_embeddings: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor: ...

    @overload
    def __call__(self, token_embeddings: np.ndarray, attention_mask: np.ndarray) -> np.ndarray: ...

    def __call__(self, token_embeddings: Any, attention_mask: Any) -> Any:
        """One embedding per row of ``token_embeddings`` ``[rows, tokens, hidden]``, pooling the tokens
        where ``attention_mask`` ``[rows, tokens]`` is 1.

        Torch in, torch out (differentiable, the input's dtype); numpy in, float32 numpy out.
        """
        if isinstance(token_embeddings, torch.Tensor):
            mask = attention_mask if isinstance(attention_mask, torch.Tensor) else torch.as_tensor(attention_mask)
            return self._pool(token_embeddings, mask.to(token_embeddings.device))
        hidden = torch.from_numpy(np.ascontiguousarray(token_embeddings))
        mask = torch.from_numpy(np.ascontiguousarray(attention_mask))
        with torch.no_grad():
            return self._pool(hidden, mask).to(torch.float32).numpy()

    def _pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        # Half precision sums in float32, as sentence-transformers does, then returns the input's dtype.
        x = hidden.float() if hidden.dtype in (torch.float16, torch.bfloat16) else hidden
        mask = attention_mask.to(x.dtype)
        positions = attention_mask.to(torch.int32)
        state = _Batch(x, mask, positions.argmax(dim=1), mask.sum(dim=1, keepdim=True))
        pooled = torch.cat([_MODE_FUNCTIONS[mode](state) for mode in self.modes], dim=-1)
        if self.normalize:
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=-1)
        return pooled.to(hidden.dtype)


@dataclass(frozen=True)
class _Batch:
    """What the modes share: token vectors, mask (as floats), first real token, real-token counts."""

    x: torch.Tensor  # [rows, tokens, hidden]
    mask: torch.Tensor  # [rows, tokens]
    first: torch.Tensor  # [rows]; 0 for an all-padding row
    counts: torch.Tensor  # [rows, 1]

    def take(self, index: torch.Tensor) -> torch.Tensor:
        """The token vector at ``index`` [rows] of each row."""
        return torch.gather(self.x, 1, index.view(-1, 1, 1).expand(-1, 1, self.x.shape[-1])).squeeze(1)

    def masked_sum(self, weights: torch.Tensor) -> torch.Tensor:
        return (self.x * weights.unsqueeze(-1)).sum(dim=1)


def _cls(b: _Batch) -> torch.Tensor:
    # The first real token: with left padding that is not position 0.
    return b.take(b.first) * (b.counts > 0)


def _max(b: _Batch) -> torch.Tensor:
    largest = b.x.masked_fill(b.mask.unsqueeze(-1) == 0, float("-inf")).max(dim=1).values
    return torch.where(b.counts > 0, largest, torch.zeros_like(largest))


def _mean(b: _Batch) -> torch.Tensor:
    # The 1e-9 floor is sentence-transformers' own: an all-padding row gives zeros, not NaN.
    return b.masked_sum(b.mask) / b.counts.clamp(min=1e-9)


def _mean_sqrt_len(b: _Batch) -> torch.Tensor:
    return b.masked_sum(b.mask) / b.counts.clamp(min=1e-9).sqrt()


def _weighted_mean(b: _Batch) -> torch.Tensor:
    # Weights 1, 2, 3, ... counted from the first real token, so left padding does not shift them.
    steps = torch.arange(1, b.x.shape[1] + 1, device=b.x.device, dtype=b.x.dtype).unsqueeze(0)
    weights = b.mask * (steps - b.first.unsqueeze(1).to(b.x.dtype))
    return b.masked_sum(weights) / weights.sum(dim=1, keepdim=True).clamp(min=1e-9)


def _last_token(b: _Batch) -> torch.Tensor:
    tokens = b.x.shape[1]
    last = tokens - 1 - b.mask.flip(1).to(torch.int32).argmax(dim=1)
    return b.take(last) * (b.counts > 0)


_MODE_FUNCTIONS: dict[str, Callable[[_Batch], torch.Tensor]] = {
    "cls": _cls, "max": _max, "mean": _mean, "mean_sqrt_len_tokens": _mean_sqrt_len,
    "weightedmean": _weighted_mean, "lasttoken": _last_token,
}


def _normalizes_the_embedding(config_path: Path) -> bool:
    """Whether a Normalize module works on the sentence embedding: sentence-transformers 6 can point
    one at the token vectors instead (its ``module_input_name``); older versions save no config."""
    if not config_path.is_file():
        return True
    config = _read_json(config_path)
    names = {config.get("module_input_name"), config.get("module_output_name")} if isinstance(config, dict) else {0}
    return names <= {None, "sentence_embedding"}


def _modes_of(config: dict[str, Any], where: Path) -> tuple[str, ...]:
    """The modes a Pooling config.json (at ``where``) asks for, in either sentence-transformers format."""
    if "pooling_mode" in config:
        raw = config["pooling_mode"]
        modes = (raw,) if isinstance(raw, str) else tuple(raw) if isinstance(raw, list) else None
    else:
        # Older sentence-transformers: one boolean key per mode; none set means mean, as it reads them.
        modes = tuple(mode for key, mode in LEGACY_MODE_KEYS.items() if config.get(key)) or ("mean",)
    if not modes or any(not isinstance(m, str) or m not in POOLING_MODES for m in modes):
        raise PoolingConfigError(f"{where}: pooling_mode {config.get('pooling_mode')!r} is not one or a list of "
                                 f"{list(POOLING_MODES)}")
    return modes


def _read_json(path: Path, *, named_by: Path | None = None) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise PoolingConfigError(f"{path} does not exist, but {named_by} names it; copy the model's module "
                                 "folders along with modules.json") from err
    except (OSError, ValueError) as err:
        raise PoolingConfigError(f"{path}: cannot read it as JSON ({err}); fix the file or re-save the model "
                                 "with sentence-transformers") from err
