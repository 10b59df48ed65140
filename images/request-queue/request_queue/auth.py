"""Basic auth on WebUI's API, checked before a call is queued, answered as WebUI answers it.

WebUI (modules/api/api.py, Api.auth and api_middleware) depends on FastAPI's HTTPBasic: no or unreadable
credentials raise HTTPException(401, "Not authenticated") (fastapi/security/http.py, HTTPBasic.__call__),
wrong ones HTTPException(401, "Incorrect username or password"). WebUI's exception handler turns either into
JSONResponse(status_code, {"error", "detail", "body", "errors"}) without the exception's headers, so the 401
carries no WWW-Authenticate.
"""

from __future__ import annotations

import base64
import binascii
import json
from secrets import compare_digest

from aiohttp import web

NOT_AUTHENTICATED = "Not authenticated"
INCORRECT = "Incorrect username or password"


def _unauthorized(detail: str) -> web.Response:
    body = {"error": "HTTPException", "detail": detail, "body": "", "errors": f"401: {detail}"}
    return web.Response(status=401, body=json.dumps(body).encode(), content_type="application/json")


def _basic(request: web.Request) -> tuple[str, str] | str:
    """(user, password) from the Authorization header; else the detail WebUI's 401 gives."""
    scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "basic" or not encoded:
        return NOT_AUTHENTICATED
    try:
        user, sep, password = base64.b64decode(encoded, validate=True).decode("ascii").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return "Invalid authentication credentials"
    return (user, password) if sep else "Invalid authentication credentials"


def caller(request: web.Request, forwarded_for_entries: int) -> str:
    """Who calls, as far as WebUI's API clients can be told apart through the front: the basic-auth user and the
    client's address. The load balancer appends `forwarded_for_entries` X-Forwarded-For entries, the client's
    address first (components/gateway.py FORWARDED_FOR_ENTRIES); entries before them are the client's own
    writing and count for nothing. Without a load balancer (0) the peer is the client."""
    basic = _basic(request)
    user = basic[0] if isinstance(basic, tuple) else ""
    forwarded = [hop.strip() for hop in request.headers.get("X-Forwarded-For", "").split(",") if hop.strip()]
    trusted = forwarded_for_entries and len(forwarded) >= forwarded_for_entries
    address = forwarded[-forwarded_for_entries] if trusted else (request.remote or "")
    return f"{user}@{address}"


def check(request: web.Request, credentials: dict[str, str] | None) -> web.Response | None:
    """None when the call may go on; else WebUI's 401."""
    if credentials is None:
        return None
    basic = _basic(request)
    if isinstance(basic, str):
        return _unauthorized(basic)
    user, password = basic
    expected = credentials.get(user)
    if expected is not None and compare_digest(password.encode(), expected.encode()):
        return None
    return _unauthorized(INCORRECT)
