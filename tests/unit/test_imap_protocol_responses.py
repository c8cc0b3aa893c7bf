"""IMAP response writing: exact octets (no I/O)."""

from __future__ import annotations

import datetime as dt

import pytest

from mailroom.imap.protocol import fetch as f
from mailroom.imap.protocol import responses as r
from mailroom.imap.protocol.responses import Atom, Literal


def test_strings_quoted_or_literal() -> None:
    """RFC 3501 4.3: quoted strings cannot hold CR, LF, NUL or 8-bit; literals can."""
    assert r.value("plain text") == b'"plain text"'
    assert r.value('a "b" \\c') == b'"a \\"b\\" \\\\c"'
    assert r.value("two\r\nlines") == b"{10}\r\ntwo\r\nlines"
    assert r.value("Grüße") == b"{7}\r\nGr\xc3\xbc\xc3\x9fe"
    assert r.value("Grüße", utf8=True) == '"Grüße"'.encode()
    assert r.value("x" * 1001) == b"{1001}\r\n" + b"x" * 1001
    assert r.value("") == b'""'


def test_nil_numbers_lists_atoms_literals() -> None:
    """RFC 3501 4.4 (parenthesized lists), 4.5 (NIL), 4.2 (numbers)."""
    assert r.value([None, 0, 42, Atom("\\Seen"), []]) == b"(NIL 0 42 \\Seen ())"
    assert r.value(Literal(b"ab")) == b"{2}\r\nab"
    assert r.value(Literal(b"a\0b")) == b"~{3}\r\na\0b"  # RFC 3516 4.3 literal8
    with pytest.raises(ValueError):
        r.value(-1)
    with pytest.raises(TypeError):
        r.value(True)


def test_date_time() -> None:
    """RFC 3501 9 date-time: day padded with a space, numeric zone."""
    when = dt.datetime(2024, 3, 5, 9, 8, 7, tzinfo=dt.timezone(dt.timedelta(hours=-5, minutes=-30)))
    assert r.value(when) == b'" 5-Mar-2024 09:08:07 -0530"'
    utc = dt.datetime(2024, 12, 25, 23, 0, 0, tzinfo=dt.UTC)
    assert r.value(utc) == b'"25-Dec-2024 23:00:00 +0000"'


def test_tagged_and_untagged_status_with_codes() -> None:
    """RFC 3501 7.1 and the codes of 7.1, RFC 4315 (UIDPLUS), 7162 (CONDSTORE, QRESYNC)."""
    assert r.tagged("a1", "OK", "LOGIN completed") == b"a1 OK LOGIN completed\r\n"
    assert r.tagged("a2", "NO", "no such mailbox", r.code("TRYCREATE")) == (
        b"a2 NO [TRYCREATE] no such mailbox\r\n"
    )
    assert r.tagged("a", "OK", "done", r.code("APPENDUID", 38505, 3955)) == (
        b"a OK [APPENDUID 38505 3955] done\r\n"
    )
    assert r.tagged("a", "OK", "done", r.code("COPYUID", 38505, "304,319:320", "3956:3958")) == (
        b"a OK [COPYUID 38505 304,319:320 3956:3958] done\r\n"
    )
    assert r.untagged_status("OK", "Predicted next UID", r.code("UIDNEXT", 4392)) == (
        b"* OK [UIDNEXT 4392] Predicted next UID\r\n"
    )
    assert r.untagged_status("OK", "x", r.code("PERMANENTFLAGS", [Atom("\\Seen"), Atom("\\*")])) == (
        b"* OK [PERMANENTFLAGS (\\Seen \\*)] x\r\n"
    )
    assert r.untagged_status("OK", "x", r.code("HIGHESTMODSEQ", 715194045007)) == (
        b"* OK [HIGHESTMODSEQ 715194045007] x\r\n"
    )
    assert r.untagged_status("OK", "Previous mailbox is now closed", r.code("CLOSED")) == (
        b"* OK [CLOSED] Previous mailbox is now closed\r\n"
    )
    assert r.tagged("a", "OK", "x", r.code("CAPABILITY", "IMAP4rev1", "IDLE")) == (
        b"a OK [CAPABILITY IMAP4rev1 IDLE] x\r\n"
    )
    assert r.untagged_status("BYE", "shutting\r\ndown") == b"* BYE shutting  down\r\n"
    with pytest.raises(ValueError):
        r.tagged("a", "BYE", "x")


def test_simple_untagged_data() -> None:
    """RFC 3501 7.2.1, 7.2.6, 7.3.1-2, 7.4.1; RFC 7162 3.2.10 (VANISHED); RFC 5161 (ENABLED)."""
    assert r.capability(["IMAP4rev1", "STARTTLS", "AUTH=PLAIN"]) == (
        b"* CAPABILITY IMAP4rev1 STARTTLS AUTH=PLAIN\r\n"
    )
    assert r.flags(["\\Answered", "\\Seen", "$Junk"]) == b"* FLAGS (\\Answered \\Seen $Junk)\r\n"
    assert r.exists(23) == b"* 23 EXISTS\r\n"
    assert r.recent(0) == b"* 0 RECENT\r\n"
    assert r.expunge(3) == b"* 3 EXPUNGE\r\n"
    assert r.vanished([405, 407, 406, 410], earlier=True) == b"* VANISHED (EARLIER) 405:407,410\r\n"
    assert r.enabled(["CONDSTORE"]) == b"* ENABLED CONDSTORE\r\n"
    assert r.continuation() == b"+ Ready\r\n"


def test_fetch_response_with_body_literals() -> None:
    """RFC 3501 7.4.2: FETCH data items; body sections come back without .PEEK and with the
    origin octet only."""
    section = f.Section("BODY", True, (1,), "HEADER.FIELDS", ("From",), (0, 10))
    out = r.fetch(
        12,
        [
            ("UID", 4827313),
            ("FLAGS", [Atom("\\Seen")]),
            ("INTERNALDATE", dt.datetime(1996, 7, 17, 2, 44, 25, tzinfo=dt.timezone(-dt.timedelta(hours=7)))),
            ("RFC822.SIZE", 44827),
            (section.response_name(), b"From: a\r\n\r\n"),
            ("BODY[TEXT]", b"short"),
            ("MODSEQ", [624140003]),
        ],
    )
    assert out == (
        b"* 12 FETCH (UID 4827313 FLAGS (\\Seen) "
        b'INTERNALDATE "17-Jul-1996 02:44:25 -0700" RFC822.SIZE 44827 '
        b"BODY[1.HEADER.FIELDS (From)]<0> {11}\r\nFrom: a\r\n\r\n BODY[TEXT] {5}\r\nshort "
        b"MODSEQ (624140003))\r\n"
    )
    envelope = ["Wed, 17 Jul 1996", "Subject", [["Terry", None, "gray", "example.com"]], None]
    assert r.fetch(1, [("ENVELOPE", envelope)]) == (
        b'* 1 FETCH (ENVELOPE ("Wed, 17 Jul 1996" "Subject" (("Terry" NIL "gray" "example.com")) NIL))\r\n'
    )
    assert r.fetch(2, [("BINARY[1]", b"\0\1")]) == b"* 2 FETCH (BINARY[1] ~{2}\r\n\0\1)\r\n"


def test_list_lsub_status() -> None:
    """RFC 3501 7.2.2-7.2.4; RFC 5258 3 (extended data); names in modified UTF-7 (5.1.3)."""
    assert r.list_response("INBOX", ["\\HasNoChildren"]) == b'* LIST (\\HasNoChildren) "." INBOX\r\n'
    assert r.list_response("Entwürfe", ["\\Drafts"]) == b'* LIST (\\Drafts) "." Entw&APw-rfe\r\n'
    assert r.list_response("My Stuff", [], kind="LSUB") == b'* LSUB () "." "My Stuff"\r\n'
    assert r.list_response("Entwürfe", [], utf8=True) == '* LIST () "." "Entwürfe"\r\n'.encode()
    assert r.list_response("", ["\\Noselect"]) == b'* LIST (\\Noselect) "." ""\r\n'
    assert r.list_response("Foo", ["\\NonExistent"], extended=[("CHILDINFO", ["SUBSCRIBED"])]) == (
        b'* LIST (\\NonExistent) "." Foo ("CHILDINFO" ("SUBSCRIBED"))\r\n'
    )
    assert r.status("blurdybloop", {"MESSAGES": 231, "UIDNEXT": 44292}) == (
        b"* STATUS blurdybloop (MESSAGES 231 UIDNEXT 44292)\r\n"
    )


def test_search_esearch_sort_thread() -> None:
    """RFC 3501 7.2.5; RFC 4731 3.1 (ESEARCH); RFC 5256 4 (SORT, THREAD); RFC 7162 3.1.5."""
    assert r.search([2, 84, 882]) == b"* SEARCH 2 84 882\r\n"
    assert r.search([]) == b"* SEARCH\r\n"
    assert r.search([2], modseq=917162500) == b"* SEARCH 2 (MODSEQ 917162500)\r\n"
    assert r.esearch("A282", minimum=2, count=3) == b'* ESEARCH (TAG "A282") MIN 2 COUNT 3\r\n'
    assert r.esearch("A283", uid=True, all_numbers=[2, 10, 11, 12, 4]) == (
        b'* ESEARCH (TAG "A283") UID ALL 2,4,10:12\r\n'
    )
    assert r.esearch("A284", count=0, all_numbers=[]) == b'* ESEARCH (TAG "A284") COUNT 0\r\n'
    assert r.sort([5, 3, 4]) == b"* SORT 5 3 4\r\n"
    node = r.ThreadNode
    tree = [
        node(2),
        node(3, (node(6, (node(4, (node(23),)), node(44, (node(7, (node(96),)),)))),)),
    ]
    assert r.thread(tree) == b"* THREAD (2)(3 6 (4 23)(44 7 96))\r\n"
    assert r.thread([node(None, (node(3), node(5)))]) == b"* THREAD ((3)(5))\r\n"


def test_namespace_id_quota() -> None:
    """RFC 2342 5, RFC 2971 3.2, RFC 9208 5.1-5.2."""
    assert r.namespace() == b'* NAMESPACE (("" ".")) NIL NIL\r\n'
    assert (
        r.id_response({"name": "Mailroom", "version": None}) == b'* ID ("name" "Mailroom" "version" NIL)\r\n'
    )
    assert r.id_response(None) == b"* ID NIL\r\n"
    assert r.quota("", [("STORAGE", 10, 512)]) == b'* QUOTA "" (STORAGE 10 512)\r\n'
    assert r.quotaroot("INBOX", [""]) == b'* QUOTAROOT INBOX ""\r\n'


def test_uid_set_compression() -> None:
    """RFC 4315 4 uid-set."""
    assert r.uid_set([1, 2, 3, 5, 7, 8]) == "1:3,5,7:8"
    assert r.uid_set([9]) == "9"
    with pytest.raises(ValueError):
        r.uid_set([])


def test_thread_writer_handles_threads_deeper_than_the_recursion_limit() -> None:
    node = r.ThreadNode(99999)
    for n in range(5000, 0, -1):  # alternating: a flat chain link, then a branch
        node = r.ThreadNode(n, (node,) if n % 2 else (node, r.ThreadNode(100000 + n)))
    out = r.thread([node])
    assert out.startswith(b"* THREAD (1 2 (3 4 (5 ") and out.count(b"(") == out.count(b")")
