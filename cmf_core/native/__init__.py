"""cmf's C and Fortran API: compiled programs log step metrics, as ``Cmf.log_metric`` and ``commit_metrics`` do.

The C library and the Fortran module are built with CMake from the sources in this package's folder
(:func:`source_dir`; ``python -m cmf_core.native --source-dir`` prints it)::

    cmake -S "$(python -m cmf_core.native --source-dir)" -B build && cmake --build build

Their calls reach Python in a helper process that ``cmf_init`` starts, ``python -m cmf_core.native``
(:mod:`cmf_core.native.serve`): the C side buffers a commit's steps and sends them in one frame.
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["source_dir"]


def source_dir() -> Path:
    """The CMake project of the C library, the Fortran module and their examples."""
    return Path(__file__).resolve().parent
