"""The daemon's local control socket: one JSON request, one JSON reply per connection.

Protocol (a Unix stream socket, UTF-8): the client sends one JSON object and a
newline, the server answers one JSON object and a newline, then closes.
Every reply has ``"ok": true|false``; a refusal carries ``"error"``.

Authentication is the file system's: the socket is created mode 0660 and given
to the ``daemon.socket_group`` group, so only the daemon's user and that group
can connect. The server logs the peer's uid/gid/pid (``SO_PEERCRED``) with
every command, and hands them to the handler so actions can record who asked.
"""

from __future__ import annotations

import errno
import grp
import json
import logging
import os
import socket
import stat
import struct
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 64 * 1024
#: A Unix socket path must fit sockaddr_un.sun_path (108 bytes on Linux, with the NUL).
MAX_SOCKET_PATH = 107


class ControlError(Exception):
    """No daemon answered on the control socket (or its answer was not understood)."""


@dataclass(frozen=True)
class PeerCredentials:
    """Who is on the other end of a connection, as the kernel reports it."""

    pid: int
    uid: int
    gid: int

    @property
    def user(self) -> str:
        try:
            import pwd

            return pwd.getpwuid(self.uid).pw_name
        except (KeyError, ImportError):
            return f"uid {self.uid}"


Handler = Callable[[dict[str, Any], PeerCredentials], dict[str, Any]]


def peer_credentials(conn: socket.socket) -> PeerCredentials:
    """``SO_PEERCRED`` of a connected Unix socket (Linux)."""
    raw = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return PeerCredentials(pid=pid, uid=uid, gid=gid)


class ControlServer:
    """Serve control requests on a Unix socket in a background thread."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        handler: Handler,
        *,
        group: str | None = None,
        mode: int = 0o660,
        request_timeout_s: float = 30.0,
    ) -> None:
        self.path = Path(path)
        self.handler = handler
        self.group = group
        self.mode = mode
        self.request_timeout_s = request_timeout_s
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._closing = threading.Event()

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        """Bind (replacing a stale socket file, refusing a live one), set mode and group, serve."""
        if len(os.fsencode(self.path)) > MAX_SOCKET_PATH:
            raise OSError(
                errno.ENAMETOOLONG,
                f"control socket path is {len(os.fsencode(self.path))} bytes, the limit is {MAX_SOCKET_PATH}: "
                "set daemon.control_socket to a shorter path",
                str(self.path),
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._remove_stale()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        old_umask = os.umask(0o117)  # never world-accessible, not even for an instant
        try:
            sock.bind(str(self.path))
        finally:
            os.umask(old_umask)
        os.chmod(self.path, self.mode)
        self._apply_group()
        sock.listen(16)
        sock.settimeout(0.5)  # lets the accept loop notice close()
        self._sock = sock
        self._thread = threading.Thread(target=self._serve, name="control-socket", daemon=True)
        self._thread.start()
        log.info("control socket listening on %s (mode %o)", self.path, self.mode)

    def close(self) -> None:
        self._closing.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._sock is not None:
            self._sock.close()
            self._sock = None
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass

    def __enter__(self) -> "ControlServer":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ---------------------------------------------------------------

    def _remove_stale(self) -> None:
        try:
            st = self.path.lstat()
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise FileExistsError(f"{self.path} exists and is not a socket; refusing to replace it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(1.0)
        try:
            probe.connect(str(self.path))
        except OSError:
            log.info("removing stale control socket %s", self.path)
            self.path.unlink()
        else:
            raise RuntimeError(f"another gatekeeper daemon is already serving {self.path}")
        finally:
            probe.close()

    def _apply_group(self) -> None:
        if not self.group:
            return
        try:
            gid = grp.getgrnam(self.group).gr_gid
        except KeyError:
            log.warning(
                "group %r does not exist: the control socket %s stays with group %s; "
                "create the group (see docs/install.md) so operators can use it",
                self.group, self.path, self.path.stat().st_gid,
            )
            return
        try:
            os.chown(self.path, -1, gid)
        except PermissionError:
            log.warning("cannot give %s to group %r (not a member?): only this user can use it", self.path, self.group)

    def _serve(self) -> None:
        assert self._sock is not None
        while not self._closing.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError as exc:
                if self._closing.is_set():
                    return
                log.error("control socket accept failed: %s", exc)
                self._closing.wait(0.5)
                continue
            threading.Thread(target=self._handle, args=(conn,), name="control-request", daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(self.request_timeout_s)
            try:
                peer = peer_credentials(conn)
            except OSError as exc:
                log.error("control socket: cannot read peer credentials, refusing: %s", exc)
                return
            try:
                request = _read_message(conn)
            except _NoRequest:
                log.debug("control connection from uid %d (pid %d) closed without a request", peer.uid, peer.pid)
                return
            except (OSError, ValueError) as exc:
                log.warning("control request from uid %d (pid %d) rejected: %s", peer.uid, peer.pid, exc)
                _send(conn, {"ok": False, "error": f"bad request: {exc}"})
                return
            cmd = request.get("cmd")
            log.info("control %r from %s (uid %d, pid %d)", cmd, peer.user, peer.uid, peer.pid)
            try:
                reply = self.handler(request, peer)
            except Exception as exc:  # a handler bug must not kill the server
                log.exception("control %r failed", cmd)
                reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            _send(conn, reply)


class _NoRequest(Exception):
    """The peer connected and closed without sending anything (a liveness probe)."""


def _read_line(sock: socket.socket, *, chunk_size: int, limit: int | None = None) -> bytes:
    """Bytes up to and including the first newline (or until the peer closes); the protocol is one JSON line."""
    buf = bytearray()
    while b"\n" not in buf:
        chunk = sock.recv(chunk_size)
        if not chunk:
            break
        buf += chunk
        if limit is not None and len(buf) > limit:
            raise ValueError(f"request larger than {limit} bytes")
    return bytes(buf)


def _read_message(conn: socket.socket) -> dict[str, Any]:
    buf = _read_line(conn, chunk_size=4096, limit=MAX_REQUEST_BYTES)
    if not buf:
        raise _NoRequest()
    line = buf.split(b"\n", 1)[0]
    if not line.strip():
        raise ValueError("empty request")
    try:
        message = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise ValueError("the request must be a JSON object")
    return message


def _send(conn: socket.socket, message: dict[str, Any]) -> None:
    try:
        conn.sendall(json.dumps(message, default=str).encode("utf-8") + b"\n")
    except OSError as exc:
        log.warning("control reply not delivered: %s", exc)


def request(socket_path: str | os.PathLike[str], payload: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
    """Send one request to the daemon and return its reply.

    Raises :class:`ControlError` when no daemon answers (no socket, refused,
    no permission, timeout, garbled reply). A reply with ``"ok": false`` is
    returned, not raised: the caller decides how to show the refusal.
    """
    path = str(socket_path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(path)
        except FileNotFoundError:
            raise ControlError(f"no daemon: {path} does not exist") from None
        except ConnectionRefusedError:
            raise ControlError(f"no daemon listening on {path}") from None
        except PermissionError:
            raise ControlError(f"permission denied on {path} (are you in the daemon's socket group?)") from None
        except OSError as exc:
            raise ControlError(f"cannot connect to {path}: {exc}") from None
        try:
            sock.sendall(json.dumps(payload).encode("utf-8") + b"\n")
            buf = _read_line(sock, chunk_size=65536)
        except TimeoutError:
            raise ControlError(f"the daemon on {path} did not answer within {timeout:g} s") from None
        except OSError as exc:
            raise ControlError(f"control socket {path}: {exc}") from None
    finally:
        sock.close()
    try:
        reply = json.loads(buf.split(b"\n", 1)[0])
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ControlError(f"the daemon on {path} sent a reply that is not JSON") from None
    if not isinstance(reply, dict):
        raise ControlError(f"the daemon on {path} sent an unexpected reply")
    return reply
