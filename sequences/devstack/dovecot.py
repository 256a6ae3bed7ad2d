"""A Dovecot IMAP server for tests and benchmarks: its own config, run and mail directories,
one test user, a free loopback port, plain-text login (loopback only, no TLS).

Dovecot (Debian `dovecot-imapd` 2.3) starts as root but refuses to run its login processes as
root, so they run as `dovenull` and mail is stored as `dovecot`; when not root, everything runs
as the current user. It offers IDLE, UIDPLUS, MOVE and CONDSTORE. The master process daemonizes
itself, so it is stopped through the pid it writes to `base_dir/master.pid`.
"""

from __future__ import annotations

import getpass
import grp
import imaplib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import quote

from sequences.devstack.ports import free_port, wait_for_port

_STOP_GRACE = 0.5


def dovecot_binary() -> Path | None:
    found = shutil.which("dovecot") or next(
        (p for p in ("/usr/sbin/dovecot", "/usr/local/sbin/dovecot") if os.access(p, os.X_OK)),
        None,
    )
    return Path(found) if found else None


class Dovecot:
    """One Dovecot master process serving IMAP on `host:port` for a test user (`user`), and for
    `more_users` (name: password), each with a mailbox of their own."""

    def __init__(self, data_dir: Path, port: int | None = None, host: str = "127.0.0.1",
                 user: str = "sales", password: str = "secret",
                 more_users: dict[str, str] | None = None,
                 tls: tuple[str, str] | None = None,
                 oauth2_introspection_url: str | None = None,
                 oauth2_mechanisms: tuple[str, ...] = ("xoauth2", "oauthbearer")) -> None:
        """`tls`: a certificate and its key, offered with STARTTLS on the port;
        `oauth2_introspection_url`: also AUTH XOAUTH2 and OAUTHBEARER (or only those of
        `oauth2_mechanisms`), each token checked at that RFC 7662 introspection endpoint
        (Dovecot's oauth2 passdb)."""
        self.data_dir = Path(data_dir)
        self.tls = tls
        self.oauth2_introspection_url = oauth2_introspection_url
        self.oauth2_mechanisms = " ".join(oauth2_mechanisms)
        self.host = host
        self.port = port or free_port()
        # with a certificate, also implicit TLS (imaps) on a port of its own
        self.imaps_port = free_port() if tls else 0
        self.users = {user: password, **(more_users or {})}
        self.user = user
        self.run_dir = self.data_dir / "run"
        self.mail_dir = self.data_dir / "mail"
        self.log_path = self.data_dir / "dovecot.log"
        self._config = self.data_dir / "dovecot.conf"
        self._passwd = self.data_dir / "passwd"

    @property
    def url(self) -> str:
        """The test user's mailbox as WATCH_MAILBOXES takes it (with its password: never log)."""
        return self.url_for(self.user)

    def url_for(self, user: str, query: str = "") -> str:
        password = quote(self.users[user], safe="")
        return f"imap://{quote(user, safe='')}:{password}@{self.host}:{self.port}{query}"

    @property
    def pid(self) -> int | None:
        try:
            return int((self.run_dir / "master.pid").read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def start(self) -> str:
        binary = dovecot_binary()
        if binary is None:
            raise RuntimeError("dovecot not found; install it: apt-get install -y dovecot-imapd")
        if free_port(self.port, self.host) != self.port:
            raise RuntimeError(f"cannot start dovecot: {self.host}:{self.port} is in use")
        self._prepare_files()
        # Not a pipe: the daemonized master would keep it open and a reader would never finish.
        with self.log_path.open("ab") as log:
            started = subprocess.run([str(binary), "-c", str(self._config)],
                                     stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        if started.returncode != 0:
            raise RuntimeError(f"dovecot failed to start:\n{self._log_tail()}")
        try:
            wait_for_port(self.host, self.port, timeout=15)
            self._wait_for_pid_file()
        except TimeoutError as error:
            self.stop()
            raise RuntimeError(f"dovecot did not listen: {error}\n{self._log_tail()}") from error
        return self.url

    def _prepare_files(self) -> None:
        mail_owner, mail_group, login_user = _run_as()
        for directory in (self.data_dir, self.run_dir, self.mail_dir):
            directory.mkdir(parents=True, exist_ok=True)
        # The unprivileged mail and login processes must reach these directories, and the
        # parents pytest creates are private (0700): let everyone traverse (not list) them.
        _allow_traversal(self.data_dir)
        shutil.chown(self.mail_dir, mail_owner, mail_group)
        self._write_passwd()
        self._config.write_text(_CONFIG.format(
            base_dir=self.run_dir, log=self.log_path, host=self.host, port=self.port,
            imaps_port=self.imaps_port,
            passwd=self._passwd, mail=self.mail_dir, mail_owner=mail_owner, mail_group=mail_group,
            login_user=login_user,
            state_dir=self.data_dir / "state",
        ) + self._tls_config() + self._oauth2_config())

    def _tls_config(self) -> str:
        if self.tls is None:
            return ""
        cert, key = self.tls
        return f"ssl = yes\nssl_cert = <{cert}\nssl_key = <{key}\n"

    def _oauth2_config(self) -> str:
        if self.oauth2_introspection_url is None:
            return ""
        settings = self.data_dir / "dovecot-oauth2.conf.ext"
        settings.write_text(f"introspection_mode = post\n"
                            f"introspection_url = {self.oauth2_introspection_url}\n"
                            f"tokeninfo_url = {self.oauth2_introspection_url}?token=\n"
                            "force_introspection = yes\nusername_attribute = username\n"
                            "active_attribute = active\nactive_value = true\n")
        settings.chmod(0o644)
        return (f"auth_mechanisms = plain login {self.oauth2_mechanisms}\n"
                f"passdb {{\n  driver = oauth2\n  mechanisms = {self.oauth2_mechanisms}\n"
                f"  args = {settings}\n}}\n")

    def _write_passwd(self) -> None:
        self._passwd.write_text("".join(f"{user}:{{PLAIN}}{password}::::::\n"
                                        for user, password in self.users.items()))
        self._passwd.chmod(0o644)

    def _wait_for_pid_file(self) -> None:
        # the master may listen a moment before it writes master.pid, which stop() needs
        deadline = time.monotonic() + 5
        while self.pid is None:
            if time.monotonic() > deadline:
                raise TimeoutError("dovecot wrote no master.pid")
            time.sleep(0.01)

    def _log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""

    def stop(self) -> None:
        """SIGTERM, then SIGKILL to the whole process group after a grace period: a graceful
        Dovecot shutdown takes about six seconds here, too long for a test's teardown, and
        nothing of a test mailbox needs saving."""
        pid = self.pid
        if pid is None:
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + _STOP_GRACE
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        if _alive(pid):
            # the master called setsid(): its group is itself and every child it forked
            os.killpg(pid, signal.SIGKILL)
        (self.run_dir / "master.pid").unlink(missing_ok=True)

    # --- what the tests do with it --------------------------------------------------------

    def append(self, user: str, raw: bytes, folder: str = "INBOX") -> None:
        """Deliver `raw` into `folder` (created when missing) with IMAP APPEND."""
        with self._imap(user) as imap:
            imap.create(folder)  # "already exists" is fine
            crlf = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")  # as IMAP wants lines
            status, detail = imap.append(folder, None, None, crlf)
            if status != "OK":
                raise RuntimeError(f"APPEND to {folder} failed: {detail}")

    def recreate_folder(self, user: str, folder: str) -> None:
        """Delete and create `folder`: it comes back empty, with a new UIDVALIDITY."""
        with self._imap(user) as imap:
            imap.delete(folder)
            imap.create(folder)

    def _imap(self, user: str) -> imaplib.IMAP4:
        imap = imaplib.IMAP4(self.host, self.port)
        try:
            imap.login(user, self.users[user])
        except imaplib.IMAP4.error:
            imap.shutdown()
            raise
        return imap

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def _run_as() -> tuple[str, str, str]:
    """(owner of the mail, its group, user of the login processes)."""
    if os.geteuid() == 0:
        return "dovecot", "dovecot", "dovenull"
    me = getpass.getuser()
    return me, grp.getgrgid(os.getgid()).gr_name, me


def _allow_traversal(path: Path) -> None:
    for directory in (path, *path.parents):
        mode = directory.stat().st_mode
        if mode & 0o001 == 0 and os.access(directory, os.W_OK):
            directory.chmod(mode | 0o001)


def _alive(pid: int) -> bool:
    """Running, and not a zombie (the daemonized master is not our child: we cannot reap it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


# Loopback test server: plain-text logins without TLS are acceptable only because it listens on
# 127.0.0.1. Everything it writes stays under the data directory.
_CONFIG = """\
base_dir = {base_dir}
state_dir = {state_dir}
log_path = {log}
protocols = imap
listen = {host}
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
# a wrong password is answered at once, not after the delays that slow down guessing (a fixed
# one, and one that grows with each failure, kept by anvil)
auth_failure_delay = 0
service anvil {{
  chroot =
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
default_login_user = {login_user}
default_internal_user = {mail_owner}
default_internal_group = {mail_group}
mail_location = maildir:{mail}/%u
mail_uid = {mail_owner}
mail_gid = {mail_group}
# the mail owner is a system user, below Dovecot's default first valid UID (500)
first_valid_uid = 0
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {passwd}
}}
userdb {{
  driver = static
  args = uid={mail_owner} gid={mail_group} home={mail}/%u
}}
# no chroot: only root may chroot, and the server runs as the current user when not root
service imap-login {{
  chroot =
  inet_listener imap {{
    address = {host}
    port = {port}
  }}
  inet_listener imaps {{
    address = {host}
    port = {imaps_port}
    ssl = yes
  }}
}}
protocol imap {{
  mail_max_userip_connections = 100
}}
"""
