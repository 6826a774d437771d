"""Test-session settings shared by the doctests in symjac/ and the tests in tests/."""

import os
import tempfile


def pytest_configure(config):
    # Kernels compiled by the tests go to a fresh cache, never the user's.
    os.environ["SYMJAC_CACHE_DIR"] = tempfile.mkdtemp(prefix="symjac-cache-")
