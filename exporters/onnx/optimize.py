"""Graph optimization (operator fusion) for exported transformers, with a count of the fused ops."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from exporters.onnx.atomic_files import atomic_output_path
from exporters.onnx.quantize import count_op_types

logger = logging.getLogger(__name__)

# ONNX Runtime contrib ops that replace a pattern of standard ops; their count says what fused.
FUSED_OP_TYPES = (
    "Attention",
    "MultiHeadAttention",
    "GroupQueryAttention",
    "EmbedLayerNormalization",
    "SkipLayerNormalization",
    "SkipSimplifiedLayerNormalization",
    "SimplifiedLayerNormalization",
    "FastGelu",
    "BiasGelu",
    "Gelu",
    "QuickGelu",
    "GemmFastGelu",
    "RotaryEmbedding",
)

# transformers model_type -> the model family onnxruntime.transformers.optimizer knows; data, not if-chains.
ORT_OPTIMIZER_MODEL_TYPES = {
    "bert": "bert",
    "roberta": "bert",
    "xlm-roberta": "bert",
    "camembert": "bert",
    "distilbert": "bert",
    "electra": "bert",
    "gpt2": "gpt2",
    "vit": "vit",
}


OptimizerBackend = Literal["onnxruntime.transformers", "onnxruntime"]


@dataclass
class GraphOptimizationResult:
    """What :func:`optimize_graph` wrote, with which backend, and the fused ops in the new graph."""

    input_path: str
    output_path: str
    backend: OptimizerBackend
    ort_model_type: str | None
    fused_op_counts: dict[str, int]
    node_count_before: int
    node_count_after: int
    elapsed_s: float
    fallback_reason: str | None = None  # why the transformers optimizer was not (or could not be) used

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def optimize_graph(
    path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    model_type: str,
    num_heads: int,
    hidden_size: int,
) -> GraphOptimizationResult:
    """Fuse attention, layer-norm and GELU patterns into ONNX Runtime contrib ops.

    ``model_type`` is the transformers one (``"bert"``, ``"distilbert"``, ...): families that
    ``onnxruntime.transformers.optimizer`` knows go through it; others get ONNX Runtime's own
    extended graph optimizations, and so does a family whose optimizer crashes on this graph
    (``fallback_reason`` says why). The output uses contrib ops, so it runs on ONNX Runtime only.

    Example:
        >>> import tempfile, pathlib
        >>> from transformers import BertConfig, BertModel
        >>> from exporters.onnx import export_onnx, export_config_for_model, optimize_graph
        >>> model = BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
        ...                              intermediate_size=37, vocab_size=100))
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> _ = export_onnx(model, None, folder / "model.onnx", config=export_config_for_model(model), dynamo=False)
        >>> result = optimize_graph(folder / "model.onnx", folder / "model.opt.onnx", "bert", 4, 32)
        >>> result.fused_op_counts.get("SkipLayerNormalization", 0) > 0
        True
    """
    started = time.perf_counter()
    ort_type = ORT_OPTIMIZER_MODEL_TYPES.get(model_type)
    fallback_reason = None if ort_type else f"onnxruntime.transformers has no fusions for {model_type!r}"
    backend: OptimizerBackend = "onnxruntime"
    with atomic_output_path(out_path) as tmp:
        if ort_type is not None:
            try:
                _optimize_with_transformers_optimizer(path, tmp, ort_type, num_heads, hidden_size)
                backend = "onnxruntime.transformers"
            except Exception as err:  # its pattern matchers assume graph shapes; any miss means "fall back"
                fallback_reason = f"onnxruntime.transformers failed: {type(err).__name__}: {err}"
                logger.warning("%s; using ONNX Runtime's own graph optimizations", fallback_reason)
        if backend == "onnxruntime":
            _optimize_with_session(path, tmp)
    before, after = count_op_types(path), count_op_types(out_path)
    fused = {op: after[op] for op in FUSED_OP_TYPES if after[op] > 0}
    result = GraphOptimizationResult(
        input_path=str(path),
        output_path=str(out_path),
        backend=backend,
        ort_model_type=ort_type,
        fused_op_counts=fused,
        node_count_before=sum(before.values()),
        node_count_after=sum(after.values()),
        elapsed_s=time.perf_counter() - started,
        fallback_reason=fallback_reason,
    )
    logger.info("optimized %s with %s: fused %s", path, backend, fused)
    return result


def _optimize_with_transformers_optimizer(
    path: str | os.PathLike[str], out_path: Path, ort_type: str, num_heads: int, hidden_size: int
) -> None:
    from onnxruntime.transformers import optimizer

    optimized = optimizer.optimize_model(str(path), model_type=ort_type, num_heads=num_heads, hidden_size=hidden_size)
    optimized.save_model_to_file(str(out_path))


def _optimize_with_session(path: str | os.PathLike[str], out_path: Path) -> None:
    import onnxruntime as ort

    options = ort.SessionOptions()
    # EXTENDED, not ALL: ALL adds layout transforms tied to this machine's CPU, and the saved file
    # must run on whatever machine serves it.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(out_path)
    ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
