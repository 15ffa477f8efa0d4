"""websockify's HTTP token plug-ins: ``BaseTokenAPI`` (the answer's body is ``host:port``) and
``JSONTokenApi`` (``{"host": ..., "port": ...}``).

The source is a URL with ``%s`` where the token goes. Each lookup is one GET with the standard
library (it runs in a lookup thread: see :mod:`wsproxy.plugins.tokens`), bounded by
``API_TIMEOUT``; an answer is kept for ``CACHE_TTL`` seconds so that a client's reconnects (noVNC
retries at once) do not each cost a request. The token is percent-encoded into the URL, so it
cannot change the URL's path or query. A 4xx answer means "not found" (404 to the client), a
5xx or no answer a failed lookup (502). User info in the URL (``http://user:pass@host/%s``) is
sent as Basic auth, as websockify's ``requests`` does; it is taken out of the URL at start, so no
log line or error message can show the password.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.error
import urllib.request
from collections import OrderedDict
from email.message import Message
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from wsproxy.errors import ConfigError
from wsproxy.settings.values import parse_target

__all__ = ["API_TIMEOUT", "CACHE_SIZE", "CACHE_TTL", "BaseTokenAPI", "JSONTokenApi", "Response"]

API_TIMEOUT = 5.0  # seconds for one request to the token API
CACHE_TTL = 10.0  # seconds an answer is reused
CACHE_SIZE = 1024  # answers kept
MAX_ANSWER = 64 * 1024  # bytes read from one answer
SOURCE_FORM = "an http:// or https:// URL with %s where the token goes (%% for a literal %)"


class Response:
    """The parts of a ``requests`` response that websockify's plug-ins (and subclasses of
    them written for it) read in ``process_result``."""

    def __init__(self, status_code: int, content: bytes, headers: Message) -> None:
        self.status_code = status_code
        self.content = content
        self.headers = headers

    @property
    def ok(self) -> bool:
        return self.status_code < 400

    @property
    def text(self) -> str:
        return self.content.decode(self.headers.get_content_charset() or "utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.content)


class BaseTokenAPI:
    """GET ``source % token``; the body of a 2xx answer is ``host:port``."""

    def __init__(self, source: str | None) -> None:
        try:
            if not source or urlsplit(source).scheme not in ("http", "https"):
                raise ValueError(source)
            source % "token"  # exactly one %s, any other % doubled
        except (ValueError, TypeError):
            raise ConfigError(
                f"{type(self).__name__} needs a URL",
                source="command line",
                key="token_source",
                expected=SOURCE_FORM,
            ) from None
        self.source, self._authorization = _split_credentials(source)
        self._cache: OrderedDict[str, tuple[float, object]] = OrderedDict()
        self._lock = threading.Lock()

    def describe(self) -> str:
        return f"by token from {urlsplit(self.source).netloc} ({type(self).__name__})"

    def lookup(self, token: str) -> object:
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(token)
            if hit is not None and hit[0] > now:
                return hit[1]
        response = self.fetch(self.source % quote(token, safe=""))
        if response.status_code >= 500:
            raise OSError(f"token API answered {response.status_code}")
        if not response.ok:
            return None
        result = self.process_result(response)
        if result is not None:
            with self._lock:
                self._cache[token] = (now + CACHE_TTL, result)
                self._cache.move_to_end(token)
                while len(self._cache) > CACHE_SIZE:
                    self._cache.popitem(last=False)
        return result

    def fetch(self, url: str) -> Response:
        """One GET; an HTTP error status is an answer too."""
        headers = {"Accept": "application/json, text/plain"}
        if self._authorization:
            headers["Authorization"] = self._authorization
        request = urllib.request.Request(url, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=API_TIMEOUT) as answer:
                return Response(answer.status, answer.read(MAX_ANSWER), answer.headers)
        except urllib.error.HTTPError as error:
            with error:
                return Response(error.code, error.read(MAX_ANSWER), error.headers)

    def process_result(self, resp: Response) -> object:
        """The target in a 2xx answer: ``host:port`` (IPv6 as ``[::1]:PORT`` or ``::1:PORT``)."""
        return parse_target(resp.text.strip())


def _split_credentials(url: str) -> tuple[str, str | None]:
    """The URL without its user info, and that user info as a Basic ``Authorization`` value."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, None
    userinfo, _, hostport = parts.netloc.rpartition("@")
    # As websockify does: ``%`` formatting first (``%%`` is ``%``), then percent-decoding.
    user, _, password = userinfo.replace("%%", "%").partition(":")
    pair = f"{unquote(user)}:{unquote(password)}".encode()
    return urlunsplit(parts._replace(netloc=hostport)), "Basic " + base64.b64encode(pair).decode()


class JSONTokenApi(BaseTokenAPI):
    """GET ``source % token``; a 2xx answer is ``{"host": "...", "port": ...}``."""

    def process_result(self, resp: Response) -> object:
        data = resp.json()
        return (data["host"], data["port"])
