"""End-to-end tests: every process running under supervisor (``make up``), driven over HTTP."""

from __future__ import annotations

import pytest
import requests

from tests.support import PORTS, Api, url


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def stack() -> None:
    for service in PORTS:
        try:
            response = requests.get(url(service, "/healthz"), timeout=5)
        except requests.RequestException as exc:
            pytest.fail(f"{service} is not running ({exc}); start the stack with `make up`")
        assert response.status_code == 200, f"{service} unhealthy: {response.text}"


@pytest.fixture
def api(stack: None) -> Api:
    return Api()
