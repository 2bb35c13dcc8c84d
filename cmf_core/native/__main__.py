"""``python -m cmf_core.native``: the helper the C library starts (its protocol on stdin and stdout), or
``--source-dir``: where the CMake project is."""
from __future__ import annotations

import sys

from cmf_core.native import source_dir

if __name__ == "__main__":
    if sys.argv[1:] == ["--source-dir"]:
        print(source_dir())
    elif sys.argv[1:]:
        sys.exit("usage: python -m cmf_core.native [--source-dir]  (without options: the helper of the C library, "
                 "which cmf_init starts)")
    else:
        from cmf_core.native.serve import main

        sys.exit(main())
