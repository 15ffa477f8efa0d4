"""wsproxy: a WebSockets-to-TCP proxy on gevent.

The public API is small: :class:`WSProxy` (a gevent ``StreamServer``) and :class:`Settings`.
"""

from __future__ import annotations

__version__ = "0.1.0"

from wsproxy.server import WSProxy
from wsproxy.settings import Settings

__all__ = ["Settings", "WSProxy", "__version__"]
