"""Open Inference Protocol (KServe v2) request parsing and response building, JSON and binary.

Every malformed request ends in :class:`InvalidRequest` with a message that names the field, so the
server answers 400 with ``{"error": ...}``. The binary tensor extension (which tritonclient uses by
default) is supported both ways; its byte layouts live in :mod:`hubcompress.serving.binary_tensors`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hubcompress.serving.binary_tensors import decode_bytes_elements, decode_numeric
from hubcompress.serving.graph import TensorSpec
from hubcompress.serving.request_errors import InvalidRequest


@dataclass
class InferRequest:
    """A parsed v2 infer request: texts or token tensors, and which outputs to send back how."""

    id: str | None
    texts: list[str] | None = None
    tensors: dict[str, np.ndarray] = field(default_factory=dict)
    outputs: list[str] | None = None  # None: all of them
    binary_outputs: set[str] = field(default_factory=set)


def decode_json(raw: bytes) -> Any:
    """Parse a JSON body, answering 400 for an empty, non-UTF-8, malformed or absurdly nested one.

    Example:
        >>> decode_json(b'{"inputs": ["hi"]}')
        {'inputs': ['hi']}
        >>> decode_json(b'{"inputs": [')
        Traceback (most recent call last):
        ...
        hubcompress.serving.request_errors.InvalidRequest: malformed JSON body: Expecting value: line 1 column 13 (char 12)
    """
    if not raw.strip():
        raise InvalidRequest("empty request body; send a JSON object")
    try:
        return json.loads(raw)
    except UnicodeDecodeError as err:
        raise InvalidRequest(f"the body is not UTF-8 text: {err}") from err
    except RecursionError as err:
        raise InvalidRequest("the JSON body is nested too deeply") from err
    except ValueError as err:
        raise InvalidRequest(f"malformed JSON body: {err}") from err


def parse_predict_body(body: Any, max_items: int) -> list[str]:
    """The texts of a ``/predict`` body, ``{"inputs": ["text", ...]}`` (a single string is one text).

    Example:
        >>> parse_predict_body({"inputs": ["good", "bad"]}, max_items=8)
        ['good', 'bad']
        >>> parse_predict_body({"inputs": ["good", 3]}, max_items=8)
        Traceback (most recent call last):
        ...
        hubcompress.serving.request_errors.InvalidRequest: inputs[1] must be a string, got int
    """
    if not isinstance(body, dict) or "inputs" not in body:
        raise InvalidRequest('the body must be a JSON object with "inputs": a list of strings')
    texts = body["inputs"]
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, list):
        raise InvalidRequest(f'"inputs" must be a list of strings, got {type(texts).__name__}')
    return _check_texts(texts, max_items, "inputs")


def predict_parameters(body: Any) -> dict[str, Any]:
    """The ``parameters`` object of a ``/predict`` body (``{}`` when absent), e.g. ``max_new_tokens``.

    Example:
        >>> predict_parameters({"inputs": ["a"], "parameters": {"max_new_tokens": 5}})
        {'max_new_tokens': 5}
    """
    return _object(body.get("parameters", {}), "parameters") if isinstance(body, dict) else {}


def parse_infer_request(
    body: Any, binary: bytes, input_specs: Mapping[str, TensorSpec], output_names: Sequence[str], max_items: int
) -> InferRequest:
    """Parse a v2 infer request against the model's inputs and outputs.

    Args:
        body: the decoded JSON (header) part.
        binary: the bytes after the JSON header (empty for a JSON-only request).
        input_specs: what the model accepts, by input name.
        output_names: the outputs the model can return.
        max_items: most texts or tensor rows per request.

    Example:
        >>> from hubcompress.serving.graph import TensorSpec
        >>> specs = {"text": TensorSpec("text", "BYTES", (-1,), ("batch",))}
        >>> body = {"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["a", "b"]}]}
        >>> parse_infer_request(body, b"", specs, ["logits"], max_items=8).texts
        ['a', 'b']
    """
    if not isinstance(body, dict):
        raise InvalidRequest(f"an infer request must be a JSON object, got {type(body).__name__}")
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise InvalidRequest('"inputs" must be a non-empty list of tensors')
    parameters = _object(body.get("parameters", {}), "parameters")
    request_id = body.get("id")
    request = InferRequest(id=str(request_id) if request_id is not None else None)
    offset = 0
    for index, entry in enumerate(inputs):
        where = f"inputs[{index}]"
        entry = _object(entry, where)
        name, datatype, shape = entry.get("name"), entry.get("datatype"), entry.get("shape")
        spec = input_specs.get(name) if isinstance(name, str) else None
        if spec is None:
            raise InvalidRequest(f"{where}: unknown input name {name!r}; this model takes {sorted(input_specs)}")
        if datatype != spec.datatype:
            raise InvalidRequest(f"{where} ({name}): datatype must be {spec.datatype}, got {datatype!r}")
        shape = _shape(shape, where)
        size = _binary_size(_object(entry.get("parameters", {}), f"{where}.parameters"), where)
        if size is not None:
            if offset + size > len(binary):
                raise InvalidRequest(f"{where}: binary_data_size {size} runs past the {len(binary)} binary bytes sent")
            chunk, offset = binary[offset : offset + size], offset + size
            values: Any = decode_bytes_elements(chunk, where) if datatype == "BYTES" else decode_numeric(chunk, spec, where)
        elif "data" in entry:
            values = entry["data"]
        else:
            raise InvalidRequest(f"{where}: has neither data nor a binary_data_size parameter")
        if name in request.tensors or (spec.datatype == "BYTES" and request.texts is not None):
            raise InvalidRequest(f"{where}: input {name!r} is given twice")
        if spec.datatype == "BYTES":
            request.texts = _texts_from(values, shape, where, max_items)
        else:
            request.tensors[name] = _tensor_from(values, shape, spec, where)
    if offset != len(binary):
        raise InvalidRequest(f"{len(binary) - offset} binary bytes follow the inputs that no input claims")
    if request.texts is not None and request.tensors:
        raise InvalidRequest("send either the text input or token tensors, not both")
    default_binary = parameters.get("binary_data_output") is True
    _parse_requested_outputs(body.get("outputs"), output_names, default_binary, request)
    return request


def build_infer_response(
    model_name: str, request: InferRequest, outputs: Mapping[str, np.ndarray], specs: Mapping[str, TensorSpec]
) -> tuple[bytes, int | None]:
    """The response body, and the JSON header length when binary outputs follow it (else None).

    Example:
        >>> import numpy as np
        >>> from hubcompress.serving.graph import TensorSpec
        >>> specs = {"y": TensorSpec("y", "FP32", (-1, 2), ("batch", None))}
        >>> body, header = build_infer_response("m", InferRequest(id="7"), {"y": np.ones((1, 2))}, specs)
        >>> body.decode(), header
        ('{"model_name": "m", "model_version": "1", "id": "7", "outputs": [{"name": "y", "datatype": "FP32", "shape": [1, 2], "data": [1.0, 1.0]}]}', None)
    """
    entries, blobs = [], []
    for name in request.outputs or list(outputs):
        spec = specs[name]
        array = np.ascontiguousarray(outputs[name], dtype=spec.numpy_dtype.newbyteorder("<"))
        entry: dict[str, Any] = {"name": name, "datatype": spec.datatype, "shape": list(array.shape)}
        if name in request.binary_outputs:
            blob = array.tobytes()
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = array.ravel().tolist()
        entries.append(entry)
    response: dict[str, Any] = {"model_name": model_name, "model_version": "1"}
    if request.id is not None:
        response["id"] = request.id
    response["outputs"] = entries
    header = json.dumps(response).encode()
    return (header + b"".join(blobs), len(header)) if blobs else (header, None)


def _parse_requested_outputs(raw: Any, names: Sequence[str], default_binary: bool, request: InferRequest) -> None:
    if raw is None:
        request.binary_outputs = set(names) if default_binary else set()
        return
    if not isinstance(raw, list):
        raise InvalidRequest('"outputs" must be a list of {"name": ...} objects')
    request.outputs = []
    for index, entry in enumerate(raw):
        entry = _object(entry, f"outputs[{index}]")
        name = entry.get("name")
        if name not in names:
            raise InvalidRequest(f"outputs[{index}]: unknown output name {name!r}; this model has {list(names)}")
        request.outputs.append(name)
        binary = _object(entry.get("parameters", {}), f"outputs[{index}].parameters").get("binary_data", default_binary)
        if binary is True:
            request.binary_outputs.add(name)


def _texts_from(values: Any, shape: list[int], where: str, max_items: int) -> list[str]:
    texts = _flatten(values, where)
    if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1):
        raise InvalidRequest(f"{where}: a text input has shape [n] or [n, 1], got {shape}")
    if math.prod(shape) != len(texts):
        raise InvalidRequest(f"{where}: shape {shape} holds {math.prod(shape)} elements, but {len(texts)} were sent")
    return _check_texts(texts, max_items, where)


def _tensor_from(values: Any, shape: list[int], spec: TensorSpec, where: str) -> np.ndarray:
    if isinstance(values, np.ndarray):
        array = values
    else:
        try:
            array = np.array(values)
        except (ValueError, OverflowError) as err:
            raise InvalidRequest(f"{where}: data is not a regular array of numbers: {err}") from None
        # Token ids must be whole numbers; a float input (an image's pixel_values) takes any number.
        allowed = "iuf" if spec.numpy_dtype.kind == "f" else "iu"
        if array.size and array.dtype.kind not in allowed:
            kind = "numbers" if allowed == "iuf" else "integers"
            raise InvalidRequest(f"{where}: {spec.datatype} data must hold {kind} only, got {array.dtype.kind!r} values")
    if array.size != math.prod(shape):
        raise InvalidRequest(f"{where}: shape {shape} holds {math.prod(shape)} elements, but {array.size} were sent")
    if len(shape) != len(spec.dims) or any(d not in (-1, s) for d, s in zip(spec.dims, shape)):
        raise InvalidRequest(f"{where} ({spec.name}): shape {shape} does not fit the model's {list(spec.dims)}")
    return array.astype(spec.numpy_dtype).reshape(shape)


def _check_texts(texts: list[Any], max_items: int, where: str) -> list[str]:
    if not texts:
        raise InvalidRequest(f"{where} is empty; send at least one text")
    if len(texts) > max_items:
        raise InvalidRequest(f"{where} holds {len(texts)} texts, over this server's limit of {max_items} per request")
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise InvalidRequest(f"{where}[{index}] must be a string, got {type(text).__name__}")
        try:
            # JSON can carry lone UTF-16 surrogates ("\\ud800"), which no tokenizer accepts.
            text.encode("utf-8")
        except UnicodeEncodeError as err:
            raise InvalidRequest(f"{where}[{index}] is not valid Unicode text: {err.reason}") from None
    return texts


def _flatten(values: Any, where: str) -> list[Any]:
    if not isinstance(values, list):
        raise InvalidRequest(f"{where}: data must be a list, got {type(values).__name__}")
    flat: list[Any] = []
    stack = [values]
    while stack:  # iterative, so a deeply nested list cannot exhaust the recursion limit
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        else:
            flat.append(item)
    return flat


def _shape(shape: Any, where: str) -> list[int]:
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise InvalidRequest(f"{where}: shape must be a list of non-negative integers, got {shape!r}")
    return shape


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidRequest(f"{where} must be a JSON object, got {type(value).__name__}")
    return value


def _binary_size(parameters: dict[str, Any], where: str) -> int | None:
    size = parameters.get("binary_data_size")
    if size is None:
        return None
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InvalidRequest(f"{where}: binary_data_size must be a non-negative integer, got {size!r}")
    return size
