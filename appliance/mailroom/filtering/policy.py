"""The inbound filter of the mx listener: what smtp/handler.py asks at each step.

- at EHLO/HELO: the DNSBL lookups start (connection());
- at RCPT: a DNSBL listing with action reject → 554 5.7.1; the recipient's block list
  matching the envelope sender → 550 5.7.1; greylisting → 451 4.7.1 (recipient());
- at the end of DATA (message()): headers that imitate ours are removed; SPF, DKIM, ClamAV
  and rspamd run at the same time, then DMARC on the SPF and DKIM results. A virus → 554
  5.7.1; DMARC p=reject failed or a spam score at reject_score → 550 5.7.1 (unless every
  recipient allows the sender); an engine that failed with on_failure tempfail → 451
  4.7.1. Otherwise the message is accepted with one Authentication-Results header and our
  X-Spam-*/X-Virus-* headers, and goes to the Junk folder of each recipient for whom it is
  junk (DMARC quarantine, spam score at junk_score, a DNSBL with action junk, or the
  recipient's block list matching the From address).

Allow lists count only for an authenticated sender: the envelope sender with SPF pass, or
the From address with DMARC pass. Otherwise anybody could claim to be on them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from email.utils import getaddresses
from pathlib import Path
from typing import Any

from .. import metrics
from ..config import Config, SenderList
from ..smtp import replies
from ..store import FolderExists, Mailbox, Maildir, MaildirStore
from . import authresults, clamav, dkim, dmarc, dnsbl, spf
from .greylist import Greylist
from .resolver import async_resolver, blocking_resolver
from .rspamd import RspamdClient, RspamdError, SpamResult

log = logging.getLogger("mailroom.filtering")
JUNK = "Junk"
_STATE = "mailroom_filtering"  # the attribute on aiosmtpd's Session that holds ConnectionState


@dataclass
class ConnectionState:
    ip: str
    dnsbl: asyncio.Task[list[dnsbl.Listing]] | None = None


@dataclass(frozen=True)
class Verdict:
    """An accepted message: our headers to put on top, the message without forged headers,
    and the local recipients whose copy goes to Junk."""

    headers: bytes
    message: bytes
    junk: frozenset[str] = field(default_factory=frozenset)


def matches(entries: tuple[str, ...], address: str) -> bool:
    """An entry is an address (equal) or a domain (equal, or a parent of the address's domain)."""
    address = address.lower()
    domain = address.rpartition("@")[2]
    for entry in entries:
        if "@" in entry:
            if entry == address:
                return True
        elif domain == entry or domain.endswith("." + entry):
            return True
    return False


def _peer_ip(session: Any) -> str:
    peer = session.peer
    return str(peer[0]) if isinstance(peer, tuple) else str(peer)


def _from_addresses(message: bytes) -> list[str]:
    values = authresults.header_values(message, "From")
    return [a.lower() for _, a in getaddresses(values) if "@" in a][:10]


def deliver_to_junk(store: MaildirStore, address: str, data: bytes) -> str:
    """Deliver into the user's Junk folder (Maildir++ .Junk/), making it if it is missing."""
    root = store.mailbox(address).path
    mailbox = Mailbox(root)  # the first open makes INBOX and the special-use folders
    if not mailbox.exists(JUNK):
        with contextlib.suppress(FolderExists):  # another delivery made it meanwhile
            mailbox.create(JUNK)
    return Maildir(root / f".{JUNK}").deliver(data)


class InboundFilter:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.settings = config.filtering
        self.resolver = async_resolver(self.settings)
        if self.settings.spf:
            spf.use_resolver(blocking_resolver(self.settings))
        self.greylist: Greylist | None = None
        if self.settings.greylisting.enabled:
            path = self.settings.greylisting.path or (
                config.store_root.parent / "filtering" / "greylist.table"
            )
            self.greylist = Greylist(self.settings.greylisting, Path(path))
        self.rspamd = RspamdClient(self.settings.rspamd) if self.settings.rspamd.enabled else None

    # ------------------------------------------------------------------ connection

    def connection(self, session: Any) -> ConnectionState:
        """The filter's state of this SMTP session; starts the DNSBL lookups the first time."""
        state = getattr(session, _STATE, None)
        if state is None:
            state = ConnectionState(_peer_ip(session))
            if self.settings.dnsbl:
                state.dnsbl = asyncio.ensure_future(dnsbl.check(self.resolver, state.ip, self.settings.dnsbl))
            setattr(session, _STATE, state)
        return state

    async def listings(self, session: Any) -> list[dnsbl.Listing]:
        state = self.connection(session)
        if state.dnsbl is None:
            return []
        first = not state.dnsbl.done()
        found = await state.dnsbl
        if first:
            for listing in found:
                metrics.FILTER_VERDICTS.labels("dnsbl", f"listed_{listing.action}").inc()
                log.info("dnsbl peer=%s listed in %s (%s)", state.ip, listing.zone, listing.answer)
            if not found:
                metrics.FILTER_VERDICTS.labels("dnsbl", "clean").inc()
        return found

    # ------------------------------------------------------------------ RCPT

    async def recipient(
        self, session: Any, sender: str, users: tuple[str, ...], address: str
    ) -> replies.Reply | None:
        """Checks at RCPT for a local recipient that resolves to users."""
        if any(listing.action == "reject" for listing in await self.listings(session)):
            return replies.DNSBL_LISTED
        if sender and sender != "<>":
            for user in users:
                lists = self.settings.lists_of(user)
                if lists and matches(lists.block, sender):
                    metrics.FILTER_VERDICTS.labels("sender_list", "blocked").inc()
                    log.info("sender blocked by %s's list from=<%s>", user, sender)
                    return replies.SENDER_BLOCKED
        if self.greylist is not None:
            wait = self.greylist.check(self.connection(session).ip, "" if sender == "<>" else sender, address)
            if wait > 0:
                metrics.FILTER_VERDICTS.labels("greylist", "deferred").inc()
                log.info(
                    "greylisted peer=%s from=<%s> rcpt=<%s> wait=%.0fs",
                    _peer_ip(session),
                    sender,
                    address,
                    wait,
                )
                return replies.GREYLISTED
            metrics.FILTER_VERDICTS.labels("greylist", "passed").inc()
        return None

    # ------------------------------------------------------------------ DATA

    async def message(
        self,
        session: Any,
        sender: str,
        recipients: tuple[str, ...],
        users: tuple[str, ...],
        body: bytes,
        queue_id: str,
    ) -> Verdict | replies.Reply:
        settings = self.settings
        ip = self.connection(session).ip
        helo = str(session.host_name or "")
        envelope_sender = "" if sender in ("", "<>") else sender
        cleaned, removed = authresults.strip_forged(body, self.config.hostname)
        if removed:
            log.info("id=%s removed %d header(s) that imitate ours", queue_id, removed)

        async def timed(engine: str, coro: Any) -> Any:
            started = time.monotonic()
            try:
                return await coro
            finally:
                metrics.FILTER_SCAN_SECONDS.labels(engine).observe(time.monotonic() - started)

        # Only the engines that are on run (with all off, a message costs no task at all).
        checks: dict[str, Any] = {}
        if settings.spf:
            checks["spf"] = timed("spf", spf.check(ip, envelope_sender, helo, settings.dns_timeout))
        if settings.dkim or settings.dmarc:
            checks["dkim"] = timed("dkim", dkim.check(cleaned, self.resolver))
        if settings.clamav.enabled:
            checks["virus"] = self._scan_virus(cleaned)
        if self.rspamd:
            checks["spam"] = self._scan_spam(cleaned, ip, helo, envelope_sender, recipients, queue_id)
        if self.connection(session).dnsbl is not None:
            checks["listings"] = self.listings(session)
        done = dict(zip(checks, await asyncio.gather(*checks.values()), strict=True)) if checks else {}
        spf_result, dkim_results, virus, spam = (done.get(k) for k in ("spf", "dkim", "virus", "spam"))
        listings: list[dnsbl.Listing] = done.get("listings", [])
        dkim_results = dkim_results or []
        dmarc_result = (
            await timed("dmarc", dmarc.check(cleaned, spf_result, dkim_results, self.resolver))
            if settings.dmarc
            else None
        )

        results: list[authresults.MethodResult] = []
        if spf_result is not None:
            results.append(spf_result.authres)
            metrics.FILTER_VERDICTS.labels("spf", spf_result.result).inc()
        if settings.dkim:
            for result in dkim_results:
                results.append(result.authres)
                metrics.FILTER_VERDICTS.labels("dkim", result.result).inc()
            if not dkim_results:
                results.append(authresults.MethodResult("dkim", "none"))
                metrics.FILTER_VERDICTS.labels("dkim", "none").inc()
        if dmarc_result is not None:
            results.append(dmarc_result.authres)
            metrics.FILTER_VERDICTS.labels("dmarc", dmarc_result.result).inc()

        # Who vouches for the sender: SPF for the envelope sender, DMARC for the From address.
        authenticated: list[str] = []
        if spf_result is not None and spf_result.result == "pass" and envelope_sender:
            authenticated.append(envelope_sender.lower())
        if dmarc_result is not None and dmarc_result.result == "pass":
            authenticated.extend(_from_addresses(cleaned))

        def lists(user: str) -> SenderList:
            return settings.lists_of(user) or SenderList()

        allowed = {u for u in users if any(matches(lists(u).allow, a) for a in authenticated)}
        everyone_allows = bool(users) and allowed == set(users)

        log_head = f"id={queue_id} from=<{envelope_sender}>"
        # Refusals, most certain first.
        if isinstance(virus, replies.Reply):
            return virus
        if isinstance(virus, clamav.ScanResult) and virus.infected:
            log.warning("%s refused: virus %s", log_head, virus.signature)
            metrics.FILTER_VERDICTS.labels("virus", "infected").inc()
            return replies.VIRUS_FOUND
        if dmarc_result is not None and dmarc_result.disposition == "reject" and not everyone_allows:
            log.info("%s refused: DMARC p=reject of %s", log_head, dmarc_result.from_domain)
            metrics.FILTER_VERDICTS.labels("dmarc_policy", "reject").inc()
            return replies.DMARC_REJECTED
        if isinstance(spam, replies.Reply):
            return spam
        if (
            isinstance(spam, SpamResult)
            and (spam.score >= settings.rspamd.reject_score or spam.action == "reject")
            and not everyone_allows
        ):
            log.info("%s refused: spam score %.2f action=%s", log_head, spam.score, spam.action)
            metrics.FILTER_VERDICTS.labels("spam", "reject").inc()
            return replies.SPAM_REJECTED

        junk: set[str] = set()
        reasons: list[str] = []
        if dmarc_result is not None and dmarc_result.disposition == "quarantine":
            junk.update(users)
            reasons.append("dmarc")
            metrics.FILTER_VERDICTS.labels("dmarc_policy", "quarantine").inc()
        spammy = isinstance(spam, SpamResult) and (
            spam.score >= settings.rspamd.junk_score or spam.action in ("add header", "rewrite subject")
        )
        if spammy:
            junk.update(users)
            reasons.append("spam")
        if isinstance(spam, SpamResult):
            metrics.FILTER_VERDICTS.labels("spam", "junk" if spammy else "ham").inc()
        if any(listing.action == "junk" for listing in listings):
            junk.update(users)
            reasons.append("dnsbl")
        blockers = [user for user in users if lists(user).block]
        from_addresses = _from_addresses(cleaned) if blockers else []  # parsed only if needed
        for user in blockers:
            if any(matches(lists(user).block, a) for a in from_addresses):
                junk.add(user)
                reasons.append(f"blocked-by-{user}")
        junk -= allowed

        headers = [authresults.header(self.config.hostname, results)] if results else []
        for listing in listings:
            if listing.action in ("junk", "tag"):
                headers.append(f"X-Spam-DNSBL: {listing.zone}={listing.answer}\r\n".encode())
        if isinstance(spam, SpamResult):
            flag = "Yes" if spammy else "No"
            action = spam.action.replace('"', "")
            headers.append(f"X-Spam-Score: {spam.score:.2f}\r\n".encode())
            headers.append(
                f"X-Spam-Status: {flag}, score={spam.score:.2f} junk={settings.rspamd.junk_score:.2f}"
                f' reject={settings.rspamd.reject_score:.2f} action="{action}"\r\n'.encode()
            )
        elif spam == "unchecked":
            headers.append(b"X-Spam-Status: unchecked (scanner unavailable)\r\n")
        if junk:
            headers.append(b"X-Spam-Flag: YES\r\n")
        if settings.clamav.enabled:
            if virus == "unchecked":
                headers.append(b"X-Virus-Status: unchecked (scanner unavailable)\r\n")
            elif isinstance(virus, clamav.ScanResult) and virus.skipped:
                headers.append(b"X-Virus-Status: unchecked (too large)\r\n")
            else:
                headers.append(b"X-Virus-Scanned: ClamAV\r\nX-Virus-Status: clean\r\n")
        if junk:
            log.info("%s junk for %s (%s)", log_head, ",".join(sorted(junk)), ",".join(reasons))
        return Verdict(b"".join(headers), cleaned, frozenset(junk))

    async def _scan_virus(self, message: bytes) -> clamav.ScanResult | replies.Reply | str:
        settings = self.settings.clamav
        try:
            result = await clamav.scan(settings.socket, message, settings.timeout, settings.max_size)
        except clamav.ClamdError as exc:
            metrics.FILTER_ENGINE_ERRORS.labels("clamav", "timeout" if exc.timeout else "error").inc()
            log.error("clamd unavailable (%s): %s", settings.on_failure, exc)
            metrics.FILTER_VERDICTS.labels("virus", "error").inc()
            return replies.FILTER_UNAVAILABLE if settings.on_failure == "tempfail" else "unchecked"
        if result.skipped:
            metrics.FILTER_VERDICTS.labels("virus", "skipped").inc()
        elif not result.infected:
            metrics.FILTER_VERDICTS.labels("virus", "clean").inc()
        return result

    async def _scan_spam(
        self, message: bytes, ip: str, helo: str, sender: str, recipients: tuple[str, ...], queue_id: str
    ) -> SpamResult | replies.Reply | str | None:
        assert self.rspamd is not None
        settings = self.settings.rspamd
        if len(message) > settings.max_size:
            metrics.FILTER_VERDICTS.labels("spam", "skipped").inc()
            return None
        try:
            return await self.rspamd.check(
                message,
                ip=ip,
                helo=helo,
                sender=sender,
                recipients=recipients,
                queue_id=queue_id,
                hostname=self.config.hostname,
            )
        except RspamdError as exc:
            metrics.FILTER_ENGINE_ERRORS.labels("rspamd", "timeout" if exc.timeout else "error").inc()
            metrics.FILTER_VERDICTS.labels("spam", "error").inc()
            log.error("rspamd unavailable (%s): %s", settings.on_failure, exc)
            return replies.FILTER_UNAVAILABLE if settings.on_failure == "tempfail" else "unchecked"


async def learn_spam(config: Config, data: bytes) -> str:
    """Teach rspamd that data is spam (a message moved into Junk). Returns learned,
    already-learned, or disabled (rspamd is off); raises RspamdError when rspamd fails."""
    return await _learn(config, "spam", data)


async def learn_ham(config: Config, data: bytes) -> str:
    """Teach rspamd that data is not spam (a message moved out of Junk)."""
    return await _learn(config, "ham", data)


async def _learn(config: Config, kind: str, data: bytes) -> str:
    settings = config.filtering.rspamd
    if not settings.enabled:
        return "disabled"
    try:
        result = await RspamdClient(settings).learn(kind, data)
    except RspamdError as exc:
        metrics.FILTER_ENGINE_ERRORS.labels("rspamd_learn", "timeout" if exc.timeout else "error").inc()
        raise
    metrics.FILTER_VERDICTS.labels("learn", f"{kind}_{result}".replace("-", "_")).inc()
    return result
