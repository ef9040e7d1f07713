"""Why an HTTP request failed, in plain words (requests chains its causes deeply)."""

from __future__ import annotations

import errno
import socket
import ssl
import time

import requests


def http_failure(e: BaseException) -> str:
    """Why a request failed, in plain words, from the exceptions requests chains."""
    todo, seen = [e], set()
    while todo:
        x = todo.pop(0)
        if x is None or id(x) in seen or not isinstance(x, BaseException):
            continue
        seen.add(id(x))
        name = type(x).__name__
        if isinstance(x, socket.gaierror) or name == "NameResolutionError":
            return "host name not resolved"
        if isinstance(x, ConnectionRefusedError):
            return "connection refused"
        if isinstance(x, ssl.SSLCertVerificationError):
            return "SSLError (the server's TLS certificate is not trusted here)"
        if isinstance(x, TimeoutError | requests.Timeout) or "Timeout" in name:
            return "timed out"
        if isinstance(x, OSError) and x.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
            return "no route to the server (network unreachable)"
        todo += [x.__cause__, x.__context__, getattr(x, "reason", None),
                 *[a for a in x.args if isinstance(a, BaseException)]]
    if isinstance(e, requests.exceptions.SSLError):
        return "SSLError (the TLS connection failed)"
    if isinstance(e, requests.exceptions.TooManyRedirects):
        return "too many redirects"
    if isinstance(e, requests.ConnectionError):
        return "cannot connect to the server"
    return type(e).__name__


def read_body(response, limit: int, seconds: float) -> bytes:
    """The body of a streamed ``requests`` response, at most ``limit`` + 1 bytes (so
    that the caller can say it is too large), within ``seconds`` in all: the request's
    timeout is per read, and a server that sends a byte now and then would hold the
    reader for ever. TimeoutError ("timed out") past that."""
    deadline, data = time.monotonic() + seconds, bytearray()
    while len(data) <= limit:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the answer took more than {seconds:g} s")
        chunk = response.raw.read1(min(1 << 16, limit + 1 - len(data)), decode_content=True)
        if not chunk:
            break
        data += chunk
    return bytes(data)
