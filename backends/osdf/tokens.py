"""Bearer tokens of an osdfremote: where they come from, when they expire, and minting SciTokens from a key.

A remote's token comes from the first of:

1. the environment variable ``CMF_OSDF_TOKEN`` (overrides the stored config);
2. the token file that ``cmf init --access-token FILE`` recorded (re-read every time
   the remote is opened, so a renewed token is picked up);
3. a SciToken minted for this run from ``--key-id --key-path --key-issuer``, signed with
   the private key, scoped ``read:/ create:/ modify:/``, valid for 15 minutes and minted
   again when less than a minute is left;
4. the WLCG bearer-token discovery variables ``BEARER_TOKEN`` and ``BEARER_TOKEN_FILE``.

With none of these, requests go without ``Authorization`` (a public namespace).  A JWT
whose ``exp`` is in the past is refused before anything is sent; its payload is decoded
without verifying the signature (only the server can verify it).  The token itself is
never written anywhere by this module.
"""
from __future__ import annotations

import base64
import binascii
import json
import os
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, Mapping, Optional

from cmf_core.errors import BackendError

ENV_TOKEN = "CMF_OSDF_TOKEN"
WLCG_TOKEN = "BEARER_TOKEN"
WLCG_TOKEN_FILE = "BEARER_TOKEN_FILE"
SCOPES = "read:/ create:/ modify:/"
LIFETIME = 15 * 60  # seconds a minted token is valid
REFRESH = 60  # a minted token with less than this many seconds left is minted again


def expiry(token: str) -> Optional[datetime]:
    """The ``exp`` of a JWT (UTC), or ``None`` for an opaque token or a JWT without ``exp``.

    The signature is not checked: this only tells whether sending the token is pointless.
    """
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
        exp = claims.get("exp") if isinstance(claims, dict) else None
        return datetime.fromtimestamp(float(exp), timezone.utc) if exp is not None else None
    except (binascii.Error, ValueError, TypeError, OverflowError):
        return None


def single_token(text: str, source: str) -> str:
    """``text`` stripped, refused unless it is exactly one non-empty token."""
    token = text.strip()
    if token.lower().startswith("bearer "):
        token = token[len("bearer "):].strip()
    if not token or any(c.isspace() for c in token):
        raise BackendError(f"{source} does not hold a single bearer token")
    return token


def expired(token: str) -> Optional[str]:
    """``"expired at <time> UTC"`` for a JWT whose ``exp`` has passed, else ``None``."""
    ends = expiry(token)
    if ends is not None and ends <= datetime.now(timezone.utc):
        return f"expired at {ends:%Y-%m-%d %H:%M:%S} UTC"
    return None


def refuse_expired(token: str, source: str) -> None:
    """Raise :class:`BackendError` if ``token`` is a JWT that has already expired."""
    ended = expired(token)
    if ended:
        raise BackendError(f"the bearer token from {source} {ended}; get a fresh token (nothing was transferred)")


def read_token_file(path: str, source: str) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise BackendError(f"cannot read the token file {path} ({source}): {exc.strerror or exc}") from None
    return single_token(text, f"the token file {path}")


@dataclass(frozen=True)
class KeySigner:
    """Mints SciTokens signed with a private key (RSA -> RS256, EC P-256 -> ES256)."""

    key_id: str
    key_path: str
    issuer: str
    scopes: str = SCOPES
    lifetime: int = LIFETIME

    def load_key(self):
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        try:
            pem = Path(self.key_path).read_bytes()
        except OSError as exc:
            raise BackendError(f"cannot read the signing key {self.key_path}: {exc.strerror or exc}") from None
        try:
            return load_pem_private_key(pem, password=None)
        except TypeError:
            raise BackendError(f"the signing key {self.key_path} is encrypted; cmf needs an unencrypted PEM key") \
                from None
        except ValueError as exc:
            raise BackendError(f"{self.key_path} is not a PEM private key: {exc}") from None

    def mint(self) -> str:
        """A fresh token: ``iss`` the issuer, ``scope`` the scopes, valid for ``lifetime`` seconds."""
        import scitokens

        try:
            token = scitokens.SciToken(key=self.load_key(), key_id=self.key_id)
        except scitokens.utils.errors.UnsupportedKeyException as exc:
            raise BackendError(f"cannot sign with {self.key_path}: {exc} (use an RSA or EC P-256 key)") from None
        token["scope"] = self.scopes
        token["sub"] = "cmf"
        token["aud"] = "ANY"
        token["ver"] = "scitoken:2.0"
        return token.serialize(issuer=self.issuer, lifetime=self.lifetime).decode("ascii")


class TokenSource:
    """The bearer token of one opened remote; :meth:`header` is thread-safe and renews minted tokens."""

    def __init__(self, token: Optional[str], source: str, signer: Optional[KeySigner] = None) -> None:
        self.source = source
        self._signer = signer
        self._token = token
        self._lock = threading.Lock()
        if token is not None:
            refuse_expired(token, source)

    @classmethod
    def for_settings(cls, settings: Mapping[str, str], environ: Optional[Mapping[str, str]] = None) -> "TokenSource":
        """The token of a remote with these stored settings (``access_token``, ``key_*``)."""
        env: Mapping[str, str] = os.environ if environ is None else environ
        if env.get(ENV_TOKEN):
            return cls(single_token(env[ENV_TOKEN], ENV_TOKEN), f"${ENV_TOKEN}")
        if settings.get("access_token"):
            path = settings["access_token"]
            return cls(read_token_file(path, "--access-token"), f"the token file {path}")
        if settings.get("key_path"):
            signer = KeySigner(settings.get("key_id", ""), settings["key_path"], settings.get("key_issuer", ""))
            return cls(signer.mint(), f"the key {signer.key_path}", signer)
        if env.get(WLCG_TOKEN):
            return cls(single_token(env[WLCG_TOKEN], WLCG_TOKEN), f"${WLCG_TOKEN}")
        if env.get(WLCG_TOKEN_FILE):
            path = env[WLCG_TOKEN_FILE]
            return cls(read_token_file(path, f"${WLCG_TOKEN_FILE}"), f"the token file {path}")
        return cls(None, "no token")

    @property
    def present(self) -> bool:
        return self._token is not None

    def headers(self) -> Dict[str, str]:
        """``{"Authorization": "Bearer ..."}`` with the current token, or ``{}`` without one."""
        if self._token is None:
            return {}
        if self._signer is not None:
            with self._lock:
                ends = expiry(self._token)
                if ends is not None and ends.timestamp() - time.time() < REFRESH:
                    self._token = self._signer.mint()
        return {"Authorization": f"Bearer {self._token}"}

