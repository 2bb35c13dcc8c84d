"""``cmflib.cmfquery``: the original module's import path for :class:`cmf_core.metadata.query.CmfQuery`."""
from cmf_core.metadata.query import EXCLUDED_ARTIFACT_TYPES, CmfQuery  # noqa: F401

__all__ = ["CmfQuery"]
