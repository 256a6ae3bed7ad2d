"""A real Prometheus for tests: Debian's `prometheus` binary (installed by .ci/run with apt),
scraping the given `/metrics` URLs every second, with a data directory and port of its own,
asked with PromQL over its HTTP API."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import yaml

from sequences.devstack.ports import free_port

PROMETHEUS = shutil.which("prometheus") or (
    "/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None)


def scrape_config(targets: dict[str, str]) -> dict:
    """One job per process (`job` names it), so a query can tell which one answered."""
    jobs = []
    for job, url in targets.items():
        parts = urlsplit(url)
        jobs.append({"job_name": job, "metrics_path": parts.path or "/metrics",
                     "static_configs": [{"targets": [parts.netloc]}]})
    return {"global": {"scrape_interval": "1s", "scrape_timeout": "1s",
                       "evaluation_interval": "1s"},
            "scrape_configs": jobs}


class Prometheus:
    """`with Prometheus(dir, {"mailer": "http://127.0.0.1:9/metrics"}) as prom: prom.query(...)`"""

    def __init__(self, directory: Path, targets: dict[str, str]):
        self.directory = directory
        self.targets = targets
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Prometheus:
        self.directory.mkdir(parents=True, exist_ok=True)
        config = self.directory / "prometheus.yml"
        config.write_text(yaml.safe_dump(scrape_config(self.targets)))
        self.log = (self.directory / "prometheus.log").open("ab")
        self.process = subprocess.Popen(
            [PROMETHEUS, f"--config.file={config}",
             f"--storage.tsdb.path={self.directory / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT)
        self._wait_until_ready()
        return self

    def __exit__(self, *exc) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()

    def _wait_until_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"prometheus exited; see {self.directory / 'prometheus.log'}")
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"prometheus not ready in {timeout:.0f}s")

    async def query(self, promql: str) -> list[tuple[dict, float]]:
        """An instant query's vector: [(labels, value), ...]; an error of PromQL raises."""
        async with httpx.AsyncClient(base_url=self.url, timeout=10) as client:
            answer = await client.get("/api/v1/query", params={"query": promql})
        body = answer.json()
        if body.get("status") != "success":
            raise AssertionError(f"{promql}: {body.get('error')}")
        assert body["data"]["resultType"] == "vector", body["data"]["resultType"]
        return [(item["metric"], float(item["value"][1])) for item in body["data"]["result"]]

    async def value(self, promql: str) -> float | None:
        """The one value of a query that sums to a single series, None when it is empty."""
        found = await self.query(promql)
        assert len(found) <= 1, found
        return found[0][1] if found else None
