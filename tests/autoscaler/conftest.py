"""Autoscaler fixtures: the local scale-subresource API server (scale_api.py), started and always stopped."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer

import pytest

from tests.autoscaler.scale_api import FakeApiServer, handler


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    state = FakeApiServer(replicas={("eureka", "eureka-rollout"): 2, ("eureka", "other"): 5})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler(state))
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()
    thread.join()
