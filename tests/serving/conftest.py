"""Fixtures of the serving tests: output folders built once per session, and a live loopback server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .served_folders import LiveServer, ServedFolder, build_folder


@pytest.fixture(scope="session")
def classifier_folder(tmp_path_factory: pytest.TempPathFactory) -> ServedFolder:
    return build_folder(tmp_path_factory.mktemp("served") / "tiny-sentiment", "text-classification", seed=0)


@pytest.fixture(scope="session")
def embedder_folder(tmp_path_factory: pytest.TempPathFactory) -> ServedFolder:
    return build_folder(tmp_path_factory.mktemp("served") / "tiny-embedder", "feature-extraction", seed=1)


@pytest.fixture(scope="session")
def live_classifier(classifier_folder: ServedFolder) -> Iterator[LiveServer]:
    """The classifier served over a real loopback socket, batching with a generous delay so that
    concurrent test requests reliably share batches."""
    from hubcompress.serving import BackgroundServer, ServerSettings, create_app, load_served_model

    model = load_served_model(classifier_folder.path, ServerSettings(max_batch_size=16, max_delay_ms=30))
    app = create_app(model)
    with BackgroundServer(app) as server:
        yield LiveServer(server.url, app)
