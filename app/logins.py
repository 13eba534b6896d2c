"""Who is logged in: the user of an HTTP basic ``Authorization`` header.

The server's login middleware checks passwords; handlers only ask who the (already checked)
user is, to keep each analyst's results apart when several logins exist.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping

from app.config import Auth

__all__ = ["credentials", "login_of"]


def credentials(header: str | None) -> tuple[str, str] | None:
    """(user, password) of a ``Basic`` Authorization header; None when absent or malformed."""
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        user, sep, password = base64.b64decode(header[6:], validate=True).decode("utf-8").partition(":")
    except (binascii.Error, ValueError):
        return None
    return (user, password) if sep else None


def login_of(headers: Mapping[str, str] | None, logins: tuple[Auth, ...]) -> str | None:
    """The logged-in user of a request whose auth the middleware already checked (None without
    logins). Handlers use it to keep each analyst's answers apart."""
    if not logins or headers is None:
        return None
    creds = credentials(headers.get("authorization"))
    return creds[0] if creds else None
