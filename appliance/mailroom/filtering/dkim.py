"""DKIM verification (RFC 6376) with dkimpy: every signature, each with its own result.

The keys are looked up first with the async resolver (so a slow DNS server holds no
thread), then dkimpy checks the signatures in a worker thread with those answers, asking
no DNS itself. At most MAX_SIGNATURES signatures are checked.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass

import dkim as dkimpy
import dns.asyncresolver

from .authresults import MethodResult
from .resolver import txt_records

MAX_SIGNATURES = 5
_TAG = re.compile(rb"^\s*([a-zA-Z][a-zA-Z0-9_]*)\s*=(.*)$", re.S)


@dataclass(frozen=True)
class DkimResult:
    result: str  # pass, fail, neutral, temperror, permerror
    domain: str  # d=
    selector: str  # s=
    signature: str  # the first characters of b= (RFC 6008 header.b)
    reason: str = ""

    @property
    def authres(self) -> MethodResult:
        props = (("header.d", self.domain), ("header.s", self.selector), ("header.b", self.signature))
        return MethodResult("dkim", self.result, self.reason, tuple(p for p in props if p[1]))


def _tags(value: bytes) -> dict[bytes, bytes]:
    tags: dict[bytes, bytes] = {}
    for part in value.split(b";"):
        match = _TAG.match(part)
        if match:
            tags.setdefault(match.group(1).lower(), re.sub(rb"\s+", b"", match.group(2)))
    return tags


def signature_headers(message: bytes) -> list[bytes]:
    """The values of the DKIM-Signature fields, topmost first."""
    from .authresults import fields, split_message

    head, _ = split_message(message)
    out = []
    for raw in fields(head):
        name, colon, value = raw.partition(b":")
        if colon and name.strip().lower() == b"dkim-signature":
            out.append(value)
    return out


async def check(message: bytes, resolver: dns.asyncresolver.Resolver) -> list[DkimResult]:
    signatures = signature_headers(message)[:MAX_SIGNATURES]
    if not signatures:
        return []
    keys: dict[bytes, bytes | None] = {}
    failed: dict[bytes, str] = {}
    names: list[bytes] = []
    for value in signatures:
        tags = _tags(value)
        if b"s" in tags and b"d" in tags:
            names.append(tags[b"s"] + b"._domainkey." + tags[b"d"] + b".")
    lookups = await asyncio.gather(
        *(txt_records(resolver, n.decode("ascii", "replace")) for n in names), return_exceptions=True
    )
    for name, found in zip(names, lookups, strict=True):
        if isinstance(found, BaseException):  # DnsTemporaryError, or the lookup broke
            failed[name.lower()] = "key lookup failed"
        else:
            keys[name.lower()] = found[0] if found else None
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, verify_blocking, message, len(signatures), keys, failed)


def verify_blocking(
    message: bytes, count: int, keys: dict[bytes, bytes | None], failed: dict[bytes, str]
) -> list[DkimResult]:
    def dnsfunc(name: bytes | str, timeout: float = 5) -> bytes | None:
        key = name.encode() if isinstance(name, str) else name
        return keys.get(key.lower())

    results = []
    for index in range(count):
        verifier = dkimpy.DKIM(message, minkey=1024)
        domain = selector = signature = ""
        try:
            prep = verifier.verify_headerprep(index)
            if not prep:
                continue
            fields = prep[0]
            domain = fields[b"d"].decode("ascii", "replace")
            selector = fields[b"s"].decode("ascii", "replace")
            signature = re.sub(rb"\s+", b"", fields[b"b"])[:12].decode("ascii", "replace")
            name = (fields[b"s"] + b"._domainkey." + fields[b"d"] + b".").lower()
            if name in failed:
                results.append(DkimResult("temperror", domain, selector, signature, failed[name]))
                continue
            if keys.get(name) is None:
                results.append(DkimResult("permerror", domain, selector, signature, "no key"))
                continue
            ok = verifier.verify(idx=index, dnsfunc=dnsfunc)
            results.append(
                DkimResult(
                    "pass" if ok else "fail", domain, selector, signature, "" if ok else "bad signature"
                )
            )
        except dkimpy.ValidationError as exc:
            reason = "body hash mismatch" if "body hash" in str(exc) else "invalid signature"
            results.append(DkimResult("fail", domain, selector, signature, reason))
        except dkimpy.KeyFormatError:
            results.append(DkimResult("permerror", domain, selector, signature, "unusable key"))
        except dkimpy.DKIMException:
            results.append(DkimResult("permerror", domain, selector, signature, "malformed signature"))
        except Exception:  # dkimpy on input it did not expect: never the whole message's fault
            results.append(DkimResult("permerror", domain, selector, signature, "unverifiable"))
    return results
