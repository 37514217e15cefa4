"""Doctests of exporters.openvino need openvino and nncf (the ``openvino`` extra): without them
the modules' examples are skipped, with the reason, instead of failing on the import."""

from __future__ import annotations

import importlib.util

import pytest

_MISSING = [name for name in ("openvino", "nncf") if importlib.util.find_spec(name) is None]


@pytest.fixture(autouse=True)
def _needs_openvino(request: pytest.FixtureRequest) -> None:
    if _MISSING and getattr(request.node, "dtest", None) is not None:
        pytest.skip(f"{' and '.join(_MISSING)} not installed: pip install 'hubcompress[openvino]'")
