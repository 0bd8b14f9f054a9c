"""The tiny trained run of the bad-input corpus, trained once for every file in this folder."""

from __future__ import annotations

import pytest
from bad_input_cases import Ctx, make_ctx


@pytest.fixture(scope="package")
def ctx(tmp_path_factory: pytest.TempPathFactory) -> Ctx:
    """A relight3d-tensorf run trained for 2 iterations on a 16 px scene (config, scene and TrainerConfig)."""
    return make_ctx(tmp_path_factory)
