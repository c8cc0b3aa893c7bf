"""What metricsd reads at scrape time: the certificate, the mail store's disk, supervisor's daemons.

These are facts about the host, not counts a daemon keeps, so they are looked up when Prometheus
asks (each collector below) instead of being written by the daemons. Also the scrape-config
snippet (`mailroom monitoring scrape-config`).
"""

from __future__ import annotations

import datetime
import http.client
import logging
import os
import socket
import threading
import time
import xmlrpc.client
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from .config import Config

log = logging.getLogger("mailroom.metrics")

SUPERVISOR_TIMEOUT = 5.0
STORE_USAGE_INTERVAL = 300.0  # walking a large store is slow: at most once every 5 minutes
STORE_MAX_ENTRIES = 20_000_000  # and it stops (reporting what it saw) past this many entries


def certificate_expiry(path: Path) -> float:
    """The notAfter of the first certificate in a PEM file, as a Unix timestamp."""
    from cryptography import x509

    data = path.read_bytes()[: 1 << 20]
    return x509.load_pem_x509_certificate(data).not_valid_after_utc.timestamp()


def store_used_bytes(root: Path, limit: int = STORE_MAX_ENTRIES) -> int:
    """Disk space (allocated blocks) of every file below root, without following links."""
    total, seen, stack = 0, 0, [str(root)]
    while stack and seen < limit:
        try:
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    seen += 1
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue  # removed while we looked (delivery, expunge)
                    total += st.st_blocks * 512
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
        except OSError:
            continue
    return total


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.unix_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class _UnixTransport(xmlrpc.client.Transport):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__()
        self.unix_path, self.timeout = path, timeout

    def make_connection(self, host):
        return _UnixConnection(self.unix_path, self.timeout)


@dataclass(frozen=True)
class Process:
    name: str
    group: str
    state: str  # RUNNING, STARTING, BACKOFF, STOPPED, EXITED, FATAL, ...
    pid: int
    start: float  # Unix time supervisor last started it (0: never)
    description: str


def supervisor_processes(socket_path: Path, timeout: float = SUPERVISOR_TIMEOUT) -> list[Process]:
    """Every process supervisord runs, from its XML-RPC interface on its unix socket.

    Raises OSError (no socket, no permission, no answer) or xmlrpc.client.Error.
    """
    proxy = xmlrpc.client.ServerProxy(
        "http://localhost/RPC2", transport=_UnixTransport(str(socket_path), timeout)
    )
    found = []
    for info in proxy.supervisor.getAllProcessInfo():
        found.append(
            Process(
                str(info["name"]),
                str(info["group"]),
                str(info["statename"]),
                int(info["pid"]),
                float(info["start"]),
                str(info.get("description", "")),
            )
        )
    return found


def is_mailroom(process: Process) -> bool:
    """Our programs: the mailroom group and the filtering engines' (mailroom-filters)."""
    return process.group == "mailroom" or process.group.startswith("mailroom-")


class HostCollector:
    """Certificate, store disk and daemons, read when Prometheus scrapes."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._seen: dict[str, tuple[int, float]] = {}  # daemon -> (pid, start) at the last scrape
        self._restarts: dict[str, int] = {}
        self._usage: tuple[float, int] | None = None  # (when, bytes)

    def collect(self) -> Iterator:
        with self._lock:
            yield from self._certificate()
            yield from self._store()
            yield from self._daemons()

    def _certificate(self) -> Iterator:
        path = self.config.tls_certificate
        if path is None:
            return
        family = GaugeMetricFamily(
            "mailroom_tls_certificate_expiry_timestamp_seconds",
            "notAfter of the host certificate (tls.certificate), read at scrape time",
        )
        readable = GaugeMetricFamily(
            "mailroom_tls_certificate_readable", "1 if the host certificate file could be read and parsed"
        )
        try:
            family.add_metric([], certificate_expiry(path))
            readable.add_metric([], 1.0)
            yield family
        except (OSError, ValueError) as exc:
            log.warning("cannot read the certificate %s: %s", path, exc)
            readable.add_metric([], 0.0)
        yield readable

    def _store(self) -> Iterator:
        root = self.config.store_root
        try:
            st = os.statvfs(root)
        except OSError as exc:
            log.warning("cannot statvfs the mail store %s: %s", root, exc)
            return
        free = GaugeMetricFamily(
            "mailroom_store_filesystem_free_bytes",
            "Space the mail store's filesystem has left for unprivileged users (statvfs f_bavail)",
        )
        free.add_metric([], float(st.f_bavail * st.f_frsize))
        size = GaugeMetricFamily(
            "mailroom_store_filesystem_size_bytes", "Size of the mail store's filesystem (statvfs)"
        )
        size.add_metric([], float(st.f_blocks * st.f_frsize))
        yield free
        yield size
        now = time.monotonic()
        if self._usage is None or now - self._usage[0] >= STORE_USAGE_INTERVAL:
            self._usage = (now, store_used_bytes(root))
        used = GaugeMetricFamily(
            "mailroom_store_used_bytes",
            "Disk space taken by the mail store (allocated blocks; recounted at most every 5 minutes)",
        )
        used.add_metric([], float(self._usage[1]))
        yield used

    def _daemons(self) -> Iterator:
        settings = self.config.metrics
        if settings is None or settings.supervisor_socket is None:
            return
        up_supervisor = GaugeMetricFamily(
            "mailroom_supervisor_up", "1 if supervisord answered on its XML-RPC socket at this scrape"
        )
        try:
            processes = [p for p in supervisor_processes(settings.supervisor_socket) if is_mailroom(p)]
        except (OSError, xmlrpc.client.Error, KeyError, ValueError) as exc:
            log.warning("cannot ask supervisord on %s: %s", settings.supervisor_socket, exc)
            up_supervisor.add_metric([], 0.0)
            yield up_supervisor
            return
        up_supervisor.add_metric([], 1.0)
        yield up_supervisor
        up = GaugeMetricFamily(
            "mailroom_daemon_up", "1 if supervisor reports the daemon RUNNING", labels=["daemon"]
        )
        started = GaugeMetricFamily(
            "mailroom_daemon_start_time_seconds",
            "When supervisor last started the daemon (Unix time; 0: never)",
            labels=["daemon"],
        )
        restarts = CounterMetricFamily(
            "mailroom_daemon_restarts",
            "Restarts metricsd observed (the daemon's pid or start time changed between two scrapes)",
            labels=["daemon"],
        )
        for p in processes:
            previous = self._seen.get(p.name)
            now = (p.pid, p.start)
            if previous is not None and p.pid and previous != now:
                self._restarts[p.name] = self._restarts.get(p.name, 0) + 1
            if p.pid:
                self._seen[p.name] = now
            up.add_metric([p.name], 1.0 if p.state == "RUNNING" else 0.0)
            started.add_metric([p.name], p.start)
            restarts.add_metric([p.name], float(self._restarts.get(p.name, 0)))
        yield up
        yield started
        yield restarts


def scrape_config(
    targets: list[str], *, tls: bool = False, basic_auth_user: str | None = None, job: str = "mailroom"
) -> dict:
    """A Prometheus scrape job for the given host:port targets (the alert rules expect job="mailroom")."""
    job_config: dict = {
        "job_name": job,
        "metrics_path": "/metrics",
        "scheme": "https" if tls else "http",
        "static_configs": [{"targets": sorted(targets)}],
    }
    if basic_auth_user is not None:
        job_config["basic_auth"] = {
            "username": basic_auth_user,
            # The password itself is never in the inventory (only its hash): Prometheus reads it from here.
            "password_file": "/etc/prometheus/mailroom-metrics.password",
        }
    return {"scrape_configs": [job_config]}


def days_left(expiry: float, now: float | None = None) -> float:
    now = time.time() if now is None else now
    return (expiry - now) / 86400


def utc(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
