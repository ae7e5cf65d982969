"""Shared test setup.

Thread limits and the numba cache directory must be set before numpy / numba are imported,
so they come first.  Tests scale their hypothesis example counts with ARCHSCAN_TEST_SCALE
(e.g. 0.05 for a NUMBA_DISABLE_JIT=1 run, where the kernels run as plain Python).
"""
import os
import sys
import tempfile

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_CACHE_DIR", os.path.join(tempfile.gettempdir(), "archscan-numba-tests"))

# tests/naive.py is imported as ``naive`` whatever pytest's import mode or package layout.
_TESTS = os.path.dirname(os.path.abspath(__file__))
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

try:
    import torch
except ImportError:  # torch is optional for the kernel tests that do not compare against it
    torch = None
else:
    torch.set_num_threads(1)

from hypothesis import settings  # noqa: E402

settings.register_profile("ci", deadline=None)
if os.environ.get("HYPOTHESIS_PROFILE"):
    settings.load_profile(os.environ["HYPOTHESIS_PROFILE"])


# Tests marked ``slow`` (minutes on two CPU cores) run only with --runslow or ARCHSCAN_SLOW=1.
def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="also run tests marked slow")


def pytest_collection_modifyitems(config, items):
    import pytest
    if config.getoption("--runslow") or os.environ.get("ARCHSCAN_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow or ARCHSCAN_SLOW=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
