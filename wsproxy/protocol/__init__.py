"""The sans-I/O protocol layer: bytes in, events and bytes out; no sockets, no clock, no gevent.

Each module here is checked strictly by mypy and tested without a socket; the gevent layer
(:mod:`wsproxy.session`, :mod:`wsproxy.relay`, :mod:`wsproxy.webserver`) drives them.
"""
