"""The bearer tokens a ``cmf server`` (or ``cmf ui``) accepts, read without loading the server itself."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, FrozenSet, Optional

from cmf_core.errors import CmfError

__all__ = ["load_tokens"]


def load_tokens(token_file: Optional[os.PathLike] = None, environ: Optional[Dict[str, str]] = None) -> FrozenSet[str]:
    """Accepted bearer tokens: one per line of ``token_file`` (``#`` comments and blank lines skipped),
    plus the comma-separated ``CMF_SERVER_TOKENS``.  None at all means auth is off."""
    environ = os.environ if environ is None else environ
    tokens = {t.strip() for t in environ.get("CMF_SERVER_TOKENS", "").split(",") if t.strip()}
    if token_file is not None:
        try:
            text = Path(token_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise CmfError(f"cannot read the token file {token_file}: {exc.strerror}") from None
        tokens.update(line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#"))
        if not tokens:
            raise CmfError(f"the token file {token_file} holds no token")
    return frozenset(tokens)
