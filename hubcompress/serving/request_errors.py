"""Errors a request can cause, each with the HTTP status the server answers with.

The server turns every one of them into ``{"error": "<message>"}``, the Open Inference
Protocol's error body, so a client (tritonclient included) shows the message as is.
"""

from __future__ import annotations

from hubcompress.errors import ServingError


class RequestError(ServingError):
    """A request the server refuses; ``status`` is the HTTP status code of the answer.

    Example:
        >>> from hubcompress.serving.request_errors import InvalidRequest
        >>> error = InvalidRequest("inputs[0] must be a string")
        >>> error.status, str(error)
        (400, 'inputs[0] must be a string')
    """

    status = 400


class InvalidRequest(RequestError):
    """The body is malformed or breaks a limit: fix the request."""

    status = 400


class ModelNotFound(RequestError):
    """The URL names a model or version this server does not serve."""

    status = 404


class PayloadTooLarge(RequestError):
    """The body is over the server's ``max_body_bytes``."""

    status = 413


class ServerBusy(RequestError):
    """Too much work is queued (or the server is shutting down): retry later."""

    status = 503


class InferenceFailed(RequestError):
    """ONNX Runtime failed on inputs that passed validation; the message holds its reason."""

    status = 500
