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


def check(request: web.Request, credentials: dict[str, str] | None) -> web.Response | None:
    """None when the call may go on; else WebUI's 401."""
    if credentials is None:
        return None
    scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "basic" or not encoded:
        return _unauthorized(NOT_AUTHENTICATED)
    try:
        user, sep, password = base64.b64decode(encoded, validate=True).decode("ascii").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return _unauthorized("Invalid authentication credentials")
    if not sep:
        return _unauthorized("Invalid authentication credentials")
    expected = credentials.get(user)
    if expected is not None and compare_digest(password.encode(), expected.encode()):
        return None
    return _unauthorized(INCORRECT)
