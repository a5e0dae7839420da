"""Headers every response carries, and the warning for serving beyond loopback without HTTPS.

`SecurityHeaders` (ASGI middleware) adds, unless the response set them itself:

* ``X-Content-Type-Options: nosniff`` on every response;
* ``Cache-Control: no-store`` on every response but the static files (API answers hold
  items, tokens' users and review data: no proxy or browser cache may keep them);
* a ``Content-Security-Policy``: the pages send their own (`PAGE_CSP`); everything else gets
  `API_CSP`, which lets nothing load, and the optional API docs pages (``/docs``, ``/redoc``,
  off unless ``create_app(api_docs=True)``) get `DOCS_CSP`, which allows the one CDN they
  load their script and style from.
"""

from __future__ import annotations

import ipaddress
from typing import Any

PAGE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
            "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'"
DOCS_CDN = "https://cdn.jsdelivr.net"
# FastAPI's docs pages start their script inline and load the favicon from fastapi.tiangolo.com.
DOCS_CSP = (f"default-src 'none'; script-src {DOCS_CDN} 'unsafe-inline'; style-src {DOCS_CDN} 'unsafe-inline'; "
            f"img-src 'self' data: {DOCS_CDN} https://fastapi.tiangolo.com; connect-src 'self'; worker-src blob:; "
            "frame-ancestors 'none'; base-uri 'none'")
DOCS_PATHS = ("/docs", "/redoc")


class SecurityHeaders:
    """ASGI middleware adding the headers above to each HTTP response."""

    def __init__(self, app: Any, static_prefix: str = "/static/") -> None:
        self.app = app
        self.static_prefix = static_prefix

    def _extra(self, path: str) -> list[tuple[bytes, bytes]]:
        headers = [(b"x-content-type-options", b"nosniff")]
        if not path.startswith(self.static_prefix):
            headers.append((b"cache-control", b"no-store"))
        docs = path in DOCS_PATHS or path.startswith("/docs/")
        headers.append((b"content-security-policy", (DOCS_CSP if docs else API_CSP).encode()))
        return headers

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = self._extra(scope.get("path", ""))

        async def send_with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers") or [])
                present = {name.lower() for name, _ in headers}
                headers.extend((name, value) for name, value in extra if name not in present)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or name to listen on) is reachable from this machine only."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost: it may resolve to any interface


def exposure_warning(host: str, secure_cookies: bool) -> str | None:
    """The one-line warning for `howsure serve` listening beyond loopback without Secure
    cookies (so, presumably, without HTTPS in front), or None when there is nothing to say."""
    if is_loopback(host) or secure_cookies:
        return None
    return (f"warning: listening on {host}, beyond this machine, without --secure-cookies: tokens and review "
            "sessions travel in clear text unless HTTPS is in front; put a TLS proxy in front and pass "
            "--secure-cookies")
