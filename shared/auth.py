"""Service-token checks shared by the gRPC interceptor and the HTTP front doors (constant-time)."""

from __future__ import annotations

import hmac

from pydantic import SecretStr

BEARER = "bearer "


def bearer_ok(header: str | None, token: SecretStr | None) -> bool:
    """True when no token is configured, or `header` is `Bearer <token>` (compared in constant time)."""
    if token is None:
        return True
    if not header or not header.lower().startswith(BEARER):
        return False
    return hmac.compare_digest(header[len(BEARER):].encode(), token.get_secret_value().encode())


def token_ok(candidate: str | None, token: SecretStr | None) -> bool:
    """True when no token is configured, or `candidate` (a bare token, e.g. from a URL) is it (constant time)."""
    if token is None:
        return True
    return candidate is not None and hmac.compare_digest(candidate.encode(), token.get_secret_value().encode())


def bearer_header(token: SecretStr | None) -> str | None:
    return f"Bearer {token.get_secret_value()}" if token is not None else None
