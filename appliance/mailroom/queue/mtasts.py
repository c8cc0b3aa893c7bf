"""MTA-STS (RFC 8461) for the domains we deliver to.

Before delivering to a domain, deliveryd asks for `_mta-sts.<domain>` TXT
("v=STSv1; id=..."). A domain that publishes one has its policy fetched from
https://mta-sts.<domain>/.well-known/mta-sts.txt: the name is resolved with
deliveryd's own resolver and the connection goes to that address, with SNI and
Host set to the name and the certificate verified for it (no redirects, 64 KiB
at most, a deadline on the whole fetch). The policy is cached on disk
(<queue root>/mta-sts/<domain>.json) for its max_age and fetched again when the
TXT id changes; when the TXT record or the fetch fails, a cached policy that has
not expired still applies (RFC 8461 5.1).

enforce: only MX hosts that match the policy's mx patterns, TLS required with a
certificate verified for the MX host's name; otherwise the delivery is deferred
(reason `mta-sts`). testing: delivered as without a policy, but every mismatch
or TLS failure is logged and counted. none, or no policy: opportunistic TLS.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import ssl
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import dns.asyncresolver
import dns.exception
import dns.resolver

from .. import metrics
from ..fsutil import write_synced

log = logging.getLogger("mailroom.delivery.mta_sts")

MAX_POLICY_BYTES = 64 * 1024  # RFC 8461 3.3: senders may limit the policy's size
MAX_HEADER_BYTES = 16 * 1024
MAX_AGE_LIMIT = 31557600  # RFC 8461 3.2: at most a year
MODES = ("enforce", "testing", "none")
ID_RE = re.compile(r"[A-Za-z0-9]{1,32}")


class PolicyError(Exception):
    """No usable policy: the TXT record, the fetch or the policy text was wrong."""


@dataclass(frozen=True)
class Policy:
    mode: str
    mx: tuple[str, ...]
    max_age: int
    id: str = ""
    fetched_at: float = 0.0

    def expired(self, now: float) -> bool:
        return now >= self.fetched_at + self.max_age

    def matches(self, host: str) -> bool:
        """RFC 8461 4.1: an exact name, or "*.example.com" for exactly one more leftmost label."""
        host = host.lower().rstrip(".")
        for pattern in self.mx:
            if pattern.startswith("*."):
                label, _, rest = host.partition(".")
                if label and rest == pattern[2:]:
                    return True
            elif host == pattern:
                return True
        return False


def parse_txt(strings: list[str]) -> str | None:
    """The id of the one "v=STSv1" TXT record, None without one; PolicyError if there are several."""
    records = [s for s in strings if s.startswith("v=STSv1")]
    if not records:
        return None
    if len(records) > 1:
        raise PolicyError("more than one v=STSv1 TXT record")
    fields = {}
    for part in records[0].split(";"):
        name, _, value = part.strip().partition("=")
        if name:
            fields[name.strip()] = value.strip()
    policy_id = fields.get("id", "")
    if not ID_RE.fullmatch(policy_id):
        raise PolicyError(f"TXT record without a valid id: {records[0][:100]!r}")
    return policy_id


def parse_policy(text: str, policy_id: str = "", now: float = 0.0) -> Policy:
    """The policy file (RFC 8461 3.2): "key: value" lines, CRLF or LF."""
    fields: dict[str, list[str]] = {}
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        if sep:
            fields.setdefault(name.strip(), []).append(value.strip())
    if fields.get("version") != ["STSv1"]:
        raise PolicyError("the policy has no 'version: STSv1'")
    mode = (fields.get("mode") or [""])[0]
    if mode not in MODES:
        raise PolicyError(f"bad mode {mode[:20]!r}")
    try:
        max_age = int((fields.get("max_age") or [""])[0])
    except ValueError:
        raise PolicyError("bad max_age") from None
    if not max_age >= 0:
        raise PolicyError("bad max_age")
    mx = tuple(m.lower().rstrip(".") for m in fields.get("mx", []) if m)
    if mode != "none" and not mx:
        raise PolicyError("an enforce or testing policy without mx lines")
    return Policy(mode, mx[:100], min(max_age, MAX_AGE_LIMIT), policy_id, now)


def client_context(ca_file: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


async def _read_body(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    if len(head) > MAX_HEADER_BYTES:
        raise PolicyError("response headers too long")
    lines = head.decode("latin-1").split("\r\n")
    status = lines[0].split(" ", 2)
    if len(status) < 2 or status[1] != "200":
        raise PolicyError(f"HTTP status {lines[0][:60]!r} (no redirects are followed)")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("content-type", "").split(";")[0].strip().lower() != "text/plain":
        raise PolicyError(f"content type {headers.get('content-type', '')[:40]!r}, not text/plain")
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while True:
            size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                return body
            if len(body) + size > MAX_POLICY_BYTES:
                raise PolicyError("policy larger than 64 KiB")
            body += await reader.readexactly(size)
            await reader.readline()
    if "content-length" in headers:
        length = int(headers["content-length"])
        if length > MAX_POLICY_BYTES:
            raise PolicyError("policy larger than 64 KiB")
        return await reader.readexactly(length)
    body = await reader.read(MAX_POLICY_BYTES + 1)
    if len(body) > MAX_POLICY_BYTES:
        raise PolicyError("policy larger than 64 KiB")
    return body


class MtaSts:
    """Policies of the domains we deliver to: looked up, fetched, cached in memory and on disk."""

    def __init__(
        self,
        resolver: dns.asyncresolver.Resolver,
        cache_dir: Path,
        ca_file: str | None = None,
        https_port: int = 443,
        timeout: float = 20.0,
    ) -> None:
        self.resolver = resolver
        self.cache_dir = cache_dir
        self.context = client_context(ca_file)
        self.https_port = https_port
        self.timeout = timeout
        self.memory: dict[str, Policy] = {}
        self.cache_dir.mkdir(mode=0o700, parents=True, exist_ok=True)

    # -- the cache ---------------------------------------------------------

    def _cache_path(self, domain: str) -> Path:
        return self.cache_dir / f"{domain}.json"

    def cached(self, domain: str, now: float) -> Policy | None:
        policy = self.memory.get(domain)
        if policy is None:
            try:
                data = json.loads(self._cache_path(domain).read_bytes()[:MAX_POLICY_BYTES])
                policy = Policy(
                    data["mode"],
                    tuple(data["mx"]),
                    int(data["max_age"]),
                    data["id"],
                    float(data["fetched_at"]),
                )
            except (OSError, ValueError, KeyError, TypeError):
                return None
            self.memory[domain] = policy
        return None if policy.expired(now) else policy

    def _store(self, domain: str, policy: Policy) -> None:
        self.memory[domain] = policy
        tmp = self.cache_dir / f".{domain}.{os.getpid()}.tmp"
        tmp.unlink(missing_ok=True)
        try:
            write_synced(tmp, json.dumps(asdict(policy)).encode())
            os.rename(tmp, self._cache_path(domain))
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            log.warning("cannot cache the MTA-STS policy of %s: %s", domain, exc)

    # -- lookups -------------------------------------------------------------

    async def _txt_id(self, domain: str) -> str | None:
        try:
            answer = await self.resolver.resolve(f"_mta-sts.{domain}", "TXT")
        except (dns.resolver.NoAnswer, dns.resolver.NXDOMAIN):
            return None
        strings = [b"".join(r.strings).decode("utf-8", "replace") for r in answer]
        return parse_txt(strings)

    async def _addresses(self, name: str) -> list[str]:
        found: list[str] = []
        for rdtype in ("A", "AAAA"):
            with contextlib.suppress(dns.resolver.NoAnswer, dns.resolver.NXDOMAIN):
                found.extend(r.to_text() for r in await self.resolver.resolve(name, rdtype))
        if not found:
            raise PolicyError(f"{name} has no address")
        return found

    async def fetch(self, domain: str, policy_id: str, now: float) -> Policy:
        """The policy over HTTPS, from the address our resolver gives for mta-sts.<domain>."""
        name = f"mta-sts.{domain}"
        errors = []
        for address in await self._addresses(name):
            try:
                async with asyncio.timeout(self.timeout):
                    reader, writer = await asyncio.open_connection(
                        address,
                        self.https_port,
                        ssl=self.context,
                        server_hostname=name,
                        limit=MAX_HEADER_BYTES,
                    )
                    try:
                        writer.write(
                            f"GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: {name}\r\n"
                            "User-Agent: Mailroom\r\nAccept: text/plain\r\nConnection: close\r\n\r\n".encode()
                        )
                        await writer.drain()
                        body = await _read_body(reader)
                    finally:
                        writer.close()
                return parse_policy(body.decode("utf-8", "replace"), policy_id, now)
            except PolicyError:
                raise
            except (OSError, ssl.SSLError, TimeoutError, ValueError, asyncio.IncompleteReadError) as exc:
                errors.append(f"{address}: {exc}")
        raise PolicyError(f"cannot fetch https://{name}/.well-known/mta-sts.txt: {'; '.join(errors)[:300]}")

    async def policy(self, domain: str) -> Policy | None:
        """The policy that applies to a domain now; None when it has none (or only mode none)."""
        domain = domain.lower().rstrip(".")
        now = time.time()
        cached = self.cached(domain, now)
        try:
            policy_id = await self._txt_id(domain)
        except (PolicyError, dns.exception.DNSException) as exc:
            log.info("MTA-STS TXT of %s: %s", domain, exc)
            metrics.DELIVERY_MTA_STS.labels("txt_error").inc()
            return self._usable(cached)
        if policy_id is None:
            metrics.DELIVERY_MTA_STS.labels("no_policy").inc()
            return self._usable(cached)
        if cached is not None and cached.id == policy_id:
            metrics.DELIVERY_MTA_STS.labels("cached").inc()
            return self._usable(cached)
        try:
            fresh = await self.fetch(domain, policy_id, now)
        except (PolicyError, dns.exception.DNSException) as exc:
            log.warning("MTA-STS policy of %s: %s", domain, exc)
            metrics.DELIVERY_MTA_STS.labels("fetch_error").inc()
            return self._usable(cached)
        metrics.DELIVERY_MTA_STS.labels("fetched").inc()
        log.info(
            "MTA-STS policy of %s: mode %s, mx %s, max_age %d", domain, fresh.mode, fresh.mx, fresh.max_age
        )
        self._store(domain, fresh)
        return self._usable(fresh)

    @staticmethod
    def _usable(policy: Policy | None) -> Policy | None:
        return policy if policy is not None and policy.mode != "none" else None
