"""The local backend passes the conformance kit."""
from __future__ import annotations

import pytest

from cmf_core.testing import BackendConformance


class TestLocalBackend(BackendConformance):
    large_file_mb = 32

    @pytest.fixture
    def backend(self, tmp_path):
        return "local", {"path": str(tmp_path / "store")}
