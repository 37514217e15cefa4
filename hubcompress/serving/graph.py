"""The inputs and outputs an ONNX file declares, in the Open Inference Protocol's terms.

Both the server's model metadata and the Triton ``config.pbtxt`` are read from the graph itself,
so they can never disagree with the file that is actually run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from hubcompress.errors import ServingError

# ONNX TensorProto element types -> Open Inference Protocol datatypes (Triton's TYPE_* minus the prefix,
# except BYTES, which Triton's config calls TYPE_STRING).
_ONNX_TO_V2 = {
    1: "FP32", 2: "UINT8", 3: "INT8", 4: "UINT16", 5: "INT16", 6: "INT32", 7: "INT64", 8: "BYTES",
    9: "BOOL", 10: "FP16", 11: "FP64", 12: "UINT32", 13: "UINT64", 16: "BF16",
}
_V2_TO_NUMPY = {
    "FP32": np.float32, "FP16": np.float16, "FP64": np.float64, "INT8": np.int8, "INT16": np.int16,
    "INT32": np.int32, "INT64": np.int64, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32,
    "UINT64": np.uint64, "BOOL": np.bool_, "BYTES": np.object_,
}


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: its name, datatype and dims (-1 on a dynamic axis)."""

    name: str
    datatype: str
    dims: tuple[int, ...]
    dim_names: tuple[str | None, ...]

    @property
    def numpy_dtype(self) -> np.dtype:
        """The numpy dtype of this tensor's data."""
        return np.dtype(_V2_TO_NUMPY[self.datatype])

    def to_metadata(self) -> dict[str, object]:
        """The tensor entry of a v2 model-metadata response."""
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.dims)}


@dataclass(frozen=True)
class GraphSignature:
    """All inputs and outputs of one ONNX graph, in graph order."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def input(self, name: str) -> TensorSpec | None:
        """The input called ``name``, or ``None``."""
        return next((spec for spec in self.inputs if spec.name == name), None)

    def output(self, name: str) -> TensorSpec | None:
        """The output called ``name``, or ``None``."""
        return next((spec for spec in self.outputs if spec.name == name), None)


def read_graph_signature(path: str | os.PathLike[str]) -> GraphSignature:
    """Read the declared inputs and outputs of the ONNX file at ``path`` (weights are not loaded).

    Inputs that are also initializers (constants that old exporters list as inputs) are left out:
    a client never feeds them.

    Example:
        >>> import pathlib, tempfile, onnx
        >>> from onnx import TensorProto, helper
        >>> ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"])
        >>> out = helper.make_tensor_value_info("copy", TensorProto.INT64, ["batch", "sequence"])
        >>> graph = helper.make_graph([helper.make_node("Identity", ["input_ids"], ["copy"])], "g", [ids], [out])
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "model.onnx"
        >>> onnx.save(helper.make_model(graph), path)
        >>> read_graph_signature(path).inputs[0]
        TensorSpec(name='input_ids', datatype='INT64', dims=(-1, -1), dim_names=('batch', 'sequence'))
    """
    import onnx  # late: only loading a model needs it

    try:
        model = onnx.load(os.fspath(path), load_external_data=False)
    except Exception as err:  # onnx raises DecodeError, OSError and others for a bad file
        raise ServingError(f"cannot read the ONNX file {path}: {type(err).__name__}: {err}") from err
    constants = {init.name for init in model.graph.initializer}
    inputs = tuple(_spec(value, path) for value in model.graph.input if value.name not in constants)
    outputs = tuple(_spec(value, path) for value in model.graph.output)
    return GraphSignature(inputs, outputs)


def _spec(value: object, path: str | os.PathLike[str]) -> TensorSpec:
    tensor_type = value.type.tensor_type  # type: ignore[attr-defined]
    datatype = _ONNX_TO_V2.get(tensor_type.elem_type)
    if datatype is None:
        raise ServingError(
            f"{path}: tensor {value.name!r} has ONNX element type {tensor_type.elem_type}, which the "  # type: ignore[attr-defined]
            "Open Inference Protocol cannot carry; export the model with standard numeric types"
        )
    dims: list[int] = []
    names: list[str | None] = []
    for dim in tensor_type.shape.dim:
        fixed = dim.HasField("dim_value") and dim.dim_value > 0
        dims.append(int(dim.dim_value) if fixed else -1)
        names.append(dim.dim_param or None)
    return TensorSpec(value.name, datatype, tuple(dims), tuple(names))  # type: ignore[attr-defined]
