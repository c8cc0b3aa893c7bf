"""Certificates from an ACME CA (RFC 8555): `mailroom cert renew`, run on the host by a timer.

The protocol is certbot's own library (`acme` + `josepy`): the same code that talks to Let's
Encrypt for millions of certbot installs, with badNonce retries, Retry-After, order polling and
JWS done right. What is ours is only the policy around it: when to renew (1/3 of the lifetime
left, the names changed, another CA, a self-signed placeholder), HTTP-01 tokens written where
webd serves them on port 80, and the new key and certificate put in place atomically, key
first, so that a daemon's reload never sees a certificate without its key.

Nothing here keeps a process running: a systemd timer (or cron) runs `mailroom cert renew`
twice a day; after a renewal it runs the reload command (supervisorctl signal HUP mailroom:*).
"""

from __future__ import annotations

import datetime
import grp
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtensionOID

from .config import Acme, Config

log = logging.getLogger("mailroom.acme")

USER_AGENT = "mailroom-acme"
NETWORK_TIMEOUT = 30  # seconds for one request to the CA
ORDER_TIMEOUT = 180  # seconds for the CA to validate and issue


class AcmeError(RuntimeError):
    """The CA refused or could not be reached; the message says which step."""


@dataclass(frozen=True)
class Due:
    due: bool
    reason: str


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def state_path(certificate: Path) -> Path:
    """Where we note which CA and names the current certificate came from."""
    return certificate.with_name(certificate.name + ".acme.json")


def renewal_due(config: Config, now: datetime.datetime | None = None) -> Due:
    """Whether `cert renew` must get a new certificate, and why."""
    assert config.acme is not None and config.tls_certificate is not None
    acme, path = config.acme, config.tls_certificate
    now = now or _now()
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return Due(True, "no certificate yet")
    try:
        state = json.loads(state_path(path).read_text())
    except (OSError, ValueError):
        state = {}
    if cert.issuer == cert.subject or state.get("directory") != acme.directory:
        return Due(True, "the certificate is not from this ACME CA")
    try:
        san = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
        names = {n.lower() for n in san.get_values_for_type(x509.DNSName)}
    except x509.ExtensionNotFound:
        names = set()
    if names != set(acme.names):
        return Due(True, f"the names changed ({', '.join(sorted(set(acme.names) - names)) or 'fewer names'})")
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    left = cert.not_valid_after_utc - now
    if left <= lifetime * acme.renew_remaining:
        return Due(True, f"expires {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC ({left.days} days left)")
    renew_at = cert.not_valid_after_utc - lifetime * acme.renew_remaining
    return Due(False, f"valid until {cert.not_valid_after_utc:%Y-%m-%d}, renewal from {renew_at:%Y-%m-%d}")


def _write_atomically(path: Path, data: bytes, mode: int, uid: int, gid: int) -> None:
    """tmp file in the same directory, fsync, chown/chmod, rename, fsync the directory."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), mode)
            if os.geteuid() == 0:
                os.fchown(out.fileno(), uid, gid)
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dirfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)


def _owner(path: Path, default_group: str) -> tuple[int, int]:
    """Keep the owner of the file we replace; a new file is root's, readable by the daemons' group."""
    try:
        st = path.stat()
        return st.st_uid, st.st_gid
    except OSError:
        try:
            return 0, grp.getgrnam(default_group).gr_gid
        except KeyError:
            return 0, 0


def _new_key(key_type: str) -> bytes:
    key = (
        ec.generate_private_key(ec.SECP256R1())
        if key_type == "ecdsa"
        else rsa.generate_private_key(65537, 2048)
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _account_key(acme: Acme):  # -> josepy.JWKRSA
    """The account key, made once (RSA 3072, RS256: every CA accepts it) and kept."""
    import josepy

    path = acme.account_key
    if not path.exists():
        key = rsa.generate_private_key(65537, 3072)
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
        _write_atomically(path, pem, 0o600, 0, 0)
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise AcmeError(f"tls.acme.account_key: {path} is not an RSA private key")
    return josepy.JWKRSA(key=key)


def _client(acme: Acme):  # -> acme.client.ClientV2
    from acme import client, errors, messages

    net = client.ClientNetwork(
        _account_key(acme),
        verify_ssl=str(acme.ca_bundle) if acme.ca_bundle else True,
        user_agent=USER_AGENT,
        timeout=NETWORK_TIMEOUT,
    )
    directory = client.ClientV2.get_directory(acme.directory, net)
    ca = client.ClientV2(directory, net)
    registration = messages.NewRegistration.from_data(email=acme.email, terms_of_service_agreed=True)
    try:
        ca.new_account(registration)
    except errors.ConflictError as exc:  # the key has an account already: use it
        ca.query_registration(messages.RegistrationResource(uri=exc.location, body=messages.Registration()))
    return ca


def obtain(config: Config) -> tuple[bytes, bytes]:
    """Order a certificate for acme.names over HTTP-01; returns (key PEM, full chain PEM)."""
    from acme import challenges, crypto_util, messages
    from acme import errors as acme_errors

    acme = config.acme
    assert acme is not None
    ca = _client(acme)
    key_pem = _new_key(acme.key_type)
    order = ca.new_order(crypto_util.make_csr(key_pem, list(acme.names)))
    acme.challenge_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    tokens: list[Path] = []
    try:
        for authz in order.authorizations:
            if authz.body.status == messages.STATUS_VALID:
                continue  # validated recently for this account
            name = authz.body.identifier.value
            http01 = [c for c in authz.body.challenges if isinstance(c.chall, challenges.HTTP01)]
            if not http01:
                raise AcmeError(f"the CA offers no http-01 challenge for {name}")
            challenge = http01[0]
            response, validation = challenge.response_and_validation(ca.net.key)
            token = acme.challenge_dir / challenge.chall.encode("token")
            token.write_text(validation)
            token.chmod(0o644)
            tokens.append(token)
            ca.answer_challenge(challenge, response)
            log.info("http-01 challenge for %s answered", name)
        deadline = datetime.datetime.now() + datetime.timedelta(seconds=ORDER_TIMEOUT)
        try:
            order = ca.poll_and_finalize(order, deadline)
        except acme_errors.ValidationError as exc:
            problems = "; ".join(
                f"{a.body.identifier.value}: {c.error}"
                for a in exc.failed_authzrs
                for c in a.body.challenges
                if c.error
            )
            raise AcmeError(f"validation failed: {problems}") from None
    finally:
        for token in tokens:
            token.unlink(missing_ok=True)
    return key_pem, order.fullchain_pem.encode()


def install(config: Config, key_pem: bytes, fullchain_pem: bytes) -> None:
    """Key first, then the certificate, each replaced atomically; then the state note."""
    assert config.tls_certificate is not None and config.tls_private_key is not None and config.acme
    key_uid, key_gid = _owner(config.tls_private_key, config.run_as_group)
    _write_atomically(config.tls_private_key, key_pem, 0o640, key_uid, key_gid)
    _write_atomically(config.tls_certificate, fullchain_pem, 0o644, *_owner(config.tls_certificate, "root"))
    note = {"directory": config.acme.directory, "names": list(config.acme.names)}
    _write_atomically(state_path(config.tls_certificate), json.dumps(note).encode() + b"\n", 0o644, 0, 0)


def renew(config: Config, force: bool = False) -> tuple[bool, str]:
    """Renew when due (or forced); returns (renewed, what happened)."""
    due = renewal_due(config)
    if not (due.due or force):
        return False, f"not due: {due.reason}"
    assert config.acme is not None
    try:
        key_pem, fullchain_pem = obtain(config)
    except AcmeError:
        raise
    except Exception as exc:  # the library's errors, requests' errors: say which CA and what
        raise AcmeError(f"{config.acme.directory}: {type(exc).__name__}: {exc}") from None
    install(config, key_pem, fullchain_pem)
    until = x509.load_pem_x509_certificate(fullchain_pem).not_valid_after_utc
    why = "forced" if force and not due.due else due.reason
    return True, f"renewed ({why}): valid until {until:%Y-%m-%d}"
