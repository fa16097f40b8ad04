"""Running a test on the CPU and, where one is present, on CUDA.

GPU-only tests carry the ``gpu`` marker and skip, saying why, where torch sees no CUDA
device; the logic they exercise also runs in the CPU variant of the same test.
"""

from __future__ import annotations

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
NO_CUDA = "needs a CUDA device (torch.cuda.is_available() is False here)"

needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason=NO_CUDA)


def gpu(test):
    """Mark ``test`` as GPU-only: the ``gpu`` marker, skipped without CUDA."""
    return pytest.mark.gpu(needs_cuda(test))


CUDA = pytest.param("cuda", marks=[pytest.mark.gpu, needs_cuda], id="cuda")
DEVICES = ["cpu", CUDA]
