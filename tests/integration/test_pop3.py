"""The pop3d daemon on loopback: poplib over STLS (110) and implicit TLS (995), raw sockets for
what poplib will not send, and the real clients fetchmail and getmail6."""

from __future__ import annotations

import base64
import getpass
import os
import poplib
import shutil
import socket
import ssl
import subprocess
import tempfile
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


def start_pop3d(config: Path, port: int) -> subprocess.Popen:
    return start_daemon("pop3d", config, port)


@dataclass
class Pop3d:
    pop3: int
    pop3s: int
    store: Path
    config: Path
    process: subprocess.Popen

    def maildir(self, address: str) -> Path:
        local, domain = address.split("@")
        return self.store / domain / local

    def deliver(self, address: str, data: bytes) -> None:
        Maildir(self.maildir(address)).deliver(data)

    def folder(self, address: str) -> Folder:
        return Folder(self.maildir(address))

    def restart(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        self.process = start_pop3d(self.config, self.pop3)

    def alive(self) -> bool:
        if self.process.poll() is not None:
            return False
        with socket.create_connection(("127.0.0.1", self.pop3), timeout=5) as sock:
            return sock.recv(100).startswith(b"+OK")

    def log(self) -> str:
        return self.config.with_suffix(".log").read_text()


@pytest.fixture
def pop3d(tmp_path: Path, tls_files: tuple[Path, Path]) -> Iterator[Pop3d]:
    pop3, pop3s = free_port(), free_port()
    store = tmp_path / "mail"
    data = config_data(store, free_port(), tls_files)
    data["pop3"] = {
        "listeners": [
            {"name": "pop3", "address": "127.0.0.1", "port": pop3},
            {"name": "pop3s", "address": "127.0.0.1", "port": pop3s},
        ],
        "limits": {"max_errors": 5, "login_timeout": 5},
    }
    config = tmp_path / "mailroom.yml"
    config.write_text(yaml.safe_dump(data))
    server = Pop3d(pop3, pop3s, store, config, start_pop3d(config, pop3))
    yield server
    alive = server.process.poll() is None
    server.process.terminate()
    server.process.wait(10)
    assert alive, server.log()
    assert "Traceback" not in server.log()


MESSAGE_1 = b"From: x@remote.test\nSubject: one\n\nfirst line\n.starts with a dot\n..two dots\nlast\n"
MESSAGE_2 = b"From: y@remote.test\nSubject: two\n\nbody of two\n"


def with_mail(pop3d: Pop3d, *messages: bytes) -> None:
    for message in messages:
        pop3d.deliver(ALICE, message)
        time.sleep(0.002)  # distinct delivery times: a stable order of arrival


def stls_login(pop3d: Pop3d, user: str = ALICE) -> poplib.POP3:
    for _ in range(50):
        client = poplib.POP3("127.0.0.1", pop3d.pop3, timeout=10)
        client.stls(insecure())
        client.user(user)
        try:
            client.pass_(PASSWORD)
            return client
        except poplib.error_proto as exc:
            client.close()
            if b"[IN-USE]" not in exc.args[0]:
                raise
            time.sleep(0.1)  # the previous session's close is still on its way
    raise AssertionError("maildrop stayed in use")


def ssl_login(pop3d: Pop3d) -> poplib.POP3_SSL:
    client = poplib.POP3_SSL("127.0.0.1", pop3d.pop3s, timeout=10, context=insecure())
    client.user(ALICE)
    client.pass_(PASSWORD)
    return client


def crlf(message: bytes) -> bytes:
    return message.replace(b"\n", b"\r\n")


# ----------------------------------------------------------------------------- the basics


def test_110_refuses_login_before_stls_and_does_not_advertise_it(pop3d: Pop3d) -> None:
    client = poplib.POP3("127.0.0.1", pop3d.pop3, timeout=10)
    caps = client.capa()
    assert "STLS" in caps and "USER" not in caps and "SASL" not in caps
    for command in ("USER " + ALICE, "PASS " + PASSWORD, "AUTH PLAIN", "AUTH"):
        with pytest.raises(poplib.error_proto) as info:
            client._shortcmd(command)
        assert info.value.args[0].startswith(b"-ERR [AUTH] ")
    client.stls(insecure())
    caps = client.capa()
    assert "STLS" not in caps
    assert caps["SASL"] == ["PLAIN"] and "USER" in caps and "TOP" in caps and "UIDL" in caps
    assert "RESP-CODES" in caps and "AUTH-RESP-CODE" in caps and "PIPELINING" in caps
    with pytest.raises(poplib.error_proto):
        client.stls(insecure())  # once only
    client.user(ALICE)
    assert client.pass_(PASSWORD).startswith(b"+OK")
    client.quit()


def test_995_implicit_tls_without_stls(pop3d: Pop3d) -> None:
    with_mail(pop3d, MESSAGE_1)
    client = poplib.POP3_SSL("127.0.0.1", pop3d.pop3s, timeout=10, context=insecure())
    caps = client.capa()
    assert "STLS" not in caps and "USER" in caps
    client.user(ALICE)
    client.pass_(PASSWORD)
    assert client.stat() == (1, len(crlf(MESSAGE_1)))
    client.quit()


def test_stat_list_retr_sizes_are_octets_as_sent_and_dots_are_stuffed(pop3d: Pop3d) -> None:
    with_mail(pop3d, MESSAGE_1, MESSAGE_2)
    client = stls_login(pop3d)
    sizes = [len(MESSAGE_1) + MESSAGE_1.count(b"\n"), len(MESSAGE_2) + MESSAGE_2.count(b"\n")]
    assert client.stat() == (2, sum(sizes))
    assert client.list()[1] == [f"1 {sizes[0]}".encode(), f"2 {sizes[1]}".encode()]
    assert client.list(2) == f"+OK 2 {sizes[1]}".encode()
    # poplib removes the stuffing: the lines are the message's own.
    _, lines, _ = client.retr(1)
    assert b"\r\n".join(lines) + b"\r\n" == crlf(MESSAGE_1)
    # On the wire, lines starting with '.' got one more.
    client.sock.sendall(b"RETR 1\r\n")
    client.file.readline()
    wire = b""
    while not wire.endswith(b"\r\n.\r\n"):
        wire += client.file.readline()
    assert b"\r\n..starts with a dot\r\n...two dots\r\n" in wire
    with pytest.raises(poplib.error_proto):
        client.retr(3)
    with pytest.raises(poplib.error_proto):
        client.list(0)
    client.quit()


def test_auth_plain_with_initial_response_and_with_continuation(pop3d: Pop3d) -> None:
    token = base64.b64encode(f"\0{ALICE}\0{PASSWORD}".encode()).decode()
    client = poplib.POP3_SSL("127.0.0.1", pop3d.pop3s, timeout=10, context=insecure())
    assert client._shortcmd(f"AUTH PLAIN {token}").startswith(b"+OK")
    client.quit()
    client = poplib.POP3("127.0.0.1", pop3d.pop3, timeout=10)
    client.stls(insecure())
    assert client._shortcmd("AUTH PLAIN") == b"+ "
    assert client._shortcmd(token).startswith(b"+OK")
    client.quit()
    # Cancelled, bad base64, someone else's authorization identity, wrong password.
    client = poplib.POP3_SSL("127.0.0.1", pop3d.pop3s, timeout=10, context=insecure())
    assert client._shortcmd("AUTH PLAIN") == b"+ "
    with pytest.raises(poplib.error_proto):
        client._shortcmd("*")
    bad = [
        "AUTH PLAIN !!!notbase64",
        "AUTH PLAIN " + base64.b64encode(f"{BOB}\0{ALICE}\0{PASSWORD}".encode()).decode(),
        "AUTH PLAIN " + base64.b64encode(f"\0{ALICE}\0wrong".encode()).decode(),
    ]
    for command in bad:
        with pytest.raises(poplib.error_proto) as info:
            client._shortcmd(command)
        assert info.value.args[0].startswith(b"-ERR [AUTH] ")
    with pytest.raises(poplib.error_proto) as info:
        client._shortcmd("AUTH LOGIN")
    client.close()


def test_wrong_password_and_unknown_user_look_the_same(pop3d: Pop3d) -> None:
    replies = []
    for user, password in ((ALICE, "wrong"), ("nobody@example.test", PASSWORD)):
        client = poplib.POP3_SSL("127.0.0.1", pop3d.pop3s, timeout=10, context=insecure())
        assert client.user(user).startswith(b"+OK")
        with pytest.raises(poplib.error_proto) as info:
            client.pass_(password)
        replies.append(info.value.args[0])
        client.close()
    assert replies[0] == replies[1] == b"-ERR [AUTH] Authentication failed"


def test_top_gives_headers_blank_line_and_n_body_lines(pop3d: Pop3d) -> None:
    with_mail(pop3d, MESSAGE_1)
    client = stls_login(pop3d)
    assert client.top(1, 0)[1] == [b"From: x@remote.test", b"Subject: one", b""]
    assert client.top(1, 2)[1][-2:] == [b"first line", b".starts with a dot"]
    assert client.top(1, 100)[1] == crlf(MESSAGE_1).split(b"\r\n")[:-1]
    client.quit()
    # TOP is not a retrieval: the message stays unseen.
    [info] = pop3d.folder(ALICE).messages()
    assert "\\Seen" not in info.flags


def test_uidl_is_uidvalidity_dot_uid_and_stable_across_sessions_and_restart(pop3d: Pop3d) -> None:
    with_mail(pop3d, MESSAGE_1, MESSAGE_2)
    client = stls_login(pop3d)
    first = client.uidl()[1]
    assert client.uidl(2).split()[-1] == first[1].split()[-1]
    client.quit()
    folder = pop3d.folder(ALICE)
    folder.sync()
    expected = [
        f"{n} {folder.uidvalidity}.{info.uid}".encode() for n, info in enumerate(folder.messages(), 1)
    ]
    assert first == expected
    assert all(len(line.split()[1]) <= 70 for line in first)
    client = ssl_login(pop3d)
    assert client.uidl()[1] == first
    client.quit()
    pop3d.restart()
    client = stls_login(pop3d)
    assert client.uidl()[1] == first
    # After a deletion the numbers shift but the unique-ids stay with their messages.
    client.dele(1)
    client.quit()
    client = stls_login(pop3d)
    assert client.uidl()[1] == [b"1 " + first[1].split()[1]]
    client.quit()


def test_dele_takes_effect_only_at_quit_and_rset_undoes_it(pop3d: Pop3d) -> None:
    with_mail(pop3d, MESSAGE_1, MESSAGE_2)
    client = stls_login(pop3d)
    client.dele(1)
    assert client.stat() == (1, len(crlf(MESSAGE_2)))
    assert client.list()[1] == [f"2 {len(crlf(MESSAGE_2))}".encode()]
    for command in (client.retr, client.dele, client.list):
        with pytest.raises(poplib.error_proto):
            command(1)
    client.rset()
    assert client.stat()[0] == 2
    client.dele(2)
    assert len(list((pop3d.maildir(ALICE) / "cur").iterdir())) == 2  # nothing removed yet
    assert client.quit().startswith(b"+OK")
    folder = pop3d.folder(ALICE)
    folder.sync()
    [left] = folder.messages()
    assert folder.read(left.uid) == MESSAGE_1


def test_a_dropped_connection_deletes_nothing(pop3d: Pop3d) -> None:
    with_mail(pop3d, MESSAGE_1, MESSAGE_2)
    client = stls_login(pop3d)
    client.dele(1)
    client.dele(2)
    client.sock.shutdown(socket.SHUT_RDWR)  # no QUIT
    client.close()
    client = stls_login(pop3d)  # also: the lock is released when the connection drops
    assert client.stat()[0] == 2
    client.quit()


def test_a_second_session_gets_in_use_until_the_first_ends(pop3d: Pop3d) -> None:
    with_mail(pop3d, MESSAGE_1)
    first = stls_login(pop3d)
    second = poplib.POP3_SSL("127.0.0.1", pop3d.pop3s, timeout=10, context=insecure())
    second.user(ALICE)
    with pytest.raises(poplib.error_proto) as info:
        second.pass_(PASSWORD)
    assert info.value.args[0].startswith(b"-ERR [IN-USE] ")
    # Another user is not affected.
    other = poplib.POP3_SSL("127.0.0.1", pop3d.pop3s, timeout=10, context=insecure())
    other.user(BOB)
    assert other.pass_(PASSWORD).startswith(b"+OK")
    other.quit()
    first.quit()
    second.user(ALICE)  # still in AUTHORIZATION: it may try again
    assert second.pass_(PASSWORD).startswith(b"+OK")
    second.quit()


def test_pop3_deletion_is_an_expunge_imap_sees(pop3d: Pop3d) -> None:
    with_mail(pop3d, MESSAGE_1, MESSAGE_2)
    imap_view = pop3d.folder(ALICE)
    imap_view.sync()
    uids = [info.uid for info in imap_view.messages()]
    client = stls_login(pop3d)
    client.retr(2)
    client.dele(1)
    client.quit()
    result = imap_view.sync()
    assert result.expunged_uids == [uids[0]]
    [left] = imap_view.messages()
    assert left.uid == uids[1] and "\\Seen" in left.flags  # RETR marks it read
    assert not [n for n in os.listdir(pop3d.maildir(ALICE) / "cur") if f",U={uids[0]}," in n]


def test_a_message_expunged_elsewhere_is_not_listed_next_session(pop3d: Pop3d) -> None:
    with_mail(pop3d, MESSAGE_1, MESSAGE_2)
    client = stls_login(pop3d)
    uidls = client.uidl()[1]
    client.quit()
    folder = pop3d.folder(ALICE)
    folder.sync()
    first = folder.messages()[0].uid
    folder.store_flags([first], ["\\Deleted"], "add")
    assert folder.expunge() == [first]
    client = stls_login(pop3d)
    assert client.uidl()[1] == [b"1 " + uidls[1].split()[1]]
    client.quit()


def test_mail_arriving_during_a_session_shows_in_the_next(pop3d: Pop3d) -> None:
    with_mail(pop3d, MESSAGE_1)
    client = stls_login(pop3d)
    with_mail(pop3d, MESSAGE_2)
    assert client.stat()[0] == 1
    client.dele(1)
    client.quit()
    client = stls_login(pop3d)
    assert client.stat() == (1, len(crlf(MESSAGE_2)))
    client.quit()


def test_messages_are_sent_with_crlf_even_without_a_final_line_end(pop3d: Pop3d) -> None:
    odd = b"Subject: odd\n\nno final newline"
    with_mail(pop3d, odd)
    client = stls_login(pop3d)
    size = client.stat()[1]
    _, lines, _ = client.retr(1)
    assert size == len(b"\r\n".join(lines) + b"\r\n") == len(odd) + odd.count(b"\n") + 2
    client.quit()


# ----------------------------------------------------------------------------- hostile clients


class Raw:
    """Writes exactly the bytes given; reads lines."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.sock: socket.socket | ssl.SSLSocket = socket.create_connection(
            ("127.0.0.1", port), timeout=timeout
        )
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes:
        while b"\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                rest, self.buffer = self.buffer, b""
                return rest
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.rstrip(b"\r")

    def closed(self) -> bool:
        try:
            while True:
                if not self.sock.recv(65536):
                    return True
        except (ConnectionResetError, ssl.SSLError):
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self.sock.close()


def test_an_over_long_line_gets_err_and_the_session_goes_on(pop3d: Pop3d) -> None:
    client = Raw(pop3d.pop3)
    assert client.line().startswith(b"+OK")
    client.send(b"NOOP " + b"x" * 300 + b"\r\n")
    assert client.line() == b"-ERR Line too long"
    client.send(b"x" * 20_000 + b"\r\n")  # longer than the stream buffer: read past, not kept
    assert client.line() == b"-ERR Line too long"
    client.send(b"CAPA\r\n")
    assert client.line().startswith(b"+OK")
    client.close()
    assert pop3d.alive()


def test_a_line_without_end_is_not_buffered_forever(pop3d: Pop3d) -> None:
    client = Raw(pop3d.pop3)
    client.line()
    with pytest.raises((BrokenPipeError, ConnectionResetError)):
        for _ in range(100):
            client.send(b"y" * 65536)  # no line end at all
    client.close()
    assert pop3d.alive()


def test_too_many_bad_commands_close_the_connection(pop3d: Pop3d) -> None:
    client = Raw(pop3d.pop3)
    client.line()
    client.send(b"".join([b"BOGUS\r\n", b"RETR 1\r\n", b"\xff\xfe\r\n", b"X\r\n", b"APOP a b\r\n"]))
    replies = [client.line() for _ in range(6)]
    assert all(reply.startswith(b"-ERR") for reply in replies)
    assert replies[-1] == b"-ERR Too many errors, closing connection"
    assert client.closed()
    assert pop3d.alive()


def test_commands_pipelined_behind_stls_are_discarded(pop3d: Pop3d) -> None:
    client = Raw(pop3d.pop3)
    client.line()
    client.send(b"STLS\r\nUSER injected@example.test\r\nCAPA\r\n")
    assert client.line() == b"+OK Begin TLS negotiation"
    assert client.buffer == b""
    client.sock = insecure().wrap_socket(client.sock, server_hostname="mail.example.test")
    client.send(b"PASS " + PASSWORD.encode() + b"\r\n")
    # Had the plaintext USER survived, this PASS would be tried for it; it must be out of order.
    assert client.line() == b"-ERR USER first"
    client.send(b"NOOP\r\n")
    assert client.line().startswith(b"-ERR")  # NOOP is a TRANSACTION command: nothing else arrived
    client.close()
    assert pop3d.alive()


def test_pipelined_commands_after_login_are_answered_in_order(pop3d: Pop3d) -> None:
    with_mail(pop3d, MESSAGE_1, MESSAGE_2)
    client = Raw(pop3d.pop3s)
    client.sock = insecure().wrap_socket(client.sock, server_hostname="mail.example.test")
    client.line()
    client.send(f"USER {ALICE}\r\nPASS {PASSWORD}\r\nSTAT\r\nDELE 1\r\nSTAT\r\nNOOP\r\n".encode())
    replies = [client.line() for _ in range(6)]
    assert [r.split()[0] for r in replies] == [b"+OK"] * 6
    assert replies[2].split()[1] == b"2" and replies[4].split()[1] == b"1"
    client.close()


def test_idle_clients_are_disconnected_before_login(pop3d: Pop3d) -> None:
    client = Raw(pop3d.pop3, timeout=15)
    client.line()
    started = time.monotonic()
    assert client.line().startswith(b"-ERR")  # login_timeout is 5 s in this configuration
    assert 4 < time.monotonic() - started < 10
    assert client.closed()


def test_garbage_instead_of_a_tls_handshake_on_995(pop3d: Pop3d) -> None:
    client = Raw(pop3d.pop3s)
    client.send(b"USER alice\r\n" * 10)
    assert client.closed()
    assert pop3d.alive()


# ----------------------------------------------------------------------------- real clients

FETCHMAIL = shutil.which("fetchmail")
GETMAIL = shutil.which("getmail")


def run_fetchmail(pop3d: Pop3d, home: Path, keep: bool) -> tuple[int, str, list[Path]]:
    """One fetchmail poll over STLS on the pop3 port; returns (exit code, output, files delivered)."""
    home.mkdir(exist_ok=True)
    out = home / "out"
    out.mkdir(exist_ok=True)
    mda = home / "mda.sh"
    mda.write_text(f'#!/bin/sh\nexec cat > "$(mktemp -p {out} msg.XXXXXXXX)"\n')
    mda.chmod(0o700)
    rc = home / "fetchmailrc"
    rc.write_text(
        "set no bouncemail\n"
        f"poll 127.0.0.1 with service {pop3d.pop3} protocol POP3 uidl auth password timeout 30\n"
        f'  user "{ALICE}" there with password "{PASSWORD}" is "{getpass.getuser()}" here\n'
        '  sslproto "tls1.2+" no sslcertck\n'
        f"  {'keep' if keep else 'nokeep fetchall'}\n"
        f'  mda "{mda}"\n'
    )
    rc.chmod(0o600)
    before = set(out.iterdir())
    env = {**os.environ, "HOME": str(home), "FETCHMAILHOME": str(home)}
    result = subprocess.run(
        [FETCHMAIL or "fetchmail", "-v", "--nosyslog", "-f", str(rc), "--idfile", str(home / "fetchids")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    return result.returncode, result.stdout + result.stderr, sorted(set(out.iterdir()) - before)


@pytest.fixture
def getmail_maildir() -> Iterator[Path]:
    """getmail will not deliver as root; as root it delivers as nobody, who cannot reach pytest's
    private temporary directories, so the Maildir it writes to lives in one of its own."""
    top = Path(tempfile.mkdtemp(prefix="mailroom-getmail-"))
    top.chmod(0o755)
    out = top / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (out / sub).mkdir(parents=True)
        if os.geteuid() == 0:
            shutil.chown(out / sub, "nobody")
    if os.geteuid() == 0:
        shutil.chown(out, "nobody")
    yield out
    shutil.rmtree(top)


def run_getmail(pop3d: Pop3d, home: Path, out: Path, delete: bool) -> tuple[int, str, list[Path]]:
    """One getmail6 run over implicit TLS on the pop3s port into a Maildir."""
    home.mkdir(exist_ok=True)
    rc = home / "getmailrc"
    rc.write_text(
        "[retriever]\n"
        "type = SimplePOP3SSLRetriever\n"
        "server = 127.0.0.1\n"
        f"port = {pop3d.pop3s}\n"
        f"username = {ALICE}\n"
        f"password = {PASSWORD}\n"
        "[destination]\n"
        "type = Maildir\n"
        f"path = {out}/\n" + ("user = nobody\n" if os.geteuid() == 0 else "") + "[options]\n"
        # getmail will not deliver as root: it changes to this user for the delivery.
        "verbose = 2\n"
        "read_all = false\n"
        f"delete = {'true' if delete else 'false'}\n"
    )
    before = set((out / "new").iterdir())
    result = subprocess.run(
        [GETMAIL or "getmail", "--rcfile", str(rc), "--getmaildir", str(home)],
        capture_output=True,
        text=True,
        env={**os.environ, "HOME": str(home)},
        timeout=120,
        check=False,
    )
    return result.returncode, result.stdout + result.stderr, sorted(set((out / "new").iterdir()) - before)


def inbox(pop3d: Pop3d) -> list[bytes]:
    folder = pop3d.folder(ALICE)
    folder.sync()
    return [folder.read(info.uid) for info in folder.messages()]


@pytest.mark.skipif(FETCHMAIL is None, reason="fetchmail is not installed (apt-get install fetchmail)")
def test_fetchmail_keep_mode_fetches_each_message_once(pop3d: Pop3d, tmp_path: Path) -> None:
    with_mail(pop3d, MESSAGE_1, MESSAGE_2)
    code, output, got = run_fetchmail(pop3d, tmp_path / "fetchmail", keep=True)
    assert code == 0 and len(got) == 2, output
    assert "STLS" in output
    # fetchmail adds a Received: line on top; the rest is the message as stored, dots and all.
    assert sorted(p.read_bytes().split(b"\nFrom: ", 1)[1] for p in got) == sorted(
        [MESSAGE_1.removeprefix(b"From: "), MESSAGE_2.removeprefix(b"From: ")]
    )
    code, output, got = run_fetchmail(pop3d, tmp_path / "fetchmail", keep=True)
    assert code == 1 and got == [], output  # 1: no new mail
    third = b"From: z@remote.test\nSubject: three\n\nthird\n"
    with_mail(pop3d, third)
    code, output, got = run_fetchmail(pop3d, tmp_path / "fetchmail", keep=True)
    assert code == 0 and len(got) == 1 and got[0].read_bytes().endswith(third), output
    assert len(inbox(pop3d)) == 3  # kept on the server


@pytest.mark.skipif(FETCHMAIL is None, reason="fetchmail is not installed (apt-get install fetchmail)")
def test_fetchmail_delete_mode_empties_the_maildir(pop3d: Pop3d, tmp_path: Path) -> None:
    with_mail(pop3d, MESSAGE_1, MESSAGE_2)
    code, output, got = run_fetchmail(pop3d, tmp_path / "fetchmail", keep=False)
    assert code == 0 and len(got) == 2, output
    assert inbox(pop3d) == []
    assert os.listdir(pop3d.maildir(ALICE) / "cur") == []


@pytest.mark.skipif(GETMAIL is None, reason="getmail6 is not installed (apt-get install getmail6)")
def test_getmail_keep_mode_fetches_each_message_once(
    pop3d: Pop3d, tmp_path: Path, getmail_maildir: Path
) -> None:
    with_mail(pop3d, MESSAGE_1, MESSAGE_2)
    code, output, got = run_getmail(pop3d, tmp_path / "getmail", getmail_maildir, delete=False)
    assert code == 0 and len(got) == 2, output
    assert all(b"Subject: " in p.read_bytes() for p in got)
    code, output, got = run_getmail(pop3d, tmp_path / "getmail", getmail_maildir, delete=False)
    assert code == 0 and got == [], output
    third = b"From: z@remote.test\nSubject: three\n\nthird\n"
    with_mail(pop3d, third)
    code, output, got = run_getmail(pop3d, tmp_path / "getmail", getmail_maildir, delete=False)
    assert code == 0 and len(got) == 1 and got[0].read_bytes().endswith(b"\n\nthird\n"), output
    assert len(inbox(pop3d)) == 3


@pytest.mark.skipif(GETMAIL is None, reason="getmail6 is not installed (apt-get install getmail6)")
def test_getmail_delete_mode_empties_the_maildir(pop3d: Pop3d, tmp_path: Path, getmail_maildir: Path) -> None:
    with_mail(pop3d, MESSAGE_1, MESSAGE_2)
    code, output, got = run_getmail(pop3d, tmp_path / "getmail", getmail_maildir, delete=True)
    assert code == 0 and len(got) == 2, output
    assert inbox(pop3d) == []
    assert os.listdir(pop3d.maildir(ALICE) / "cur") == []


# ----------------------------------------------------------------------------- deadline, metrics


def test_the_session_deadline_ends_a_busy_session_without_deleting(
    tmp_path: Path, tls_files: tuple[Path, Path]
) -> None:
    port = free_port()
    data = config_data(tmp_path / "mail", free_port(), tls_files)
    data["pop3"] = {
        "listeners": [{"name": "pop3s", "address": "127.0.0.1", "port": port}],
        "limits": {"session_timeout": 2},
    }
    data["metrics"] = {"state_dir": str(tmp_path / "metrics")}
    config = tmp_path / "mailroom.yml"
    config.write_text(yaml.safe_dump(data))
    server = Pop3d(port, port, tmp_path / "mail", config, start_pop3d(config, port))
    try:
        with_mail(server, MESSAGE_1)
        client = ssl_login(server)
        client.retr(1)
        client.dele(1)
        started = time.monotonic()
        with pytest.raises((poplib.error_proto, OSError, EOFError)) as info:
            while time.monotonic() - started < 10:
                client.noop()  # busy, never idle
                time.sleep(0.2)
        assert "time limit" in str(info.value) or not isinstance(info.value, poplib.error_proto)
        assert time.monotonic() - started < 5
        client.close()
        assert len(inbox(server)) == 1
        # A wrong password, for the metrics below.
        bad = poplib.POP3_SSL("127.0.0.1", port, timeout=10, context=insecure())
        bad.user(ALICE)
        with pytest.raises(poplib.error_proto):
            bad.pass_("wrong")
        bad.close()
    finally:
        server.process.terminate()
        server.process.wait(10)
    from mailroom.metricsd import render

    text = render(tmp_path / "metrics").decode()
    assert 'mailroom_pop3_sessions_total{listener="pop3s"} 2.0' in text
    assert 'mailroom_pop3_auth_attempts_total{result="success"} 1.0' in text
    assert 'mailroom_pop3_auth_attempts_total{result="failure"} 1.0' in text
    assert "mailroom_pop3_retrievals_total 1.0" in text
    assert "mailroom_pop3_deletions_total 0.0" in text
    assert "alice" not in text  # no per-user labels
