"""The e2e fixtures: every `memsvc serve` a test starts is cleaned up, whatever happened."""

from collections.abc import Iterator

import pytest
from processes import Serve, stop_postgres_under


@pytest.fixture
def serves() -> Iterator[list[Serve]]:
    """Collects Serve objects; every one is killed (process group) and its database stopped after."""
    started: list[Serve] = []
    yield started
    for serve in started:
        serve.kill()
        stop_postgres_under(serve.data_dir)
