#!/usr/bin/env python3
"""Mailroom's smtpd against Debian's Postfix on the same SMTP load, interleaved.

Both servers accept mail for alice@example.test on loopback and make it durable
in a Maildir before they answer 250. Postfix's smtp-source generates the load;
each run ends when every message is a file in the Maildir's new/ folder (not
when smtp-source returns, since Postfix delivers after it has queued). For each
run the driver records wall time and the CPU time (utime + stime from /proc) of
the server processes: the Mailroom smtpd process, or the Postfix master and
every process it started (smtpd, cleanup, qmgr, trivial-rewrite, virtual, ...)
including those that exited during the run.

This measures and prints; it asserts nothing about speed. Run it as root (the
private Postfix instance needs it): ``bench/smtp_bench.sh [--quick]``.

It never uses port 25, /etc/postfix or /var/lib/mailroom: both servers get
fresh directories below one temporary folder, which is removed at the end,
also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import getpass
import grp
import json
import os
import platform
import pwd
import re
import resource
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
# Both servers' folders live here: a disk (not tmpfs, unlike /tmp on some systems), one filesystem.
WORK_PARENT = "/var/tmp"  # noqa: S108 - a private mkdtemp folder below it
SENDER = "sender@remote.test"
RECIPIENT = "alice@example.test"
MODES = {
    # name: (smtp-source flags, description)
    "one-per-connection": ([], "one message per connection (connect, EHLO, MAIL, RCPT, DATA, QUIT)"),
    "reused-connections": (["-d"], "messages back to back on each connection (smtp-source -d)"),
}
CLK_TCK = os.sysconf("SC_CLK_TCK")
# Postfix's meta files (read by `postfix check`); copied so the instance never reads /etc/postfix.
POSTFIX_META = ("postfix-files", "postfix-files.d", "dynamicmaps.cf", "dynamicmaps.cf.d")


class BenchError(Exception):
    pass


# --------------------------------------------------------------------------- helpers


def free_port() -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port != 25:
            return port


def wait_listening(port: int, alive: object, timeout: float = 20.0) -> None:
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
    # The command name is in parentheses and may contain spaces; fields follow the last ")".
    return text[text.rindex(")") + 2 :].split()


def cpu_seconds(pid: int, children: bool = False) -> float:
    """utime + stime of a process (all its threads); with children=True add its reaped children."""
    fields = proc_stat(pid)
    if fields is None:
        return 0.0
    # After the ")" : state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14)
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / CLK_TCK


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


def machine_busy() -> float:
    """CPU seconds all CPUs spent busy since boot (/proc/stat: everything but idle and iowait)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(values[:8]) - values[3] - values[4]) / CLK_TCK


def count_files(folder: Path) -> int:
    try:
        with os.scandir(folder) as entries:
            return sum(1 for _ in entries)
    except FileNotFoundError:
        return 0


def run_quiet(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload,no-any-return]


# --------------------------------------------------------------------------- servers


class Server:
    name = ""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = 0

    @property
    def maildir_new(self) -> Path:
        raise NotImplementedError

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def cpu(self) -> float:
        raise NotImplementedError

    def pids(self) -> list[int]:
        raise NotImplementedError

    # Lines of the server's log that count as problems; log and _log_offset are set by start().
    problem_pattern = re.compile(r"$^")
    log: Path
    _log_offset = 0

    def problems(self) -> list[str]:
        """Errors the server logged during the last run (its log from where the run began)."""
        try:
            with open(self.log, encoding="utf-8", errors="replace") as log:
                log.seek(self._log_offset)
                text = log.read()
        except FileNotFoundError:
            return []
        return [line for line in text.splitlines() if self.problem_pattern.search(line)]


class Mailroom(Server):
    name = "Mailroom"
    problem_pattern = re.compile(r" (WARNING|ERROR|CRITICAL) |Traceback|refused|not stored")

    def __init__(self, root: Path, python: Path, log_level: str, workers: int = 1) -> None:
        super().__init__(root)
        self.python = python
        self.log_level = log_level
        self.workers = workers
        self.process: subprocess.Popen[bytes] | None = None
        self.store = root / "mail"
        self.config = root / "mailroom.yml"
        self.log = root / "smtpd.log"
        self._log_offset = 0

    @property
    def maildir_new(self) -> Path:
        return self.store / "example.test" / "alice" / "new"

    def prepare(self) -> None:
        self.root.mkdir()
        salt = self.root / "salt.key"
        salt.write_bytes(secrets.token_bytes(32))
        hashed = subprocess.run(
            [
                str(self.python),
                "-m",
                "mailroom.cli",
                "password",
                "hash",
                "--address",
                RECIPIENT,
                "--salt-key",
                str(salt),
            ],
            input=secrets.token_urlsafe(18) + "\n",
            capture_output=True,
            text=True,
            check=True,
            cwd=REPO,
        ).stdout.strip()
        self.port = free_port()
        user = getpass.getuser()
        group = grp.getgrgid(os.getgid()).gr_name
        # Written as JSON, which is YAML; no PyYAML needed in the driver.
        config = {
            "hostname": "mailroom.bench.test",
            "run_as": {"user": user, "group": group},
            "domains": ["example.test"],
            "users": [{"address": RECIPIENT, "password_hash": hashed}],
            "store": {"root": str(self.store)},
            # Its own runtime state: never the host appliance's /run/mailroom.
            "runtime_dir": str(self.store.parent / "run"),
            "smtp": {
                "listeners": [{"name": "mx", "address": "127.0.0.1", "port": self.port}],
                "workers": self.workers,
                # One client address opens 20 connections at once and, one message
                # per connection, thousands a minute: raise the per-IP limits.
                "limits": {
                    "max_connections_per_ip": 1000,
                    "max_connections": 2000,
                    "connection_rate_per_ip": 10_000_000,
                },
            },
            # Postfix checks no SPF, DKIM or DMARC here either, and loopback has no DNS to ask.
            "filtering": {"spf": False, "dkim": False, "dmarc": False},
            "log_level": self.log_level,
        }
        self.config.write_text(json.dumps(config, indent=2) + "\n")
        # The mailbox exists before the first run, as it does on a server in use.
        for sub in ("cur", "new", "tmp"):
            (self.maildir_new.parent / sub).mkdir(mode=0o700, parents=True)
        check = run_quiet(
            [str(self.python), "-m", "mailroom.cli", "config", "check", str(self.config)], cwd=REPO
        )
        if check.returncode != 0:
            raise BenchError(f"mailroom config check failed: {check.stderr.strip()}")

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self._log_offset = log.tell()
            self.process = subprocess.Popen(
                [str(self.python), "-m", "mailroom.cli", "smtpd", "--config", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=REPO,
            )
        wait_listening(self.port, lambda: self.process is not None and self.process.poll() is None)

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None

    def cpu(self) -> float:
        # The pre-fork parent and its workers (which live for the whole run).
        return sum(cpu_seconds(pid) for pid in self.pids())

    def loop_cpu(self) -> float:
        """CPU time of the main threads (the event loops, which run all the Python of every session)."""
        total = 0.0
        for pid in self.pids():
            try:
                text = Path(f"/proc/{pid}/task/{pid}/stat").read_text()
            except FileNotFoundError:
                continue
            fields = text[text.rindex(")") + 2 :].split()
            total += (int(fields[11]) + int(fields[12])) / CLK_TCK
        return total

    def loop_runqueue_wait(self) -> float:
        """Seconds the event-loop threads were runnable but waited for a free CPU (schedstat)."""
        total = 0.0
        for pid in self.pids():
            try:
                total += int(Path(f"/proc/{pid}/task/{pid}/schedstat").read_text().split()[1]) / 1e9
            except FileNotFoundError:
                continue
        return total

    def pids(self) -> list[int]:
        return [self.process.pid, *descendants(self.process.pid)] if self.process else []


class Postfix(Server):
    problem_pattern = re.compile(
        r"(warning|error|fatal|panic|reject|status=(deferred|bounced))", re.IGNORECASE
    )
    name = "Postfix"

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.etc = root / "etc"
        self.queue = root / "queue"
        self.data = root / "data"
        self.mail = root / "mail"
        self.log = root / "maillog"
        self.master_pid = 0
        self._log_offset = 0

    @property
    def maildir_new(self) -> Path:
        return self.mail / "example.test" / "alice" / "new"

    def prepare(self) -> None:
        owner = pwd.getpwnam("postfix")
        for folder in (self.root, self.etc, self.queue, self.data, self.mail, self.etc / "meta"):
            folder.mkdir()
        for folder in (self.data, self.mail):
            os.chown(folder, owner.pw_uid, owner.pw_gid)
        for name in POSTFIX_META:
            source = Path("/etc/postfix") / name
            if source.is_dir():
                shutil.copytree(source, self.etc / "meta" / name)
            elif source.exists():
                shutil.copy2(source, self.etc / "meta" / name)
        self.port = free_port()
        # The Debian package's defaults, except what a private instance needs:
        # its own directories, loopback only, no chroot, one virtual Maildir user.
        main_cf = f"""\
compatibility_level = 3.6
queue_directory = {self.queue}
data_directory = {self.data}
meta_directory = {self.etc / "meta"}
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
shlib_directory = /usr/lib/postfix
mail_owner = postfix
setgid_group = postdrop
syslog_name = postfix-bench
maillog_file = {self.log}
myhostname = postfix.bench.test
mydomain = bench.test
myorigin = $myhostname
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
alias_maps =
alias_database =
relayhost =
biff = no
# Mail for example.test goes into <base>/example.test/alice/ (trailing / = Maildir).
virtual_mailbox_domains = example.test
virtual_mailbox_base = {self.mail}
virtual_mailbox_maps = texthash:{self.etc / "vmailbox"}
virtual_uid_maps = static:{owner.pw_uid}
virtual_gid_maps = static:{owner.pw_gid}
virtual_minimum_uid = {min(owner.pw_uid, 100)}
"""
        (self.etc / "main.cf").write_text(main_cf)
        (self.etc / "vmailbox").write_text(f"{RECIPIENT} example.test/alice/\n")
        # Debian's master.cf services with chroot off (a chroot would need copies
        # of /etc files in the queue directory) and smtpd on a loopback port.
        (self.etc / "master.cf").write_text(f"""\
127.0.0.1:{self.port} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
""")
        check = run_quiet(["postfix", "-c", str(self.etc), "check"])
        if check.returncode != 0:
            raise BenchError(f"postfix check failed: {check.stderr.strip()}")

    def start(self) -> None:
        self._log_offset = self.log.stat().st_size if self.log.exists() else 0
        started = run_quiet(["postfix", "-c", str(self.etc), "start"])
        if started.returncode != 0:
            raise BenchError(f"postfix start failed: {started.stderr.strip()} {self._tail()}")
        pid_file = self.queue / "pid" / "master.pid"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not self.master_pid:
            with contextlib.suppress(FileNotFoundError, ValueError):
                self.master_pid = int(pid_file.read_text().strip())
            time.sleep(0.05)
        if not self.master_pid:
            raise BenchError("postfix master wrote no pid file")
        wait_listening(self.port, lambda: proc_stat(self.master_pid) is not None)

    def stop(self) -> None:
        if not self.master_pid and not (self.queue / "pid" / "master.pid").exists():
            return
        stopped = run_quiet(["postfix", "-c", str(self.etc), "stop"])
        if stopped.returncode != 0:
            run_quiet(["postfix", "-c", str(self.etc), "abort"])
        # `postfix stop` returns before master has gone; wait so the next run starts clean.
        deadline = time.monotonic() + 15
        while self.master_pid and proc_stat(self.master_pid) is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.master_pid and proc_stat(self.master_pid) is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.master_pid, signal.SIGKILL)
        self.master_pid = 0

    def cpu(self) -> float:
        if not self.master_pid:
            return 0.0
        # Live children first, then master with its reaped children: a child that
        # exits in between is counted twice, never lost (rare: runs end idle).
        live = sum(cpu_seconds(pid) for pid in descendants(self.master_pid))
        return live + cpu_seconds(self.master_pid, children=True)

    def pids(self) -> list[int]:
        return [self.master_pid, *descendants(self.master_pid)] if self.master_pid else []

    def _tail(self) -> str:
        try:
            return " | ".join(self.log.read_text(errors="replace").splitlines()[-5:])
        except FileNotFoundError:
            return ""

    def deferred(self) -> int:
        return sum(len(files) for _, _, files in os.walk(self.queue / "deferred"))


# --------------------------------------------------------------------------- one run


@dataclass
class Run:
    server: str
    mode: str
    round: int
    messages: int
    delivered: int = 0
    wall: float = 0.0  # start of load → last message in new/
    accept_wall: float = 0.0  # start of load → smtp-source exited
    server_cpu: float = 0.0
    machine_cpu: float = 0.0  # all CPUs, every process and the kernel
    loop_cpu: float = 0.0  # Mailroom only: the event-loop thread's share of server_cpu
    loop_runqueue: float = 0.0  # Mailroom only: event-loop thread runnable, waiting for a CPU
    source_cpu: float = 0.0
    source_rc: int = 0
    source_errors: list[str] = field(default_factory=list)
    server_problems: list[str] = field(default_factory=list)
    processes: int = 0

    @property
    def rate(self) -> float:
        return self.delivered / self.wall if self.wall else 0.0

    @property
    def cpu_per_1000(self) -> float:
        return self.server_cpu / self.delivered * 1000 if self.delivered else float("nan")

    @property
    def cores(self) -> float:
        return self.server_cpu / self.wall if self.wall else 0.0

    @property
    def machine_cores(self) -> float:
        return self.machine_cpu / self.wall if self.wall else 0.0

    @property
    def loop_share(self) -> float:
        return self.loop_cpu / self.wall if self.wall else 0.0

    @property
    def runqueue_share(self) -> float:
        return self.loop_runqueue / self.wall if self.wall else 0.0


def smtp_source_argv(args: argparse.Namespace, mode: str, port: int, messages: int) -> list[str]:
    return [
        args.smtp_source,
        *MODES[mode][0],
        "-s",
        str(args.sessions),
        "-m",
        str(messages),
        "-l",
        str(args.length),
        "-f",
        SENDER,
        "-t",
        RECIPIENT,
        f"127.0.0.1:{port}",
    ]


def deliver_load(
    args: argparse.Namespace,
    server: Server,
    mode: str,
    messages: int,
    run: Run | None = None,
    settle: float | None = None,
) -> Run:
    """Send `messages` and wait until they are all in new/, measuring wall and CPU time."""
    run = run or Run(server.name, mode, 0, messages)
    settle = args.settle if settle is None else settle
    before = count_files(server.maildir_new)
    target = before + messages
    usage0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu0 = server.cpu()
    machine0 = machine_busy()
    loop0 = server.loop_cpu() if isinstance(server, Mailroom) else 0.0
    queue0 = server.loop_runqueue_wait() if isinstance(server, Mailroom) else 0.0
    t0 = time.monotonic()
    source = subprocess.Popen(
        smtp_source_argv(args, mode, server.port, messages),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = source.communicate()
    except BaseException:  # Ctrl-C: don't leave the load generator behind
        source.kill()
        source.wait()
        raise
    run.accept_wall = time.monotonic() - t0
    run.source_rc = source.returncode
    run.source_errors += [line for line in (out + err).splitlines() if line.strip()][:20]
    # Postfix answers 250 once the message is in its queue and delivers afterwards:
    # wait for the Maildir. Give up when nothing arrives for args.settle seconds.
    last, last_change = count_files(server.maildir_new), time.monotonic()
    while last < target:
        time.sleep(0.02)
        now_count = count_files(server.maildir_new)
        if now_count != last:
            last, last_change = now_count, time.monotonic()
        elif time.monotonic() - last_change > settle:
            break
    # The run ends when the last file arrived, not when we gave up waiting.
    run.wall = (last_change if last < target else time.monotonic()) - t0
    run.server_cpu = server.cpu() - cpu0
    run.machine_cpu = machine_busy() - machine0
    if isinstance(server, Mailroom):
        run.loop_cpu = server.loop_cpu() - loop0
        run.loop_runqueue = server.loop_runqueue_wait() - queue0
    usage1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    run.source_cpu = (usage1.ru_utime + usage1.ru_stime) - (usage0.ru_utime + usage0.ru_stime)
    run.delivered = last - before
    run.processes = len(server.pids())
    return run


def empty_maildir(server: Server) -> None:
    """Remove the messages of earlier runs; the Maildir folders themselves stay."""
    for sub in ("new", "cur", "tmp"):
        folder = server.maildir_new.parent / sub
        if folder.is_dir():
            with os.scandir(folder) as entries:
                for entry in entries:
                    os.unlink(entry.path)


def one_run(args: argparse.Namespace, server: Server, mode: str, round_no: int) -> Run:
    empty_maildir(server)
    server.start()
    try:
        run = Run(server.name, mode, round_no, args.messages)
        # Warm up: let Postfix spawn its services and Python import lazily what it imports.
        warm = deliver_load(args, server, mode, args.warmup, settle=5.0)
        if warm.delivered != args.warmup or warm.source_rc:
            run.source_errors.append(
                f"warm-up: {warm.delivered}/{args.warmup} delivered, smtp-source exit {warm.source_rc}"
            )
            run.source_errors += warm.source_errors
        run = deliver_load(args, server, mode, args.messages, run)
        run.server_problems = server.problems()[:20]
        if isinstance(server, Postfix) and server.deferred():
            run.server_problems.append(f"{server.deferred()} messages in Postfix's deferred queue")
        return run
    finally:
        server.stop()


# --------------------------------------------------------------------------- profile


PROFILE_RATE = 200  # py-spy samples per second and thread


def profile(args: argparse.Namespace, mailroom: Mailroom, workdir: Path) -> dict[str, dict[str, object]]:
    """Extra Mailroom runs under py-spy (not in the table): where the smtpd's wall time goes.

    Per mode, one run records collapsed stacks of every thread including idle
    ones (analysed below) and one records a flame graph of the busy stacks
    (bench/results/smtpd-profile-<mode>.svg).
    """
    summary: dict[str, dict[str, object]] = {}
    RESULTS.mkdir(parents=True, exist_ok=True)
    for mode in args.modes:
        for kind in ("raw", "gil", "flamegraph"):
            empty_maildir(mailroom)
            mailroom.start()
            spy = None
            try:
                deliver_load(args, mailroom, mode, args.warmup, settle=5.0)
                assert mailroom.process is not None
                if kind == "raw":
                    output = workdir / f"profile-{mode}.txt"
                    extra = ["--format", "raw", "--idle", "--threads"]
                elif kind == "gil":  # only the thread holding the GIL is sampled
                    output = workdir / f"profile-{mode}-gil.txt"
                    extra = ["--format", "raw", "--gil", "--threads"]
                else:
                    output = RESULTS / f"smtpd-profile-{mode}.svg"
                    extra = ["--format", "flamegraph"]
                spy = subprocess.Popen(
                    [
                        args.py_spy,
                        "record",
                        "--rate",
                        str(PROFILE_RATE),
                        "--pid",
                        str(mailroom.process.pid),
                        "--subprocesses",  # the workers: the parent only forks and waits
                        "--output",
                        str(output),
                        *extra,
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                time.sleep(1.0)  # py-spy attaches; these samples are idle and discounted below
                run = deliver_load(args, mailroom, mode, args.messages)
                spy.send_signal(signal.SIGINT)
                _, spy_err = spy.communicate(timeout=60)
                if not output.exists():
                    raise BenchError(f"py-spy wrote no profile: {spy_err.strip()[-500:]}")
                if kind == "raw":
                    summary[mode] = analyse_raw(output.read_text(), run)
                elif kind == "gil":
                    summary[mode]["gil_held_share_of_wall"] = analyse_gil(output.read_text(), run)
                print(f"profile {mode} {kind}: {run.rate:.0f} msg/s under py-spy", file=sys.stderr)
            finally:
                if spy is not None and spy.poll() is None:
                    spy.kill()
                    spy.wait()
                mailroom.stop()
    return summary


def source_line(frame: str) -> str:
    """The source text of a py-spy frame "func (mailroom/x.py:12)" from this checkout, if it is ours."""
    match = re.search(r"\((mailroom/[^:]+):(\d+)\)$", frame)
    if not match:
        return ""
    try:
        return (REPO / "appliance" / match[1]).read_text().splitlines()[int(match[2]) - 1].strip()
    except (OSError, IndexError):
        return ""


def worker_activity(leaf: str) -> str:
    """What a worker thread does, from its innermost Python frame (a C call shows as its caller)."""
    if leaf.startswith("_worker (concurrent/futures/thread.py"):
        return "idle (waiting for work)"
    code = source_line(leaf)
    if "fsync" in code:
        return "fsync of the new/ directory" if leaf.startswith("fsync_dir") else "fsync of the message file"
    for call, label in (
        ("os.write", "write()"),
        ("os.open", "open()"),
        ("os.rename", "rename()"),
        ("os.close", "close()"),
        ("statvfs", "statvfs() (free-space check)"),
    ):
        if call in code:
            return label
    return "other (Python, stat, GIL waits)"


# Frames on the event loop worth naming in the summary (inclusive time).
LOOP_PARTS = {
    "socket send() (replies)": "_SelectorSocketTransport.write (asyncio/selector_events.py",
    "socket recv() and data_received": "_read_ready__data_received",
    "connection set-up/teardown (accept, SMTP.__init__, register)": (
        "_accept_connection",
        "connection_made",
        "SMTP.__init__",
        "_PollLikeSelector.register",
        "connection_lost",
        "_call_connection_lost",
    ),
    "address parsing (aiosmtpd _getaddr → email header parser)": ("SMTP._getaddr", "_getparams"),
    "Mailroom handler hooks (handle_MAIL/RCPT/DATA)": ("Handler.handle_", "InboundHandler.handle_"),
    "logging (one line per message)": "logging/__init__.py",
    "run_in_executor / future plumbing": (
        "run_in_executor",
        "ThreadPoolExecutor.submit",
        "_chain_future",
        "_call_set_state",
        "_copy_future_state",
        "_write_to_self",
    ),
}


def analyse_raw(text: str, run: Run) -> dict[str, object]:
    """Where the smtpd's wall time goes during the loaded part of a py-spy --idle --threads recording."""
    loop_busy = loop_idle = 0
    workers: dict[str, int] = {}
    worker_threads: set[str] = set()
    leaves: dict[str, int] = {}
    parts = dict.fromkeys(LOOP_PARTS, 0)
    modules: dict[str, int] = {}
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        thread, _, rest = stack.partition(": ")
        frames = rest.split(";")
        leaf = frames[-1]
        if frames[0] == "MainThread":
            if leaf.startswith("EpollSelector.select") or leaf.startswith("select ("):
                loop_idle += count
                continue
            loop_busy += count
            leaves[leaf] = leaves.get(leaf, 0) + count
            module = re.sub(r":\d+\)$", "", leaf.rpartition(" (")[2])
            modules[module] = modules.get(module, 0) + count
            for part, needles in LOOP_PARTS.items():
                wanted = (needles,) if isinstance(needles, str) else needles
                if any(n in frame for frame in frames for n in wanted):
                    parts[part] += count
        else:
            worker_threads.add(thread)
            activity = worker_activity(leaf)
            workers[activity] = workers.get(activity, 0) + count
    window = run.wall * PROFILE_RATE  # samples per thread while the load ran
    busy = [
        (name, n / PROFILE_RATE)
        for name, n in sorted(workers.items(), key=lambda kv: -kv[1])
        if not name.startswith("idle")
    ]
    fsync_seconds = sum(sec for name, sec in busy if name.startswith("fsync"))
    return {
        "messages": run.delivered,
        "wall_s": round(run.wall, 2),
        "msg_per_s_under_profiler": round(run.rate, 1),
        "server_cpu_s": round(run.server_cpu, 2),
        # The event loop runs all Python of every session; when it is busy ~100% of
        # the loaded window, the server is CPU-bound on that one thread.
        "event_loop_busy_s": round(loop_busy / PROFILE_RATE, 2),
        "event_loop_busy_share_of_wall": round(loop_busy / window, 2) if window else None,
        "event_loop_parts_s": {k: round(v / PROFILE_RATE, 2) for k, v in parts.items()},
        "event_loop_self_time_by_file_s": {
            k: round(v / PROFILE_RATE, 2) for k, v in sorted(modules.items(), key=lambda kv: -kv[1])[:12]
        },
        "worker_threads": len(worker_threads),
        "worker_thread_seconds": {k: round(v, 2) for k, v in busy},
        "fsync_thread_seconds": round(fsync_seconds, 2),
        "fsync_ms_per_message": round(fsync_seconds / run.delivered * 1000, 2) if run.delivered else None,
        "fsyncs_in_flight_on_average": round(fsync_seconds / run.wall, 2) if run.wall else None,
        "hot_leaf_frames_on_event_loop_s": [
            (leaf, round(n / PROFILE_RATE, 2))
            for leaf, n in sorted(leaves.items(), key=lambda kv: -kv[1])[:15]
        ],
    }


def analyse_gil(text: str, run: Run) -> dict[str, float]:
    """Share of the loaded window in which the event loop, or any worker thread, held the GIL."""
    held = {"event loop": 0, "worker threads": 0}
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if count_text.isdigit():
            first = stack.partition(": ")[2].split(";")[0]
            held["event loop" if first == "MainThread" else "worker threads"] += int(count_text)
    window = run.wall * PROFILE_RATE
    return {k: round(v / window, 2) for k, v in held.items()} if window else {}


# --------------------------------------------------------------------------- report


def loop_column(runs: list[Run]) -> str:
    return (
        f"{statistics.median([r.loop_share for r in runs]):.2f} / "
        f"{statistics.median([r.runqueue_share for r in runs]):.2f}"
    )


def spread(values: list[float], digits: int = 0) -> str:
    fmt = f"{{:.{digits}f}}"
    if not values:
        return "-"
    med = fmt.format(statistics.median(values))
    return f"{med} ({fmt.format(min(values))}-{fmt.format(max(values))})" if len(values) > 1 else med


def machine() -> dict[str, str]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = ""
    with contextlib.suppress(OSError):
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 1024 / 1024:.1f} GiB RAM"
    fs = " ".join(run_quiet(["findmnt", "-no", "FSTYPE,SOURCE", "-T", WORK_PARENT]).stdout.split())
    postfix = run_quiet(["postconf", "-d", "-h", "mail_version"]).stdout.strip()
    commit = run_quiet(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"]).stdout.strip()
    # The smtpd runs from the working tree: say so when it differs from the commit.
    if run_quiet(["git", "-C", str(REPO), "status", "--porcelain", "--", "appliance"]).stdout.strip():
        commit += " with uncommitted changes in appliance/"
    return {
        "cpu": f"{os.cpu_count()} x {cpu}, {mem}",
        "kernel": platform.release(),
        "filesystem": fs,
        "postfix": postfix,
        "commit": commit,
    }


def report(
    args: argparse.Namespace,
    runs: list[Run],
    info: dict[str, str],
    started: float,
    summary: dict[str, object],
) -> str:
    lines = [
        f"# SMTP benchmark: Mailroom vs Postfix ({datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC)",
        "",
        f"Load: `smtp-source -s {args.sessions} -m {args.messages} -l {args.length}` "
        f"(+ `-d` for reused connections), {args.rounds} interleaved rounds per server and mode, "
        f"{args.warmup} warm-up messages before each measured run.",
        f"Machine: {info['cpu']}; kernel {info['kernel']}; store on {info['filesystem']}; "
        f"Postfix {info['postfix']}; Python {platform.python_version()} (driver); commit {info['commit']}.",
        "",
        "| Mode | Server | msg/s, median (min-max) | server CPU s / 1,000 msg | server CPU cores busy "
        "| machine CPU cores busy | Mailroom event-loop thread on CPU / waiting for a CPU "
        "| accepted msg/s (smtp-source done) | delivered |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    ratios = []
    for mode in args.modes:
        medians = {}
        for name in ("Mailroom", "Postfix"):
            sel = [r for r in runs if r.mode == mode and r.server == name]
            if not sel:
                continue
            rates = [r.rate for r in sel]
            medians[name] = (statistics.median(rates), statistics.median([r.cpu_per_1000 for r in sel]))
            delivered = sum(r.delivered for r in sel)
            expected = sum(r.messages for r in sel)
            lines.append(
                f"| {mode} | {name} | {spread(rates)} | {spread([r.cpu_per_1000 for r in sel], 2)} "
                f"| {spread([r.cores for r in sel], 2)} "
                f"| {spread([r.machine_cores for r in sel], 2)} "
                f"| {loop_column(sel) if name == 'Mailroom' else '-'} "
                f"| {spread([r.messages / r.accept_wall for r in sel if r.accept_wall])} "
                f"| {delivered}/{expected} |"
            )
        if len(medians) == 2:
            rate_ratio = medians["Mailroom"][0] / medians["Postfix"][0]
            cpu_ratio = medians["Mailroom"][1] / medians["Postfix"][1]
            ratios.append((mode, rate_ratio, cpu_ratio))
    lines += ["", "| Mode | Mailroom/Postfix msg/s | Mailroom/Postfix CPU per message |", "|---|---|---|"]
    lines += [f"| {mode} | {rate:.2f}x | {cpu:.2f}x |" for mode, rate, cpu in ratios]
    lines += [
        "",
        "Runs in order:",
        "",
        "| # | Mode | Server | msg/s | wall s | server CPU s | smtp-source CPU s "
        "| delivered | smtp-source exit |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(runs, 1):
        lines.append(
            f"| {i} | {r.mode} | {r.server} | {r.rate:.0f} | {r.wall:.2f} | {r.server_cpu:.2f} "
            f"| {r.source_cpu:.2f} | {r.delivered}/{r.messages} | {r.source_rc} |"
        )
    odd = [
        (i, r)
        for i, r in enumerate(runs, 1)
        if r.source_errors or r.server_problems or r.delivered != r.messages or r.source_rc
    ]
    if odd:
        lines += ["", "Problems seen:", ""]
        for i, r in odd:
            for text in [*r.source_errors[:5], *r.server_problems[:5]]:
                lines.append(f"- run {i} ({r.server}, {r.mode}): `{text[:200]}`")
            if r.delivered != r.messages:
                lines.append(f"- run {i} ({r.server}, {r.mode}): {r.delivered} of {r.messages} delivered")
    if summary:
        lines += [
            "",
            "Profile (py-spy, extra Mailroom runs, not in the table above):",
            "",
            "```",
            json.dumps(summary, indent=1),
            "```",
        ]
    lines += ["", f"Total duration {time.monotonic() - started:.0f} s.", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="500 messages per run instead of 5,000")
    parser.add_argument("--rounds", type=int, default=5, help="measured runs per server and mode (default 5)")
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--messages", type=int, help="messages per run (default 5000, --quick 500)")
    parser.add_argument("--length", type=int, default=2048, help="body bytes per message")
    parser.add_argument("--warmup", type=int, default=100, help="unmeasured messages before each run")
    parser.add_argument(
        "--mode",
        dest="modes",
        action="append",
        choices=list(MODES),
        help="only this mode (repeatable; default both)",
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=30.0,
        help="give up waiting for the Maildir after this many seconds without a new file",
    )
    parser.add_argument(
        "--python",
        default=str(REPO / ".venv" / "bin" / "python"),
        help="Python with mailroom installed (default: the checkout's .venv)",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="Mailroom's log_level (default info, one line per message, as shipped)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=2 * (os.cpu_count() or 1),
        help="Mailroom's smtp.workers (default: two per core, as the role configures)",
    )
    parser.add_argument("--smtp-source", default=shutil.which("smtp-source") or "/usr/sbin/smtp-source")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="afterwards, one py-spy profiled Mailroom run per mode (needs py-spy)",
    )
    parser.add_argument("--py-spy", default=shutil.which("py-spy") or "py-spy")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, Maildirs)")
    parser.add_argument("--output", default=str(RESULTS / "latest.md"))
    args = parser.parse_args(argv)
    args.messages = args.messages or (500 if args.quick else 5000)
    args.modes = args.modes or list(MODES)
    if args.rounds < 1 or args.messages < 1 or args.sessions < 1:
        parser.error("--rounds, --messages and --sessions must be positive")
    return args


def preflight(args: argparse.Namespace) -> None:
    if os.geteuid() != 0:
        raise BenchError("run as root: the private Postfix instance is started with `postfix -c DIR start`")
    if not Path(args.smtp_source).exists() or not shutil.which("postfix"):
        raise BenchError("smtp-source/postfix missing: apt-get install postfix (see docs/benchmarks.md)")
    if not Path(args.python).exists():
        raise BenchError(f"{args.python} not found: pass --python with mailroom installed")
    if args.profile and not shutil.which(args.py_spy) and not Path(args.py_spy).exists():
        raise BenchError("--profile needs py-spy: pass --py-spy PATH (see docs/benchmarks.md)")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    try:
        preflight(args)
    except BenchError as exc:
        print(f"smtp_bench: {exc}", file=sys.stderr)
        return 1

    # SIGTERM and SIGHUP clean up like Ctrl-C does.
    def interrupted(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored
    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGHUP, interrupted)

    workdir = Path(tempfile.mkdtemp(prefix="mailroom-bench.", dir=WORK_PARENT))
    workdir.chmod(0o755)  # Postfix's unprivileged processes must reach their folders
    mailroom = Mailroom(workdir / "mailroom", Path(args.python), args.log_level, args.workers)
    postfix = Postfix(workdir / "postfix")
    servers: list[Server] = [mailroom, postfix]
    runs: list[Run] = []
    summary: dict[str, object] = {}
    status = 0
    try:
        mailroom.prepare()
        postfix.prepare()
        info = machine()
        print(
            f"workdir {workdir}; Mailroom on 127.0.0.1:{mailroom.port}, Postfix on 127.0.0.1:{postfix.port}",
            file=sys.stderr,
        )
        for round_no in range(1, args.rounds + 1):
            for mode in args.modes:
                for server in servers:
                    run = one_run(args, server, mode, round_no)
                    runs.append(run)
                    note = "" if run.delivered == run.messages else f"  ONLY {run.delivered} DELIVERED"
                    print(
                        f"round {round_no} {mode:19} {server.name:8} {run.rate:7.1f} msg/s  "
                        f"{run.cpu_per_1000:6.2f} CPU s/1000  wall {run.wall:6.2f} s{note}",
                        file=sys.stderr,
                    )
        if args.profile:
            summary = profile(args, mailroom, workdir)
    except KeyboardInterrupt:
        print("smtp_bench: interrupted, cleaning up", file=sys.stderr)
        status = 130
    except (BenchError, subprocess.CalledProcessError, OSError) as exc:
        print(f"smtp_bench: {exc}", file=sys.stderr)
        status = 1
    finally:
        # Ignore further Ctrl-C while stopping the servers and removing the folder.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for server in servers:
            with contextlib.suppress(Exception):
                server.stop()
        if args.keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if runs:
        text = report(args, runs, info, started, summary)
        print(text)
        if status == 0:
            out = Path(args.output)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(text)
            (out.with_suffix(".json")).write_text(
                json.dumps(
                    {
                        "args": {k: v for k, v in vars(args).items()},
                        "machine": info,
                        "runs": [asdict(r) for r in runs],
                        "profile": summary,
                    },
                    indent=1,
                )
                + "\n"
            )
    return status


if __name__ == "__main__":
    sys.exit(main())
