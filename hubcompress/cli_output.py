"""What the command line shows: our stage lines, our progress bars and real problems by default;
other libraries' progress bars, notices and known-harmless warnings only with ``--verbose``.
And which exit code an error ends the command with (by its kind, not by the package that raised it).

Example:
    >>> from hubcompress.errors import DataError
    >>> exit_code_for(DataError("x")), exit_code_for(RuntimeError("x")), exit_code_for(KeyboardInterrupt())
    (2, 3, 130)
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

from .errors import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED, HubcompressError

OUR_LOGGERS = ("hubcompress", "exporters", "model_cards")
# Read by transformers and huggingface_hub when they are imported: set before any import of them.
_QUIET_ENVIRONMENT = {
    "TRANSFORMERS_VERBOSITY": "error",  # "Loading weights" notices, config notices
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # transformers' and the hub client's bars (ours are tqdm's own)
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",  # datasets' "Generating train split" bars
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


class _OursOrErrors(logging.Filter):
    """Our warnings, and anyone's errors: ONNX Runtime's quantizer logs a WARNING with a URL on the
    root logger for every file, which says nothing about the user's model."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name.split(".")[0] in OUR_LOGGERS or record.levelno >= logging.ERROR


def configure_output(verbose: bool) -> None:
    """Log our INFO lines with ``verbose``, else our warnings only; silence other libraries unless verbose."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    if verbose:
        return
    handler.addFilter(_OursOrErrors())
    for key, value in _QUIET_ENVIRONMENT.items():
        os.environ.setdefault(key, value)
    # Python warnings from libraries (TracerWarnings from the ONNX exporter, deprecations) are not
    # the user's problem; ours that are (NNI 2.x keys in a config list) stay visible.
    warnings.simplefilter("ignore")
    warnings.filterwarnings("default", message=r".*NNI 2\.x.*")
    if "datasets" in sys.modules:  # imported before this call: it read the environment already
        sys.modules["datasets"].disable_progress_bars()
    try:
        import onnxruntime

        onnxruntime.set_default_logger_severity(3)  # C++ warnings about graph optimisations
    except ImportError:
        pass


def exit_code_for(error: BaseException) -> int:
    """2 for bad input, 3 for a failed stage, 4 for the hub, 130 for an interrupt (see ``errors``)."""
    if isinstance(error, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(error, HubcompressError):
        return error.exit_code
    try:
        from exporters.errors import UnsupportedModelType, UnsupportedQuantization
    except ImportError:  # pragma: no cover - exporters ships with hubcompress
        return EXIT_FAILED
    # The leaf package keeps its own errors; the two that mean "this input cannot be exported" are bad input.
    if isinstance(error, (UnsupportedModelType, UnsupportedQuantization)):
        return EXIT_BAD_INPUT
    return EXIT_FAILED


def is_expected(error: BaseException) -> bool:
    """Raised on purpose, with a message that says what to do: shown without 'rerun with -v'."""
    try:
        from exporters.errors import ExportError
    except ImportError:  # pragma: no cover
        ExportError = HubcompressError  # noqa: N806
    return isinstance(error, (HubcompressError, ExportError))
