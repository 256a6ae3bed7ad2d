"""The whole system on one machine: embedded PostgreSQL, nats-server, the SMTP capture server and
the six services, each its own process. `sequences up` runs it; the end-to-end and fault tests
drive the very same class."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from contracts.subjects import EVENTS_STREAM
from sequences.devstack.nats_server import NatsCluster, NatsServer
from sequences.devstack.ports import free_port, wait_for_port
from sequences.devstack.postgres import EmbeddedPostgres
from sequences.devstack.servers import SERVERS_FILE
from sequences.services import SERVICES

log = logging.getLogger("sequences.stack")


def captured_mail_dir(data_dir: Path) -> Path:
    """Where the SMTP capture server keeps every email it received."""
    return data_dir / "mail"


def dev_mailbox_dir(data_dir: Path) -> Path:
    """The Maildir the thread-watcher reads as the sender mailbox (`sequences mail drop-…`)."""
    return data_dir / "mailbox"


@dataclass
class StackConfig:
    data_dir: Path
    gateway_port: int = 8700
    nats_port: int = 4322
    smtp_port: int = 2525
    mail_viewer_port: int = 8701
    clock: str = "adjustable"
    replicas: dict[str, int] = field(default_factory=dict)  # e.g. {"mailer": 2}
    log_to_files: bool = False  # else the services log to this terminal
    service_env: dict[str, dict[str, str]] = field(default_factory=dict)  # extra env per service
    # use these servers instead of starting embedded ones (e.g. DATABASE_URL, NATS_URL from env)
    database_url: str | None = None
    nats_url: str | None = None
    nats_cluster: int = 1  # > 1: that many nats-server nodes with routes, the stream at R<n>


class Stack:
    def __init__(self, config: StackConfig):
        self.config = config
        data = config.data_dir
        self.postgres = EmbeddedPostgres(data / "postgres")
        self.nats = NatsCluster(data / "nats", config.nats_cluster) if config.nats_cluster > 1 \
            else NatsServer(data / "nats", free_port(config.nats_port))
        self.mail_dir = captured_mail_dir(data)
        self.mailbox_dir = dev_mailbox_dir(data)
        self.log_dir = data / "logs"
        self.smtp_port = free_port(config.smtp_port)
        self.viewer_port = free_port(config.mail_viewer_port)
        self.gateway_port = free_port(config.gateway_port)
        self.processes: dict[tuple[str, int], subprocess.Popen] = {}
        self.health_ports: dict[tuple[str, int], int] = {}
        self._capture: subprocess.Popen | None = None
        self.database_url = ""
        # workspace_id, user_id, user_email, api_key, password
        self.workspace: dict[str, str] = {}

    @property
    def api_key(self) -> str:
        """A key of the dev workspace, made on the first start of this data directory."""
        return self.workspace["api_key"]

    @property
    def api_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    @property
    def viewer_url(self) -> str:
        return f"http://127.0.0.1:{self.viewer_port}"

    def api_client(self, timeout: float = 30.0) -> httpx.AsyncClient:
        """An HTTP client for the gateway's API, with the dev workspace's key. The end-to-end
        tests, benchmarks and the fault run call the API through one of these, so what every
        request must carry is added here only."""
        return httpx.AsyncClient(base_url=self.gateway_url, timeout=timeout,
                                 headers=self.api_headers)

    async def web_session(self, email: str | None = None, password: str | None = None,
                          language: str = "en") -> httpx.AsyncClient:
        """An HTTP client signed in to the web app as a browser would be (the dev workspace's
        user by default), for tests and benchmarks of the pages; close it when done.
        `client.csrf` is the session's token, for posting forms."""
        client = httpx.AsyncClient(base_url=self.gateway_url, timeout=30.0,
                                   headers={"Accept-Language": language})
        try:
            page = await client.get("/sign-in")
            answer = await client.post("/sign-in", data={
                "email": email or self.workspace["user_email"],
                "password": password or self.workspace["password"],
                "csrf_token": csrf_token_in(page.text), "next": "/campaigns"})
            if answer.status_code != 303:
                raise RuntimeError(f"sign-in refused: {answer.status_code}")
            client.csrf = csrf_token_in((await client.get("/campaigns")).text)
        except BaseException:
            await client.aclose()
            raise
        return client

    def _secret(self) -> str:
        """A random signing secret made once per data directory, so links stay valid across
        restarts of the dev stack."""
        path = self.config.data_dir / "secret"
        if not path.exists():
            path.write_text(secrets.token_urlsafe(32))
            path.chmod(0o600)
        return path.read_text().strip()

    def _encryption_keys(self) -> str:
        """The key that seals mailbox secrets, made once per data directory (a rotation test
        puts a new one first: `service_env`)."""
        path = self.config.data_dir / "encryption-keys"
        if not path.exists():
            from sequences.encryption import SecretBox

            path.write_text(SecretBox.new_key())
            path.chmod(0o600)
        return path.read_text().strip()

    def env(self) -> dict[str, str]:
        return {
            "SEQUENCES_SECRET": self._secret(),
            "SEQUENCES_ENCRYPTION_KEYS": self._encryption_keys(),
            "SEQUENCES_PUBLIC_URL": self.gateway_url,
            "SMTP_VERIFY_URL": self.viewer_url,
            "DATABASE_URL": self.database_url,
            "NATS_URL": self.config.nats_url or self.nats.url,
            "NATS_STREAM_REPLICAS": str(self.config.nats_cluster),
            "SMTP_URL": f"smtp://127.0.0.1:{self.smtp_port}",
            "GATEWAY_PORT": str(self.gateway_port),
            "SEQUENCES_CLOCK": self.config.clock,
            # the thread-watcher reads a local Maildir as the sender mailbox (service_env may
            # point it at an IMAP server instead)
            "WATCH_MAILBOXES": f"maildir://{self.mailbox_dir}",
            "WATCH_POLL_SECONDS": "1",
        }

    def start(self) -> None:
        self.config.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(exist_ok=True)
        self.database_url = self.config.database_url or self.postgres.start()
        if not self.config.nats_url:
            self.nats.start()
        self._capture = self._spawn(
            "capture",
            ["sequences.devstack.capture", "--mail-dir", str(self.mail_dir), "--smtp-port", str(self.smtp_port),
             "--http-port", str(self.viewer_port)],
            {},
        )
        wait_for_port("127.0.0.1", self.smtp_port, timeout=30)
        for name in SERVICES:
            for replica in range(self.config.replicas.get(name, 1)):
                self.start_service(name, replica)
        self.wait_until_ready()
        self.workspace = self._dev_workspace()
        self._write_servers()

    def _write_servers(self) -> None:
        """Where this stack's servers are, for the command line (`sequences.devservers`): a
        command run while it is up finds them without DATABASE_URL or NATS_URL."""
        path = self.config.data_dir / SERVERS_FILE
        path.write_text(json.dumps({
            "DATABASE_URL": self.database_url, "NATS_URL": self.config.nats_url or self.nats.url,
            "gateway_url": self.gateway_url, "pid": os.getpid(),
            "health_ports": {f"{name}/{replica}": port
                             for (name, replica), port in self.health_ports.items()}}))
        path.chmod(0o600)

    def _dev_workspace(self) -> dict[str, str]:
        """The workspace `sequences up` prints a key of: made once per data directory (a key is
        shown only once, so the dev stack keeps it in a file of its own, readable by you only)."""
        path = self.config.data_dir / "workspace.json"
        if not path.exists():
            made = subprocess.run(
                [sys.executable, "-m", "sequences.cli", "admin", "create-workspace", "Local",
                 "--email", "you@example.com", "--user-name", "You", "--json"],
                env={**os.environ, **self.env()}, capture_output=True, text=True, check=True)
            path.write_text(made.stdout)
            path.chmod(0o600)
        workspace = json.loads(path.read_text())
        if "password" not in workspace:  # made before the app had sign-in
            made = subprocess.run(
                [sys.executable, "-m", "sequences.cli", "admin", "set-password",
                 workspace["user_email"], "--json"],
                env={**os.environ, **self.env()}, capture_output=True, text=True, check=True)
            workspace["password"] = json.loads(made.stdout)["password"]
            path.write_text(json.dumps(workspace))
        return workspace

    def start_service(self, name: str, replica: int = 0, extra_env: dict | None = None) -> None:
        label = _label(name, replica)
        env = {**self.config.service_env.get(name, {}), **(extra_env or {})}
        if name != "gateway":  # every process its own /healthz and /readyz
            port = self.health_ports.setdefault((name, replica), free_port())
            env.setdefault("HEALTH_PORT", str(port))
        self.processes[(name, replica)] = self._spawn(label, ["sequences.cli", "run", name], env)

    def _spawn(self, label: str, module_args: list[str], extra_env: dict[str, str]) -> subprocess.Popen:
        output = None
        if self.config.log_to_files:
            output = (self.log_dir / f"{label}.log").open("ab")
        return subprocess.Popen(
            [sys.executable, "-m", *module_args],
            env={**os.environ, **self.env(), **extra_env},
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT if output else None,
            # own session: Ctrl-C reaches only this supervisor, which stops everything in order
            start_new_session=True,
        )

    def wait_until_ready(self, timeout: float = 60.0) -> None:
        """Until the gateway is ready: NATS, PostgreSQL and the enrollment service through it."""
        deadline = time.monotonic() + timeout
        probe = f"{self.gateway_url}/readyz"
        while time.monotonic() < deadline:
            self._fail_if_exited()
            try:
                if httpx.get(probe, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"the stack did not become ready in {timeout:.0f}s; see {self.log_dir}")

    def _fail_if_exited(self) -> None:
        for (name, replica), process in self.processes.items():
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}; see {self.log_dir}")

    def kill_service(self, name: str, replica: int = 0) -> None:
        process = self.processes[(name, replica)]
        process.send_signal(signal.SIGKILL)
        process.wait()

    def restart_service(self, name: str, replica: int = 0) -> None:
        """SIGKILL one service process and start it again, as a crash and a supervisor would."""
        self.kill_service(name, replica)
        self.start_service(name, replica)

    def restart_nats(self) -> None:
        """Stop nats-server and start it again on the same port and store (embedded only)."""
        if self.config.nats_url:
            raise RuntimeError("NATS comes from NATS_URL: the stack cannot restart it")
        self.nats.restart()

    def kill_nats_node(self, leader: bool = False) -> None:
        """SIGKILL one node of the cluster (the events stream's leader, or the last node) and
        start it again."""
        if not isinstance(self.nats, NatsCluster):
            raise RuntimeError("the stack runs one nats-server, not a cluster")
        name = self.nats.stream_leader(EVENTS_STREAM) if leader else self.nats.nodes[-1].cluster.name
        log.warning("killing NATS node %s%s", name, " (the events stream's leader)" if leader else "")
        self.nats.kill_node(name)

    def power_cut_nats(self) -> None:
        """nats-server as a crash of the machine leaves it: the unsynced tail of the events
        stream gone (see NatsServer.power_cut), then started again (embedded only)."""
        if self.config.nats_url or isinstance(self.nats, NatsCluster):
            raise RuntimeError("the power cut is of the embedded single nats-server")
        cut = self.nats.power_cut(EVENTS_STREAM)
        log.warning("nats-server killed and %d bytes of its newest events block cut", cut)
        self.nats.start()

    def restart_postgres(self) -> None:
        """Stop PostgreSQL (fast: open connections are cut) and start it again (embedded only)."""
        if self.config.database_url:
            raise RuntimeError("PostgreSQL comes from DATABASE_URL: the stack cannot restart it")
        self.database_url = self.postgres.restart()

    def service_pids(self) -> dict[str, int]:
        """Every running service process by label (`mailer`, `mailer-1`, ...): for sampling."""
        return {_label(name, replica): process.pid
                for (name, replica), process in self.processes.items() if process.poll() is None}

    def restart_dead(self) -> list[str]:
        """Start again every service process that exited; returns their names."""
        restarted = []
        for (name, replica), process in list(self.processes.items()):
            if process.poll() is not None:
                log.warning("%s exited with %s; restarting it", name, process.returncode)
                self.start_service(name, replica)
                restarted.append(name)
        return restarted

    def stop(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.config.data_dir / SERVERS_FILE).unlink()
        for process in [*self.processes.values(), self._capture]:
            if process is not None and process.poll() is None:
                process.terminate()
        for process in [*self.processes.values(), self._capture]:
            if process is None:
                continue
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.nats.stop()
        self.postgres.stop()

    def __enter__(self) -> Stack:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


_CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_token_in(html: str) -> str:
    """The CSRF token a page's forms carry (every form of one page carries the same)."""
    found = _CSRF_FIELD.search(html)
    if found is None:
        raise RuntimeError("the page has no form with a csrf_token")
    return found.group(1)


def _label(name: str, replica: int) -> str:
    return name if replica == 0 else f"{name}-{replica}"


def run_until_interrupted(config: StackConfig) -> int:
    """`sequences up`: start everything, print where things are, restart what dies, stop on Ctrl-C."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)-7s %(message)s")
    for chatty in ("pgserver", "httpx"):  # every initdb/pg_ctl line, every readiness probe
        logging.getLogger(chatty).setLevel(logging.WARNING)
    stopping = False

    def request_stop(*_):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    stack = Stack(config)
    print(f"starting Sequences in {config.data_dir} ...", flush=True)
    with stack:
        print(_banner(stack), flush=True)
        while not stopping:
            stack.restart_dead()
            time.sleep(0.5)
        print("\nstopping ...", flush=True)
    print("stopped", flush=True)
    return 0


def _banner(stack: Stack) -> str:
    env = stack.env()
    return f"""
Sequences is running.
  app                  {stack.gateway_url}/
  sign in              {stack.workspace['user_email']} / {stack.workspace['password']}
  API (OpenAPI docs)   {stack.gateway_url}/docs
  API key              {stack.api_key}
                       (workspace "Local", user you@example.com; send it as
                       Authorization: Bearer <key>; kept in {stack.config.data_dir}/workspace.json)
  captured mail        {stack.viewer_url}   (files in {stack.mail_dir})
  dev mailbox          {stack.mailbox_dir}   (answer mail: sequences mail drop-reply --latest)
  NATS                 {env['NATS_URL']}
  PostgreSQL           {env['DATABASE_URL'].replace('+psycopg', '')}
  clock                {env['SEQUENCES_CLOCK']}{'   (move it: POST /v1/dev/clock/advance {"by": "2d"})' if env['SEQUENCES_CLOCK'] == 'adjustable' else ''}
Press Ctrl-C to stop; data stays in {stack.config.data_dir}.
"""
