"""Test-wide environment, set before numpy/numba/torch import: one BLAS thread (faster on two
shared cores), a writable numba cache and archscan's own cache (the prior images) outside ~/.cache."""
import os
import tempfile

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("NUMBA_CACHE_DIR", os.path.join(tempfile.gettempdir(), "archscan-test-numba"))
os.environ.setdefault("ARCHSCAN_CACHE_DIR", os.path.join(tempfile.gettempdir(), "archscan-test-cache"))   # the prior's

try:
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover
    pass
