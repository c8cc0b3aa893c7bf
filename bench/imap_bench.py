#!/usr/bin/env python3
"""Mailroom's imapd against Debian's Dovecot on the same IMAP load, interleaved.

Both servers serve copies of the same Maildir content over implicit TLS (imaps) on loopback, with
the same self-signed certificate, the same users and the same argon2id password hashes (Dovecot's
ARGON2ID scheme verifies the very strings Mailroom's configuration holds). Four measurements:

- throughput: asyncio clients run a *mixed* profile (connect, LOGIN, SELECT, FETCH, STORE, APPEND,
  EXPUNGE, IDLE, LOGOUT per connection) and a *long-session* profile (one LOGIN, then the same
  commands over and over), each server in turn, interleaved over rounds;
- memory: PSS (/proc/PID/smaps_rollup) summed over every server process with 1,000 and 10,000
  sessions idling in IDLE; Dovecot hibernates idle IMAP sessions (imap-hibernate);
- big mailbox: SELECT and UID FETCH 1:* (FLAGS) on a 100,000-message INBOX, cold (page cache
  dropped, and for Mailroom a fresh process) and warm, the servers interleaved over rounds;
- login: connect + TLS + LOGIN + LOGOUT with the production-strength hash.

This measures and prints; it asserts nothing about speed. Run it as root (it drops the page cache
and starts a private Dovecot): ``bench/imap_bench.sh [--quick]``. It never uses /etc/dovecot,
ports 143/993 or /var/lib/mailroom: both servers get fresh folders below one temporary folder,
removed at the end, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import platform
import random
import re
import resource
import secrets
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
WORK_PARENT = "/var/tmp"  # noqa: S108 - a private mkdtemp folder below it: a disk, not tmpfs
DOMAIN = "example.test"
BIG_USER = f"big@{DOMAIN}"
STRONG_USER = f"strong@{DOMAIN}"
# Dovecot refuses to access mail as root: its mail processes run as nobody. Mailroom's imapd stays
# root here (run_as root, as the tests run it): this machine's Python lives below /root, which nobody
# cannot read, and the imapd imports modules lazily after dropping privileges.
MAIL_USER, MAIL_GROUP = "nobody", "nogroup"
CLK_TCK = os.sysconf("SC_CLK_TCK")
COMMANDS = ("login", "select", "fetch", "store", "append", "expunge", "idle", "logout")
LITERAL = re.compile(rb"\{(\d+)\}\r\n\Z")


class BenchError(Exception):
    pass


_T0 = time.monotonic()


def say(text: str) -> None:
    """Progress on stderr, with the minutes and seconds since the start."""
    elapsed = int(time.monotonic() - _T0)
    print(f"[{elapsed // 60:02d}:{elapsed % 60:02d}] {text}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- helpers


def free_port() -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in (143, 993):
            return port


def wait_listening(port: int, alive: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(alive) and not alive():
            raise BenchError(f"server for port {port} exited before it listened")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise BenchError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


def proc_stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return text[text.rindex(")") + 2 :].split()


def proc_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except (FileNotFoundError, ProcessLookupError):
        return "?"


def descendants(root: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = proc_stat(int(entry))
            if fields is not None:
                parents[int(entry)] = int(fields[1])
    found: list[int] = []
    frontier = {root}
    while frontier:
        kids = {pid for pid, ppid in parents.items() if ppid in frontier}
        found.extend(sorted(kids))
        frontier = kids
    return found


def tree_cpu(pids: list[int]) -> float:
    """utime+stime of the processes plus what their reaped children used (cutime+cstime)."""
    ticks = 0
    for pid in pids:
        fields = proc_stat(pid)
        if fields is not None:
            ticks += sum(int(v) for v in fields[11:15])
    return ticks / CLK_TCK


def pss(pid: int) -> int:
    """Proportional set size of one process in bytes (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def machine_busy() -> float:
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(values[:8]) - values[3] - values[4]) / CLK_TCK


def settle(limit: float = 60.0, busy_below: float = 0.15) -> float:
    """Wait (at most limit seconds) until the machine is quiet: the kernel's cleanup after the
    section before (10,000 sessions closed, 900 MB freed) would otherwise fall on whichever
    server is measured next. Returns the seconds waited."""
    os.sync()
    start = time.monotonic()
    quiet = 0
    while time.monotonic() - start < limit and quiet < 3:
        before = machine_busy()
        time.sleep(1.0)
        quiet = quiet + 1 if machine_busy() - before < busy_below else 0
    return time.monotonic() - start


def drop_caches() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def run_quiet(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload,no-any-return]


def spread(values: list[float], digits: int = 0) -> str:
    fmt = f"{{:,.{digits}f}}"
    if not values:
        return "-"
    med = fmt.format(statistics.median(values))
    return f"{med} ({fmt.format(min(values))}-{fmt.format(max(values))})" if len(values) > 1 else med


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "-"


# --------------------------------------------------------------------------- mail content


def message_bytes(rng: random.Random, n: int, to: str) -> bytes:
    words = ("meeting", "report", "invoice", "lunch", "draft", "review", "budget", "release", "notes")
    subject = f"{rng.choice(words).title()} {rng.choice(words)} #{n}"
    lines = [
        " ".join(rng.choice(words) for _ in range(rng.randint(6, 12))) for _ in range(rng.randint(10, 40))
    ]
    return (
        f"Return-Path: <sender{n % 97}@example.org>\n"
        f"From: Sender {n % 97} <sender{n % 97}@example.org>\nTo: <{to}>\n"
        f"Subject: {subject}\nDate: Fri, 27 Nov 2026 10:{n % 60:02d}:00 +0000\n"
        f"Message-ID: <{n}.{rng.getrandbits(32):08x}@example.org>\n"
        "MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n\n" + "\n".join(lines) + "\n"
    ).encode()


def wire_size(data: bytes) -> int:
    return len(data) + data.count(b"\n") - data.count(b"\r\n")


def fill_maildir(path: Path, count: int, address: str, seed: int) -> None:
    """A Maildir with `count` messages in cur/ (S= and W= in the names, a third of them \\Seen)."""
    rng = random.Random(seed)  # noqa: S311 - reproducible test content, not secrets
    for sub in ("cur", "new", "tmp"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    base = 1_790_000_000
    for n in range(count):
        data = message_bytes(rng, n, address)
        flags = "S" if n % 3 else ""
        name = f"{base + n}.M{n}P1Q{n}.bench,S={len(data)},W={wire_size(data)}:2,{flags}"
        with open(path / "cur" / name, "wb") as out:
            out.write(data)
        os.utime(path / "cur" / name, (base + n, base + n))


def chown_tree(path: Path) -> None:
    subprocess.run(["chown", "-R", f"{MAIL_USER}:{MAIL_GROUP}", str(path)], check=True)


# --------------------------------------------------------------------------- servers


@dataclass
class Account:
    address: str
    password: str
    password_hash: str  # $argon2id$...


class Server:
    name = ""
    port = 0
    log: Path

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def pids(self) -> list[int]:
        raise NotImplementedError

    def running(self) -> bool:
        raise NotImplementedError

    def cpu(self) -> float:
        return tree_cpu(self.pids())

    def memory(self) -> tuple[int, dict[str, int]]:
        """PSS of every server process in bytes, in total and by process name."""
        by_name: dict[str, int] = defaultdict(int)
        for pid in self.pids():
            by_name[proc_name(pid)] += pss(pid)
        return sum(by_name.values()), dict(by_name)

    def processes(self) -> dict[str, int]:
        count: dict[str, int] = defaultdict(int)
        for pid in self.pids():
            count[proc_name(pid)] += 1
        return dict(count)

    def problems(self) -> list[str]:
        try:
            text = self.log.read_text(errors="replace")
        except FileNotFoundError:
            return []
        pattern = re.compile(r"(WARNING|ERROR|CRITICAL|Traceback|[Ee]rror:|[Ff]atal:|[Pp]anic:|[Ww]arning:)")
        return [line for line in text.splitlines() if pattern.search(line)]


class Mailroom(Server):
    name = "Mailroom"

    def __init__(
        self, root: Path, python: Path, accounts: list[Account], tls: tuple[Path, Path], workers: int
    ):
        self.root = root
        self.python = python
        self.store = root / "mail"
        self.config = root / "mailroom.yml"
        self.log = root / "imapd.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.port = free_port()
        root.mkdir(parents=True)
        config = {
            "hostname": "mailroom.bench.test",
            "run_as": {"user": "root", "group": "root"},
            "domains": [DOMAIN],
            "users": [{"address": a.address, "password_hash": a.password_hash} for a in accounts],
            "store": {"root": str(self.store)},
            "runtime_dir": str(root / "run"),  # never the host appliance's /run/mailroom
            "tls": {"certificate": str(tls[0]), "private_key": str(tls[1])},
            # Required by the configuration; the imapd does not bind it.
            "smtp": {"listeners": [{"name": "mx", "address": "127.0.0.1", "port": free_port()}]},
            "filtering": {"spf": False, "dkim": False, "dmarc": False},
            "imap": {
                "listeners": [{"name": "imaps", "address": "127.0.0.1", "port": self.port}],
                # One client address holds up to 10,000 sessions: raise the per-IP and total limits.
                "limits": {"max_connections_per_ip": 40000, "max_connections": 80000},
                "workers": workers,
            },
            "log_level": "info",
        }
        self.config.write_text(json.dumps(config, indent=2) + "\n")
        check = run_quiet([str(python), "-m", "mailroom.cli", "config", "check", str(self.config)], cwd=REPO)
        if check.returncode != 0:
            raise BenchError(f"mailroom config check failed: {check.stderr.strip()}")

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [str(self.python), "-m", "mailroom.cli", "imapd", "--config", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=REPO,
            )
        wait_listening(self.port, self.running)
        time.sleep(0.5)  # the workers are forked after the sockets are bound

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None

    def pids(self) -> list[int]:
        return [self.process.pid, *descendants(self.process.pid)] if self.running() else []


DOVECOT_CONF = """\
# Private benchmark instance: nothing is read from /etc/dovecot.
instance_name = mailroom-bench-{port}
base_dir = {root}/run
state_dir = {root}/state
protocols = imap
listen = 127.0.0.1
log_path = {root}/dovecot.log
ssl = required
ssl_cert = <{cert}
ssl_key = <{key}
disable_plaintext_auth = yes
auth_mechanisms = plain login
mail_location = maildir:~
first_valid_uid = 1
mail_max_userip_connections = 40000
passdb {{
  driver = passwd-file
  args = scheme=ARGON2ID username_format=%u {root}/passwd
}}
userdb {{
  driver = static
  args = uid={user} gid={group} home={mail}/%d/%n
}}
# Frugal: login processes in "high-performance" mode (one per core, many clients each), and an
# IMAP session idling in IDLE for more than a second moves to the shared imap-hibernate process.
imap_hibernate_timeout = {hibernate}
default_client_limit = 15000
service imap-login {{
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {port}
    ssl = yes
  }}
  service_count = 0
  process_min_avail = {cores}
  vsz_limit = 2G
}}
service imap {{
  client_limit = 1
  process_limit = 15000
  unix_listener imap-master {{
    user = $default_internal_user
  }}
}}
service imap-hibernate {{
  unix_listener imap-hibernate {{
    mode = 0660
    group = $default_internal_group
  }}
}}
"""


class Dovecot(Server):
    name = "Dovecot"

    def __init__(self, root: Path, accounts: list[Account], tls: tuple[Path, Path], hibernate: str):
        self.root = root
        self.store = root / "mail"
        self.conf = root / "dovecot.conf"
        self.log = root / "dovecot.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.port = free_port()
        for sub in ("run", "state"):
            (root / sub).mkdir(parents=True)
        (root / "passwd").write_text(
            "".join(f"{a.address}:{{ARGON2ID}}{a.password_hash}::::::\n" for a in accounts)
        )
        (root / "passwd").chmod(0o640)
        shutil.chown(root / "passwd", group="dovecot")
        self.conf.write_text(
            DOVECOT_CONF.format(
                port=self.port,
                root=root,
                cert=tls[0],
                key=tls[1],
                user=MAIL_USER,
                group=MAIL_GROUP,
                mail=self.store,
                hibernate=hibernate,
                cores=os.cpu_count() or 1,
            )
        )
        check = run_quiet(["doveconf", "-c", str(self.conf), "-n"])
        if check.returncode != 0:
            raise BenchError(f"doveconf rejected the private configuration: {check.stderr.strip()}")

    def start(self) -> None:
        with open(self.root / "dovecot.stderr", "ab") as err:
            self.process = subprocess.Popen(
                ["dovecot", "-F", "-c", str(self.conf)], stdin=subprocess.DEVNULL, stdout=err, stderr=err
            )
        wait_listening(self.port, self.running)
        time.sleep(0.5)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None
        # Stray children (a hibernated session's process) die with the master; wait for them.
        time.sleep(0.5)

    def pids(self) -> list[int]:
        return [self.process.pid, *descendants(self.process.pid)] if self.running() else []


# --------------------------------------------------------------------------- the client


class ImapError(Exception):
    pass


class Client:
    """A minimal IMAP client: one command at a time, literals read as they come."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.tags = 0

    @classmethod
    async def connect(cls, port: int, context: ssl.SSLContext, timeout: float = 60) -> Client:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, ssl=context, limit=1 << 20), timeout
        )
        greeting = await asyncio.wait_for(reader.readline(), timeout)
        if not greeting.startswith(b"* OK"):
            writer.close()
            raise ImapError(f"greeting {greeting[:80]!r}")
        return cls(reader, writer)

    def tag(self) -> bytes:
        self.tags += 1
        return b"a%d" % self.tags

    async def response(self, tag: bytes) -> list[bytes]:
        untagged: list[bytes] = []
        while True:
            line = await self.reader.readline()
            if not line:
                raise ImapError("connection closed")
            while (m := LITERAL.search(line)) is not None:
                line += await self.reader.readexactly(int(m.group(1)))
                line += await self.reader.readline()
            if line.startswith(tag + b" "):
                if not line.startswith(tag + b" OK"):
                    raise ImapError(line.decode(errors="replace").strip())
                untagged.append(line)
                return untagged
            untagged.append(line)

    async def command(self, text: bytes, literal: bytes | None = None) -> list[bytes]:
        tag = self.tag()
        if literal is None:
            self.writer.write(tag + b" " + text + b"\r\n")
        else:  # LITERAL+ (both servers announce it): no round trip for the continuation
            self.writer.write(tag + b" " + text + b" {%d+}\r\n" % len(literal) + literal + b"\r\n")
        return await self.response(tag)

    async def bulk(self, text: bytes) -> int:
        """Send a command, read its (possibly huge) answer in chunks; return the octets read."""
        tag = self.tag()
        self.writer.write(tag + b" " + text + b"\r\n")
        end, got, tail = b"\r\n" + tag + b" ", 0, b""
        while True:
            chunk = await self.reader.read(1 << 18)
            if not chunk:
                raise ImapError("connection closed")
            got += len(chunk)
            tail = (tail + chunk)[-4096:]
            at = tail.rfind(end)
            if at != -1 and tail.endswith(b"\r\n") and tail.find(b"\r\n", at + 2) == len(tail) - 2:
                if tail[at + len(end) : at + len(end) + 2] != b"OK":
                    raise ImapError(tail[at:].decode(errors="replace"))
                return got

    async def login(self, account: Account) -> None:
        await self.command(b'LOGIN "%s" "%s"' % (account.address.encode(), account.password.encode()))

    async def start_idle(self) -> bytes:
        tag = self.tag()
        self.writer.write(tag + b" IDLE\r\n")
        while True:
            line = await self.reader.readline()
            if not line:
                raise ImapError("connection closed in IDLE")
            if line.startswith(b"+"):
                return tag

    async def end_idle(self, tag: bytes) -> None:
        self.writer.write(b"DONE\r\n")
        await self.response(tag)

    def close(self) -> None:
        self.writer.transport.abort()


def client_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def exists_of(lines: list[bytes]) -> int:
    for line in lines:
        m = re.match(rb"\* (\d+) EXISTS", line)
        if m:
            return int(m.group(1))
    raise ImapError("no EXISTS in SELECT")


# --------------------------------------------------------------------------- throughput


@dataclass
class Stats:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    cycles: int = 0
    errors: list[str] = field(default_factory=list)

    async def timed(self, name: str, coro: object) -> object:
        t0 = time.perf_counter()
        result = await coro  # type: ignore[misc]
        self.latencies[name].append(time.perf_counter() - t0)
        return result


async def mailbox_cycle(client: Client, stats: Stats, rng: random.Random, message: bytes) -> None:
    """SELECT, FETCH 10, STORE 1, APPEND 1, EXPUNGE the appended one, IDLE in and out."""
    lines = await stats.timed("select", client.command(b"SELECT INBOX"))
    exists = exists_of(lines)  # type: ignore[arg-type]
    first = rng.randint(1, max(1, exists - 10))
    await stats.timed(
        "fetch", client.command(b"FETCH %d:%d (FLAGS ENVELOPE BODY.PEEK[])" % (first, first + 9))
    )
    sign = rng.choice((b"+", b"-"))
    await stats.timed(
        "store", client.command(b"STORE %d %sFLAGS (\\Flagged)" % (rng.randint(1, exists), sign))
    )
    lines = await stats.timed("append", client.command(b"APPEND INBOX (\\Seen)", message))
    m = re.search(rb"\[APPENDUID \d+ (\d+)\]", lines[-1])  # type: ignore[index]
    if m is None:
        raise ImapError("no APPENDUID")
    uid = m.group(1)

    async def expunge() -> None:
        await client.command(b"UID STORE " + uid + b" +FLAGS.SILENT (\\Deleted)")
        await client.command(b"UID EXPUNGE " + uid)

    await stats.timed("expunge", expunge())

    async def idle() -> None:
        await client.end_idle(await client.start_idle())

    await stats.timed("idle", idle())


async def worker(
    profile: str,
    port: int,
    account: Account,
    deadline: float,
    stats: Stats,
    seed: int,
    context: ssl.SSLContext,
) -> None:
    rng = random.Random(seed)  # noqa: S311 - reproducible load, not secrets
    message = message_bytes(rng, 999_999, account.address)
    client: Client | None = None
    try:
        while time.monotonic() < deadline:
            if client is None:

                async def login() -> Client:
                    c = await Client.connect(port, context)
                    await c.login(account)
                    return c

                client = await stats.timed("login", login())  # type: ignore[assignment]
            assert client is not None
            await mailbox_cycle(client, stats, rng, message)
            if profile == "mixed":
                await stats.timed("logout", client.command(b"LOGOUT"))
                client.close()
                client = None
            stats.cycles += 1
    except (TimeoutError, ImapError, OSError, asyncio.IncompleteReadError) as exc:
        stats.errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        if client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.command(b"LOGOUT"), 5)
            client.close()


async def load(
    profile: str, port: int, accounts: list[Account], seconds: float, seed: int
) -> tuple[Stats, float]:
    context = client_context()
    stats = Stats()
    t0 = time.monotonic()
    deadline = t0 + seconds
    await asyncio.gather(
        *(worker(profile, port, a, deadline, stats, seed + i, context) for i, a in enumerate(accounts))
    )
    return stats, time.monotonic() - t0


def throughput_run(
    server: Server, profile: str, args: argparse.Namespace, accounts: list[Account], round_no: int
) -> dict:
    if args.warmup:
        asyncio.run(load(profile, server.port, accounts, args.warmup, 7))
    cpu0, busy0, self0 = server.cpu(), machine_busy(), resource.getrusage(resource.RUSAGE_SELF)
    stats, wall = asyncio.run(load(profile, server.port, accounts, args.duration, 1000 * round_no))
    cpu, busy, self1 = server.cpu() - cpu0, machine_busy() - busy0, resource.getrusage(resource.RUSAGE_SELF)
    client_cpu = (self1.ru_utime + self1.ru_stime) - (self0.ru_utime + self0.ru_stime)
    ops = {name: len(v) / wall for name, v in stats.latencies.items()}
    p50 = {name: statistics.median(v) * 1000 for name, v in stats.latencies.items() if v}
    p95 = {name: sorted(v)[int(len(v) * 0.95)] * 1000 for name, v in stats.latencies.items() if v}
    run = {
        "server": server.name,
        "profile": profile,
        "round": round_no,
        "wall": wall,
        "cycles": stats.cycles,
        "cycles_per_s": stats.cycles / wall,
        "ops_per_s": ops,
        "latency_p50_ms": p50,
        "latency_p95_ms": p95,
        "server_cpu_s": cpu,
        "server_cpu_ms_per_cycle": 1000 * cpu / stats.cycles if stats.cycles else None,
        "client_cpu_s": client_cpu,
        "machine_busy_cores": busy / wall,
        "errors": stats.errors[:5],
        "error_count": len(stats.errors),
    }
    say(
        f"round {round_no} {profile:12} {server.name:8} {run['cycles_per_s']:7.1f} cycles/s  "
        f"server CPU {cpu / wall:4.2f} cores, client {client_cpu / wall:4.2f}, machine {busy / wall:4.2f}"
        + (f"  {len(stats.errors)} ERRORS: {stats.errors[0]}" if stats.errors else "")
    )
    return run


# --------------------------------------------------------------------------- memory


async def open_idle(
    port: int, accounts: list[Account], first: int, count: int, concurrency: int
) -> tuple[list[tuple[Client, bytes]], list[str]]:
    """Open sessions first..count-1: connect, LOGIN, SELECT INBOX, IDLE; `concurrency` at a time."""
    context = client_context()
    held: list[tuple[Client, bytes]] = []
    failures: list[str] = []
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with gate:
            try:
                client = await Client.connect(port, context)
                await client.login(accounts[i % len(accounts)])
                await client.command(b"SELECT INBOX")
                held.append((client, await client.start_idle()))
            except (TimeoutError, ImapError, OSError, asyncio.IncompleteReadError) as exc:
                failures.append(f"{type(exc).__name__}: {exc}")

    await asyncio.gather(*(one(i) for i in range(first, count)))
    return held, failures


async def release(held: list[tuple[Client, bytes]], check: int) -> int:
    """End IDLE on a few sessions (they must answer OK: proves they were alive), close all."""
    alive = 0
    for client, tag in held[:check]:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.end_idle(tag), 30)
            alive += 1
    for client, _ in held:
        client.close()
    await asyncio.sleep(0.5)
    return alive


def memory_runs(server: Server, args: argparse.Namespace, accounts: list[Account]) -> list[dict]:
    """Grow the number of idle sessions through args.idle_sessions, measuring PSS at each count."""
    server.start()
    runs: list[dict] = []

    async def settle() -> None:
        # Dovecot: wait until the imap processes have handed their sessions to imap-hibernate.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            await asyncio.sleep(2)
            if server.processes().get("imap", 0) <= 2:
                break
        await asyncio.sleep(2)

    async def go() -> None:
        # One session in and out, so the baseline has every lazily started process and import.
        c = await Client.connect(server.port, client_context())
        await c.login(accounts[0])
        await c.command(b"SELECT INBOX")
        await c.command(b"LOGOUT")
        c.close()
        await asyncio.sleep(2)
        base, base_by = server.memory()
        held: list[tuple[Client, bytes]] = []
        failed = 0
        previous = (0, base)
        try:
            for count in sorted(args.idle_sessions):
                t0 = time.monotonic()
                more, failures = await open_idle(
                    server.port, accounts, len(held) + failed, count, args.concurrency
                )
                opened = time.monotonic() - t0
                held += more
                failed += len(failures)
                if failures:
                    say(f"  {len(failures)} sessions failed, first: {failures[0]}")
                await settle()
                total, by_name = server.memory()
                run = {
                    "server": server.name,
                    "sessions": len(held),
                    "failed": failed,
                    "open_s": opened,
                    "pss_baseline": base,
                    "pss_baseline_by_process": base_by,
                    "pss_total": total,
                    "pss_by_process": by_name,
                    "processes": server.processes(),
                    "bytes_per_session": (total - base) / len(held) if held else None,
                    # What each session added since the previous count: the fixed costs are out.
                    "marginal_bytes_per_session": (total - previous[1]) / (len(held) - previous[0])
                    if len(held) > previous[0]
                    else None,
                }
                previous = (len(held), total)
                runs.append(run)
                say(
                    f"memory {server.name:8} {run['sessions']:6} idle sessions: "
                    f"PSS {total / 2**20:8.1f} MiB (baseline {base / 2**20:.1f}), "
                    f"{run['bytes_per_session'] or 0:,.0f} B/session, "
                    f"marginal {run['marginal_bytes_per_session'] or 0:,.0f}, "
                    f"{len(more)} opened in {opened:.0f} s"
                )
        finally:
            alive = await release(held, 20)
            if runs:
                runs[-1]["checked_alive"] = alive
            say(f"memory {server.name:8} {alive}/20 sessions answered DONE at the end")

    try:
        asyncio.run(go())
    finally:
        server.stop()
    return runs


# --------------------------------------------------------------------------- big mailbox


async def big_session(port: int, account: Account, repeat: int) -> dict[str, list[float] | int]:
    t = time.perf_counter()
    client = await Client.connect(port, client_context(), timeout=600)
    await client.login(account)
    # LOGIN is timed too: a server may do a first open's work there (Mailroom gives the INBOX its
    # state and UIDs at the first login), which SELECT alone would then hide.
    times: dict[str, list[float] | int] = {"login": [time.perf_counter() - t], "select": [], "fetch": []}
    for _ in range(repeat):
        t0 = time.perf_counter()
        lines = await asyncio.wait_for(client.command(b"SELECT INBOX"), 900)
        t1 = time.perf_counter()
        octets = await asyncio.wait_for(client.bulk(b"UID FETCH 1:* (FLAGS)"), 900)
        t2 = time.perf_counter()
        times["select"].append(t1 - t0)  # type: ignore[union-attr]
        times["fetch"].append(t2 - t1)  # type: ignore[union-attr]
        times["exists"] = exists_of(lines)
        times["octets"] = octets
    await client.command(b"LOGOUT")
    client.close()
    return times


WARM_AFTER_LOGIN = "warm, SELECT after LOGIN"
WARM_RESELECT = "warm, reselect after the FETCH"
# Reselects per warm session: each is well under a millisecond and single ones on this machine
# range over half of one; the row reports their median (the other rows have one SELECT per round).
WARM_RESELECTS = 15


def big_round(server: Server, account: Account, round_no: int) -> list[dict]:
    """Cold (page cache dropped, a fresh server) then warm (the next session), as rows."""
    drop_caches()
    server.start()  # Mailroom: a fresh process; Dovecot: every connection gets a fresh imap
    try:
        cold = asyncio.run(big_session(server.port, account, 1))
        warm = asyncio.run(big_session(server.port, account, 1 + WARM_RESELECTS))
    finally:
        server.stop()
    runs = [{"server": server.name, "kind": "cold", "round": round_no, **cold}]
    # Two different things: the SELECT a client sends after LOGIN (the folder open in no session,
    # its files cached), and a reselect in the same session right after the 4 MB FETCH (what the
    # session has open is at hand).
    for kind, picked in ((WARM_AFTER_LOGIN, slice(0, 1)), (WARM_RESELECT, slice(1, None))):
        runs.append(
            {
                "server": server.name,
                "kind": kind,
                "round": round_no,
                **warm,
                "select": warm["select"][picked],  # type: ignore[index]
                "fetch": warm["fetch"][picked],  # type: ignore[index]
            }
        )
    return runs


def big_runs(servers: list[Server], args: argparse.Namespace, account: Account) -> list[dict]:
    runs = []
    for server in servers:
        say(f"big {server.name:8} machine quiet after {settle():.0f} s")
        # First open ever: Mailroom assigns UIDs, Dovecot builds its index. From a dropped page
        # cache, as every cold run below: what the earlier sections left cached of each server's
        # folder (its 100,000 directory entries) depends on which server went first, not on it.
        drop_caches()
        server.start()
        try:
            t = asyncio.run(big_session(server.port, account, 1))
        finally:
            server.stop()
        runs.append({"server": server.name, "kind": "first open (no index/UIDs yet)", **t})
    # The rounds interleaved, each round in the other order: the machine's speed drifts over
    # minutes by more than the warm rows differ.
    for round_no in range(1, args.big_rounds + 1):
        for server in servers if round_no % 2 else servers[::-1]:
            say(f"big {server.name:8} round {round_no}, machine quiet after {settle():.0f} s")
            runs += big_round(server, account, round_no)
    for run in runs:
        say(
            f"big {run['server']:8} {run['kind']:32} connect+LOGIN {run['login'][0]:7.3f} s  "
            f"SELECT {statistics.median(run['select']):7.3f} s  "
            f"UID FETCH 1:* (FLAGS) {min(run['fetch']):7.3f} s  ({run['exists']} messages)"
        )
    return runs


def login_runs(server: Server, account: Account, count: int) -> dict:
    """Connect, TLS, LOGIN and LOGOUT with the production-strength argon2id hash, 4 at a time."""

    async def go() -> tuple[Stats, float]:
        stats = Stats()
        context = client_context()
        gate = asyncio.Semaphore(4)

        async def one() -> None:
            async with gate:

                async def login() -> None:
                    c = await Client.connect(server.port, context)
                    await c.login(account)
                    await c.command(b"LOGOUT")
                    c.close()

                await stats.timed("login", login())

        t0 = time.monotonic()
        await asyncio.gather(*(one() for _ in range(count)))
        return stats, time.monotonic() - t0

    server.start()
    try:
        cpu0 = server.cpu()
        stats, wall = asyncio.run(go())
        cpu = server.cpu() - cpu0
    finally:
        server.stop()
    lat = stats.latencies["login"]
    run = {
        "server": server.name,
        "logins": len(lat),
        "logins_per_s": len(lat) / wall,
        "latency_p50_ms": statistics.median(lat) * 1000,
        "server_cpu_ms_per_login": 1000 * cpu / len(lat),
    }
    say(
        f"login {server.name:8} {run['logins_per_s']:6.2f}/s, p50 {run['latency_p50_ms']:.0f} ms, "
        f"{run['server_cpu_ms_per_login']:.0f} ms server CPU each"
    )
    return run


# --------------------------------------------------------------------------- report


def machine(python: str) -> dict[str, str]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    kb = int(Path("/proc/meminfo").read_text().split()[1])
    fs = " ".join(run_quiet(["findmnt", "-no", "FSTYPE,SOURCE", "-T", WORK_PARENT]).stdout.split())
    commit = run_quiet(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"]).stdout.strip()
    if run_quiet(["git", "-C", str(REPO), "status", "--porcelain", "--", "appliance"]).stdout.strip():
        commit += " with uncommitted changes in appliance/"
    return {
        "cpu": f"{os.cpu_count()} x {cpu}, {kb / 1024 / 1024:.1f} GiB RAM",
        "kernel": platform.release(),
        "filesystem": fs,
        "dovecot": run_quiet(["dovecot", "--version"]).stdout.strip(),
        "python": run_quiet([python, "-c", "import sys; print(sys.version.split()[0])"]).stdout.strip(),
        "commit": commit,
    }


def report(args: argparse.Namespace, results: dict, info: dict[str, str], elapsed: float) -> str:
    out = [
        f"# IMAP benchmark: Mailroom against Dovecot ({'quick' if args.quick else 'full'} run)",
        "",
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, {elapsed:.0f} s. Machine: {info['cpu']}, "
        f"kernel {info['kernel']}, {info['filesystem']}; Dovecot {info['dovecot']}, Python {info['python']}; "
        f"commit {info['commit']}. Mailroom imap.workers: {args.workers}. The machine is shared and noisy.",
        "",
    ]
    runs = results.get("throughput", [])
    if runs:
        out += [
            f"## Throughput ({len(args.accounts_used)} clients, one user each, "
            f"{args.duration:.0f} s per run, "
            f"{args.rounds} rounds, interleaved)",
            "",
            "A cycle is SELECT, FETCH 10 (FLAGS ENVELOPE BODY.PEEK[]), STORE, APPEND, EXPUNGE (UID STORE "
            "+\\Deleted, UID EXPUNGE), IDLE+DONE; *mixed* adds connect+TLS+LOGIN and LOGOUT to every cycle, "
            "*long-session* logs in once.",
            "",
            "| Profile | Server | cycles/s | server CPU ms/cycle | "
            + " | ".join(f"{c} /s" for c in COMMANDS)
            + " | errors |",
            "|---|---|---|---|" + "---|" * len(COMMANDS) + "---|",
        ]
        summary_rows = []
        for profile in args.profiles:
            medians = {}
            for name in ("Mailroom", "Dovecot"):
                mine = [r for r in runs if r["server"] == name and r["profile"] == profile]
                if not mine:
                    continue
                rates = [r["cycles_per_s"] for r in mine]
                medians[name] = (
                    statistics.median(rates),
                    statistics.median(r["server_cpu_ms_per_cycle"] or 0 for r in mine),
                )
                cells = [
                    spread([r["ops_per_s"].get(c, 0) for r in mine], 1)
                    if any(c in r["ops_per_s"] for r in mine)
                    else "-"
                    for c in COMMANDS
                ]
                out.append(
                    f"| {profile} | {name} | **{spread(rates, 1)}** | "
                    f"{spread([r['server_cpu_ms_per_cycle'] or 0 for r in mine], 1)} | "
                    + " | ".join(cells)
                    + f" | {sum(r['error_count'] for r in mine)} |"
                )
            if len(medians) == 2:
                summary_rows.append(
                    f"| {profile} | **{ratio(medians['Mailroom'][0], medians['Dovecot'][0])}** | "
                    f"{ratio(medians['Mailroom'][1], medians['Dovecot'][1])} |"
                )
        out += [
            "",
            "| Profile | Mailroom/Dovecot cycles/s | Mailroom/Dovecot CPU per cycle |",
            "|---|---|---|",
        ]
        out += summary_rows
        out += ["", "Latency p50 / p95 in ms (median over rounds):", ""]
        out += ["| Profile | Server | " + " | ".join(COMMANDS) + " |", "|---|---|" + "---|" * len(COMMANDS)]
        for profile in args.profiles:
            for name in ("Mailroom", "Dovecot"):
                mine = [r for r in runs if r["server"] == name and r["profile"] == profile]
                cells = []
                for c in COMMANDS:
                    a = [r["latency_p50_ms"][c] for r in mine if c in r["latency_p50_ms"]]
                    b = [r["latency_p95_ms"][c] for r in mine if c in r["latency_p95_ms"]]
                    cells.append(f"{statistics.median(a):.1f} / {statistics.median(b):.1f}" if a else "-")
                out.append(f"| {profile} | {name} | " + " | ".join(cells) + " |")
        out += [
            "",
            "Every run in order:",
            "",
            "| Round | Profile | Server | cycles/s | server cores | client cores | machine cores |",
        ]
        out += ["|---|---|---|---|---|---|---|"]
        for r in runs:
            out.append(
                f"| {r['round']} | {r['profile']} | {r['server']} | {r['cycles_per_s']:.1f} | "
                f"{r['server_cpu_s'] / r['wall']:.2f} | {r['client_cpu_s'] / r['wall']:.2f} | "
                f"{r['machine_busy_cores']:.2f} |"
            )
        out.append("")
    if results.get("login"):
        out += ["## Login with the production-strength hash (argon2id m=64 MiB, t=3)", ""]
        out += ["| Server | logins/s | p50 ms | server CPU ms per login |", "|---|---|---|---|"]
        for r in results["login"]:
            out.append(
                f"| {r['server']} | {r['logins_per_s']:.2f} | {r['latency_p50_ms']:.0f} | "
                f"{r['server_cpu_ms_per_login']:.0f} |"
            )
        out.append("")
    mem = results.get("memory", [])
    if mem:
        out += ["## Memory with sessions idling in IDLE (PSS of every server process)", ""]
        out += [
            "| Server | sessions | PSS total MiB | baseline MiB | bytes per idle session | marginal bytes "
            "per session | processes | opened in s |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in mem:
            procs = ", ".join(f"{k} x{v}" for k, v in sorted(r["processes"].items()))
            out.append(
                f"| {r['server']} | {r['sessions']:,} | {r['pss_total'] / 2**20:.1f} | "
                f"{r['pss_baseline'] / 2**20:.1f} | "
                f"**{r['bytes_per_session'] or 0:,.0f}** | {r['marginal_bytes_per_session'] or 0:,.0f} | "
                f"{procs} | {r['open_s']:.0f} |"
            )
        out += ["", "PSS by process (MiB) at the largest count:", ""]
        top = max(r["sessions"] for r in mem)
        for r in mem:
            if r["sessions"] == top:
                parts = ", ".join(
                    f"{k} {v / 2**20:.1f}"
                    for k, v in sorted(r["pss_by_process"].items(), key=lambda kv: -kv[1])
                )
                out.append(f"- {r['server']}: {parts}")
        out.append("")
    big = results.get("big", [])
    if big:
        n = big[0]["exists"]
        out += [f"## Big mailbox: {n:,} messages in INBOX", ""]
        out += [
            "| Server | when | connect+LOGIN ms | SELECT ms | UID FETCH 1:* (FLAGS) ms | response octets |",
            "|---|---|---|---|---|---|",
        ]
        for kind in ("first open (no index/UIDs yet)", "cold", WARM_AFTER_LOGIN, WARM_RESELECT):
            for name in ("Mailroom", "Dovecot"):
                mine = [r for r in big if r["server"] == name and r["kind"] == kind]
                if not mine:
                    continue
                # Milliseconds with two decimals: a warm SELECT takes well under one.
                login = [1e3 * r["login"][0] for r in mine]
                sel = [1e3 * statistics.median(r["select"]) for r in mine]
                fet = [1e3 * min(r["fetch"]) for r in mine]
                out.append(
                    f"| {name} | {kind} | {spread(login, 1)} | **{spread(sel, 2)}** | **{spread(fet, 1)}** | "
                    f"{mine[0]['octets']:,} |"
                )
        out += [
            "",
            "first open: the folder as written, opened by no server yet, page cache dropped (as for cold; "
            "Mailroom's work is at its first LOGIN, Dovecot's in SELECT: compare LOGIN + SELECT); "
            "cold: page cache dropped, then a fresh imapd for Mailroom (Dovecot starts a fresh imap process "
            f"per session anyway); warm: the next session, SELECT + FETCH {1 + WARM_RESELECTS} times (for "
            "Mailroom on either worker): SELECT after LOGIN is the first (the folder is open in no session), "
            f"reselect after the FETCH the median of the other {WARM_RESELECTS}; the FETCH columns the best.",
            "",
        ]
    problems = results.get("problems", {})
    if any(problems.values()):
        out += ["## Problems the servers logged", ""]
        for name, lines in problems.items():
            out += [f"- {name}: {len(lines)} lines, e.g. `{lines[0][:200]}`" for _ in [0] if lines]
        out.append("")
    return "\n".join(out)


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small numbers, under a minute: a smoke run")
    parser.add_argument("--sections", default="throughput,login,memory,big", help="comma-separated subset")
    parser.add_argument("--clients", type=int, default=None, help="concurrent clients (default 40; quick 8)")
    parser.add_argument(
        "--duration", type=float, default=None, help="seconds per throughput run (20; quick 2)"
    )
    parser.add_argument(
        "--warmup", type=float, default=None, help="unmeasured seconds before each run (3; quick 0)"
    )
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (2; quick 1)")
    parser.add_argument(
        "--messages", type=int, default=None, help="messages per client INBOX (500; quick 100)"
    )
    parser.add_argument("--idle-sessions", default=None, help="idle session counts (1000,10000; quick 100)")
    parser.add_argument("--concurrency", type=int, default=100, help="sessions being opened at once")
    parser.add_argument(
        "--big", type=int, default=None, help="messages in the big INBOX (100000; quick 2000)"
    )
    parser.add_argument(
        "--big-rounds", type=int, default=None, help="cold+warm rounds, servers interleaved (3; quick 1)"
    )
    parser.add_argument(
        "--logins", type=int, default=None, help="strong-hash logins per server (20; quick 2)"
    )
    parser.add_argument("--profiles", default="mixed,long-session", help="throughput profiles (default both)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="Mailroom imap.workers")
    parser.add_argument("--hibernate", default="1s", help="Dovecot imap_hibernate_timeout")
    parser.add_argument(
        "--python", default=str(REPO / ".venv" / "bin" / "python"), help="a Python with mailroom"
    )
    parser.add_argument("--output", default=None, help="results .md (default bench/results/imap-latest.md)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--servers", default="Mailroom,Dovecot", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    q = args.quick
    defaults = {
        "clients": (40, 8),
        "duration": (20.0, 2.0),
        "warmup": (3.0, 0.0),
        "rounds": (2, 1),
        "messages": (500, 100),
        "idle_sessions": ("1000,10000", "100"),
        "big": (100_000, 2000),
        "big_rounds": (3, 1),
        "logins": (20, 2),
    }
    for key, (full, quick) in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, quick if q else full)
    args.idle_sessions = [int(x) for x in str(args.idle_sessions).split(",") if x]
    args.sections = [s for s in args.sections.split(",") if s]
    unknown = set(args.sections) - {"throughput", "login", "memory", "big"}
    if unknown:
        parser.error(f"--sections: unknown {', '.join(sorted(unknown))}")
    if args.output is None:
        args.output = str(RESULTS / ("imap-quick.md" if q else "imap-latest.md"))
    args.profiles = [p for p in args.profiles.split(",") if p]
    if set(args.profiles) - {"mixed", "long-session"}:
        parser.error("--profiles: mixed, long-session or both")
    return args


def preflight(args: argparse.Namespace) -> None:
    if os.geteuid() != 0:
        raise BenchError("run as root: it starts a private Dovecot and drops the page cache")
    if not shutil.which("dovecot") or not shutil.which("doveadm"):
        raise BenchError("dovecot missing: apt-get install -y dovecot-imapd (see docs/benchmarks.md)")
    if not Path(args.python).exists():
        raise BenchError(f"{args.python} not found: pass --python with mailroom installed")
    probe = run_quiet(["doveadm", "pw", "-s", "ARGON2ID", "-p", "x"])
    if probe.returncode != 0 or "$argon2id$" not in probe.stdout:
        raise BenchError("this Dovecot has no ARGON2ID scheme (built without libsodium)")
    # The client holds every idle session's socket; the servers inherit the limit.
    want = max(args.idle_sessions, default=0) + 1024
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < want:
        raise BenchError(f"ulimit -Hn is {hard}: {want} needed for {max(args.idle_sessions)} sessions")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


INOTIFY_INSTANCES = Path("/proc/sys/fs/inotify/max_user_instances")


@contextlib.contextmanager
def inotify_instances(wanted: int) -> Iterator[None]:
    """Raise fs.inotify.max_user_instances for the run, then put the old value back.

    A hibernated Dovecot session keeps its inotify instance (imap-hibernate watches the mailbox
    with it); at the default 128 per user, sessions beyond it cannot hibernate and keep a whole
    imap process. Production Dovecot setups with hibernation raise this limit too."""
    old = int(INOTIFY_INSTANCES.read_text())
    if old >= wanted:
        yield
        return
    INOTIFY_INSTANCES.write_text(f"{wanted}\n")
    try:
        yield
    finally:
        INOTIFY_INSTANCES.write_text(f"{old}\n")


def make_hash(python: str, password: str, strong: bool) -> str:
    """An argon2id hash from the argon2 library Mailroom uses: the production parameters (RFC 9106's
    second option, as `mailroom password hash` makes) or light ones for the many bench logins."""
    params = "" if strong else "time_cost=1, memory_cost=1024, parallelism=1"
    code = f"import argon2, sys; print(argon2.PasswordHasher({params}).hash(sys.stdin.read()))"
    return subprocess.run(
        [python, "-c", code], input=password, capture_output=True, text=True, check=True
    ).stdout.strip()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    try:
        preflight(args)
    except BenchError as exc:
        print(f"imap_bench: {exc}", file=sys.stderr)
        return 1

    def interrupted(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGHUP, interrupted)

    workdir = Path(tempfile.mkdtemp(prefix="mailroom-imap-bench.", dir=WORK_PARENT))
    workdir.chmod(0o755)  # Dovecot's unprivileged processes and the mail user must reach their folders
    servers: list[Server] = []
    results: dict = {"throughput": [], "login": [], "memory": [], "big": []}
    status = 0
    info: dict[str, str] = {}
    try:
        info = machine(args.python)
        tls = (workdir / "tls.crt", workdir / "tls.key")
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-subj", "/CN=bench.test",
             "-keyout", str(tls[1]), "-out", str(tls[0])],
            check=True,
            capture_output=True,
        )  # fmt: skip
        tls[1].chmod(0o644)  # both servers read it after dropping privileges; a throwaway key
        password = secrets.token_urlsafe(12)
        light = make_hash(args.python, password, strong=False)
        users = max(args.clients, 20 if args.quick else 100)
        accounts = [Account(f"u{i:03d}@{DOMAIN}", password, light) for i in range(users)]
        strong = Account(STRONG_USER, password, make_hash(args.python, password, strong=True))
        big = Account(BIG_USER, password, light)
        every = [*accounts, strong, big]
        args.accounts_used = accounts[: args.clients]

        say(f"workdir {workdir}: writing the Maildirs")
        seed = workdir / "seed" / DOMAIN
        for i, account in enumerate(accounts):
            count = args.messages if i < args.clients and "throughput" in args.sections else 5
            fill_maildir(seed / account.address.split("@")[0], count, account.address, i)
        fill_maildir(seed / "strong", 5, strong.address, 999)
        if "big" in args.sections:
            fill_maildir(seed / "big", args.big, big.address, 1000)
        else:
            fill_maildir(seed / "big", 5, big.address, 1000)
        mailroom = Mailroom(workdir / "mailroom", Path(args.python), every, tls, args.workers)
        dovecot = Dovecot(workdir / "dovecot", every, tls, args.hibernate)
        servers = [s for s in (mailroom, dovecot) if s.name in args.servers]
        # Each server gets its own copy, made of hard links: neither server rewrites a message file
        # in place (flag changes rename, expunges unlink, appends write new files), so the copies stay
        # independent, and linking 100,000 files is much faster than copying them.
        for server in servers:
            subprocess.run(["cp", "-al", str(workdir / "seed"), str(server.store)], check=True)  # type: ignore[attr-defined]
        if dovecot in servers:
            chown_tree(dovecot.store)  # the inodes are shared: Mailroom (root) reads them all the same
        os.sync()  # the writeback of all this must not fall on the first measured run
        say(f"Mailroom on 127.0.0.1:{mailroom.port}, Dovecot on 127.0.0.1:{dovecot.port}")

        if "throughput" in args.sections:
            for round_no in range(1, args.rounds + 1):
                for profile in args.profiles:
                    for server in servers:
                        server.start()
                        try:
                            results["throughput"].append(
                                throughput_run(server, profile, args, args.accounts_used, round_no)
                            )
                        finally:
                            server.stop()
        if "login" in args.sections:
            for server in servers:
                results["login"].append(login_runs(server, strong, args.logins))
        if "memory" in args.sections:
            with inotify_instances(max(args.idle_sessions) + 1024):
                for server in servers:
                    results["memory"] += memory_runs(server, args, accounts)
        if "big" in args.sections:
            results["big"] += big_runs(servers, args, big)
        results["problems"] = {s.name: s.problems()[:20] for s in servers}
    except KeyboardInterrupt:
        print("imap_bench: interrupted, cleaning up", file=sys.stderr)
        status = 130
    except (BenchError, ImapError, subprocess.CalledProcessError, OSError) as exc:
        print(f"imap_bench: {type(exc).__name__}: {exc}", file=sys.stderr)
        status = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for server in servers:
            with contextlib.suppress(Exception):
                server.stop()
        # The results first: removing a few hundred thousand files takes a while.
        if any(results[k] for k in ("throughput", "login", "memory", "big")):
            text = report(args, results, info, time.monotonic() - started)
            print(text, flush=True)
            if status == 0:
                out = Path(args.output)
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(text)
                saved = {k: v for k, v in vars(args).items() if k != "accounts_used"}
                out.with_suffix(".json").write_text(
                    json.dumps({"args": saved, "machine": info, "results": results}, indent=1) + "\n"
                )
        if args.keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            say(f"removing {workdir}")
            shutil.rmtree(workdir, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
