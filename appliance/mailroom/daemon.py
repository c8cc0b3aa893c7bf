"""What every daemon does around its protocol: logging, sockets, privileges, signals."""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import contextlib
import ctypes
import errno
import grp
import logging
import os
import pwd
import signal
import socket
import ssl
import sys
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import uvloop

from . import tls as tls_reload
from .config import Config, Listener
from .shared import SharedTable
from .throttle import LoginThrottle
from .tls import server_context

log = logging.getLogger("mailroom")

LISTEN_BACKLOG = 512  # connections the kernel queues for a listener


class _ThisWorker:
    index = 0  # which pre-fork worker this process is (run_workers sets it after the fork)


class LogFormatter(logging.Formatter):
    """logging.Formatter that formats asctime's date and time once a second, not per record
    (smtpd logs a line per message: at a thousand a second strftime showed in profiles)."""

    _second: tuple[int, str] = (-1, "")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        second, text = self._second
        if int(record.created) != second:
            second = int(record.created)
            text = time.strftime(self.default_time_format, self.converter(second))
            self._second = (second, text)  # one assignment: threads see a consistent pair
        return self.default_msec_format % (text, record.msecs)


LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LogFormatter(LOG_FORMAT))
    logging.basicConfig(level=getattr(logging, level.upper()), handlers=[handler])
    # aiosmtpd logs every connection and the whole dialogue at INFO; keep our
    # own one line per message instead, and never the AUTH dialogue.
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    # The format names no source line, thread or process: skip looking them up for every record
    # (the logging HOWTO's "Optimization"; the stack walk was most of a log line's cost).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


def bind(listener: Listener, wait: float = 10.0) -> socket.socket:
    """Bind a listening socket; wait a little while the port is still held.

    After a crash the workers of the old daemon may still be closing their
    copies of the socket for a moment; a restart must not fail because of it.
    """
    sock = _bound(listener, wait)
    sock.listen(LISTEN_BACKLOG)
    sock.setblocking(False)
    return sock


def bind_group(listener: Listener, copies: int, wait: float = 10.0) -> list[socket.socket]:
    """copies listening sockets on one address in an SO_REUSEPORT group: one per worker.

    Workers that share one socket do not share its connections fairly: a burst of clients
    (a mail client opening its connections, many clients after a restart) is accepted almost
    whole by the worker that wakes first, and long IMAP sessions then stay on one core. With a
    socket each, the kernel spreads connections over the workers by their addresses.
    """
    if copies <= 1:
        return [bind(listener, wait)]
    # A plain bind first: it waits while another process (the old daemon at a restart) holds
    # the port, which a socket with SO_REUSEPORT could join instead, taking its connections.
    _bound(listener, wait).close()
    group = []
    try:
        for _ in range(copies):
            sock = _bound(listener, 0, reuseport=True)
            group.append(sock)
            sock.listen(LISTEN_BACKLOG)
            sock.setblocking(False)
    except OSError:
        for sock in group:
            sock.close()
        raise
    return group


def _bound(listener: Listener, wait: float, reuseport: bool = False) -> socket.socket:
    family = socket.AF_INET6 if ":" in listener.address else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio turns Nagle's algorithm off only on sockets whose proto says
    # TCP, and accepted sockets inherit the listener's. With Nagle on, a reply written while an
    # earlier segment is unacknowledged (the IMAP greeting right after TLS 1.3's session tickets)
    # waits for the client's delayed ACK: 40 ms. TCP_NODELAY on the listener is inherited too,
    # for event loops that do not set it themselves.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuseport:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    deadline = time.monotonic() + wait
    while True:
        try:
            sock.bind((listener.address, listener.port))
            return sock
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                sock.close()
                raise
            time.sleep(0.1)


def drop_privileges(user: str, group: str) -> None:
    """Become the unprivileged daemon user once the ports are bound."""
    if os.geteuid() != 0:
        return  # already unprivileged (tests, development)
    uid = pwd.getpwnam(user).pw_uid
    gid = grp.getgrnam(group).gr_gid
    hand_over_metric_files(uid, gid)
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    os.umask(0o077)


def hand_over_metric_files(uid: int, gid: int) -> None:
    """Give root's files in the shared metrics directory to the daemon user (still root here).

    prometheus_client made this process's files (<kind>_<pid>.db) as root when the metric
    definitions were imported. Left so, a worker that later gets one of those pids (a restart,
    pids wrap) cannot open "its" file, and every metric update, and so every session, fails
    with PermissionError."""
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not folder:
        return
    with os.scandir(folder) as entries:
        for entry in entries:
            with contextlib.suppress(FileNotFoundError):
                if entry.is_file(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_uid == 0:
                    os.chown(entry.path, uid, gid)


def ensure_store_root(config: Config) -> None:
    """Create the store, queue and runtime directories for the daemon user while we are still root."""
    for root in (config.store_root, config.queue_root, config.runtime_dir):
        if root is None:
            continue
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        if os.geteuid() == 0:
            os.chown(root, pwd.getpwnam(config.run_as_user).pw_uid, grp.getgrnam(config.run_as_group).gr_gid)


def login_throttle(config: Config) -> LoginThrottle:
    """The login throttle every daemon of the host shares (a table in the runtime directory).

    Called while still root: the file is opened and mapped now and handed to the
    daemon user, whichever daemon made it first.
    """
    path = config.runtime_dir / "login-throttle"
    throttle = LoginThrottle(SharedTable(4096, path=path))
    if os.geteuid() == 0:
        os.chown(path, pwd.getpwnam(config.run_as_user).pw_uid, grp.getgrnam(config.run_as_group).gr_gid)
    return throttle


@dataclass
class Started:
    """What a protocol daemon holds once it has given up root."""

    tls: ssl.SSLContext | None
    sockets: list[tuple[Listener, socket.socket]]
    throttle: LoginThrottle
    per_worker: list[list[tuple[Listener, socket.socket]]] | None = None

    def worker_sockets(self) -> list[tuple[Listener, socket.socket]]:
        """The sockets this process accepts on: its worker's own copies, if each has its own."""
        return self.per_worker[_ThisWorker.index] if self.per_worker else self.sockets


# asyncio's TLS transport reads into a 256 KiB buffer that every connection allocates (and
# touches) for its whole life: 2.5 GB for 10,000 idle IMAP sessions. A smaller buffer costs
# only more read calls for bulk transfers (one TLS record is at most 16 KiB). Measured per idle
# IMAP session (PSS): 285 KiB with 256 KiB, 50 KiB with 16 KiB, 38 KiB with 4 KiB.
# It is a class attribute of the standard library: SSLProtocol.max_size, the size it reads with.
TLS_READ_BUFFER = 16 * 1024  # SMTP: short sessions, large messages
TLS_READ_BUFFER_LONG_SESSIONS = 4 * 1024  # IMAP and POP3: thousands of mostly idle sessions


def lean_tls_buffers(size: int = TLS_READ_BUFFER) -> None:
    asyncio.sslproto.SSLProtocol.max_size = size


def start_as_root(
    config: Config,
    listeners: tuple[Listener, ...],
    tls_read_buffer: int = TLS_READ_BUFFER,
    *,
    workers_own_sockets: int = 0,
) -> Started:
    """Everything a protocol daemon does as root, in one order for all of them.

    Logging, the TLS context (the key may be readable by root only), the
    directories, the listening sockets and the shared login throttle; then
    privileges are dropped for good, before a single connection is served.
    """
    setup_logging(config.log_level)
    lean_tls_buffers(tls_read_buffer)
    tls = (
        server_context(config.tls_certificate, config.tls_private_key)
        if config.tls_certificate and config.tls_private_key
        else None
    )
    ensure_store_root(config)
    per_worker = None
    if workers_own_sockets > 1:  # a socket per listener and worker (bind_group), as root
        groups = [(listener, bind_group(listener, workers_own_sockets)) for listener in listeners]
        per_worker = [
            [(listener, group[i]) for listener, group in groups] for i in range(workers_own_sockets)
        ]
        sockets = per_worker[0]
    else:
        sockets = [(listener, bind(listener)) for listener in listeners]
    throttle = login_throttle(config)
    drop_privileges(config.run_as_user, config.run_as_group)
    return Started(tls, sockets, throttle, per_worker)


def enable_shared_metrics(config: Config) -> None:
    """Make this process write its metrics where metricsd reads them.

    prometheus_client picks its value storage when it is first imported, so
    this runs before anything imports mailroom.metrics.
    """
    if config.metrics is None:
        return
    if "prometheus_client" in sys.modules:
        raise RuntimeError("enable_shared_metrics() must run before prometheus_client is imported")
    state_dir = config.metrics.state_dir
    state_dir.mkdir(mode=0o750, parents=True, exist_ok=True)
    if os.geteuid() == 0:
        os.chown(state_dir, pwd.getpwnam(config.run_as_user).pw_uid, grp.getgrnam(config.run_as_group).gr_gid)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(state_dir)


def run(main: Callable[[asyncio.Event], Awaitable[None]], libuv: bool = False) -> None:
    """Run a daemon's main coroutine until SIGTERM or SIGINT sets the stop event.

    SIGHUP loads the TLS certificate again into the live contexts (new handshakes get the new
    one, open connections and listeners stay); a daemon without TLS ignores it. A periodic look
    at the certificate files catches a renewal whose signal never came.

    libuv=True runs it on uvloop: the same asyncio API with libuv's socket I/O, where a
    short-session daemon spends much of its time (docs/benchmarks.md: smtpd took a fifth more
    messages a second on reused connections with it). Not for imapd and pop3d: uvloop's TLS
    transport keeps a 256 KiB read buffer per connection that asyncio's lets us shrink (see
    TLS_READ_BUFFER), which thousands of idle IMAP sessions cannot afford.
    """

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        loop.add_signal_handler(signal.SIGHUP, tls_reload.reload)
        watcher = asyncio.create_task(tls_reload.watch())
        try:
            await main(stop)
        finally:
            watcher.cancel()

    if libuv:
        uvloop.run(runner())
    else:
        asyncio.run(runner())


def _die_with_parent(parent: int) -> None:
    # PR_SET_PDEATHSIG: if the supervising parent is killed (even by SIGKILL),
    # the workers get SIGTERM instead of holding the ports as orphans.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(0)


def pin_to_cpu(cpu: int) -> None:
    """Keep this process (called before it starts a thread: they inherit it) on one CPU.

    Every SMTP message and every IMAP command is handed from a worker's event loop to one of its
    threads and back, and on a VM a wake-up on another CPU is an inter-processor interrupt, with
    an exit to the hypervisor. Kept on one CPU, a worker's threads wake each other locally.
    smtpd's workers share their listening sockets, so one whose CPU is busy simply accepts fewer
    connections. Measured: about 8% more SMTP messages a second, a quarter to two fifths more
    IMAP cycles (docs/benchmarks.md).
    """
    try:
        os.sched_setaffinity(0, {cpu})
    except OSError as exc:  # a CPU set that changed under us: run unpinned
        log.warning("cannot pin worker to CPU %d: %s", cpu, exc)


QUICK_DEATH_SECONDS = 5.0
QUICK_DEATHS_ALLOWED = 5


def run_workers(
    count: int,
    main: Callable[[asyncio.Event], Awaitable[None]],
    on_start: Callable[[int], None] | None = None,
    libuv: bool = False,
    pin: bool = False,
) -> None:
    """Run main in count forked workers sharing the already bound sockets (pre-fork).

    One Python process uses one core; several workers accepting on the same
    sockets use them all. The parent only supervises: it restarts a worker
    that dies and passes SIGTERM/SIGINT on. With count 1 there is no fork.

    pin: worker i and all its threads run on the i-th of the CPUs the daemon may use (round
    robin), see pin_to_cpu.
    """
    cpus = sorted(os.sched_getaffinity(0)) if pin else []

    def worker(index: int) -> None:
        _ThisWorker.index = index
        if len(cpus) > 1:
            pin_to_cpu(cpus[index % len(cpus)])
        if on_start:
            on_start(index)
        run(main, libuv)

    if count <= 1:
        worker(0)
        return
    parent = os.getpid()
    children: dict[int, int] = {}
    stopping = False

    def spawn(index: int) -> None:
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                # Until run() installs its own handler, a SIGHUP must not kill the worker.
                signal.signal(signal.SIGHUP, signal.SIG_IGN)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                _die_with_parent(parent)
                worker(index)
            except BaseException:
                log.exception("worker %d failed", index)
                code = 1
            finally:
                logging.shutdown()
                os._exit(code)
        children[pid] = index

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def forward(signum: int, _frame: object) -> None:
        # SIGHUP (certificate renewed) goes to every worker: each holds its own TLS contexts.
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, forward)
    started: dict[int, float] = {}
    quick_deaths: dict[int, int] = {}
    for index in range(count):
        spawn(index)
        started[index] = time.monotonic()
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        index = children.pop(pid, -1)
        if stopping or index < 0:
            continue
        log.error("worker %d (pid %d) exited with status %d; starting it again", index, pid, status)
        # A worker that keeps dying right after its start will not get better by
        # itself: give up, so that supervisor (with its own backoff) sees the failure.
        quick = time.monotonic() - started[index] < QUICK_DEATH_SECONDS
        quick_deaths[index] = quick_deaths.get(index, 0) + 1 if quick else 0
        if quick_deaths[index] >= QUICK_DEATHS_ALLOWED:
            log.critical("worker %d keeps failing at start; stopping the daemon", index)
            stop(signal.SIGTERM, None)
            for remaining in list(children):
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(remaining, 0)
            raise SystemExit(1)
        time.sleep(0.2)  # a worker that dies at once must not spin
        spawn(index)
        started[index] = time.monotonic()


class ConnectionLimits(Protocol):
    max_connections: int
    max_connections_per_ip: int


class ConnectionLimiter:
    """Open connections, in total and per client address, for one daemon process (POP3, IMAP)."""

    def __init__(self, limits: ConnectionLimits, workers: int = 1) -> None:
        # Each worker process counts its own connections: the daemon's limit is split between them.
        self.max_total = max(1, limits.max_connections // workers)
        self.max_per_ip = limits.max_connections_per_ip
        self.total = 0
        self.per_ip: dict[str, int] = defaultdict(int)

    def admit(self, ip: str) -> bool:
        if self.total >= self.max_total or self.per_ip[ip] >= self.max_per_ip:
            return False
        self.total += 1
        self.per_ip[ip] += 1
        return True

    def release(self, ip: str) -> None:
        self.total -= 1
        self.per_ip[ip] -= 1
        if self.per_ip[ip] <= 0:
            del self.per_ip[ip]


async def serve_streams(
    stop: asyncio.Event,
    sockets: list[tuple[Listener, socket.socket]],
    tls: ssl.SSLContext | None,
    *,
    implicit_tls: frozenset[str],
    limiter: ConnectionLimiter,
    refuse: Callable[[Listener], bytes],
    session: Callable[[asyncio.StreamReader, asyncio.StreamWriter, Listener], Awaitable[None]],
    stream_limit: int,
    handshake_timeout: float,
    logger: logging.Logger,
) -> None:
    """Serve line-protocol sessions (POP3, IMAP) on asyncio streams until stop is set.

    Per connection: the connection limit (`refuse` gives the reply for a refused one), one task
    running `session`, a failure logged without taking the daemon down, and a close that waits
    at most 5 s for the client. At stop the listeners close and the sessions are cancelled.
    """
    sessions: set[asyncio.Task[None]] = set()

    def handler(
        listener: Listener,
    ) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            sessions.add(task)
            peer = writer.get_extra_info("peername")
            ip = peer[0] if isinstance(peer, tuple) else str(peer)
            try:
                if not limiter.admit(ip):
                    logger.warning("connection refused peer=%s: limit reached", ip)
                    writer.write(refuse(listener))
                    return
                try:
                    await session(reader, writer, listener)
                except asyncio.CancelledError:
                    pass  # the daemon is stopping
                except Exception:
                    logger.exception("session failed peer=%s", ip)
                finally:
                    limiter.release(ip)
            finally:
                sessions.discard(task)
                if stop.is_set():
                    writer.transport.abort()
                else:
                    writer.close()
                    try:
                        await asyncio.wait_for(writer.wait_closed(), 5)
                    except (Exception, asyncio.CancelledError):
                        writer.transport.abort()

        return handle

    servers = []
    for listener, sock in sockets:
        implicit = listener.name in implicit_tls
        servers.append(
            await asyncio.start_server(
                handler(listener),
                sock=sock,
                ssl=tls if implicit else None,
                ssl_handshake_timeout=handshake_timeout if implicit else None,
                limit=stream_limit,
            )
        )
        logger.info("listening name=%s on %s port %d", listener.name, *sock.getsockname()[:2])
    await stop.wait()
    logger.info("stopping")
    for server in servers:
        server.close()
    for task in list(sessions):
        task.cancel()
    await asyncio.gather(*sessions, return_exceptions=True)
