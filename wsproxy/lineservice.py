"""A small TCP line service for the demo and the tests: greets, then answers each line.

``python -m wsproxy.lineservice [HOST:]PORT``. Lines are echoed back as ``echo: LINE``; ``bye``
ends the connection. Lines are bounded (``MAX_LINE``) so one client cannot grow a buffer forever.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from gevent.server import StreamServer

from wsproxy.settings.values import format_address, parse_listen

__all__ = ["LineService", "main"]

log = logging.getLogger(__name__)

MAX_LINE = 4096
GREETING = b"hello from the wsproxy demo line service; type a line, or 'bye'\r\n"


class LineService(StreamServer):
    def handle(self, sock: Any, address: Any) -> None:
        reader = sock.makefile("rb")
        try:
            sock.sendall(GREETING)
            while True:
                line = reader.readline(MAX_LINE)
                if not line:
                    break
                text = line.rstrip(b"\r\n")
                if text.strip().lower() == b"bye":
                    sock.sendall(b"bye\r\n")
                    break
                sock.sendall(b"echo: " + text + b"\r\n")
        except OSError:
            pass
        finally:
            reader.close()
            sock.close()


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    address = parse_listen(args[0] if args else "127.0.0.1:6081")
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    server = LineService(address)
    server.start()
    log.info("line service on %s", format_address(server.address))
    server.serve_forever()


if __name__ == "__main__":
    main()
