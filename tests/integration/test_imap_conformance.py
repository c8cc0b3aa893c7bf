"""imapd against the letter of the RFCs, on raw TLS connections: the exact untagged responses
and response codes that clients rely on (RFC 3501/9051, CONDSTORE/QRESYNC, UIDPLUS, MOVE,
LIST-EXTENDED, ESEARCH/SEARCHRES, IDLE, COMPRESS, APPENDLIMIT, MULTIAPPEND, ENABLE, SASL-IR)."""

from __future__ import annotations

import base64
import re
import socket
import ssl
import zlib
from email.utils import parsedate_to_datetime

from tests.conftest import PASSWORD, insecure
from tests.integration.test_imap import ALICE, Imapd, imapd, message

__all__ = ["imapd"]  # the fixture, imported for pytest


class Conn:
    """One raw IMAP connection over TLS: send a command, get (tagged line, untagged bytes)."""

    def __init__(self, server: Imapd, *, login: bool = True) -> None:
        sock = socket.create_connection(("127.0.0.1", server.imaps), timeout=10)
        self.sock: ssl.SSLSocket | socket.socket = insecure().wrap_socket(
            sock, server_hostname="mail.example.test"
        )
        self.buf = b""
        self.count = 0
        self.greeting = self.line()
        if login:
            tagged, _ = self.cmd(f'LOGIN "{ALICE}" "{PASSWORD}"')
            assert tagged.startswith(b"OK"), tagged

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        self.buf += chunk

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line + b"\r\n"

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def tag(self) -> str:
        self.count += 1
        return f"t{self.count}"

    def until(self, tag: str) -> tuple[bytes, bytes]:
        """Read up to the tagged response of tag: (its status and text, everything before)."""
        marker = tag.encode() + b" "
        before = b""
        while True:
            line = self.line()
            if line.startswith(marker):
                return line[len(marker) :].rstrip(b"\r\n"), before
            before += line

    def cmd(self, text: str | bytes) -> tuple[bytes, bytes]:
        tag = self.tag()
        data = text.encode() if isinstance(text, str) else text
        self.send(tag.encode() + b" " + data + b"\r\n")
        return self.until(tag)

    def ok(self, text: str | bytes) -> bytes:
        tagged, untagged = self.cmd(text)
        assert tagged.startswith(b"OK"), (text, tagged, untagged)
        return untagged

    def close(self) -> None:
        self.sock.close()


def fill(server: Imapd, count: int) -> None:
    for i in range(count):
        server.deliver(ALICE, message(f"m{i + 1}"))


# ------------------------------------------------------------------------- CONDSTORE (RFC 7162 3.1)


def test_store_unchangedsince_reports_modified_seqs_for_store_and_uids_for_uid_store(imapd: Imapd) -> None:
    fill(imapd, 3)
    conn = Conn(imapd)
    conn.ok("SELECT INBOX (CONDSTORE)")
    conn.ok("UID STORE 2 +FLAGS (\\Flagged)")  # message 2 is now newer than the others
    modseqs = conn.ok("FETCH 1,3 (MODSEQ)")
    low = max(int(m) for m in re.findall(rb"MODSEQ \((\d+)\)", modseqs))
    tagged, _ = conn.cmd(f"STORE 1:3 (UNCHANGEDSINCE {low}) +FLAGS (\\Seen)")
    assert tagged.startswith(b"OK [MODIFIED 2]"), tagged
    # Delete message 1 so that sequence numbers and UIDs differ.
    conn.ok("STORE 1 +FLAGS (\\Deleted)")
    conn.ok("EXPUNGE")
    untagged = conn.ok("UID FETCH 3 (MODSEQ)")
    low = int(re.search(rb"MODSEQ \((\d+)\)", untagged).group(1))  # type: ignore[union-attr]
    conn.ok("UID STORE 2 +FLAGS (\\Answered)")  # UID 2 is message 1 now
    tagged, _ = conn.cmd(f"STORE 1 (UNCHANGEDSINCE {low}) +FLAGS (\\Answered)")
    assert tagged.startswith(b"OK [MODIFIED 1]"), tagged
    tagged, _ = conn.cmd(f"UID STORE 2:3 (UNCHANGEDSINCE {low}) +FLAGS (\\Answered)")
    assert tagged.startswith(b"OK [MODIFIED 2]"), tagged
    tagged, untagged = conn.cmd("STORE 1:2 (UNCHANGEDSINCE 0) +FLAGS (\\Draft)")
    assert tagged.startswith(b"OK [MODIFIED 1:2]"), tagged
    assert b"Draft" not in untagged
    conn.close()


def test_fetch_changedsince_implies_modseq_and_unsolicited_fetch_carries_modseq(imapd: Imapd) -> None:
    fill(imapd, 2)
    conn, other = Conn(imapd), Conn(imapd)
    conn.ok("SELECT INBOX")
    untagged = conn.ok("FETCH 1:* (FLAGS) (CHANGEDSINCE 0)")
    assert untagged.count(b"MODSEQ (") == 2, untagged
    other.ok("SELECT INBOX")
    other.ok("STORE 1 +FLAGS (\\Flagged)")
    untagged = conn.ok("NOOP")
    assert re.search(rb"\* 1 FETCH \(.*FLAGS \(\\Flagged\).*MODSEQ \(\d+\)", untagged), untagged
    conn.close()
    other.close()


def test_select_condstore_reports_highestmodseq_and_search_modseq(imapd: Imapd) -> None:
    fill(imapd, 2)
    conn = Conn(imapd)
    # RFC 7162 3.1.2.1: HIGHESTMODSEQ on every successful SELECT/EXAMINE, CONDSTORE or not.
    assert b"* OK [HIGHESTMODSEQ " in conn.ok("EXAMINE INBOX")
    untagged = conn.ok("SELECT INBOX (CONDSTORE)")
    assert b"[HIGHESTMODSEQ " in untagged and b"NOMODSEQ" not in untagged
    conn.ok("STORE 2 +FLAGS (\\Flagged)")
    untagged = conn.ok("FETCH 2 (MODSEQ)")
    high = re.search(rb"MODSEQ \((\d+)\)", untagged).group(1)  # type: ignore[union-attr]
    untagged = conn.ok("SEARCH MODSEQ 1")
    assert untagged == b"* SEARCH 1 2 (MODSEQ " + high + b")\r\n", untagged
    conn.close()


# ------------------------------------------------------------------------- QRESYNC (RFC 7162 3.2)


def test_qresync_vanished_instead_of_expunge_and_changedsince_vanished(imapd: Imapd) -> None:
    fill(imapd, 4)
    conn = Conn(imapd)
    tagged, _ = conn.cmd("SELECT INBOX (QRESYNC (1 0))")
    assert tagged.startswith(b"BAD"), tagged  # QRESYNC parameters without ENABLE QRESYNC
    conn.ok("ENABLE QRESYNC")
    untagged = conn.ok("SELECT INBOX")
    uidvalidity = re.search(rb"UIDVALIDITY (\d+)", untagged).group(1).decode()  # type: ignore[union-attr]
    modseq = re.search(rb"HIGHESTMODSEQ (\d+)", untagged).group(1).decode()  # type: ignore[union-attr]
    conn.ok("STORE 2 +FLAGS (\\Deleted)")
    untagged = conn.ok("EXPUNGE")
    assert b"* VANISHED 2\r\n" in untagged and b"EXPUNGE" not in untagged, untagged
    untagged = conn.ok(f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {modseq} VANISHED)")
    assert b"* VANISHED (EARLIER) 2\r\n" in untagged, untagged
    untagged = conn.ok("EXAMINE Sent")
    assert untagged.startswith(b"* OK [CLOSED]"), untagged
    untagged = conn.ok(f"SELECT INBOX (QRESYNC ({uidvalidity} {modseq} 1:4 (1:3 1:3)))")
    assert b"* VANISHED (EARLIER) 2\r\n" in untagged, untagged
    conn.close()


# ------------------------------------------------------------------------- UIDPLUS (RFC 4315)


def test_multiappend_appenduid_has_a_uid_set_and_uid_expunge_keeps_undeleted(imapd: Imapd) -> None:
    conn = Conn(imapd)
    one, two = message("a"), message("b")
    conn.send(b"t100 APPEND INBOX {%d+}\r\n%b {%d+}\r\n%b\r\n" % (len(one), one, len(two), two))
    tagged, _ = conn.until("t100")
    assert re.match(rb"OK \[APPENDUID \d+ 1:2\]", tagged), tagged
    conn.ok("SELECT INBOX")
    conn.ok("STORE 1 +FLAGS (\\Deleted)")
    untagged = conn.ok("UID EXPUNGE 1:2")
    assert untagged == b"* 1 EXPUNGE\r\n", untagged
    conn.close()


def test_move_sends_copyuid_before_the_expunges(imapd: Imapd) -> None:
    fill(imapd, 2)
    conn = Conn(imapd)
    conn.ok("SELECT INBOX")
    untagged = conn.ok("MOVE 1:2 Trash")
    expected = rb"\* OK \[COPYUID \d+ 1:2 1:2\][^\r]*\r\n\* 2 EXPUNGE\r\n\* 1 EXPUNGE\r\n\Z"
    assert re.match(expected, untagged), untagged
    conn.close()


# ------------------------------------------------------------------------- sequence numbers


def test_no_expunge_during_fetch_store_search_but_expungeissued(imapd: Imapd) -> None:
    fill(imapd, 3)
    conn, other = Conn(imapd), Conn(imapd)
    conn.ok("SELECT INBOX")
    other.ok("SELECT INBOX")
    other.ok("STORE 2 +FLAGS (\\Deleted)")
    other.ok("EXPUNGE")
    tagged, untagged = conn.cmd("FETCH 1:3 (UID BODY.PEEK[])")
    assert b"EXPUNGE" not in untagged and b"* 3 FETCH (UID 3 " in untagged, untagged
    assert tagged.startswith(b"OK [EXPUNGEISSUED]"), tagged
    untagged = conn.ok("SEARCH ALL")
    assert b"EXPUNGE" not in untagged and b"* SEARCH 1 3\r\n" in untagged, untagged
    untagged = conn.ok("NOOP")
    assert untagged == b"* 2 EXPUNGE\r\n", untagged
    conn.close()
    other.close()


def test_star_in_an_empty_mailbox_and_reversed_uid_ranges(imapd: Imapd) -> None:
    conn = Conn(imapd)
    conn.ok("SELECT INBOX")
    tagged, untagged = conn.cmd("FETCH 1:* (FLAGS)")
    assert tagged.startswith(b"OK") and untagged == b""
    tagged, untagged = conn.cmd("UID FETCH 1:* (FLAGS)")
    assert tagged.startswith(b"OK") and untagged == b""
    fill(imapd, 3)
    conn.ok("NOOP")
    untagged = conn.ok("UID FETCH 3:2 (FLAGS)")
    assert untagged.count(b"FETCH") == 2
    untagged = conn.ok("UID FETCH 10:* (FLAGS)")  # n:* includes the largest UID (RFC 3501 6.4.8)
    assert b"* 3 FETCH" in untagged and untagged.count(b"FETCH") == 1, untagged
    conn.close()


def test_searchres_dollar_after_an_expunge(imapd: Imapd) -> None:
    fill(imapd, 3)
    conn = Conn(imapd)
    conn.ok("SELECT INBOX")
    conn.ok("SEARCH RETURN (SAVE) 2:3")
    conn.ok("STORE 2 +FLAGS (\\Deleted)")
    conn.ok("EXPUNGE")
    untagged = conn.ok("FETCH $ (UID)")
    assert untagged == b"* 2 FETCH (UID 3)\r\n", untagged
    conn.close()


# ------------------------------------------------------------------------- flags (RFC 3501 7.2.6)


def test_invalid_flags_are_refused_and_a_new_keyword_updates_flags(imapd: Imapd) -> None:
    fill(imapd, 1)
    conn, other = Conn(imapd), Conn(imapd)
    conn.ok("SELECT INBOX")
    other.ok("SELECT INBOX")
    tagged, _ = conn.cmd("STORE 1 +FLAGS (\\Bogus)")
    assert tagged.startswith((b"NO", b"BAD")), tagged
    untagged = conn.ok("STORE 1 +FLAGS (Important)")
    assert re.search(rb"\* FLAGS \([^)]*Important", untagged), untagged
    untagged = other.ok("NOOP")
    assert re.search(rb"\* FLAGS \([^)]*Important", untagged), untagged
    assert untagged.index(b"* FLAGS") < untagged.index(b"FETCH"), untagged
    conn.close()
    other.close()


def test_permanentflags_loses_star_when_26_keywords_exist(imapd: Imapd) -> None:
    fill(imapd, 1)
    conn = Conn(imapd)
    conn.ok("SELECT INBOX")
    words = " ".join(f"kw{i}" for i in range(26))
    conn.ok(f"STORE 1 +FLAGS ({words})")
    tagged, _ = conn.cmd("STORE 1 +FLAGS (onemore)")
    assert tagged.startswith(b"NO"), tagged
    untagged = conn.ok("SELECT INBOX")
    permanent = re.search(rb"PERMANENTFLAGS \(([^)]*)\)", untagged).group(1)  # type: ignore[union-attr]
    assert b"\\*" not in permanent and b"kw25" in permanent
    conn.close()


# ------------------------------------------------------------------------- EXAMINE (RFC 3501 6.3.2)


def test_examine_is_read_only(imapd: Imapd) -> None:
    fill(imapd, 1)
    conn = Conn(imapd)
    tagged, _ = conn.cmd("EXAMINE INBOX")
    assert tagged.startswith(b"OK [READ-ONLY]")
    untagged = conn.ok("FETCH 1 (BODY[])")
    assert b"\\Seen" not in untagged
    assert b"\\Seen" not in conn.ok("FETCH 1 (FLAGS)")
    for command in ("STORE 1 +FLAGS (\\Deleted)", "EXPUNGE", "MOVE 1 Trash", "UID EXPUNGE 1"):
        tagged, _ = conn.cmd(command)
        assert tagged.startswith(b"NO"), (command, tagged)
    conn.close()


# ------------------------------------------------------------------------- the folder tree


def test_rename_inbox_moves_the_messages_and_keeps_inbox(imapd: Imapd) -> None:
    fill(imapd, 2)
    conn = Conn(imapd)
    conn.ok("RENAME INBOX Old")
    assert b"* STATUS Old (MESSAGES 2)" in conn.ok("STATUS Old (MESSAGES)")
    assert b"* STATUS INBOX (MESSAGES 0)" in conn.ok("STATUS INBOX (MESSAGES)")
    conn.close()


def test_delete_with_children_and_create_with_trailing_separator(imapd: Imapd) -> None:
    conn = Conn(imapd)
    conn.ok("CREATE Parent.")  # RFC 3501 6.3.3: the name without the trailing separator
    listing = conn.ok('LIST "" Parent')
    assert b'"Parent"' in listing or b" Parent\r\n" in listing, listing
    conn.ok("CREATE Parent.Child")
    conn.ok("DELETE Parent")
    listing = conn.ok('LIST "" "Parent*"')
    assert re.search(rb"\* LIST \([^)]*\\Noselect[^)]*\) \"\.\" \"?Parent\"?\r\n", listing), listing
    assert b"Parent.Child" in listing
    tagged, _ = conn.cmd("DELETE Parent")  # RFC 3501 6.3.4: \Noselect with children → NO
    assert tagged.startswith(b"NO"), tagged
    conn.close()


def test_list_percent_star_reference_and_lsub_with_a_missing_parent(imapd: Imapd) -> None:
    conn = Conn(imapd)
    conn.ok("CREATE A.B.C")
    percent = conn.ok('LIST "" %')
    assert b'"A"' in percent or b" A\r\n" in percent
    assert b"A.B" not in percent
    star = conn.ok('LIST "" *')
    assert b"A.B.C" in star
    reference = conn.ok('LIST "A." %')
    assert re.search(rb" \"?A\.B\"?\r\n", reference) and b"A.B.C" not in reference, reference
    conn.ok("SUBSCRIBE Gone.Child")
    lsub = conn.ok('LSUB "" %')
    # RFC 3501 6.3.9: the parent of a subscribed name that % does not reach, as \Noselect.
    assert re.search(rb"\* LSUB \(\\Noselect\) \"\.\" \"?Gone\"?\r\n", lsub), lsub
    assert b"Gone" not in conn.ok('LSUB "" Gone')  # only where % stops short of the name
    everything = conn.ok('LSUB "" *')
    assert b"Gone.Child" in everything and b" Gone\r\n" not in everything and b'"Gone"' not in everything
    conn.close()


def test_status_of_the_selected_and_of_a_missing_folder(imapd: Imapd) -> None:
    fill(imapd, 2)
    conn = Conn(imapd)
    conn.ok("SELECT INBOX")
    assert b"* STATUS INBOX (MESSAGES 2 UIDNEXT 3)" in conn.ok("STATUS INBOX (MESSAGES UIDNEXT)")
    tagged, _ = conn.cmd("STATUS Nowhere (MESSAGES)")
    assert tagged.startswith(b"NO"), tagged
    conn.close()


# ------------------------------------------------------------------------- APPEND


def test_append_to_the_selected_folder_with_zone_and_keyword(imapd: Imapd) -> None:
    conn = Conn(imapd)
    conn.ok("SELECT INBOX")
    data = message("zoned")
    conn.send(b't1000 APPEND INBOX (Custom) "01-Feb-2026 23:30:00 -0800" {%d+}\r\n%b\r\n' % (len(data), data))
    tagged, untagged = conn.until("t1000")
    assert tagged.startswith(b"OK [APPENDUID"), tagged
    assert b"* 1 EXISTS" in untagged, untagged
    assert re.search(rb"\* FLAGS \([^)]*Custom", untagged), untagged
    fetched = conn.ok("FETCH 1 (INTERNALDATE FLAGS)")
    date = re.search(rb'INTERNALDATE "([^"]+)"', fetched).group(1).decode()  # type: ignore[union-attr]
    got = parsedate_to_datetime(date.replace("-", " ", 2))
    want = parsedate_to_datetime("01 Feb 2026 23:30:00 -0800")
    assert got == want and b"Custom" in fetched, (date, fetched)
    conn.close()


def test_append_errors(imapd: Imapd) -> None:
    conn = Conn(imapd)
    tagged, _ = conn.cmd(b"APPEND Missing {3+}\r\nabc")
    assert tagged.startswith(b"NO [TRYCREATE]"), tagged
    conn.send(b"t500 APPEND INBOX ~{5}\r\n")
    reply = conn.line()
    if reply.startswith(b"+"):
        conn.send(b"a\0b\r\n\r\n")
        tagged, _ = conn.until("t500")
    else:
        tagged = reply
    assert re.match(rb"(t500 )?(NO|BAD)", tagged), tagged
    assert conn.ok("NOOP") == b""  # the session goes on
    conn.close()


def test_multiappend_is_all_or_nothing(imapd: Imapd) -> None:
    conn = Conn(imapd)
    one, two = message("a"), message("b")
    conn.send(b"t100 APPEND INBOX {%d+}\r\n%b (\\Bogus) {%d+}\r\n%b\r\n" % (len(one), one, len(two), two))
    tagged, _ = conn.until("t100")
    assert tagged.startswith(b"NO"), tagged
    assert b"(MESSAGES 0)" in conn.ok("STATUS INBOX (MESSAGES)")  # RFC 3502 6.3.11
    # The 27th keyword: NO, and not [TRYCREATE] (creating the folder would not help).
    words = " ".join(f"kw{i}" for i in range(26))
    conn.ok(b"APPEND INBOX (%b) {%d+}\r\n%b" % (words.encode(), len(one), one))
    tagged, _ = conn.cmd(b"APPEND INBOX (another) {%d+}\r\n%b" % (len(two), two))
    assert tagged.startswith(b"NO") and b"TRYCREATE" not in tagged, tagged
    assert b"(MESSAGES 1)" in conn.ok("STATUS INBOX (MESSAGES)")
    conn.close()


# ------------------------------------------------------------------------- IDLE (RFC 2177)


def test_idle_done_in_lower_case_updates_and_a_command_instead_of_done(imapd: Imapd) -> None:
    fill(imapd, 2)
    conn, other = Conn(imapd), Conn(imapd)
    conn.ok("SELECT INBOX")
    other.ok("SELECT INBOX")
    conn.send(b"i1 IDLE\r\n")
    assert conn.line().startswith(b"+ ")
    other.ok("STORE 1 +FLAGS (\\Flagged)")
    assert b"* 1 FETCH (FLAGS (\\Flagged))" in conn.line()
    other.ok("STORE 2 +FLAGS (\\Deleted)")
    other.ok("EXPUNGE")
    assert conn.line() == b"* 2 EXPUNGE\r\n"
    imapd.deliver(ALICE, message("new"))
    assert conn.line() == b"* 2 EXISTS\r\n"
    conn.send(b"done\r\n")
    tagged, _ = conn.until("i1")
    assert tagged.startswith(b"OK")
    conn.send(b"i2 IDLE\r\n")
    assert conn.line().startswith(b"+ ")
    conn.send(b"x1 NOOP\r\n")
    tagged, _ = conn.until("i2")
    assert tagged.startswith(b"BAD"), tagged
    assert conn.ok("NOOP") == b""
    conn.ok("UNSELECT")
    conn.send(b"i3 IDLE\r\n")
    assert conn.line().startswith(b"+ ")
    conn.send(b"DONE\r\n")
    tagged, _ = conn.until("i3")
    assert tagged.startswith(b"OK")
    conn.close()
    other.close()


# ------------------------------------------------------------------------- AUTHENTICATE (RFC 3501 6.2.2)


def test_authenticate_plain_without_initial_response(imapd: Imapd) -> None:
    conn = Conn(imapd, login=False)
    conn.send(b"a1 AUTHENTICATE PLAIN\r\n")
    assert conn.line().startswith(b"+")
    conn.send(b"*\r\n")
    tagged, _ = conn.until("a1")
    assert tagged.startswith(b"BAD"), tagged
    conn.send(b"a2 AUTHENTICATE PLAIN\r\n")
    assert conn.line().startswith(b"+")
    conn.send(b"!!notbase64\r\n")
    tagged, _ = conn.until("a2")
    assert tagged.startswith(b"BAD"), tagged
    other = base64.b64encode(f"bob@example.test\0{ALICE}\0{PASSWORD}".encode())
    tagged, _ = conn.cmd(b"AUTHENTICATE PLAIN " + other)
    assert tagged.startswith(b"NO"), tagged
    conn.send(b"a3 AUTHENTICATE PLAIN\r\n")
    assert conn.line().startswith(b"+")
    conn.send(base64.b64encode(f"\0{ALICE}\0{PASSWORD}".encode()) + b"\r\n")
    tagged, _ = conn.until("a3")
    assert tagged.startswith(b"OK"), tagged
    conn.close()


# ------------------------------------------------------------------------- ID, ENABLE, NAMESPACE, COMPRESS


def test_id_enable_namespace_compress_logout_and_state_errors(imapd: Imapd) -> None:
    conn = Conn(imapd, login=False)
    assert b"* ID (" in conn.ok("ID NIL")
    assert b"* ID (" in conn.ok('ID ("name" "client" "version" "1.0")')
    tagged, _ = conn.cmd("FETCH 1 (FLAGS)")
    assert tagged.startswith(b"BAD")
    conn.ok(f'LOGIN "{ALICE}" "{PASSWORD}"')
    tagged, _ = conn.cmd(f'LOGIN "{ALICE}" "{PASSWORD}"')
    assert tagged.startswith(b"BAD"), tagged
    tagged, _ = conn.cmd("FETCH 1 (FLAGS)")
    assert tagged.startswith(b"BAD"), tagged
    assert conn.ok("ENABLE UNKNOWN-THING CONDSTORE") == b"* ENABLED CONDSTORE\r\n"
    assert conn.ok("NAMESPACE") == b'* NAMESPACE (("" ".")) NIL NIL\r\n'
    tagged, _ = conn.cmd("COMPRESS LZMA")
    assert tagged.startswith(b"BAD"), tagged
    conn.send(b"t9 LOGOUT\r\n")
    assert conn.line().startswith(b"* BYE")
    assert conn.line().startswith(b"t9 OK")
    conn.close()


def test_a_failed_search_save_empties_the_saved_result(imapd: Imapd) -> None:
    fill(imapd, 2)
    conn = Conn(imapd)
    conn.ok("SELECT INBOX")
    conn.ok("SEARCH RETURN (SAVE) ALL")
    assert conn.ok("FETCH $ (UID)").count(b"FETCH") == 2
    tagged, _ = conn.cmd("SEARCH RETURN (SAVE) CHARSET KOI8-R ALL")
    assert tagged.startswith(b"NO [BADCHARSET"), tagged
    assert conn.ok("FETCH $ (UID)") == b""  # RFC 5182 2.1: a failed SEARCH saves the empty set
    conn.close()


def test_folder_tree_edge_cases(imapd: Imapd) -> None:
    fill(imapd, 1)
    conn = Conn(imapd)
    conn.ok("CREATE A")
    tagged, _ = conn.cmd("RENAME A A.B")  # into its own child
    assert tagged.startswith(b"NO"), tagged
    tagged, _ = conn.cmd("DELETE INBOX")
    assert tagged.startswith(b"NO"), tagged
    conn.ok("CREATE INBOX.Sub")
    conn.ok("RENAME INBOX Moved")  # RFC 3501 6.3.5: the children of INBOX stay where they are
    listing = conn.ok('LIST "" *')
    assert b"INBOX.Sub" in listing and b"Moved.Sub" not in listing, listing
    assert b"(MESSAGES 1)" in conn.ok("STATUS Moved (MESSAGES)")
    conn.close()


def test_esearch_without_matches_and_search_modseq_without_matches(imapd: Imapd) -> None:
    fill(imapd, 1)
    conn = Conn(imapd)
    conn.ok("SELECT INBOX")
    tag = f"t{conn.count + 1}"
    untagged = conn.ok("UID SEARCH RETURN (MIN MAX COUNT) SUBJECT nothing-like-this")
    assert untagged == f'* ESEARCH (TAG "{tag}") UID COUNT 0\r\n'.encode(), untagged
    assert conn.ok("SEARCH MODSEQ 999999") == b"* SEARCH\r\n"
    conn.close()


def test_compress_twice_and_sasl_ir_empty_response(imapd: Imapd) -> None:
    conn = Conn(imapd, login=False)
    tagged, _ = conn.cmd("AUTHENTICATE PLAIN =")  # RFC 4959: "=" is an empty initial response
    assert tagged.startswith(b"NO"), tagged
    conn.ok(f'LOGIN "{ALICE}" "{PASSWORD}"')
    conn.ok("COMPRESS DEFLATE")
    deflate, inflate = zlib.compressobj(6, zlib.DEFLATED, -15), zlib.decompressobj(-15)
    conn.send(deflate.compress(b"c2 COMPRESS DEFLATE\r\n") + deflate.flush(zlib.Z_SYNC_FLUSH))
    reply = b""
    while b"\r\n" not in reply:
        reply += inflate.decompress(conn.sock.recv(4096))
    assert reply.startswith(b"c2 NO [COMPRESSIONACTIVE]"), reply
    conn.close()


def test_store_reports_flags_even_if_unchanged_and_refuses_noselect(imapd: Imapd) -> None:
    fill(imapd, 1)
    conn = Conn(imapd)
    conn.ok("CREATE P.C")
    conn.ok("DELETE P")
    tagged, _ = conn.cmd("SELECT P")  # \Noselect
    assert tagged.startswith(b"NO"), tagged
    tagged, _ = conn.cmd("CREATE INBOX")
    assert tagged.startswith(b"NO"), tagged
    conn.ok("ENABLE CONDSTORE")
    conn.ok("SELECT INBOX")
    conn.ok("STORE 1 +FLAGS (\\Seen)")
    untagged = conn.ok("STORE 1 +FLAGS (\\Seen)")  # RFC 3501 6.4.6: the FETCH comes anyway
    assert re.match(rb"\* 1 FETCH \(FLAGS \(\\Seen\) MODSEQ \(\d+\)\)\r\n\Z", untagged), untagged
    untagged = conn.ok("STORE 1 +FLAGS (\\Recent)")
    conn.close()


def test_idle_with_condstore_carries_modseq(imapd: Imapd) -> None:
    fill(imapd, 1)
    conn, other = Conn(imapd), Conn(imapd)
    conn.ok("SELECT INBOX (CONDSTORE)")
    other.ok("SELECT INBOX")
    conn.send(b"i1 IDLE\r\n")
    assert conn.line().startswith(b"+ ")
    other.ok("STORE 1 +FLAGS (\\Answered)")
    assert re.match(rb"\* 1 FETCH \(FLAGS \(\\Answered\) MODSEQ \(\d+\)\)\r\n", conn.line())
    conn.send(b"DONE\r\n")
    assert conn.until("i1")[0].startswith(b"OK")
    conn.close()
    other.close()


def test_status_deleted_storage_with_quota_res_storage(imapd: Imapd) -> None:
    fill(imapd, 2)
    conn = Conn(imapd)
    assert b"QUOTA=RES-STORAGE" in conn.ok("CAPABILITY")
    conn.ok("SELECT INBOX")
    conn.ok("STORE 1 +FLAGS (\\Deleted)")
    # RFC 9208 5.1.1: with the STORAGE resource, STATUS DELETED-STORAGE (units of 1024 octets).
    untagged = conn.ok("STATUS INBOX (DELETED DELETED-STORAGE)")
    assert untagged == b"* STATUS INBOX (DELETED 1 DELETED-STORAGE 1)\r\n", untagged
    conn.close()


def test_done_pipelined_with_the_next_command_and_close_after_examine(imapd: Imapd) -> None:
    fill(imapd, 1)
    conn = Conn(imapd)
    conn.ok("SELECT INBOX")
    conn.ok("STORE 1 +FLAGS (\\Deleted)")
    conn.send(b"i1 IDLE\r\n")
    assert conn.line().startswith(b"+ ")
    conn.send(b"DONE\r\nn1 NOOP\r\n")
    assert conn.until("i1")[0].startswith(b"OK")
    assert conn.until("n1")[0].startswith(b"OK")
    conn.ok("EXAMINE INBOX")
    conn.ok("CLOSE")  # read-only: CLOSE does not expunge (RFC 3501 6.4.2)
    assert b"(MESSAGES 1)" in conn.ok("STATUS INBOX (MESSAGES)")
    conn.close()


def test_rename_of_the_selected_folder_here_and_elsewhere(imapd: Imapd) -> None:
    conn, other = Conn(imapd), Conn(imapd)
    conn.ok("CREATE Work")
    data = message("work")
    conn.ok(b"APPEND Work {%d+}\r\n%b" % (len(data), data))
    conn.ok("SELECT Work")
    other.ok("SELECT Work")
    conn.ok("RENAME Work Done")  # the session follows its folder
    conn.ok("STORE 1 +FLAGS (\\Flagged)")
    assert b"* 1 FETCH (FLAGS (\\Flagged))" in conn.ok("FETCH 1 (FLAGS)")
    # The other session's folder is gone from under it: BYE, not a silent change of state.
    other.send(b"x1 NOOP\r\n")
    assert other.line().startswith(b"* BYE"), other.buf
    conn.close()
    other.close()


def test_status_sees_mail_delivered_after_an_earlier_status(imapd: Imapd) -> None:
    conn = Conn(imapd)
    assert b"(MESSAGES 0)" in conn.ok("STATUS INBOX (MESSAGES)")
    fill(imapd, 1)  # delivered by another process, as the LDA does
    assert b"(MESSAGES 1)" in conn.ok("STATUS INBOX (MESSAGES)")  # RFC 3501 6.3.10: current
    conn.close()
