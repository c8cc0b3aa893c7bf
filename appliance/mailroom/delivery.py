"""deliveryd: drains the outbound spool to the remote MTAs.

Each entry (ID.msg + ID.env, see queue/spool.py) gets a state file (ID.state,
queue/scheduler.py) with every recipient's progress. Recipients are grouped by
domain; each domain is routed (queue/routing.py) and delivered in one SMTP
session (queue/client.py). 2xx: delivered; 5xx: failed; 4xx or no answer:
deferred with backoff until delivery.max_age. Failed recipients get one DSN
(queue/bounce.py) to the envelope sender, never to the null sender. An entry
whose recipients are all settled is removed.

Recipients in our own domains are delivered to the local Maildirs (the smtpd
expands aliases before queueing, so these are mostly our own bounces).

With an srs section, the envelope sender on the wire is rewritten (queue/srs.py)
when it is of another domain: on port 25 nothing is relayed, so such mail is
always mail our aliases forward. Senders in our own domains and the null
sender go out unchanged; a bounce of ours still goes to the original sender.

The administrator's `mailroom queue retry|hold|release|delete` change the
entries under their lock (queue/scheduler.py) and leave a note in the spool's
admin/ folder; each scan logs the notes and looks at the named entries again,
so a retry is tried within one scan interval. Held entries are skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from . import daemon, metrics
from .accounts import Directory
from .config import Config, split_address
from .queue import smarthost
from .queue.bounce import Failure, build_dsn
from .queue.client import OPPORTUNISTIC, ConnectionFailed, Reply, Result, TlsPolicy, safe_address, send
from .queue.mtasts import MtaSts
from .queue.routing import Host, RouteError, Router, make_resolver
from .queue.scheduler import DELIVERED, FAILED, PENDING, State, StateStore, defer, settle
from .queue.spool import Envelope, Spool, SpoolError
from .queue.srs import Srs
from .store.maildir import DeliveryError, MaildirStore

log = logging.getLogger("mailroom.delivery")

RECEIVED_RE = re.compile(rb"^received:", re.IGNORECASE | re.MULTILINE)
DEBRIS_AGE = 3600  # a .msg without .env older than this is left over from a crash


@dataclass
class Route:
    """The hosts to try for one domain, and how to talk to them."""

    hosts: list[Host]
    port: int
    policy: TlsPolicy = OPPORTUNISTIC
    auth: tuple[str, str] | None = field(default=None, repr=False)
    mta_sts: str = ""  # the mode of the domain's MTA-STS policy, "" without one


class DestinationLimit:
    """At most `limit` sessions at once with one destination (an MX host, or the smarthost)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._slots: dict[str, tuple[asyncio.Semaphore, list[int]]] = {}

    @contextlib.asynccontextmanager
    async def slot(self, destination: str) -> AsyncIterator[None]:
        key = destination.lower().rstrip(".")
        semaphore, users = self._slots.setdefault(key, (asyncio.Semaphore(self.limit), [0]))
        users[0] += 1
        try:
            async with semaphore:
                yield
        finally:
            users[0] -= 1
            if not users[0]:  # nobody holds or waits: forget the destination
                del self._slots[key]


def count_received(message: bytes) -> int:
    end = message.find(b"\r\n\r\n")
    head = message if end < 0 else message[: end + 2]
    return len(RECEIVED_RE.findall(head))


class Deliverer:
    def __init__(self, config: Config) -> None:
        assert config.queue_root is not None
        self.config = config
        self.settings = config.delivery
        self.spool = Spool(config.queue_root)
        self.spool.create()
        self.states = StateStore(self.spool.incoming, self.spool.tmp)
        self.directory = Directory(config)
        self.store = MaildirStore(config.store_root)
        self.router = Router(make_resolver(self.settings))
        self.sessions = asyncio.Semaphore(self.settings.concurrency)
        self.destinations = DestinationLimit(self.settings.destination_concurrency)
        # Mail from other domains that our aliases forward goes out with an SRS0 sender of ours.
        self.srs = Srs.from_config(config)
        # All mail for other domains through one host (verified TLS, AUTH); None: by MX.
        self.smarthost = smarthost.load(self.settings.smarthost) if self.settings.smarthost else None
        # MTA-STS of the domains we deliver to, the policies cached beside the spool.
        sts = self.settings.mta_sts
        self.mta_sts = (
            MtaSts(
                make_resolver(self.settings),
                config.queue_root / "mta-sts",
                str(sts.ca_file) if sts.ca_file else None,
                sts.https_port,
                sts.timeout,
            )
            if sts.enabled and self.smarthost is None
            else None
        )
        self.next_due: dict[str, float] = {}
        self.inflight: dict[str, asyncio.Task[None]] = {}

    # -- the spool ---------------------------------------------------------

    def sweep(self) -> None:
        """Remove what a crash may have left: state files of removed entries, old half-written ones."""
        now = time.time()
        live = set(self.spool.entries())
        for path in self.spool.incoming.iterdir():
            queue_id, _, suffix = path.name.rpartition(".")
            if queue_id in live:
                continue
            try:
                if suffix == "state" or (suffix == "msg" and now - path.stat().st_mtime > DEBRIS_AGE):
                    path.unlink()
            except FileNotFoundError:
                pass

    def remove(self, queue_id: str) -> None:
        # The .env first: without it the entry no longer exists, whatever else a crash leaves.
        with contextlib.suppress(FileNotFoundError), self.states.locked(queue_id):
            self.spool.remove(queue_id)

    def read_notes(self) -> None:
        """Log what the administrator changed and look at those entries again now."""
        for note in self.spool.take_notes():
            ids = [str(i) for i in note["ids"]]
            action = str(note.get("action", "?"))[:20]
            if "*" in ids:
                self.next_due.clear()
                log.info("queue %s of every entry by the administrator", action)
                continue
            details = note.get("details") if isinstance(note.get("details"), dict) else {}
            for queue_id in ids:
                self.next_due.pop(queue_id, None)
                detail = str(details.get(queue_id, ""))[:2000]
                log.info("id=%s queue %s by the administrator %s", queue_id[:64], action, detail)

    def scan(self) -> list[str]:
        ids = self.spool.entries()
        metrics.DELIVERY_QUEUE_MESSAGES.set(len(ids))
        oldest = 0.0
        if ids:
            with contextlib.suppress(ValueError):
                oldest = max(0.0, time.time() - int(ids[0][:8], 16))
        metrics.DELIVERY_QUEUE_OLDEST_SECONDS.set(oldest)
        for gone in set(self.next_due) - set(ids):
            del self.next_due[gone]
        return ids

    async def run(self, stop: asyncio.Event) -> None:
        self.sweep()
        log.info("deliveryd started: spool %s", self.spool.root)
        while not stop.is_set():
            self.read_notes()
            now = time.time()
            for queue_id in self.scan():
                if queue_id in self.inflight or self.next_due.get(queue_id, 0) > now:
                    continue
                if len(self.inflight) >= 4 * self.settings.concurrency:
                    break
                task = asyncio.create_task(self.process(queue_id))
                self.inflight[queue_id] = task
                task.add_done_callback(lambda _t, q=queue_id: self.inflight.pop(q, None))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.settings.scan_interval)
        for task in list(self.inflight.values()):
            task.cancel()
        await asyncio.gather(*self.inflight.values(), return_exceptions=True)
        log.info("deliveryd stopped")

    # -- one entry ---------------------------------------------------------

    async def process(self, queue_id: str) -> None:
        try:
            await self._process(queue_id)
        except asyncio.CancelledError:
            raise
        except FileNotFoundError:
            self.next_due.pop(queue_id, None)  # removed meanwhile
        except Exception:
            log.exception("id=%s delivery failed unexpectedly; trying again later", queue_id)
            self.next_due[queue_id] = time.time() + self.settings.retry_schedule[0]

    async def _process(self, queue_id: str) -> None:
        envelope, message = self.spool.read(queue_id)
        state = self.states.load(queue_id, envelope.recipients)
        if state.held:
            self.next_due[queue_id] = math.inf  # until `mailroom queue release` leaves a note
            return
        now = time.time()
        due = [r for r, s in state.recipients.items() if s.status == PENDING and s.next_attempt <= now]
        if due:
            if count_received(message) > self.settings.max_received_headers:
                for rcpt in due:
                    self._fail(queue_id, state, rcpt, "5.4.6", "mail loop: too many Received headers", None)
            else:
                by_domain: dict[str, list[str]] = defaultdict(list)
                for rcpt in due:
                    by_domain[split_address(rcpt)[1]].append(rcpt)
                lock = asyncio.Lock()
                await asyncio.gather(
                    *(
                        self._deliver_domain(queue_id, envelope, message, state, domain, rcpts, lock)
                        for domain, rcpts in by_domain.items()
                    )
                )
            self.states.save(queue_id, state)
        failed = [r for r, s in state.recipients.items() if s.status == FAILED]
        if failed and not state.bounced:
            self._bounce(queue_id, envelope, message, state, failed)
            state.bounced = True
            self.states.save(queue_id, state)
        if state.complete:
            self.remove(queue_id)
            self.next_due.pop(queue_id, None)
            log.info("id=%s done", queue_id)
        else:
            self.next_due[queue_id] = state.next_due() or time.time()

    def _fail(
        self, queue_id: str, state: State, rcpt: str, code: str, error: str, remote: str | None
    ) -> None:
        settle(state.recipients[rcpt], time.time(), FAILED, error, code, remote)
        metrics.DELIVERY_RECIPIENTS.labels("failed").inc()
        log.info("id=%s to=<%s> failed: %s", queue_id, rcpt, error)

    async def _deliver_domain(
        self,
        queue_id: str,
        envelope: Envelope,
        message: bytes,
        state: State,
        domain: str,
        rcpts: list[str],
        lock: asyncio.Lock,
    ) -> None:
        if self.directory.is_local_domain(domain):
            self._deliver_local(queue_id, envelope, message, state, rcpts)
            return
        if not safe_address(envelope.sender):
            for rcpt in rcpts:
                self._fail(
                    queue_id, state, rcpt, "5.1.7", f"unusable sender address {envelope.sender!r}", None
                )
            return
        sendable = []
        for rcpt in rcpts:
            if safe_address(rcpt):
                sendable.append(rcpt)
            else:
                self._fail(queue_id, state, rcpt, "5.1.3", f"unusable recipient address {rcpt!r}", None)
        if not sendable:
            return
        try:
            route = await self._route(domain)
        except RouteError as exc:
            if exc.permanent:
                for rcpt in sendable:
                    self._fail(queue_id, state, rcpt, exc.status, str(exc), None)
            else:
                self._defer(queue_id, envelope, state, sendable, str(exc), exc.status, None, exc.reason)
            return
        hosts = route.hosts
        last: ConnectionFailed | None = None
        last_host: str | None = None
        for host in hosts:
            for address in host.addresses:
                try:
                    result = await self._send(address, host.name, envelope, sendable, message, route)
                except ConnectionFailed as exc:
                    log.info("id=%s host=%s[%s]: %s", queue_id, host.name, address, exc)
                    last, last_host = exc, f"{host.name} [{address}]"
                    continue
                async with lock:
                    self._apply(queue_id, envelope, state, f"{host.name} [{address}]", result.replies)
                    self.states.save(queue_id, state)
                return
        assert last is not None
        # Every host failed before settling anything (even a 5xx greeting only
        # says that this host will not talk to us now): try again later.
        reply = last.reply
        reason = last.reason
        if route.mta_sts == "enforce" and last.reason == "tls":
            metrics.DELIVERY_MTA_STS_FAILURES.labels("enforce", "tls").inc()
            reason = "mta-sts"
        self._defer(
            queue_id,
            envelope,
            state,
            sendable,
            f"MTA-STS: {last}" if reason == "mta-sts" else str(last),
            reply.status() if reply else ("4.7.5" if reason == "mta-sts" else "4.4.1"),
            last_host,
            reason,
        )

    async def _route(self, domain: str) -> Route:
        """Where mail for a domain goes now: the smarthost, or the domain's MX hosts."""
        if self.smarthost is not None:
            relay = self.smarthost
            host = Host(relay.host, (relay.host,)) if relay.is_address else await self.router.host(relay.host)
            return Route([host], relay.port, relay.policy, relay.auth)
        hosts = await self.router.route(domain)
        policy = await self.mta_sts.policy(domain) if self.mta_sts is not None else None
        if policy is None:
            return Route(hosts, self.settings.remote_port)
        allowed = [host for host in hosts if policy.matches(host.name)]
        verified = TlsPolicy(required=policy.mode == "enforce", context=self.mta_sts.context)
        if len(allowed) < len(hosts):
            others = ", ".join(h.name for h in hosts if h not in allowed)
            metrics.DELIVERY_MTA_STS_FAILURES.labels(policy.mode, "mx_mismatch").inc()
            log.warning(
                "MTA-STS %s: MX %s of %s not in the policy (mx %s)", policy.mode, others, domain, policy.mx
            )
        if policy.mode == "enforce":
            if not allowed:
                raise RouteError(
                    f"MTA-STS: no MX host of {domain} matches its policy", False, "4.7.5", reason="mta-sts"
                )
            return Route(allowed, self.settings.remote_port, verified, mta_sts="enforce")
        # testing: as without a policy (the verified handshake falls back like any other), but logged.
        return Route(hosts, self.settings.remote_port, verified, mta_sts="testing")

    async def _send(
        self,
        address: str,
        host: str,
        envelope: Envelope,
        recipients: list[str],
        message: bytes,
        route: Route | None = None,
    ) -> Result:
        """One session with one address; after a failed TLS handshake, once more without STARTTLS
        (unless the route requires TLS: then the failure stands)."""
        route = route or Route([], self.settings.remote_port)
        # The destination's slot first: waiting for a busy host holds none of the global ones.
        async with self.destinations.slot(host), self.sessions:
            for starttls in (True, False):
                try:
                    return await send(
                        address,
                        route.port,
                        host,
                        self.config.hostname,
                        self.srs.forward(envelope.sender) if self.srs else envelope.sender,
                        recipients,
                        message,
                        self.settings.connect_timeout,
                        self.settings.command_timeout,
                        starttls=starttls,
                        policy=route.policy,
                        auth=route.auth,
                    )
                except ConnectionFailed as exc:
                    if exc.reason == "tls" and route.mta_sts == "testing":
                        metrics.DELIVERY_MTA_STS_FAILURES.labels("testing", "tls").inc()
                        log.warning("MTA-STS testing: %s[%s]: %s; delivering anyway", host, address, exc)
                    if exc.reason != "tls" or not starttls or route.policy.required:
                        raise
                    metrics.DELIVERY_DEFERRALS.labels("tls").inc()
                    log.info("%s[%s]: %s; trying again without STARTTLS", host, address, exc)
        raise AssertionError("unreachable")

    def _apply(
        self, queue_id: str, envelope: Envelope, state: State, remote: str, replies: dict[str, Reply]
    ) -> None:
        now = time.time()
        for rcpt, reply in replies.items():
            if 200 <= reply.code < 300:
                settle(state.recipients[rcpt], now, DELIVERED, str(reply), reply.status(), remote)
                metrics.DELIVERY_RECIPIENTS.labels("delivered").inc()
                metrics.DELIVERY_SECONDS.observe(max(0.0, now - envelope.received_at))
                log.info("id=%s to=<%s> delivered via %s: %s", queue_id, rcpt, remote, reply)
            elif reply.permanent:
                self._fail(queue_id, state, rcpt, reply.status(), str(reply), remote)
            else:
                self._defer(queue_id, envelope, state, [rcpt], str(reply), reply.status(), remote, "smtp_4xx")

    def _defer(
        self,
        queue_id: str,
        envelope: Envelope,
        state: State,
        rcpts: list[str],
        error: str,
        status: str,
        remote: str | None,
        reason: str,
    ) -> None:
        now = time.time()
        for rcpt in rcpts:
            expired = defer(
                state.recipients[rcpt],
                now,
                error,
                status,
                remote,
                envelope.received_at,
                self.settings.retry_schedule,
                self.settings.max_age,
            )
            metrics.DELIVERY_DEFERRALS.labels(reason).inc()
            if expired:
                metrics.DELIVERY_RECIPIENTS.labels("expired").inc()
                log.info("id=%s to=<%s> expired: %s", queue_id, rcpt, error)
            else:
                metrics.DELIVERY_RECIPIENTS.labels("deferred").inc()
                log.info("id=%s to=<%s> deferred: %s", queue_id, rcpt, error)

    # -- local delivery and bounces ----------------------------------------

    def _deliver_local(
        self, queue_id: str, envelope: Envelope, message: bytes, state: State, rcpts: list[str]
    ) -> None:
        now = time.time()
        for rcpt in rcpts:
            resolution = self.directory.resolve(rcpt)
            if not resolution:
                self._fail(queue_id, state, rcpt, "5.1.1", "no such local mailbox", self.config.hostname)
                continue
            try:
                self._store_local(envelope.sender, resolution.local, resolution.remote, message)
            except (DeliveryError, SpoolError) as exc:
                self._defer(queue_id, envelope, state, [rcpt], str(exc), "4.3.0", None, "local")
                continue
            settle(state.recipients[rcpt], now, DELIVERED, "delivered locally", "2.0.0", self.config.hostname)
            metrics.DELIVERY_RECIPIENTS.labels("local").inc()

    def _store_local(self, sender: str, users: tuple, remote: tuple[str, ...], message: bytes) -> None:
        for user in users:
            self.store.mailbox(user.address).deliver(message.replace(b"\r\n", b"\n"))
        if remote:
            self.spool.enqueue(Envelope(sender=sender, recipients=remote), message)

    def _bounce(
        self, queue_id: str, envelope: Envelope, message: bytes, state: State, failed: list[str]
    ) -> None:
        if not envelope.sender:
            log.info("id=%s no bounce: null sender", queue_id)
            return
        failures = [
            Failure(
                r,
                state.recipients[r].status_code or "5.0.0",
                state.recipients[r].last_error,
                state.recipients[r].remote,
                state.recipients[r].last_attempt,
            )
            for r in failed
        ]
        dsn = build_dsn(
            self.config.hostname,
            envelope.sender,
            queue_id,
            envelope.received_at,
            failures,
            message,
            time.time(),
        )
        sender_domain = split_address(envelope.sender)[1]
        if self.directory.is_local_domain(sender_domain):
            resolution = self.directory.resolve(envelope.sender)
            if not resolution:
                log.info("id=%s bounce dropped: no local mailbox for <%s>", queue_id, envelope.sender)
                return
            self._store_local("", resolution.local, resolution.remote, dsn)
        else:
            self.spool.enqueue(Envelope(sender="", recipients=(envelope.sender,)), dsn)
        metrics.DELIVERY_BOUNCES.inc()
        log.info("id=%s bounce to <%s> for %d recipients", queue_id, envelope.sender, len(failed))


def serve(config: Config) -> None:
    daemon.setup_logging(config.log_level)
    daemon.ensure_store_root(config)
    daemon.drop_privileges(config.run_as_user, config.run_as_group)
    deliverer = Deliverer(config)
    daemon.run(deliverer.run)
