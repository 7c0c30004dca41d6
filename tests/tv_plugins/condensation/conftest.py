"""Every condensation test runs single-threaded (see tests/tv_plugins/conftest.py)."""

import pytest


@pytest.fixture(autouse=True, scope="module")
def _condensation_single_thread(single_thread):
    yield
