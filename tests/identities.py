"""Throwaway broker identities for tests: a CA, a broker certificate, client certificates, a password file.

Made at test time in a temp directory (``openssl`` CLI); no key is ever committed. The password file uses
mosquitto 2.0's default hash (``$7$``: PBKDF2-HMAC-SHA512, 101 iterations, 12-byte salt), the same lines
``mosquitto_passwd -b`` writes, without putting the passwords on a command line.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"
#: The broker's shipped configuration and ACL (what docs/security.md tells operators to install).
SHIPPED = Path(__file__).resolve().parent.parent / "mosquitto"


def password_line(user: str, password: str, *, salt: bytes | None = None, iterations: int = 101) -> str:
    """One ``user:$7$...`` line of a mosquitto 2.0 password file."""
    salt = salt if salt is not None else os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"{user}:$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def write_password_file(path: Path, users: Mapping[str, str]) -> Path:
    path.write_text("".join(password_line(u, p) + "\n" for u, p in users.items()), encoding="utf-8")
    path.chmod(0o600)
    return path


def _openssl(*args: str) -> None:
    subprocess.run([OPENSSL, *args], check=True, capture_output=True, timeout=60)


@dataclass(frozen=True)
class Pki:
    """Paths of one throwaway PKI. ``other_ca`` signs certificates the broker must not accept."""

    root: Path

    @property
    def ca(self) -> Path:
        return self.root / "ca.crt"

    @property
    def other_ca(self) -> Path:
        return self.root / "other-ca.crt"

    @property
    def broker_cert(self) -> Path:
        return self.root / "broker.crt"

    @property
    def broker_key(self) -> Path:
        return self.root / "broker.key"

    def cert(self, name: str) -> Path:
        return self.root / f"{name}.crt"

    def key(self, name: str) -> Path:
        return self.root / f"{name}.key"


def _new_ca(root: Path, name: str, subject: str) -> None:
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", str(root / f"{name}.key"), "-out", str(root / f"{name}.crt"), "-days", "2",
             "-subj", f"/CN={subject}")


def _issue(root: Path, name: str, *, ca: str, extensions: str) -> None:
    ext = root / f"{name}.ext"
    ext.write_text(f"basicConstraints=CA:FALSE\n{extensions}\n", encoding="ascii")
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", str(root / f"{name}.key"), "-out", str(root / f"{name}.csr"), "-subj", f"/CN={name}")
    _openssl("x509", "-req", "-in", str(root / f"{name}.csr"), "-CA", str(root / f"{ca}.crt"),
             "-CAkey", str(root / f"{ca}.key"), "-CAcreateserial", "-out", str(root / f"{name}.crt"),
             "-days", "2", "-extfile", str(ext))


def make_pki(root: Path, *, clients: Iterable[str] = (), foreign_clients: Iterable[str] = ()) -> Pki:
    """A CA, a broker certificate for 127.0.0.1/localhost, a client certificate (CN = name) per client, and
    ``foreign_clients`` signed by another CA."""
    root.mkdir(parents=True, exist_ok=True)
    _new_ca(root, "ca", "gatekeeper test CA")
    _new_ca(root, "other-ca", "someone else's CA")
    _issue(root, "broker", ca="ca", extensions="subjectAltName=IP:127.0.0.1,DNS:localhost\n"
           "extendedKeyUsage=serverAuth")
    for name in clients:
        _issue(root, name, ca="ca", extensions="extendedKeyUsage=clientAuth")
    for name in foreign_clients:
        _issue(root, name, ca="other-ca", extensions="extendedKeyUsage=clientAuth")
    for key in root.glob("*.key"):
        key.chmod(0o600)
    return Pki(root)


def shipped_broker_config(*, pki: Pki, passwords: Path, acl: Path, password_port: int,
                          certificate_port: int) -> list[str]:
    """mosquitto/gatekeeper.conf as shipped, with its /etc paths and ports pointed at this test's files.

    The lots' CA (lots-ca.crt) is the test CA, which also signed the broker certificate.
    """
    paths = {
        "/etc/mosquitto/gatekeeper.passwd": passwords,
        "/etc/mosquitto/gatekeeper.acl": acl,
        "/etc/mosquitto/certs/broker.crt": pki.broker_cert,
        "/etc/mosquitto/certs/broker.key": pki.broker_key,
        "/etc/mosquitto/certs/lots-ca.crt": pki.ca,
    }
    ports = {"8883": password_port, "8884": certificate_port}
    lines = []
    for line in (SHIPPED / "gatekeeper.conf").read_text(encoding="utf-8").splitlines():
        words = line.split()
        if len(words) == 2 and words[0] == "listener":
            line = f"listener {ports[words[1]]} 127.0.0.1"
        elif len(words) == 2 and words[1].startswith("/etc/"):
            line = f"{words[0]} {paths[words[1]]}"  # a KeyError here: the shipped file names a new path
        lines.append(line)
    return lines


def write_dynsec_file(path: Path, *, clients: Mapping[str, str],
                      roles: Mapping[str, Iterable[tuple[str, str]]]) -> Path:
    """A mosquitto dynamic-security plugin file: each client (user -> password) has the role of its own name,
    each role allows the ``(acltype, topic)`` pairs given; everything else is denied, subscriptions included
    (unlike acl_file, this plugin refuses a subscription in its SUBACK)."""
    import json

    def client(user: str, password: str) -> dict[str, object]:
        salt = os.urandom(12)
        digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, 101)
        return {"username": user, "roles": [{"rolename": user}], "iterations": 101,
                "password": base64.b64encode(digest).decode(), "salt": base64.b64encode(salt).decode()}

    doc = {
        "defaultACLAccess": {"publishClientSend": False, "publishClientReceive": False, "subscribe": False,
                             "unsubscribe": True},
        "clients": [client(u, p) for u, p in clients.items()],
        "groups": [],
        "roles": [{"rolename": name, "acls": [{"acltype": kind, "topic": topic, "priority": 0, "allow": True}
                                              for kind, topic in acls]} for name, acls in roles.items()],
    }
    path.write_text(json.dumps(doc, indent=1), encoding="utf-8")
    path.chmod(0o600)
    return path
