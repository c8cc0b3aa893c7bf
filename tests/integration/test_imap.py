"""The imapd daemon on loopback with Python's imaplib: login rules, folders, FETCH, STORE, COPY,
MOVE, EXPUNGE, APPEND, IDLE, CONDSTORE/QRESYNC, and what several sessions see of each other."""

from __future__ import annotations

import imaplib
import os
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from mailroom.store import Folder, Maildir
from tests.conftest import PASSWORD, config_data, free_port, insecure, start_daemon

ALICE = "alice@example.test"
BOB = "bob@example.test"


def message(subject: str, body: str = "Hello.\n", sender: str = "carol@example.org") -> bytes:
    return (
        f"From: Carol <{sender}>\nTo: Alice <{ALICE}>\nSubject: {subject}\n"
        "Date: Fri, 27 Nov 2026 10:00:00 +0000\n"
        f"Message-ID: <{subject.replace(' ', '.')}@example.org>\n\n{body}"
    ).encode()


@dataclass
class Imapd:
    imap: int
    imaps: int
    store: Path
    config: Path
    process: subprocess.Popen

    def maildir(self, address: str) -> Path:
        local, domain = address.split("@")
        return self.store / domain / local

    def deliver(self, address: str, data: bytes, when: float | None = None) -> None:
        """Deliver as smtpd does; `when` sets the INTERNALDATE (the file's mtime)."""
        name = Maildir(self.maildir(address)).deliver(data)
        if when is not None:
            os.utime(self.maildir(address) / "new" / name, (when, when))

    def folder(self, address: str, name: str = "") -> Folder:
        return Folder(self.maildir(address) / (f".{name}" if name else ""))

    def client(self, user: str = ALICE) -> imaplib.IMAP4_SSL:
        client = imaplib.IMAP4_SSL("127.0.0.1", self.imaps, ssl_context=insecure(), timeout=10)
        client.login(user, PASSWORD)
        return client

    def log(self) -> str:
        return self.config.with_suffix(".log").read_text()


@pytest.fixture
def imapd(tmp_path: Path, tls_files: tuple[Path, Path]) -> Iterator[Imapd]:
    imap, imaps = free_port(), free_port()
    store = tmp_path / "mail"
    data = config_data(store, free_port(), tls_files)
    data["imap"] = {
        "listeners": [
            {"name": "imap", "address": "127.0.0.1", "port": imap},
            {"name": "imaps", "address": "127.0.0.1", "port": imaps},
        ],
        "limits": {"max_errors": 5, "login_timeout": 5, "max_commands_before_login": 10},
        "workers": 2,
    }
    # POP3 on the same store, for the tests that run pop3d beside imapd.
    data["pop3"] = {"listeners": [{"name": "pop3s", "address": "127.0.0.1", "port": free_port()}]}
    config = tmp_path / "mailroom.yml"
    config.write_text(yaml.safe_dump(data))
    process = start_daemon("imapd", config, imap)
    server = Imapd(imap, imaps, store, config, process)
    yield server
    server.process.terminate()  # the one running now: a test may have restarted it
    server.process.wait(10)


def raw(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    assert sock.recv(4096).startswith(b"* OK")
    return sock


def exchange(sock: socket.socket, data: bytes, until: bytes) -> bytes:
    sock.sendall(data)
    out = b""
    while until not in out:
        chunk = sock.recv(65536)
        if not chunk:
            break
        out += chunk
    return out


# ------------------------------------------------------------------------- logging in


def test_plaintext_port_refuses_login_before_starttls(imapd: Imapd) -> None:
    client = imaplib.IMAP4("127.0.0.1", imapd.imap, timeout=10)
    caps = client.capabilities
    assert "LOGINDISABLED" in caps and "STARTTLS" in caps and not any(c.startswith("AUTH=") for c in caps)
    with pytest.raises(imaplib.IMAP4.error, match=r"PRIVACYREQUIRED|TLS"):
        client.login(ALICE, PASSWORD)
    client.starttls(insecure())
    assert "LOGINDISABLED" not in client.capabilities and "AUTH=PLAIN" in client.capabilities
    typ, _ = client.login(ALICE, PASSWORD)
    assert typ == "OK"
    client.logout()


def test_authenticate_plain_with_initial_response_and_wrong_password(imapd: Imapd) -> None:
    client = imaplib.IMAP4_SSL("127.0.0.1", imapd.imaps, ssl_context=insecure(), timeout=10)
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        client.login(ALICE, "wrong password")
    typ, _ = client.authenticate("PLAIN", lambda _: f"\0{ALICE}\0{PASSWORD}".encode())
    assert typ == "OK"
    assert "IDLE" in client.capabilities or "IDLE" in client.capability()[1][0].decode()
    client.logout()


def test_a_failed_login_sets_up_nothing_and_the_next_login_selects_its_own_inbox(imapd: Imapd) -> None:
    """The mailbox is read ahead while the password is verified (Session.read_ahead): a wrong
    password leaves a mailbox never opened as it was, and what was read ahead for one user is
    never another's."""

    def tree(address: str) -> list[str]:
        root = imapd.maildir(address)
        return sorted(str(p.relative_to(root)) for p in root.rglob("*"))

    imapd.deliver(BOB, message("For Bob"))  # delivered to, never opened
    imapd.deliver(ALICE, message("For Alice"))
    imapd.client(ALICE).logout()  # Alice's mailbox is set up: hers is read ahead
    before = tree(BOB)
    client = imaplib.IMAP4_SSL("127.0.0.1", imapd.imaps, ssl_context=insecure(), timeout=10)
    for user in (BOB, ALICE):
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            client.login(user, "wrong password")
    assert tree(BOB) == before  # no special folders, no state, the message still in new/
    client.login(BOB, PASSWORD)
    typ, data = client.select("INBOX")
    assert typ == "OK" and data == [b"1"]
    typ, data = client.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert typ == "OK" and b"For Bob" in data[0][1]  # type: ignore[index]
    client.logout()
    assert "Sent" in {p.name.lstrip(".") for p in imapd.maildir(BOB).iterdir()}  # set up by the LOGIN


def test_commands_pipelined_behind_starttls_are_dropped(imapd: Imapd) -> None:
    sock = raw(imapd.imap)
    sock.sendall(b"a STARTTLS\r\nb LOGIN alice@example.test x\r\n")
    reply = sock.recv(4096)
    assert reply.startswith(b"a OK")
    tls = insecure().wrap_socket(sock, server_hostname="mail.example.test")
    tls.sendall(b"c NOOP\r\n")
    answer = tls.recv(4096)
    assert answer.startswith(b"c OK"), answer  # nothing about b: it never became a command
    tls.close()


def test_huge_literal_before_login_is_refused_without_reading_it(imapd: Imapd) -> None:
    sock = raw(imapd.imap)
    reply = exchange(sock, b"a LOGIN {400000000}\r\n", b"\r\n")
    assert reply.startswith(b"a NO [TOOBIG]")
    reply = exchange(sock, b"b NOOP\r\n", b"b ")
    assert b"b OK" in reply
    sock.close()


def test_commands_before_login_are_capped(imapd: Imapd) -> None:
    sock = raw(imapd.imap)
    out = b""
    for n in range(12):
        sock.sendall(b"t%d NOOP\r\n" % n)
    sock.settimeout(5)
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            break
        out += chunk
    assert b"* BYE" in out and b"t11 OK" not in out
    sock.close()


def test_garbage_gets_bad_and_the_error_limit_closes(imapd: Imapd) -> None:
    sock = raw(imapd.imap)
    reply = exchange(sock, b"a FETCH\r\n", b"\r\n")
    assert reply.startswith(b"a BAD")
    reply = exchange(sock, b"b {-1}\r\n", b"\r\n")
    assert b"BAD" in reply
    out = b""
    sock.settimeout(5)
    for n in range(6):
        try:
            sock.sendall(b"x%d BOGUS\r\n" % n)
        except OSError:
            break
    try:
        while chunk := sock.recv(4096):
            out += chunk
    except OSError:
        pass
    assert b"* BYE" in out
    sock.close()


# ------------------------------------------------------------------------- folders


def test_special_use_folders_exist_and_list_reports_them(imapd: Imapd) -> None:
    client = imapd.client()
    typ, listing = client.list()
    assert typ == "OK"
    text = b"\n".join(listing).decode()
    for name, use in [("Sent", "\\Sent"), ("Drafts", "\\Drafts"), ("Trash", "\\Trash"), ("Junk", "\\Junk")]:
        assert re.search(rf'\(.*\{use}.*\) "\." {name}', text), text
    assert "INBOX" in text
    typ, data = client.list('""', '""')
    assert data == [b'(\\Noselect) "." ""']
    client.logout()


def test_create_rename_delete_subscribe(imapd: Imapd) -> None:
    client = imapd.client()
    assert client.create("Projects.2026")[0] == "OK"
    assert client.create("Projects")[0] == "NO"  # exists already (made as the parent)
    assert client.rename("Projects", "Archive.Projects")[0] == "OK"
    _, listing = client.list('""', "Archive.*")
    assert b'"." Archive.Projects.2026' in b" ".join(listing)
    assert client.subscribe("Archive.Projects")[0] == "OK"
    _typ, lsub = client.lsub('""', "*")
    assert any(b"Archive.Projects" in line for line in lsub)
    assert client.delete("Archive.Projects.2026")[0] == "OK"
    assert client.select("Archive.Projects.2026")[0] == "NO"
    assert client.create("../escape")[0] == "NO"
    assert client.create("a/b")[0] == "NO"
    assert client.delete("INBOX")[0] == "NO"
    assert not (imapd.store.parent / "escape").exists()
    client.logout()


def test_utf7_folder_names_round_trip(imapd: Imapd) -> None:
    client = imapd.client()
    assert client.create("&AMQ-rger")[0] == "OK"  # "Ärger" in modified UTF-7
    _typ, listing = client.list('""', "*")
    assert any(line.endswith(b"&AMQ-rger") for line in listing)
    assert (imapd.maildir(ALICE) / ".&AMQ-rger" / "cur").is_dir()
    client.logout()


def test_status_counts(imapd: Imapd) -> None:
    for n in range(3):
        imapd.deliver(ALICE, message(f"status {n}"))
    client = imapd.client()
    typ, data = client.status("INBOX", "(MESSAGES UNSEEN UIDNEXT UIDVALIDITY HIGHESTMODSEQ SIZE)")
    assert typ == "OK"
    text = data[0].decode()
    assert "MESSAGES 3" in text and "UNSEEN 3" in text and "UIDNEXT 4" in text
    size = sum(len(message(f"status {n}")) + message(f"status {n}").count(b"\n") for n in range(3))
    assert f"SIZE {size}" in text
    client.logout()


# ------------------------------------------------------------------------- messages


def test_select_fetch_and_seen(imapd: Imapd) -> None:
    first = message("first", "Line one.\nLine two.\n")
    imapd.deliver(ALICE, first)
    imapd.deliver(ALICE, message("second"))
    client = imapd.client()
    typ, data = client.select("INBOX")
    assert typ == "OK" and data == [b"2"]
    assert client.untagged_responses.get("UIDVALIDITY")
    typ, data = client.fetch("1", "(UID FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert typ == "OK"
    head = data[0][0].decode()
    assert "UID 1" in head and "FLAGS ()" in head
    assert f"RFC822.SIZE {len(first) + first.count(b'x') * 0 + len(first.splitlines())}" in head
    assert data[0][1] == b"Subject: first\r\n\r\n"
    typ, data = client.fetch("1", "(BODY[TEXT])")
    assert data[0][1] == b"Line one.\r\nLine two.\r\n"
    assert "\\Seen" in data[0][0].decode() or "\\Seen" in data[1].decode()
    typ, data = client.fetch("1:*", "(FLAGS)")
    assert b"\\Seen" in data[0] and b"\\Seen" not in data[1]
    # The flag is in the Maildir file name, where any Maildir tool sees it.
    assert any(name.endswith(":2,S") for name in (p.name for p in (imapd.maildir(ALICE) / "cur").iterdir()))
    client.logout()


def test_fetch_envelope_and_bodystructure(imapd: Imapd) -> None:
    imapd.deliver(ALICE, message("structure"))
    client = imapd.client()
    client.select("INBOX")
    _typ, data = client.fetch("1", "(ENVELOPE BODYSTRUCTURE)")
    text = data[0].decode() if isinstance(data[0], bytes) else data[0][0].decode()
    assert '"structure"' in text and '(("Carol" NIL "carol" "example.org"))' in text
    assert 'BODYSTRUCTURE ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 8 1' in text
    client.logout()


def test_out_of_range_sequence_numbers_are_bad(imapd: Imapd) -> None:
    imapd.deliver(ALICE, message("only"))
    client = imapd.client()
    client.select("INBOX")
    with pytest.raises(imaplib.IMAP4.error):
        client.fetch("5", "(FLAGS)")
    typ, data = client.uid("FETCH", "5", "(FLAGS)")  # a missing UID is no error (RFC 3501 6.4.8)
    assert typ == "OK" and data == [None]
    client.logout()


def test_store_copy_move_expunge_uidplus(imapd: Imapd) -> None:
    for n in range(4):
        imapd.deliver(ALICE, message(f"m{n}"))
    client = imapd.client()
    client.select("INBOX")
    typ, data = client.store("1:2", "+FLAGS", "(\\Flagged $Work)")
    assert typ == "OK" and b"\\Flagged" in data[0] and b"$Work" in data[0]
    typ, data = client.copy("1", "Archive")
    assert typ == "OK"
    assert re.match(rb"\[COPYUID \d+ 1 1\] ", data[0]), data
    typ, data = client.uid("MOVE", "2", "Trash")
    assert typ == "OK"
    typ, data = client.select("INBOX")
    assert data == [b"3"]
    client.store("1", "+FLAGS", "(\\Deleted)")
    typ, data = client.expunge()
    assert typ == "OK" and data == [b"1"]
    typ, data = client.select("Archive", readonly=True)
    assert data == [b"1"]
    typ, data = client.fetch("1", "(FLAGS)")
    assert b"\\Flagged" in data[0] and b"$Work" in data[0]
    typ, data = client.select("Trash")
    assert data == [b"1"]
    client.logout()


def test_append_with_flags_and_date_then_appenduid(imapd: Imapd) -> None:
    client = imapd.client()
    when = imaplib.Time2Internaldate(1_700_000_000)
    typ, data = client.append("Drafts", "(\\Draft \\Seen)", when, message("draft").replace(b"\n", b"\r\n"))
    assert typ == "OK" and b"APPENDUID" in data[0]
    client.select("Drafts")
    typ, data = client.fetch("1", "(FLAGS INTERNALDATE RFC822)")
    head = data[0][0].decode()
    assert "\\Draft" in head and "\\Seen" in head and "14-Nov-2023" in head
    assert data[0][1] == message("draft").replace(b"\n", b"\r\n")
    stored = next((imapd.maildir(ALICE) / ".Drafts" / "cur").iterdir()).read_bytes()
    assert b"\r" not in stored  # LF on disk, as every Maildir writer does
    typ, data = client.append("Nowhere", None, None, b"Subject: x\r\n\r\n")
    assert typ == "NO" and b"TRYCREATE" in data[0]
    client.logout()


def test_search_and_esearch(imapd: Imapd) -> None:
    imapd.deliver(ALICE, message("invoice 42", "Please pay.\n"))
    imapd.deliver(ALICE, message("lunch", "Pizza?\n", sender="dave@example.org"))
    client = imapd.client()
    client.select("INBOX")
    assert client.search(None, "SUBJECT", "invoice") == ("OK", [b"1"])
    assert client.search(None, "FROM", "dave") == ("OK", [b"2"])
    assert client.search(None, "BODY", "pizza") == ("OK", [b"2"])
    assert client.uid("SEARCH", "UNSEEN") == ("OK", [b"1 2"])
    typ, _data = client._simple_command("SEARCH", "RETURN", "(COUNT MIN)", "ALL")
    assert typ == "OK"
    assert b"COUNT 2" in client.untagged_responses["ESEARCH"][0]
    client.logout()


# ------------------------------------------------------------------------- sessions together


def test_two_sessions_see_each_others_changes(imapd: Imapd) -> None:
    for n in range(3):
        imapd.deliver(ALICE, message(f"shared {n}"))
    one, two = imapd.client(), imapd.client()
    one.select("INBOX")
    two.select("INBOX")
    one.store("2", "+FLAGS", "(\\Seen \\Deleted)")
    one.expunge()
    imapd.deliver(ALICE, message("late"))
    two.untagged_responses.clear()
    _typ, _ = two.noop()
    responses = two.untagged_responses
    assert responses.get("EXPUNGE") == [b"2"], responses
    assert responses.get("EXISTS") == [b"3"], responses
    one.logout()
    two.logout()


def test_idle_reports_new_mail_without_a_command(imapd: Imapd) -> None:
    client = imapd.client()
    client.select("INBOX")
    sock = client.socket()
    sock.sendall(b"i1 IDLE\r\n")
    assert client.readline().startswith(b"+")
    imapd.deliver(ALICE, message("pushed"))
    # The client sends nothing more: the EXISTS comes from the folder watcher (0.25 s polls);
    # how fast is the benchmark's business, here it must come at all.
    assert client.readline() == b"* 1 EXISTS\r\n"
    sock.sendall(b"DONE\r\n")
    assert client.readline().startswith(b"i1 OK")
    client.logout()


def test_condstore_and_qresync(imapd: Imapd) -> None:
    for n in range(3):
        imapd.deliver(ALICE, message(f"cs {n}"))
    client = imapd.client()
    assert client._simple_command("ENABLE", "QRESYNC")[0] == "OK"
    client.select("INBOX")
    uidvalidity = int(client.untagged_responses["UIDVALIDITY"][0])
    highest = int(client.untagged_responses["HIGHESTMODSEQ"][0])
    client.store("1", "+FLAGS", "(\\Seen)")
    client.store("3", "+FLAGS", "(\\Deleted)")
    client.expunge()
    client.close()
    client.untagged_responses.clear()
    typ, _ = client._simple_command("SELECT", "INBOX", f"(QRESYNC ({uidvalidity} {highest} 1:3))")
    assert typ == "OK"
    client.state = "SELECTED"  # imaplib does not know SELECT with parameters
    vanished = client.untagged_responses.get("VANISHED")
    assert vanished and b"(EARLIER) 3" in vanished[0]
    fetched = b" ".join(x for x in client.untagged_responses.get("FETCH", []) if isinstance(x, bytes))
    assert b"UID 1" in fetched and b"\\Seen" in fetched
    typ, _data = client.uid("FETCH", "1:*", f"(FLAGS) (CHANGEDSINCE {highest})")
    assert typ == "OK"
    client.logout()


def test_compress_deflate(imapd: Imapd) -> None:
    import zlib

    imapd.deliver(ALICE, message("compressed", "x" * 5000 + "\n"))
    sock = socket.create_connection(("127.0.0.1", imapd.imaps), timeout=10)
    tls = insecure().wrap_socket(sock, server_hostname="mail.example.test")
    tls.recv(4096)
    assert b"a OK" in exchange(tls, f'a LOGIN {ALICE} "{PASSWORD}"\r\n'.encode(), b"a ")
    assert b"b OK" in exchange(tls, b"b COMPRESS DEFLATE\r\n", b"b ")
    deflate, inflate = zlib.compressobj(6, zlib.DEFLATED, -15), zlib.decompressobj(-15)
    tls.sendall(
        deflate.compress(b"c SELECT INBOX\r\nd FETCH 1 BODY[]\r\n") + deflate.flush(zlib.Z_SYNC_FLUSH)
    )
    out = b""
    while b"d OK" not in out:
        out += inflate.decompress(tls.recv(65536))
    assert b"x" * 5000 in out
    tls.close()


def test_restart_keeps_uids_and_flags(imapd: Imapd) -> None:
    imapd.deliver(ALICE, message("keep"))
    client = imapd.client()
    client.select("INBOX")
    client.store("1", "+FLAGS", "(\\Answered)")
    uidvalidity = client.untagged_responses["UIDVALIDITY"][0]
    client.logout()
    imapd.process.terminate()
    imapd.process.wait(10)
    imapd.process = start_daemon("imapd", imapd.config, imapd.imap)
    client = imapd.client()
    client.select("INBOX")
    assert client.untagged_responses["UIDVALIDITY"][0] == uidvalidity
    _typ, data = client.uid("FETCH", "1", "(FLAGS)")
    assert b"\\Answered" in data[0]
    client.logout()


# ------------------------------------------------------------------------- hostile input


def test_login_timeout_says_bye(imapd: Imapd) -> None:
    sock = raw(imapd.imap)
    sock.settimeout(15)
    started = time.monotonic()
    data = sock.recv(4096)  # the fixture's login_timeout is 5 s
    assert data.startswith(b"* BYE") and b"Autologout" in data
    assert time.monotonic() - started >= 4
    sock.close()


def test_deep_nesting_nul_and_odd_names_are_refused_cleanly(imapd: Imapd) -> None:
    imapd.deliver(ALICE, message("target"))
    client = imapd.client()
    client.select("INBOX")
    tag = client._new_tag().decode()
    sock = client.socket()
    sock.sendall(tag.encode() + b" SEARCH " + b"(" * 200 + b"ALL" + b")" * 200 + b"\r\n")
    line = client.readline()
    while line.startswith(b"*"):
        line = client.readline()
    assert line.startswith(tag.encode() + b" BAD"), line
    sock.sendall(b'n1 CREATE "bad\\x00name"\r\n')
    assert client.readline().startswith(b"n1 ")  # a reply, not a crash
    for name in ["..", ".hidden", "a..b", "/etc", "INBOX/../../x", "&Jjo-/x", "x..", "."]:
        typ, _ = client.create(name)
        assert typ == "NO", name
    assert sorted(p.name for p in imapd.store.iterdir()) == ["example.test"]
    maildir_entries = {p.name for p in imapd.maildir(ALICE).iterdir()}
    assert not any(".." in e or "/" in e for e in maildir_entries)
    # NUL inside a quoted string is not IMAP: BAD, and the session goes on.
    sock.sendall(b'z1 SELECT "IN\x00BOX"\r\n')
    assert client.readline().startswith(b"z1 BAD")
    assert client.noop()[0] == "OK"
    client.logout()


def test_append_larger_than_the_limit_is_refused_before_sending(imapd: Imapd) -> None:
    client = imapd.client()
    sock = client.socket()
    sock.sendall(b"big APPEND INBOX {99999999999}\r\n")
    line = client.readline()
    assert line.startswith(b"big BAD") or line.startswith(b"big NO"), line
    sock.sendall(b"big2 APPEND INBOX {%d}\r\n" % (30 * 1024 * 1024))  # above max_message_size
    assert client.readline().startswith(b"big2 NO [TOOBIG]")
    assert client.noop()[0] == "OK"
    client.logout()


def test_sort_thread_and_searchres(imapd: Imapd) -> None:
    # Distinct arrival times: messages in the same second tie, and ties keep mailbox order.
    imapd.deliver(ALICE, message("b topic", "first\n"), when=1_700_000_000)
    imapd.deliver(ALICE, message("a topic", "second\n", sender="aaron@example.org"), when=1_700_000_100)
    reply = message("Re: b topic", "third\n").replace(
        b"\n\nthird", b"\nIn-Reply-To: <b.topic@example.org>\nReferences: <b.topic@example.org>\n\nthird"
    )
    imapd.deliver(ALICE, reply, when=1_700_000_200)
    client = imapd.client()
    client.select("INBOX")
    typ, data = client.sort("(SUBJECT)", "UTF-8", "ALL")
    assert typ == "OK" and data == [b"2 1 3"]
    typ, data = client.sort("(REVERSE ARRIVAL)", "UTF-8", "ALL")
    assert data == [b"3 2 1"]
    typ, data = client.thread("REFERENCES", "UTF-8", "ALL")
    assert typ == "OK" and data == [b"(1 3)(2)"], data
    typ, _ = client._simple_command("SEARCH", "RETURN", "(SAVE)", "FROM", "aaron")
    assert typ == "OK"
    typ, data = client.fetch("$", "(UID)")
    assert typ == "OK" and data == [b"2 (UID 2)"]
    typ, data = client._simple_command("SEARCH", "CHARSET", "KOI8-R", "ALL")
    assert typ == "NO" and b"BADCHARSET" in data[0]
    client.logout()


def test_large_message_round_trips_over_tls(imapd: Imapd) -> None:
    # Bulk data through the daemon's small TLS read buffer (daemon.TLS_READ_BUFFER_LONG_SESSIONS).
    body = b"".join(b"line %07d of a large attachment\r\n" % n for n in range(150_000))  # about 5 MB
    data = b"Subject: large\r\n\r\n" + body
    client = imapd.client()
    typ, _ = client.append("INBOX", None, None, data)
    assert typ == "OK"
    client.select("INBOX")
    typ, fetched = client.fetch("1", "(RFC822.SIZE BODY.PEEK[])")
    assert typ == "OK" and fetched[0][1] == data
    assert f"RFC822.SIZE {len(data)}".encode() in fetched[0][0]
    client.logout()


def test_pop3_deletion_and_smtp_delivery_reach_an_imap_session(imapd: Imapd) -> None:
    import poplib

    pop3s = yaml.safe_load(imapd.config.read_text())["pop3"]["listeners"][0]["port"]
    pop3d = start_daemon("pop3d", imapd.config, pop3s)
    try:
        for n in range(3):
            imapd.deliver(ALICE, message(f"pop {n}"))
        client = imapd.client()
        client.select("INBOX")
        pop = poplib.POP3_SSL("127.0.0.1", pop3s, context=insecure(), timeout=10)
        pop.user(ALICE)
        pop.pass_(PASSWORD)
        pop.dele(1)
        pop.quit()  # the deletion happens here (UPDATE state)
        client.untagged_responses.clear()
        client.noop()
        assert client.untagged_responses.get("EXPUNGE") == [b"1"]
        typ, data = client.fetch("1:*", "(UID)")
        assert typ == "OK" and [d.decode() for d in data] == ["1 (UID 2)", "2 (UID 3)"]
        imapd.deliver(ALICE, message("after pop"))
        client.untagged_responses.clear()
        client.noop()
        assert client.untagged_responses.get("EXISTS") == [b"3"]
        typ, data = client.fetch("3", "(UID)")
        assert data == [b"3 (UID 4)"]  # a new UID: 1 is never used again
        client.logout()
    finally:
        pop3d.terminate()
        pop3d.wait(10)


def test_list_extended_recursivematch_and_overlong_lines(imapd: Imapd) -> None:
    client = imapd.client()
    client.create("Lists.python")
    client.create("Lists.rust")
    client.subscribe("Lists.python")
    typ, _ = client._simple_command("LIST", "(SUBSCRIBED RECURSIVEMATCH)", '""', "%")
    assert typ == "OK"
    lines = client.untagged_responses.pop("LIST", [])
    lists = [line for line in lines if b'"." Lists' in line]
    assert len(lists) == 1 and lists[0].endswith(b'"." Lists ("CHILDINFO" ("SUBSCRIBED"))'), lines
    typ, _ = client._simple_command("LIST", "(SUBSCRIBED)", '""', "*")
    lines = client.untagged_responses.pop("LIST", [])
    assert [line for line in lines if b"Lists" in line] == [
        b'(\\HasNoChildren \\Subscribed) "." Lists.python'
    ]
    # A command line longer than the limit gets BAD; the session goes on.
    sock = client.socket()
    sock.sendall(b"long NOOP " + b"x" * 70_000 + b"\r\n")
    line = client.readline()
    assert line.startswith((b"long BAD", b"* BAD")), line
    assert client.noop()[0] == "OK"
    client.logout()


def test_qresync_vanished_is_computed_on_ranges(imapd: Imapd) -> None:
    for n in range(6):
        imapd.deliver(ALICE, message(f"range {n}"))
    client = imapd.client()
    assert client._simple_command("ENABLE", "QRESYNC")[0] == "OK"
    client.select("INBOX")
    uidvalidity = int(client.untagged_responses["UIDVALIDITY"][0])
    client.uid("STORE", "2,4:5", "+FLAGS", "(\\Deleted)")
    client.expunge()
    client.close()
    for known, expected in [("1:*", b"2,4:5"), ("1:3,5", b"2,5"), ("6", None)]:
        client.untagged_responses.clear()
        typ, _ = client._simple_command("SELECT", "INBOX", f"(QRESYNC ({uidvalidity} 1 {known}))")
        assert typ == "OK"
        client.state = "SELECTED"
        vanished = client.untagged_responses.get("VANISHED")
        assert (vanished == [b"(EARLIER) " + expected]) if expected else not vanished, (known, vanished)
        client.close()
    client.logout()
