"""Testing helpers for cmf backends: the conformance kit every backend must pass.

::

    from cmf_core.testing import BackendConformance

    class TestMyBackend(BackendConformance):
        @pytest.fixture
        def backend(self, tmp_path):
            return "mytype", {"url": f"my://bucket/{tmp_path.name}"}

See :class:`BackendConformance` for what it checks and how to configure it.
"""
import pytest

# the kit's asserts are in a library module: have pytest rewrite them so failures show the values
pytest.register_assert_rewrite("cmf_core.testing.conformance")

from cmf_core.testing.conformance import PIPELINE, BackendConformance, Dataset, Sink, WrappedStore, fail_after, fail_on

__all__ = ["BackendConformance", "WrappedStore", "fail_after", "fail_on", "Sink", "Dataset", "PIPELINE"]
