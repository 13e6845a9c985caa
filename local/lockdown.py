"""What keeps the local stack's HTTP endpoints (the emulated AWS endpoint and ``local up``'s app
server) to the developer's own machine and tools.

A web page the developer visits while the stack runs can make the browser send requests to
``127.0.0.1``: cross-origin reads need CORS, which is never granted here (no
``Access-Control-Allow-*`` header is ever sent, so a preflight fails), and requests a browser sends
without a preflight (a form POST) carry an ``Origin`` that is refused. DNS rebinding (a foreign
name resolving to 127.0.0.1) is refused by the ``Host`` check: only loopback names are served.
SDKs and the CLI send no ``Origin`` and a loopback ``Host``, so they are unaffected.
"""
from urllib.parse import urlsplit

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
REFUSED_STATUS = "403 Forbidden"


def _host_name(host):
    host = (host or "").strip().lower()
    if host.startswith("["):  # [::1]:8000
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def is_loopback_host(host):
    """True for a ``Host`` header naming this machine's loopback (any port): 127.0.0.1,
    localhost and its subdomains (S3 virtual-hosted buckets), ::1."""
    name = _host_name(host)
    return name in LOOPBACK_NAMES or name.endswith(".localhost") or name.startswith("127.")


def is_allowed_origin(origin):
    """True when a request's ``Origin`` is absent or a page served from loopback itself."""
    if not origin:
        return True
    try:
        parts = urlsplit(origin)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and is_loopback_host(parts.netloc)


def refusal(headers):
    """Why a request with these headers (a mapping, any case of names) is refused, or None."""
    lowered = {str(k).lower(): v for k, v in headers.items()}
    if not is_loopback_host(lowered.get("host")):
        return "Host %r is not a loopback name: the local stack serves this machine only" % lowered.get("host")
    if not is_allowed_origin(lowered.get("origin")):
        return "cross-origin requests are refused (Origin %r)" % lowered.get("origin")
    return None


def without_cors(headers):
    """``headers`` (a list of (name, value)) less every ``Access-Control-*`` header."""
    return [(k, v) for k, v in headers if not k.lower().startswith("access-control-")]


class LoopbackOnly:
    """WSGI middleware: refuses foreign ``Host``/``Origin`` with 403 and strips CORS headers."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        headers = {"host": environ.get("HTTP_HOST", ""), "origin": environ.get("HTTP_ORIGIN")}
        reason = refusal(headers)
        if reason:
            body = (reason + "\n").encode("utf-8")
            start_response(REFUSED_STATUS, [("Content-Type", "text/plain; charset=utf-8"),
                                            ("Content-Length", str(len(body)))])
            return [body]

        def start(status, response_headers, exc_info=None):
            return start_response(status, without_cors(response_headers), exc_info)

        return self.app(environ, start)
