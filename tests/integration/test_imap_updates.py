"""The untagged updates another session's changes cause, on the commands that fetch them in the
same worker-thread trip as their own store call (APPEND, STORE, UID STORE, EXPUNGE, UID EXPUNGE,
FETCH): each is reported once, before the tagged reply, in the order RFC 3501 7.4.1 allows."""

from __future__ import annotations

import os
import re
import time

from tests.integration.test_imap import ALICE, Imapd, imapd, message
from tests.integration.test_imap_conformance import Conn, fill

__all__ = ["imapd"]  # the fixture, imported for pytest


def _lines(untagged: bytes) -> list[bytes]:
    return [line for line in untagged.split(b"\r\n") if line]


def test_store_reports_its_own_flags_then_the_other_sessions_changes(imapd: Imapd) -> None:
    fill(imapd, 3)
    conn, other = Conn(imapd), Conn(imapd)
    conn.ok("SELECT INBOX")
    other.ok("SELECT INBOX")
    other.ok("STORE 3 +FLAGS (\\Answered)")
    data = message("from the other session")
    other.ok(b"APPEND INBOX {%d+}\r\n%b" % (len(data), data))
    lines = _lines(conn.ok("STORE 1 +FLAGS (\\Flagged)"))
    expected = [b"* 1 FETCH (FLAGS (\\Flagged))", b"* 4 EXISTS", b"* 3 FETCH (FLAGS (\\Answered))"]
    assert lines == expected, lines
    assert conn.ok("NOOP") == b""  # reported once
    conn.close()
    other.close()


def test_fetch_and_store_hold_back_expunges_that_uid_commands_report(imapd: Imapd) -> None:
    fill(imapd, 3)
    conn, other = Conn(imapd), Conn(imapd)
    conn.ok("SELECT INBOX")
    other.ok("SELECT INBOX")
    other.ok("STORE 2 +FLAGS (\\Deleted)")
    other.ok("EXPUNGE")
    # FETCH and STORE by number: no EXPUNGE, the client is matching numbers (RFC 3501 7.4.1).
    fetched = conn.ok("FETCH 1:3 (UID)")
    assert b"EXPUNGE" not in fetched and b"* 3 FETCH (UID 3)" in fetched, fetched
    stored = conn.ok("STORE 3 +FLAGS (\\Seen)")
    assert b"EXPUNGE" not in stored, stored
    # A UID command may carry it; then the numbers shift.
    lines = _lines(conn.ok("UID STORE 3 +FLAGS.SILENT (\\Draft)"))
    assert lines == [b"* 2 EXPUNGE"], lines
    assert b"* 2 FETCH (UID 3)" in conn.ok("FETCH 2 (UID)")
    conn.close()
    other.close()


def test_append_to_the_selected_folder_reports_exists_before_appenduid(imapd: Imapd) -> None:
    fill(imapd, 2)
    conn, other = Conn(imapd), Conn(imapd)
    conn.ok("SELECT INBOX")
    other.ok("SELECT INBOX")
    other.ok("STORE 1 +FLAGS (\\Seen)")
    data = message("appended")
    tagged, untagged = conn.cmd(b"APPEND INBOX (\\Draft) {%d+}\r\n%b" % (len(data), data))
    assert re.match(rb"OK \[APPENDUID \d+ 3\]", tagged), tagged
    lines = _lines(untagged)
    assert lines == [b"* 3 EXISTS", b"* 1 FETCH (FLAGS (\\Seen))"], lines
    # Appending elsewhere reports the selected folder's changes all the same.
    other.ok("STORE 2 +FLAGS (\\Flagged)")
    tagged, untagged = conn.cmd(b"APPEND Drafts {%d+}\r\n%b" % (len(data), data))
    assert tagged.startswith(b"OK [APPENDUID"), tagged
    assert _lines(untagged) == [b"* 2 FETCH (FLAGS (\\Flagged))"], untagged
    conn.close()
    other.close()


def test_uid_expunge_reports_its_own_and_the_other_sessions_changes_in_order(imapd: Imapd) -> None:
    fill(imapd, 4)
    conn, other = Conn(imapd), Conn(imapd)
    conn.ok("SELECT INBOX")
    other.ok("SELECT INBOX")
    conn.ok("UID STORE 2 +FLAGS.SILENT (\\Deleted)")
    other.ok("STORE 4 +FLAGS (\\Deleted)")
    other.ok("UID EXPUNGE 4")  # only UID 4: UID 2 stays for this session to expunge
    data = message("late")
    other.ok(b"APPEND INBOX {%d+}\r\n%b" % (len(data), data))
    lines = _lines(conn.ok("UID EXPUNGE 2"))
    # Ours first (UID 2 is message 2), then the other session's expunge of UID 4 (now message 3)
    # and its new message (3 left, plus one).
    assert lines == [b"* 2 EXPUNGE", b"* 3 EXPUNGE", b"* 3 EXISTS"], lines
    uids = conn.ok("FETCH 1:* (UID)")
    assert re.findall(rb"\* (\d+) FETCH \(UID (\d+)\)", uids) == [(b"1", b"1"), (b"2", b"3"), (b"3", b"5")]
    conn.close()
    other.close()


def test_select_after_select_keeps_reporting_from_the_new_selection(imapd: Imapd) -> None:
    fill(imapd, 2)
    conn, other = Conn(imapd), Conn(imapd)
    conn.ok("SELECT INBOX")
    selected = conn.ok("SELECT INBOX")
    assert b"* 2 EXISTS" in selected and b"FETCH" not in selected, selected
    other.ok("SELECT INBOX")
    other.ok("STORE 2 +FLAGS (\\Flagged)")
    assert _lines(conn.ok("NOOP")) == [b"* 2 FETCH (FLAGS (\\Flagged))"]
    conn.close()
    other.close()


def test_a_reselect_reports_the_folder_as_it_is_now_as_a_new_selection(imapd: Imapd) -> None:
    fill(imapd, 3)
    conn, other = Conn(imapd), Conn(imapd)
    conn.ok("SELECT INBOX")
    other.ok("SELECT INBOX")
    other.ok("STORE 1 +FLAGS (\\Deleted)")
    other.ok("EXPUNGE")
    other.ok("UID STORE 2 +FLAGS (\\Flagged)")
    imapd.deliver(ALICE, message("new"))
    selected = conn.ok("SELECT INBOX")
    # A new selection: the folder as it is, no EXPUNGE or FETCH for changes made before it.
    assert b"* 3 EXISTS" in selected and b"[UIDNEXT 5]" in selected, selected
    assert b"EXPUNGE" not in selected and b"FETCH" not in selected, selected
    fetched = _lines(conn.ok("FETCH 1:* (UID FLAGS)"))
    assert fetched == [
        b"* 1 FETCH (UID 2 FLAGS (\\Flagged))",
        b"* 2 FETCH (UID 3 FLAGS ())",
        b"* 3 FETCH (UID 4 FLAGS ())",
    ], fetched
    assert conn.ok("NOOP") == b""  # and nothing is reported twice
    conn.close()
    other.close()


def test_a_reselect_of_a_folder_deleted_meanwhile(imapd: Imapd) -> None:
    conn, other = Conn(imapd), Conn(imapd)
    conn.ok("CREATE Work")
    data = message("work")
    conn.ok(b"APPEND Work {%d+}\r\n%b" % (len(data), data))
    first = conn.ok("SELECT Work")
    other.ok("DELETE Work")
    tagged, _ = conn.cmd("SELECT Work")
    assert tagged.startswith(b"NO [NONEXISTENT]"), tagged
    # Made again by another session: the reselect opens the new folder, not the old one's listing.
    other.ok("CREATE Work")
    for _ in range(2):
        other.ok(b"APPEND Work {%d+}\r\n%b" % (len(data), data))
    conn.ok("SELECT Work")
    other.ok("DELETE Work")
    other.ok("CREATE Work")
    again = conn.ok("SELECT Work")
    assert b"* 0 EXISTS" in again, again
    validity = re.compile(rb"\[UIDVALIDITY (\d+)\]")
    assert validity.search(again).group(1) != validity.search(first).group(1)  # type: ignore[union-attr]
    conn.close()
    other.close()


def test_a_change_just_before_done_is_reported_before_idle_ends(imapd: Imapd) -> None:
    fill(imapd, 2)
    conn, other = Conn(imapd), Conn(imapd)
    conn.ok("SELECT INBOX")
    other.ok("SELECT INBOX")
    for flag in ("\\Flagged", "\\Answered"):
        conn.send(b"i1 IDLE\r\n")
        assert conn.line().startswith(b"+ ")
        other.ok(f"STORE 2 +FLAGS ({flag})")  # then DONE at once, before the watcher's next look
        conn.send(b"DONE\r\n")
        tagged, untagged = conn.until("i1")
        assert tagged.startswith(b"OK"), tagged
        assert flag.encode() in untagged and untagged.startswith(b"* 2 FETCH"), untagged
    # A quiet IDLE ends with nothing but its tagged reply.
    conn.send(b"i2 IDLE\r\n")
    assert conn.line().startswith(b"+ ")
    conn.send(b"DONE\r\n")
    assert conn.until("i2") == (b"OK IDLE terminated", b"")
    conn.close()
    other.close()


def test_flags_come_before_a_store_fetch_that_names_a_new_keyword(imapd: Imapd) -> None:
    fill(imapd, 2)
    conn, other = Conn(imapd), Conn(imapd)
    conn.ok("SELECT INBOX")
    other.ok("SELECT INBOX")
    lines = _lines(conn.ok("STORE 1 +FLAGS (Project)"))  # a keyword this STORE defines
    assert lines[0].startswith(b"* FLAGS (") and b"Project" in lines[0], lines
    assert lines[2] == b"* 1 FETCH (FLAGS (Project))", lines
    other.ok("STORE 2 +FLAGS (Later)")  # defined by the other session, on the message stored next
    lines = _lines(conn.ok("STORE 2 +FLAGS (\\Flagged)"))
    assert lines[0].startswith(b"* FLAGS (") and b"Later" in lines[0], lines
    assert lines[2] == b"* 2 FETCH (FLAGS (Later \\Flagged))", lines
    # System flags only, nothing new: no FLAGS at all.
    assert _lines(conn.ok("STORE 1 +FLAGS (\\Seen)")) == [b"* 1 FETCH (FLAGS (Project \\Seen))"]
    conn.close()
    other.close()


def test_mail_delivered_after_login_is_in_the_first_select(imapd: Imapd) -> None:
    """INBOX is opened right after LOGIN, for the SELECT that follows: that SELECT still reports
    the folder as it is when it runs, not as the opening found it."""
    fill(imapd, 2)
    conn = Conn(imapd)
    time.sleep(0.3)  # the opening after LOGIN is long done
    imapd.deliver(ALICE, message("after login"))
    untagged = conn.ok("SELECT INBOX")
    assert b"* 3 EXISTS" in untagged and b"[UIDNEXT 4]" in untagged, untagged
    assert conn.ok("NOOP") == b""  # nothing reported twice
    conn.close()


def test_a_first_select_of_another_folder_leaves_inbox_to_a_later_one(imapd: Imapd) -> None:
    fill(imapd, 1)
    conn = Conn(imapd)
    assert b"* 0 EXISTS" in conn.ok("SELECT Drafts")
    imapd.deliver(ALICE, message("while in Drafts"))
    untagged = conn.ok("EXAMINE INBOX")
    assert b"* 2 EXISTS" in untagged and b"[UIDNEXT 3]" in untagged, untagged
    conn.close()


def test_commands_answered_on_the_event_loop_still_report_every_change(imapd: Imapd) -> None:
    """Once new/ is empty and long unchanged, a NOOP or a reselect with nothing to report is
    answered without a worker thread (Folder.quiet): each kind of change must still show."""
    fill(imapd, 3)
    conn, other = Conn(imapd), Conn(imapd)
    conn.ok("SELECT INBOX")
    other.ok("SELECT INBOX")
    os.utime(imapd.maildir(ALICE) / "new", (1_600_000_000, 1_600_000_000))
    for _ in range(2):  # the first finds new/ long unchanged; the second trusts that
        assert conn.ok("NOOP") == b""
        assert other.ok("NOOP") == b""
    other.ok("STORE 2 +FLAGS (\\Flagged)")
    assert _lines(conn.ok("NOOP")) == [b"* 2 FETCH (FLAGS (\\Flagged))"]
    other.ok("STORE 1 +FLAGS (\\Seen)")
    assert _lines(conn.ok("NOOP")) == [b"* 1 FETCH (FLAGS (\\Seen))"]
    for _ in range(3):  # the first looks for the first unseen message; the others know it
        untagged = conn.ok("SELECT INBOX")
        assert b"* 3 EXISTS" in untagged and b"[UNSEEN 2]" in untagged, untagged
        assert b"FETCH" not in untagged, untagged
    other.ok("STORE 2 +FLAGS (\\Seen)")
    untagged = conn.ok("SELECT INBOX")
    assert b"[UNSEEN 3]" in untagged and b"[UIDNEXT 4]" in untagged, untagged
    imapd.deliver(ALICE, message("late"))
    assert _lines(conn.ok("NOOP")) == [b"* 4 EXISTS"]
    assert b"* 4 EXISTS" in conn.ok("SELECT INBOX")
    assert conn.ok("NOOP") == b""
    conn.close()
    other.close()
