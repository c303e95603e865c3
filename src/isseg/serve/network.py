"""Where the server listens, checked before any model loads: the listening socket (bound at once, so a port in
use is one clear line instead of a failure after the models have loaded), loopback or not, and the TLS files.

:func:`bind_listener` binds the socket without listening; ``isseg serve`` hands it to uvicorn, which listens on it
once the models are loaded. Until then connections are refused (as before a server starts), and no other process
can take the port in between: the check and the use are the same socket, so there is no race.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import ssl
from pathlib import Path


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine (127.0.0.0/8, ::1, ``localhost``)."""
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


def bind_listener(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (not listening yet; port 0: a free one), with the options uvicorn
    sets (SO_REUSEADDR: a port left in TIME_WAIT by a stopped server is reusable; one with a live listener is
    not). One clear ``OSError`` naming the address when it cannot be bound."""
    if not 0 <= port <= 65535:
        raise ValueError(f"--port {port}: expected 0..65535")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    where = f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:
        raise OSError(f"cannot listen on {where}: {exc.strerror or exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise OSError(f"port {port} on {host} is already in use (another server?); stop it or choose another "
                          "--port") from None
        if exc.errno == errno.EACCES:
            raise OSError(f"cannot listen on {where}: permission denied (ports below 1024 need privileges); "
                          "choose a --port above 1023") from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise OSError(f"cannot listen on {where}: {host} is not an address of this machine; see --host") from None
        raise OSError(f"cannot listen on {where}: {exc.strerror or exc}") from None
    except (socket.gaierror, UnicodeError) as exc:
        sock.close()
        raise OSError(f"cannot listen on {where}: unknown host {host!r} ({exc})") from None
    sock.set_inheritable(True)
    return sock


def check_tls(cert: str | None, key: str | None) -> None:
    """Both or neither of ``--tls-cert`` / ``--tls-key``; the files exist and hold a certificate and its private
    key (loaded as the server will load them). One clear error otherwise."""
    if (cert is None) != (key is None):
        raise ValueError("--tls-cert and --tls-key go together: give both (PEM certificate chain, PEM private key)")
    if cert is None or key is None:
        return
    for flag, path in (("--tls-cert", cert), ("--tls-key", key)):
        if not Path(path).is_file():
            raise FileNotFoundError(f"{flag} {path}: no such file")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)

    def no_password() -> bytes:  # never a terminal prompt
        raise ValueError(f"--tls-key {key}: the private key is encrypted; give it unencrypted (readable by the "
                         "server's user only)")

    try:
        context.load_cert_chain(cert, key, password=no_password)
    except ssl.SSLError as exc:
        why = f" ({exc.reason})" if exc.reason and exc.reason != "PEM lib" else ""
        raise ValueError(f"--tls-cert {cert} / --tls-key {key}: not a PEM certificate and its matching private "
                         f"key{why}") from None
    except OSError as exc:
        raise OSError(f"--tls-cert {cert} / --tls-key {key}: cannot be read ({exc.strerror or exc})") from None
