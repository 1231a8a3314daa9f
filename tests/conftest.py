"""Suite-wide markers.

``@pytest.mark.once``: a slow whole-system test (daemons, network labs, kill
campaigns, fault proxies) whose outcome does not depend on which native
backend is loaded. tox runs the suite twice, once per backend; such a test runs
only in the native pass so that CI stays well inside its time budget. Any test
that exercises the C/pure distinction itself must not carry it.
"""

from __future__ import annotations

import os

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "once: slow whole-system test, run only on the native backend pass",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("CSEMBED_BACKEND", "").strip().lower() != "python":
        return
    skip = pytest.mark.skip(reason="backend-independent system test; runs in the native pass")
    for item in items:
        if item.get_closest_marker("once") is not None:
            item.add_marker(skip)
