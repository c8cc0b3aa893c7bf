"""Real IMAP clients against the running imapd: imapclient and imaplib (structures checked against
what Python's email package parses from the same message), mbsync (two-way sync), offlineimap3,
fetchmail, mutt (reading over IMAPS in a terminal, under tmux) and curl (IMAPS and STARTTLS).

Every client verifies the server certificate: the test certificate names localhost (and
127.0.0.1), and the clients connect to localhost, which resolves to loopback.
"""

from __future__ import annotations

import email
import email.header
import email.policy
import email.utils
import getpass
import mailbox
import os
import re
import shutil
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from email.message import EmailMessage, Message
from pathlib import Path

import imapclient
import pytest

from tests.conftest import PASSWORD
from tests.integration import test_imap
from tests.integration.test_imap import ALICE, Imapd, message

imapd = test_imap.imapd  # the daemon fixture, shared with the imaplib tests

HOST = "localhost"
CLIENT_TIMEOUT = 120  # seconds a client run may take before the test fails


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate that also names localhost, so clients can verify it for real."""
    folder = tmp_path_factory.mktemp("tls-clients")
    cert, key = folder / "mail.crt", folder / "mail.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=mail.example.test",
            "-addext",
            "subjectAltName=DNS:mail.example.test,DNS:localhost,IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def need(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        pytest.skip(f"{binary} is not installed (test.sh installs it from Debian)")
    return path


def run(
    argv: list[str], home: Path, env_extra: dict[str, str] | None = None, **kwargs: object
) -> subprocess.CompletedProcess:
    """Run a client with its own HOME (no user configuration) and no proxy settings.

    Output is text with universal newlines unless text=False is passed."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower() and k != "TMUX"}
    env.update(HOME=str(home), LC_ALL="C.UTF-8", TERM="xterm", **(env_extra or {}))
    kwargs.setdefault("text", True)
    return subprocess.run(argv, env=env, capture_output=True, timeout=CLIENT_TIMEOUT, check=False, **kwargs)


def checker(imapd: Imapd, cert: Path) -> imapclient.IMAPClient:
    """An imapclient session that verifies the certificate: the tests' view of the server."""
    context = ssl.create_default_context(cafile=str(cert))
    client = imapclient.IMAPClient(HOST, port=imapd.imaps, ssl=True, ssl_context=context, timeout=10)
    client.normalise_times = False  # dates as the server sent them, with their zone
    client.login(ALICE, PASSWORD)
    return client


def server_view(imapd: Imapd, cert: Path, folder: str = "INBOX") -> dict[str, set[str]]:
    """Subject -> flags of every message in a server folder, as IMAP reports them."""
    client = checker(imapd, cert)
    try:
        client.select_folder(folder, readonly=True)
        uids = client.search("ALL")
        fetched = client.fetch(uids, ["FLAGS", "BODY.PEEK[HEADER.FIELDS (SUBJECT)]"]) if uids else {}
    finally:
        client.logout()
    out = {}
    for data in fetched.values():
        header = data[b"BODY[HEADER.FIELDS (SUBJECT)]"].decode()
        subject = header.split(":", 1)[1].strip()
        out[subject] = {f.decode() for f in data[b"FLAGS"]}
    return out


def assert_clean_log(imapd: Imapd) -> None:
    log = imapd.log()
    assert "Traceback" not in log and " ERROR " not in log, log[-4000:]


# ------------------------------------------------------------------------- a local Maildir


def local_messages(folder: Path) -> dict[str, Path]:
    """Subject -> file of every message in a local Maildir folder (new/ and cur/)."""
    out = {}
    for sub in ("new", "cur"):
        if not (folder / sub).is_dir():
            continue
        for path in (folder / sub).iterdir():
            parsed = email.message_from_bytes(path.read_bytes())
            out[str(parsed["Subject"])] = path
    return out


def maildir_flags(path: Path) -> str:
    return path.name.rpartition(":2,")[2] if ":2," in path.name else ""


def set_maildir_flags(path: Path, flags: str) -> Path:
    """What a Maildir mail reader does to flag a message: rename it into cur/ with a new info."""
    base = path.name.split(":2,")[0]
    target = path.parent.parent / "cur" / f"{base}:2,{''.join(sorted(flags))}"
    path.rename(target)
    return target


# ------------------------------------------------------------------------- imapclient, imaplib

PDF = b"%PDF-1.4\n" + bytes(range(256)) * 8 + b"\n%%EOF\n"


def rich_message(inner_attachment: bool = False) -> bytes:
    """multipart/mixed: alternative (text, html), a PDF attachment, a forwarded message (which
    is multipart itself, with an attachment, if inner_attachment)."""
    inner = EmailMessage()
    inner["From"] = "Dave Example <dave@example.org>"
    inner["To"] = "Carol <carol@example.org>"
    inner["Subject"] = "Minutes of Tuesday"
    inner["Date"] = "Tue, 24 Nov 2026 09:00:00 +0100"
    inner["Message-ID"] = "<minutes@example.org>"
    inner.set_content("Minutes.\nItem one: the budget.\nItem two: the roof.\n")
    if inner_attachment:
        inner.add_attachment(b"a,b\n1,2\n", maintype="text", subtype="csv", filename="budget.csv")
    outer = EmailMessage()
    outer["From"] = "Carol Example <carol@example.org>"
    outer["To"] = f"Alice <{ALICE}>, bob@example.test"
    outer["Cc"] = "Erin <erin@example.org>"
    outer["Subject"] = "Quarterly réport"
    outer["Date"] = "Fri, 27 Nov 2026 10:00:00 -0330"
    outer["Message-ID"] = "<rich@example.org>"
    outer["In-Reply-To"] = "<earlier@example.org>"
    outer.set_content("Plain text: naïve café.\nSecond line.\n", cte="quoted-printable")
    outer.add_alternative("<p>HTML <b>body</b></p>\n", subtype="html")
    outer.add_attachment(PDF, maintype="application", subtype="pdf", filename="report.pdf")
    outer.add_attachment(inner)
    return bytes(outer)


def imap_parts(msg: Message, prefix: str = "") -> list[tuple[str, Message]]:
    """(IMAP part number, part) for every part below msg, numbered as RFC 3501 6.4.5 does."""
    out: list[tuple[str, Message]] = []
    if msg.is_multipart() and msg.get_content_maintype() == "multipart":
        for n, sub in enumerate(msg.get_payload(), 1):
            number = f"{prefix}{n}"
            out.append((number, sub))
            if sub.get_content_type() == "message/rfc822":
                inner = sub.get_payload(0)
                if inner.is_multipart():
                    out += imap_parts(inner, number + ".")
                else:  # the body of a single-part encapsulated message is its part 1
                    out.append((number + ".1", inner))
            elif sub.is_multipart():
                out += imap_parts(sub, number + ".")
    return out


def structure_parts(body: tuple, prefix: str = "") -> dict[str, tuple]:
    """Part number -> BODYSTRUCTURE of that part, from imapclient's parsed (nested) tuples."""
    out: dict[str, tuple] = {}
    for n, sub in enumerate(body[0], 1):
        number = f"{prefix}{n}"
        out[number] = sub
        if isinstance(sub[0], list):
            out.update(structure_parts(sub, number + "."))
        elif (sub[0].lower(), sub[1].lower()) == (b"message", b"rfc822"):
            inner = sub[8]
            if isinstance(inner[0], tuple | list):
                out.update(structure_parts(imapclient.response_types.BodyData.create(inner), number + "."))
            else:
                out[number + ".1"] = inner
    return out


def params(raw: object) -> dict[str, str]:
    if not raw:
        return {}
    items = list(raw)  # type: ignore[call-overload]
    return {items[i].decode().lower(): items[i + 1].decode() for i in range(0, len(items), 2)}


def decode_transfer(data: bytes, encoding: str) -> bytes:
    part = email.message_from_bytes(b"Content-Transfer-Encoding: " + encoding.encode() + b"\r\n\r\n" + data)
    return part.get_payload(decode=True)


@pytest.mark.parametrize(
    ("inner_attachment", "numbers"),
    [(False, ["1", "1.1", "1.2", "2", "3", "3.1"]), (True, ["1", "1.1", "1.2", "2", "3", "3.1", "3.2"])],
    ids=["forwarded-text", "forwarded-multipart"],
)
def test_imapclient_envelope_and_bodystructure_match_the_email_package(
    imapd: Imapd, tls_files: tuple[Path, Path], inner_attachment: bool, numbers: list[str]
) -> None:
    data = rich_message(inner_attachment)
    imapd.deliver(ALICE, data)
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    client = checker(imapd, tls_files[0])
    client.select_folder("INBOX")
    [uid] = client.search("ALL")
    response = client.fetch(uid, ["ENVELOPE", "BODYSTRUCTURE", "RFC822.SIZE", "FLAGS"])[uid]

    # ENVELOPE against the header fields.
    envelope = response[b"ENVELOPE"]
    subject = str(email.header.make_header(email.header.decode_header(envelope.subject.decode())))
    assert subject == str(parsed["Subject"]) == "Quarterly réport"
    assert envelope.date == email.utils.parsedate_to_datetime(parsed["Date"])
    assert envelope.message_id == b"<rich@example.org>" and envelope.in_reply_to == b"<earlier@example.org>"
    for field, addresses in (("from_", parsed["From"]), ("to", parsed["To"]), ("cc", parsed["Cc"])):
        wanted = [(name, addr.lower()) for name, addr in email.utils.getaddresses([str(addresses)])]
        got = [
            ((a.name or b"").decode(), f"{a.mailbox.decode()}@{a.host.decode()}".lower())
            for a in getattr(envelope, field)
        ]
        assert got == wanted, field
    # No Sender or Reply-To: RFC 3501 7.4.2 says they default to From.
    assert envelope.sender == envelope.from_ and envelope.reply_to == envelope.from_
    assert envelope.bcc is None
    assert response[b"RFC822.SIZE"] == len(data.replace(b"\n", b"\r\n"))
    assert response[b"FLAGS"] == ()  # BODYSTRUCTURE does not read the message as seen

    # BODYSTRUCTURE against the MIME tree: types, parameters, encodings, sizes, lines, names.
    structure = response[b"BODYSTRUCTURE"]
    assert structure.is_multipart and structure[1].lower() == b"mixed"
    assert params(structure[2])["boundary"] == parsed.get_boundary()
    tree = imap_parts(parsed)
    by_number = structure_parts(structure)
    assert list(by_number) == [n for n, _ in tree] == numbers
    sections = [f"BODY.PEEK[{n}]" for n, part in tree if part.get_content_maintype() != "multipart"]
    bodies = client.fetch(uid, sections)[uid]
    client.logout()
    for number, part in tree:
        node = by_number[number]
        if part.get_content_maintype() == "multipart":
            assert isinstance(node[0], list) and node[1].decode().lower() == part.get_content_subtype()
            assert params(node[2])["boundary"] == part.get_boundary()
            assert len(node[0]) == len(part.get_payload())
            continue
        kind = f"{node[0].decode()}/{node[1].decode()}".lower()
        assert kind == part.get_content_type(), number
        # Text without a charset is us-ascii (RFC 2045 5.2), and BODYSTRUCTURE says so.
        default = "us-ascii" if part.get_content_maintype() == "text" else None
        assert params(node[2]).get("charset") == (part.get_param("charset") or default), number
        encoding = node[5].decode().lower()
        assert encoding == (part["Content-Transfer-Encoding"] or "7bit").lower(), number
        body = bodies[f"BODY[{number}]".encode()]
        assert node[6] == len(body), number  # the size is that of the section a client fetches
        if kind == "message/rfc822":
            inner = part.get_payload(0)
            assert body == inner.as_bytes().replace(b"\n", b"\r\n")
            inner_envelope = node[7]
            assert inner_envelope[1].decode() == str(inner["Subject"])
            assert inner_envelope[9].decode() == str(inner["Message-ID"])
            assert node[9] == body.count(b"\r\n")  # lines of the encapsulated message
            continue
        decoded = decode_transfer(body, encoding)
        if node[0].lower() == b"text":  # text travels in canonical form, CRLF line ends
            decoded = decoded.replace(b"\r\n", b"\n")
        assert decoded == part.get_payload(decode=True), number
        if node[0].lower() == b"text":
            assert node[7] == body.count(b"\r\n"), number
            extension = node[8:]
        else:
            extension = node[7:]
        disposition = extension[1] if len(extension) > 1 else None
        if part.get_content_disposition() is None:
            assert disposition is None, number
        else:
            assert disposition[0].decode().lower() == part.get_content_disposition(), number
            assert params(disposition[1]).get("filename") == part.get_filename(), number
    assert decode_transfer(bodies[b"BODY[2]"], "base64") == PDF
    assert_clean_log(imapd)


def test_imaplib_sections_match_the_email_package(imapd: Imapd) -> None:
    data = rich_message()
    imapd.deliver(ALICE, data)
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    client = imapd.client()
    client.select("INBOX")
    for number, part in imap_parts(parsed):
        typ, got = client.fetch("1", f"(BODY.PEEK[{number}.MIME])")
        assert typ == "OK"
        mime = email.message_from_bytes(got[0][1])
        assert mime.get_content_type() == part.get_content_type(), number
        if part.get_content_type() == "message/rfc822":
            inner = part.get_payload(0)
            typ, got = client.fetch("1", f"(BODY.PEEK[{number}.HEADER] BODY.PEEK[{number}.TEXT])")
            header, text = got[0][1], got[1][1]
            assert email.message_from_bytes(header)["Subject"] == inner["Subject"]
            assert text.replace(b"\r\n", b"\n") == inner.get_payload(decode=True)
    typ, got = client.fetch("1", "(BODY.PEEK[1.1] BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert (
        decode_transfer(got[0][1], "quoted-printable").decode()
        == "Plain text: naïve café.\r\nSecond line.\r\n"
    )
    assert got[1][1] == b"Subject: Quarterly =?utf-8?q?r=C3=A9port?=\r\n\r\n"
    typ, got = client.fetch("1", "(BINARY.PEEK[2] BINARY.SIZE[2])")
    assert typ == "OK" and got[0][1] == PDF and f"BINARY.SIZE[2] {len(PDF)}".encode() in got[1]
    client.logout()
    assert_clean_log(imapd)


def idle_until(client: imapclient.IMAPClient, wanted: tuple, timeout: float = 10) -> list[tuple]:
    """Untagged responses collected in IDLE until one equals wanted (or the time is up)."""
    seen: list[tuple] = []
    deadline = time.monotonic() + timeout
    while wanted not in seen and time.monotonic() < deadline:
        seen += client.idle_check(timeout=max(0.1, deadline - time.monotonic()))
    assert wanted in seen, seen
    return seen


def test_imapclient_idle_sees_flags_expunges_and_new_mail(imapd: Imapd, tls_files: tuple[Path, Path]) -> None:
    for subject in ("idle one", "idle two", "idle three"):
        imapd.deliver(ALICE, message(subject))
    watcher = checker(imapd, tls_files[0])
    watcher.select_folder("INBOX")
    watcher.idle()
    other = imapd.client()
    other.select("INBOX")
    other.store("1", "+FLAGS", "(\\Flagged $Important)")
    idle_until(watcher, (1, b"FETCH", (b"FLAGS", (b"$Important", b"\\Flagged"))))
    other.store("2", "+FLAGS", "(\\Deleted)")
    other.expunge()
    idle_until(watcher, (2, b"EXPUNGE"))
    imapd.deliver(ALICE, message("idle four"))
    idle_until(watcher, (3, b"EXISTS"))
    watcher.idle_done()
    other.logout()
    subjects = {
        data[b"SEQ"]: data[b"BODY[HEADER.FIELDS (SUBJECT)]"].strip()
        for data in watcher.fetch(watcher.search("ALL"), ["BODY.PEEK[HEADER.FIELDS (SUBJECT)]"]).values()
    }
    assert subjects == {1: b"Subject: idle one", 2: b"Subject: idle three", 3: b"Subject: idle four"}
    watcher.logout()
    assert_clean_log(imapd)


def test_idle_a_new_keyword_elsewhere_reports_only_the_new_message(
    imapd: Imapd, tls_files: tuple[Path, Path]
) -> None:
    for subject in ("kw one", "kw two", "kw three"):
        imapd.deliver(ALICE, message(subject))
    watcher = checker(imapd, tls_files[0])
    watcher.select_folder("INBOX")
    watcher.idle()
    imapd.folder(ALICE).append(message("kw four"), ["$Fresh"])  # another process, a new keyword
    seen = idle_until(watcher, (4, b"EXISTS"))
    seen += watcher.idle_check(timeout=1)
    watcher.idle_done()
    watcher.logout()
    assert [r for r in seen if r[1] == b"FETCH" and r[0] != 4] == [], seen


# ------------------------------------------------------------------------- mbsync (isync)


class Mbsync:
    def __init__(self, imapd: Imapd, cert: Path, folder: Path) -> None:
        self.binary = need("mbsync")
        self.local = folder / "local"
        self.local.mkdir(parents=True)
        self.home = folder
        self.config = folder / "mbsyncrc"
        self.config.write_text(
            f"IMAPAccount remote\nHost {HOST}\nPort {imapd.imaps}\nUser {ALICE}\n"
            f'Pass "{PASSWORD}"\nSSLType IMAPS\nCertificateFile {cert}\n\n'
            "IMAPStore remote\nAccount remote\n\n"
            f"MaildirStore local\nPath {self.local}/\nInbox {self.local}/INBOX\nSubFolders Verbatim\n\n"
            "Channel mail\nFar :remote:\nNear :local:\nPatterns *\nCreate Both\nExpunge Both\n"
            "Sync All\nSyncState *\n"
        )

    def sync(self) -> str:
        result = run([self.binary, "--verbose", "-c", str(self.config), "--all"], self.home)
        output = result.stdout + result.stderr
        assert result.returncode == 0, output
        return output

    def folder(self, name: str = "INBOX") -> Path:
        return self.local / name


def test_mbsync_two_way_flags(imapd: Imapd, tls_files: tuple[Path, Path], tmp_path: Path) -> None:
    cert = tls_files[0]
    sent = {s: message(s, f"Body of {s}.\n") for s in ("sync one", "sync two", "sync three")}
    for data in sent.values():
        imapd.deliver(ALICE, data)
    mbsync = Mbsync(imapd, cert, tmp_path / "client")
    mbsync.sync()

    # Delivered on the server, there locally: every message, byte for byte, every folder.
    local = local_messages(mbsync.folder())
    assert set(local) == set(sent)
    for subject, path in local.items():
        copy = re.sub(rb"(?m)^X-TUID: .*\n", b"", path.read_bytes().replace(b"\r\n", b"\n"))
        assert copy == sent[subject]  # but for the header line mbsync adds to track its copies
        assert maildir_flags(path) == ""
    for name in ("Sent", "Drafts", "Trash", "Junk", "Archive"):
        assert (mbsync.folder(name) / "cur").is_dir(), name

    # Flags set locally reach the server.
    set_maildir_flags(local["sync one"], "S")
    set_maildir_flags(local["sync two"], "FS")
    mbsync.sync()
    flags = server_view(imapd, cert)
    assert flags == {"sync one": {"\\Seen"}, "sync two": {"\\Flagged", "\\Seen"}, "sync three": set()}

    # Flags changed on the server reach the local Maildir: added and removed.
    client = imapd.client()
    client.select("INBOX")
    _, found = client.search(None, "SUBJECT", '"sync three"')
    client.store(found[0].decode(), "+FLAGS", "(\\Answered \\Flagged)")
    _, found = client.search(None, "SUBJECT", '"sync two"')
    client.store(found[0].decode(), "-FLAGS", "(\\Flagged)")
    client.logout()
    mbsync.sync()
    local = local_messages(mbsync.folder())
    assert {s: maildir_flags(p) for s, p in local.items()} == {
        "sync one": "S",
        "sync two": "S",
        "sync three": "FR",
    }
    # And a run with nothing to do changes nothing on either side.
    before = sorted(p.name for p in local.values())
    mbsync.sync()
    assert sorted(p.name for p in local_messages(mbsync.folder()).values()) == before
    assert server_view(imapd, cert) == {
        "sync one": {"\\Seen"},
        "sync two": {"\\Seen"},
        "sync three": {"\\Answered", "\\Flagged"},
    }
    assert_clean_log(imapd)


def test_mbsync_deletions_new_mail_and_folders_both_ways(
    imapd: Imapd, tls_files: tuple[Path, Path], tmp_path: Path
) -> None:
    cert = tls_files[0]
    for subject in ("keep", "delete here", "delete there"):
        imapd.deliver(ALICE, message(subject))
    mbsync = Mbsync(imapd, cert, tmp_path / "client")
    mbsync.sync()
    local = local_messages(mbsync.folder())
    assert set(local) == {"keep", "delete here", "delete there"}

    # Deleted locally (trashed, as a Maildir reader does): expunged on the server.
    set_maildir_flags(local["delete here"], "T")
    # Deleted on the server: removed locally.
    client = imapd.client()
    client.select("INBOX")
    _, found = client.search(None, "SUBJECT", '"delete there"')
    client.store(found[0].decode(), "+FLAGS", "(\\Deleted)")
    client.expunge()
    # New locally: uploaded (APPEND).
    (mbsync.folder() / "new" / "1.local.host:2,").write_bytes(message("written offline"))
    # A folder made locally with a message in it, and one made on the server.
    project = mbsync.folder("Projects")
    for sub in ("cur", "new", "tmp"):
        (project / sub).mkdir(parents=True)
    (project / "cur" / "2.local.host:2,S").write_bytes(message("project plan"))
    assert client.create("Clients")[0] == "OK"
    client.logout()

    mbsync.sync()
    assert set(server_view(imapd, cert)) == {"keep", "written offline"}
    assert set(local_messages(mbsync.folder())) == {"keep", "written offline"}
    assert server_view(imapd, cert, "Projects") == {"project plan": {"\\Seen"}}
    assert (mbsync.folder("Clients") / "cur").is_dir()
    # The expunge happened in the store, not just in the index: the file is gone.
    assert set(local_messages(imapd.maildir(ALICE))) == {"keep", "written offline"}
    assert_clean_log(imapd)


# ------------------------------------------------------------------------- offlineimap3


class OfflineImap:
    def __init__(self, imapd: Imapd, cert: Path, folder: Path, account: str = "") -> None:
        self.binary = need("offlineimap")
        self.home = folder
        self.local = folder / "mail"
        folder.mkdir(parents=True)
        self.config = folder / "offlineimaprc"
        self.config.write_text(
            f"[general]\naccounts = test\nmetadata = {folder / 'metadata'}\n\n"
            f"[Account test]\nlocalrepository = local\nremoterepository = remote\n{account}\n"
            f"[Repository local]\ntype = Maildir\nlocalfolders = {self.local}\n\n"
            f"[Repository remote]\ntype = IMAP\nremotehost = {HOST}\nremoteport = {imapd.imaps}\n"
            f"remoteuser = {ALICE}\nremotepass = {PASSWORD}\nssl = yes\nsslcacertfile = {cert}\n"
        )

    def sync(self) -> str:
        result = run([self.binary, "-c", str(self.config), "-o", "-u", "basic"], self.home)
        output = result.stdout + result.stderr
        # offlineimap exits 0 after some errors: its report of them counts too.
        assert result.returncode == 0 and "ERROR" not in output, output
        return output


def test_offlineimap_sync_is_stable_and_flags_go_back(
    imapd: Imapd, tls_files: tuple[Path, Path], tmp_path: Path
) -> None:
    cert = tls_files[0]
    sent = {s: message(s, f"Text of {s}.\n") for s in ("oi first", "oi second", "oi third")}
    for data in sent.values():
        imapd.deliver(ALICE, data)
    client = imapd.client()
    client.select("INBOX")
    client.store("2", "+FLAGS", "(\\Flagged \\Seen)")
    client.logout()
    offlineimap = OfflineImap(imapd, cert, tmp_path / "client")
    output = offlineimap.sync()
    assert output.count("Copy message") == 3, output

    inbox = offlineimap.local / "INBOX"
    local = local_messages(inbox)
    assert set(local) == set(sent)
    for subject, path in local.items():
        assert path.read_bytes().replace(b"\r\n", b"\n") == sent[subject]
    assert {s: maildir_flags(p) for s, p in local.items()} == {
        "oi first": "",
        "oi second": "FS",
        "oi third": "",
    }
    assert {p.name for p in offlineimap.local.iterdir()} >= {"INBOX", "Sent", "Drafts", "Trash", "Junk"}

    # A second run finds nothing to do: no copies, no flag changes, no new modseq on the server.
    status = checker(imapd, cert)
    before = status.folder_status("INBOX", ["HIGHESTMODSEQ", "MESSAGES"])
    names = sorted(p.name for p in local.values())
    output = offlineimap.sync()
    assert not re.search(r"Copy message|flag|Deleting", output, re.IGNORECASE), output
    assert sorted(p.name for p in local_messages(inbox).values()) == names
    assert status.folder_status("INBOX", ["HIGHESTMODSEQ", "MESSAGES"]) == before

    # Flags changed locally, and a message deleted locally, go back to the server.
    set_maildir_flags(local["oi first"], "RS")
    set_maildir_flags(local["oi second"], "S")
    local["oi third"].unlink()
    output = offlineimap.sync()
    assert "Deleting 1 messages" in output, output
    assert server_view(imapd, cert) == {"oi first": {"\\Answered", "\\Seen"}, "oi second": {"\\Seen"}}
    assert status.folder_status("INBOX", ["MESSAGES"])[b"MESSAGES"] == 2
    status.logout()
    assert_clean_log(imapd)


def test_offlineimap_utf8_folder_names_and_uploads(
    imapd: Imapd, tls_files: tuple[Path, Path], tmp_path: Path
) -> None:
    """Folder names in modified UTF-7 on the wire, UTF-8 on disk; new local mail goes up."""
    cert = tls_files[0]
    client = imapd.client()
    assert client.create("&AMQ-rger.Unterordner")[0] == "OK"  # Ärger.Unterordner
    typ, _ = client.append(
        "&AMQ-rger.Unterordner", None, None, message("umlaut folder").replace(b"\n", b"\r\n")
    )
    assert typ == "OK"
    client.logout()
    offlineimap = OfflineImap(imapd, cert, tmp_path / "client", account="utf8foldernames = yes")
    offlineimap.sync()
    arrived = offlineimap.local / "Ärger.Unterordner"
    assert set(local_messages(arrived)) == {"umlaut folder"}

    # Made locally: a folder (with its parent) holding a message, and a message in INBOX.
    for name in ("Übersicht", "Übersicht.Größe"):
        for sub in ("cur", "new", "tmp"):
            (offlineimap.local / name / sub).mkdir(parents=True)
    (offlineimap.local / "Übersicht.Größe" / "new" / "1.local:2,").write_bytes(message("local umlaut"))
    (offlineimap.local / "INBOX" / "cur" / "2.local:2,F").write_bytes(message("written offline"))
    output = offlineimap.sync()
    assert "Copy message" in output, output
    assert server_view(imapd, cert, "Übersicht.Größe") == {"local umlaut": set()}
    assert server_view(imapd, cert) == {"written offline": {"\\Flagged"}}
    assert (imapd.maildir(ALICE) / ".&ANw-bersicht.Gr&APYA3w-e" / "cur").is_dir()
    # offlineimap learnt the UIDs from APPENDUID: the local files now carry them.
    names = [p.name for p in local_messages(offlineimap.local / "INBOX").values()]
    assert len(names) == 1 and ",U=1," in names[0], names
    output = offlineimap.sync()
    assert "Copy message" not in output, output
    assert_clean_log(imapd)


# ------------------------------------------------------------------------- fetchmail


def fetchmail(imapd: Imapd, cert: Path, home: Path, keep: bool) -> tuple[str, list[bytes]]:
    """One fetchmail poll over IMAPS into an MDA that writes files; (output, new messages)."""
    binary = need("fetchmail")
    out = home / "out"
    out.mkdir(parents=True, exist_ok=True)
    mda = home / "mda.sh"
    mda.write_text(f'#!/bin/sh\nexec cat > "$(mktemp -p {out} msg.XXXXXXXX)"\n')
    mda.chmod(0o700)
    rc = home / "fetchmailrc"
    rc.write_text(
        "set no bouncemail\n"
        f"poll {HOST} with service {imapd.imaps} protocol IMAP auth password timeout 30\n"
        f'  user "{ALICE}" there with password "{PASSWORD}" is "{getpass.getuser()}" here\n'
        f'  ssl sslcertck sslcertfile "{cert}"\n'
        f"  {'keep' if keep else 'nokeep'}\n"
        f'  mda "{mda}"\n'
    )
    rc.chmod(0o600)
    before = set(out.iterdir())
    result = run([binary, "-v", "--nosyslog", "-f", str(rc)], home, env_extra={"FETCHMAILHOME": str(home)})
    output = result.stdout + result.stderr
    # 0: mail fetched, 1: no mail; anything else is an error.
    assert result.returncode in (0, 1), output
    return output, [p.read_bytes() for p in sorted(set(out.iterdir()) - before)]


def test_fetchmail_fetches_unseen_keeps_or_deletes(
    imapd: Imapd, tls_files: tuple[Path, Path], tmp_path: Path
) -> None:
    cert, home = tls_files[0], tmp_path / "fetchmail"
    sent = {s: message(s, f"Text of {s}.\n") for s in ("fm one", "fm two")}
    for data in sent.values():
        imapd.deliver(ALICE, data)
    output, got = fetchmail(imapd, cert, home, keep=True)
    assert sorted(email.message_from_bytes(m)["Subject"] for m in got) == ["fm one", "fm two"], output
    for data in got:
        subject = email.message_from_bytes(data)["Subject"]
        assert data.split(b"\n\n", 1)[1] == sent[subject].split(b"\n\n", 1)[1]
    # Kept, and read: \Seen on the server, so the next poll finds nothing new.
    assert server_view(imapd, cert) == {"fm one": {"\\Seen"}, "fm two": {"\\Seen"}}
    output, got = fetchmail(imapd, cert, home, keep=True)
    assert got == [], output
    # New mail with nokeep: fetched, then deleted and expunged on the server.
    imapd.deliver(ALICE, message("fm three"))
    output, got = fetchmail(imapd, cert, home, keep=False)
    assert [email.message_from_bytes(m)["Subject"] for m in got] == ["fm three"], output
    assert server_view(imapd, cert) == {"fm one": {"\\Seen"}, "fm two": {"\\Seen"}}
    assert_clean_log(imapd)


# ------------------------------------------------------------------------- mutt


class Terminal:
    """A program in a detached tmux session on a socket of its own: type keys, read the screen."""

    def __init__(self, folder: Path) -> None:
        self.tmux = need("tmux")
        self.folder = folder
        # A server of its own on a short socket path (one below tmp_path could pass 108 bytes).
        self.socket_dir = Path(tempfile.mkdtemp(prefix="tmux-test-"))
        self.server = ["-S", str(self.socket_dir / "s")]

    def start(self, command: str) -> None:
        result = run(
            [self.tmux, *self.server, "new-session", "-d", "-x", "150", "-y", "40", command],
            self.folder,
        )
        assert result.returncode == 0, result.stderr

    def keys(self, *keys: str, literal: bool = False) -> None:
        argv = [self.tmux, *self.server, "send-keys", *(["-l"] if literal else []), *keys]
        assert run(argv, self.folder).returncode == 0

    def screen(self) -> str:
        result = run([self.tmux, *self.server, "capture-pane", "-p"], self.folder)
        return result.stdout

    def wait_for(self, text: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if text in screen:
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} never appeared on the screen:\n{screen}")
            time.sleep(0.2)

    def close(self) -> None:
        run([self.tmux, *self.server, "kill-server"], self.folder)
        shutil.rmtree(self.socket_dir, ignore_errors=True)


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[Terminal]:
    term = Terminal(tmp_path)
    yield term
    term.close()


def muttrc(folder: Path, imapd: Imapd, cert: Path, extra: str, starttls: bool = False) -> Path:
    """A muttrc for alice's INBOX over IMAPS (or STARTTLS on 143), verifying the test certificate."""
    rc = folder / "muttrc"
    url = f"imap://%s@{HOST}:{imapd.imap}/" if starttls else f"imaps://%s@{HOST}:{imapd.imaps}/"
    rc.write_text(
        f'set folder="{url % ALICE.replace("@", "%40")}"\n'
        'set spoolfile="+INBOX"\n'
        f'set imap_pass="{PASSWORD}"\n'
        f'set certificate_file="{cert}"\n'
        "set ssl_force_tls=yes\nset mbox_type=mbox\nset confirmappend=no\nset confirmcreate=no\n"
        "set move=no\nset delete=yes\nset mark_old=no\nset quit=yes\nset sort=subject\n"
        "set wait_key=no\n" + extra
    )
    return rc


def wait_for_exit(exit_file: Path, terminal: Terminal) -> None:
    deadline = time.monotonic() + 30
    while not exit_file.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert exit_file.exists(), terminal.screen()
    assert exit_file.read_text().strip() == "0"


@pytest.mark.parametrize("starttls", [False, True], ids=["imaps", "starttls"])
def test_mutt_reads_flags_copies_and_deletes(
    imapd: Imapd, tls_files: tuple[Path, Path], tmp_path: Path, terminal: Terminal, starttls: bool
) -> None:
    mutt = need("mutt")
    sent = {s: message(s, f"Body of {s}, read in mutt.\n") for s in ("mutt alpha", "mutt beta", "mutt gamma")}
    for data in sent.values():
        imapd.deliver(ALICE, data)
    saved = tmp_path / "saved.mbox"
    exit_file = tmp_path / "mutt.exit"
    rc = muttrc(tmp_path, imapd, tls_files[0], 'set header_cache=""\nset message_cachedir=""\n', starttls)
    terminal.start(f"{mutt} -n -F {rc}; echo $? > {exit_file}")

    # The index, read over TLS (ssl_force_tls): one line per message, its sender and subject.
    screen = terminal.wait_for("mutt gamma")
    lines = [line for line in screen.splitlines() if "Carol" in line]
    assert [line.split()[-1] for line in lines] == ["alpha", "beta", "gamma"], screen
    assert "Msgs:3" in screen, screen

    # Reading a message shows its body (and marks it seen on the server).
    terminal.keys("/", "mutt beta", "Enter", "Enter")
    terminal.wait_for("Body of mutt beta, read in mutt.")
    terminal.keys("q")
    terminal.wait_for("Msgs:3")

    # Save a copy of every message, flag one, delete one, and quit.
    commands = (
        f"<tag-pattern>~A<enter><tag-prefix><copy-message>{saved}<enter><untag-pattern>~A<enter>"
        "<tag-pattern>~s beta<enter><tag-prefix><flag-message><untag-pattern>~A<enter>"
        "<tag-pattern>~s gamma<enter><tag-prefix><delete-message><sync-mailbox><quit>"
    )
    terminal.keys(":", f'push "{commands}"', literal=True)
    terminal.keys("Enter")
    wait_for_exit(exit_file, terminal)

    copies = {str(m["Subject"]): m.get_payload() for m in mailbox.mbox(saved)}
    assert copies == {s: f"Body of {s}, read in mutt.\n" for s in sent}
    flags = server_view(imapd, tls_files[0])
    assert set(flags) == {"mutt alpha", "mutt beta"}  # gamma expunged
    assert flags["mutt beta"] == {"\\Seen", "\\Flagged"}
    assert "\\Deleted" not in flags["mutt alpha"] and "\\Flagged" not in flags["mutt alpha"]
    assert_clean_log(imapd)


def test_mutt_cached_session_with_condstore_qresync_compress_and_idle(
    imapd: Imapd, tls_files: tuple[Path, Path], tmp_path: Path, terminal: Terminal
) -> None:
    """mutt with a header cache resynchronises by CHANGEDSINCE/VANISHED, talks DEFLATE, idles."""
    mutt = need("mutt")
    for subject in ("cache one", "cache two", "cache three"):
        imapd.deliver(ALICE, message(subject))
    rc = muttrc(
        tmp_path,
        imapd,
        tls_files[0],
        f'set header_cache="{tmp_path}/hcache/"\nset message_cachedir="{tmp_path}/bodies/"\n'
        "set imap_condstore=yes\nset imap_qresync=yes\nset imap_deflate=yes\nset imap_idle=yes\n"
        "set mail_check=1\nset timeout=1\n",
    )
    (tmp_path / "hcache").mkdir()
    debug = tmp_path / ".muttdebug0"  # mutt -d2 writes the protocol exchange there ($HOME)

    # First session: the index, then new mail pushed while mutt idles.
    terminal.start(f"{mutt} -d2 -n -F {rc}; echo $? > {tmp_path}/first.exit")
    terminal.wait_for("cache three")
    imapd.deliver(ALICE, message("cache four"))
    screen = terminal.wait_for("cache four", timeout=20)
    assert "Msgs:4" in screen, screen
    terminal.keys("q")
    wait_for_exit(tmp_path / "first.exit", terminal)
    log = debug.read_text(errors="replace")
    assert "COMPRESS DEFLATE" in log and "OK DEFLATE active" in log
    assert re.search(r"> \S+ IDLE\n.*\n.*< \* 4 EXISTS", log), "new mail did not arrive in IDLE"

    # Meanwhile on the server: one message flagged, one expunged.
    client = imapd.client()
    client.select("INBOX")
    _, found = client.search(None, "SUBJECT", '"cache one"')
    client.store(found[0].decode(), "+FLAGS", "(\\Flagged)")
    _, found = client.search(None, "SUBJECT", '"cache two"')
    client.store(found[0].decode(), "+FLAGS", "(\\Deleted)")
    client.expunge()
    client.logout()

    # Second session, from the cache: only what changed is fetched, and the index is right.
    terminal.start(f"{mutt} -d2 -n -F {rc}; echo $? > {tmp_path}/second.exit")
    screen = terminal.wait_for("cache four")
    lines = {line.split()[-1]: line for line in screen.splitlines() if "Carol" in line}
    assert sorted(lines) == ["four", "one", "three"], screen
    assert "!" in lines["one"].split("Nov")[0] and "!" not in lines["three"].split("Nov")[0], screen
    assert "Msgs:3" in screen and "Flag:1" in screen, screen
    terminal.keys("q")
    wait_for_exit(tmp_path / "second.exit", terminal)
    log = debug.read_text(errors="replace")
    assert re.search(r"UID FETCH \S+ \(FLAGS\) \(CHANGEDSINCE \d+ VANISHED\)", log), log[-3000:]
    assert re.search(r"< \* VANISHED \(EARLIER\) \d+", log), log[-3000:]
    assert_clean_log(imapd)


# ------------------------------------------------------------------------- curl


def curl(tls_files: tuple[Path, Path], tmp_path: Path, url: str, *args: str) -> str:
    """What curl prints for url, as it came (CRLF kept); the run must succeed."""
    binary = need("curl")
    cert, user = str(tls_files[0]), f"{ALICE}:{PASSWORD}"
    argv = [binary, "--silent", "--show-error", "--max-time", "30", "--cacert", cert, "--user", user]
    result = run([*argv, *args, url], tmp_path, text=False)
    assert result.returncode == 0, f"curl {url} {args}: exit {result.returncode}: {result.stderr!r}"
    return result.stdout.decode()


def test_curl_lists_fetches_searches_and_appends_over_imaps(
    imapd: Imapd, tls_files: tuple[Path, Path], tmp_path: Path
) -> None:
    first, second = message("curl one", "First body.\n"), message("curl two", "Second body.\n")
    imapd.deliver(ALICE, first)
    imapd.deliver(ALICE, second)
    base = f"imaps://{HOST}:{imapd.imaps}"

    listing = curl(tls_files, tmp_path, f"{base}/")
    for name, use in (("INBOX", ""), ("Sent", "\\Sent"), ("Drafts", "\\Drafts"), ("Trash", "\\Trash")):
        assert re.search(rf'^\* LIST \([^)]*{re.escape(use)}[^)]*\) "\." {name}\r?$', listing, re.M), listing

    # A message by UID, whole and by section: what was delivered, with CRLF line ends.
    assert curl(tls_files, tmp_path, f"{base}/INBOX/;UID=2").encode() == second.replace(b"\n", b"\r\n")
    text = curl(tls_files, tmp_path, f"{base}/INBOX/;UID=1/;SECTION=TEXT")
    assert text == "First body.\r\n"
    subject = curl(tls_files, tmp_path, f"{base}/INBOX/;UID=1/;SECTION=HEADER.FIELDS%20(SUBJECT)")
    assert subject == "Subject: curl one\r\n\r\n"

    # SEARCH from the URL and as a custom command; fetching read message 1 and 2 (no PEEK).
    assert curl(tls_files, tmp_path, f"{base}/INBOX?SUBJECT%20%22curl%20two%22").strip() == "* SEARCH 2"
    assert curl(tls_files, tmp_path, f"{base}/INBOX?UNSEEN").strip() == "* SEARCH"
    searched = curl(tls_files, tmp_path, f"{base}/INBOX", "--request", 'UID SEARCH BODY "First"')
    assert searched.strip() == "* SEARCH 1"

    # Upload (APPEND) into Drafts, then see it there.
    draft = tmp_path / "draft.eml"
    draft.write_bytes(message("curl draft", "Written with curl.\n").replace(b"\n", b"\r\n"))
    curl(tls_files, tmp_path, f"{base}/Drafts", "--upload-file", str(draft))
    assert set(server_view(imapd, tls_files[0], "Drafts")) == {"curl draft"}
    status = curl(tls_files, tmp_path, base, "--request", "STATUS Drafts (MESSAGES UIDNEXT)")
    assert "MESSAGES 1" in status and "UIDNEXT 2" in status, status
    assert_clean_log(imapd)


def test_curl_starttls_on_the_plain_port(imapd: Imapd, tls_files: tuple[Path, Path], tmp_path: Path) -> None:
    imapd.deliver(ALICE, message("over starttls", "Upgraded.\n"))
    url = f"imap://{HOST}:{imapd.imap}/INBOX/;UID=1/;SECTION=TEXT"
    assert curl(tls_files, tmp_path, url, "--ssl-reqd") == "Upgraded.\r\n"
    logins = imapd.log().count("login user=")
    assert logins == 1
    # Without TLS the server offers no way to log in (LOGINDISABLED, no AUTH=): curl gives up
    # with "login denied" (67) before sending the password, and nobody logs in.
    binary = need("curl")
    result = run([binary, "--silent", "--max-time", "30", "--user", f"{ALICE}:{PASSWORD}", url], tmp_path)
    assert result.returncode == 67 and "Upgraded" not in result.stdout
    assert imapd.log().count("login user=") == logins
    assert_clean_log(imapd)
