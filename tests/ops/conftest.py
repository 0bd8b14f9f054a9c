"""Fixtures of the ops tests: the devices the compiled kernels run on, and the implementations."""

from __future__ import annotations

from typing import Iterator

import pytest
from ops_testing import EXT, requires_cuda

from relight3d.ops import _backend


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=requires_cuda)])
def device(request: pytest.FixtureRequest) -> str:
    """A device of the compiled kernels."""
    if request.param == "cuda" and not getattr(EXT, "WITH_CUDA", False):
        pytest.skip("relight3d._C was built without CUDA kernels (e.g. BUILD_CPU_ONLY=1)")
    return request.param


@pytest.fixture(params=["torch", "compiled"])
def backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """Within the test, the public ops run the torch reference ('torch') or the compiled kernels ('compiled')."""
    if request.param == "torch":
        with _backend.torch_reference():
            yield "torch"
    elif EXT is None:
        pytest.skip("the compiled extension relight3d._C is not built")
    else:
        yield "compiled"
