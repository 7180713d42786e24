"""Service keys (S24): shown once, stored only as their SHA-256."""

from __future__ import annotations

import hashlib
import hmac
import secrets

KEY_PREFIX = "hubk_"


def new_service_key() -> str:
    """32 random bytes, URL-safe; shown once, stored only as its SHA-256."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_sha256(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def key_matches(presented: str, stored_sha256: str) -> bool:
    return hmac.compare_digest(key_sha256(presented), stored_sha256)


