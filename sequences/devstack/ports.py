"""TCP port helpers for starting local servers on ports nobody else is using."""

from __future__ import annotations

import socket
import subprocess
import time

_POLL_INTERVAL = 0.02
# Ports the OS picked for this process: never handed out twice, because the servers they are
# meant for bind them a moment later, and meanwhile the OS may offer the same port again (two
# services of the dev stack once got one health port).
_handed_out: set[int] = set()


def free_port(preferred: int | None = None, host: str = "127.0.0.1") -> int:
    """Return ``preferred`` if it can be bound on ``host``, else a port the OS picks.

    The port is released before returning, so another process could take it in between; the
    servers started with it fail loudly if that happens, which is acceptable for a dev stack.
    """
    if preferred is not None:
        try:
            return _bind_and_release(host, preferred)
        except OSError:
            pass
    for _ in range(100):
        port = _bind_and_release(host, 0)
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise OSError("no free port the OS would pick that this process has not handed out")


def _bind_and_release(host: str, port: int) -> int:
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR matches what the servers themselves set, so a port whose previous owner
        # is still in TIME_WAIT counts as free, as it is for them.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        return int(sock.getsockname()[1])


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def wait_for_port(
    host: str,
    port: int,
    timeout: float = 10.0,
    *,
    process: subprocess.Popen[bytes] | None = None,
) -> None:
    """Block until something accepts TCP connections on ``host:port``.

    Raises ``TimeoutError`` if nothing does within ``timeout`` seconds. If ``process`` is given
    (the server expected to listen), raises ``RuntimeError`` as soon as it exits, rather than
    waiting out the timeout for a server that already failed.
    """
    deadline = time.monotonic() + timeout
    last_error: OSError | None = None
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(
                f"process {process.pid} exited with code {process.returncode} "
                f"before listening on {host}:{port}"
            )
        try:
            with socket.create_connection((host, port), timeout=_POLL_INTERVAL * 5):
                return
        except OSError as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"nothing accepted TCP connections on {host}:{port} within {timeout:g} s "
                f"(last error: {last_error})"
            )
        time.sleep(_POLL_INTERVAL)
