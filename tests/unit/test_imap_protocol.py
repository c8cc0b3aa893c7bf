"""IMAP command parsing: framing, limits and every command (no I/O)."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt

import pytest

from mailroom.imap.protocol import (
    CommandParser,
    ContinuationNeeded,
    IdleDone,
    ParseError,
    SaslResponse,
    SequenceSet,
    parser,
)
from mailroom.imap.protocol import commands as c
from mailroom.imap.protocol import fetch as f
from mailroom.imap.protocol import search as s


def parse_one(data: bytes, **kwargs) -> c.Command | ParseError:
    p = CommandParser(**kwargs)
    events = p.feed(data)
    while p.paused:
        events += p.resume()
    events = [e for e in events if not isinstance(e, ContinuationNeeded)]
    assert len(events) == 1, events
    return events[0]


def roundtrip(data: bytes) -> c.Command:
    cmd = parse_one(data)
    assert isinstance(cmd, c.Command), cmd
    assert parse_one(cmd.to_bytes()) == cmd
    return cmd


# -- framing ------------------------------------------------------------------------------------
def test_commands_split_across_feeds_and_pipelined() -> None:
    """RFC 3501 2.2.1, 5.5: a command may arrive in pieces; several may arrive at once."""
    p = CommandParser()
    assert p.feed(b"a1 NO") == []
    assert p.feed(b"OP\r") == []
    assert p.feed(b"\na2 CAPABILITY\r\na3 LOG") == [c.Noop("a1"), c.Capability("a2")]
    assert p.feed(b"OUT\r\n") == [c.Logout("a3")]
    assert p.buffered == 0


def test_synchronizing_literal_asks_for_continuation() -> None:
    """RFC 3501 4.3, 7.5: the server sends "+" before the client sends the literal."""
    p = CommandParser()
    events = p.feed(b"a1 LOGIN {5}\r\n")
    assert events == [ContinuationNeeded("a1", 5)]
    assert events[0].to_response() == b"+ Ready for literal data\r\n"
    assert p.feed(b"ali") == []
    assert p.feed(b"ce {3}\r\n") == [ContinuationNeeded("a1", 3)]
    assert p.feed(b"p w\r\n") == [c.Login("a1", "alice", "p w")]


def test_non_synchronizing_literal_needs_no_continuation() -> None:
    """RFC 7888 3: `{n+}` is sent without waiting."""
    assert CommandParser().feed(b"a1 LOGIN {5+}\r\nalice {1+}\r\nx\r\n") == [c.Login("a1", "alice", "x")]


def test_literal_may_hold_crlf_and_braces() -> None:
    """RFC 3501 4.3: a literal is any octets but NUL, CRLF included."""
    cmd = parse_one(b'a1 LOGIN {7+}\r\na\r\nb{1} "pw"\r\n')
    assert cmd == c.Login("a1", "a\r\nb{1}", "pw")


def test_literal_marker_inside_quotes_is_text() -> None:
    """RFC 3501 4.3: `{5}` ends a line only as a literal outside a quoted string."""
    assert parse_one(b'a1 LOGIN alice "{5}"\r\n') == c.Login("a1", "alice", "{5}")
    assert isinstance(parse_one(b'a1 LOGIN alice "x {5}\r\n'), ParseError)


def test_literal_above_limit_is_refused_before_buffering() -> None:
    """RFC 7889 4, RFC 4469 TOOBIG: a huge synchronizing literal gets NO [TOOBIG], no "+"."""
    p = CommandParser(literal_limit=1000)
    [err] = p.feed(b"a LOGIN {400000000}\r\n")
    assert err == ParseError("a", "literal too big", "TOOBIG", "NO")
    assert err.to_response() == b"a NO [TOOBIG] literal too big\r\n"
    assert p.buffered == 0
    assert p.feed(b"b NOOP\r\n") == [c.Noop("b")]


def test_all_literals_of_a_command_share_the_limit() -> None:
    p = CommandParser(literal_limit=10)
    assert p.feed(b"a LOGIN {6}\r\n") == [ContinuationNeeded("a", 6)]
    [err] = p.feed(b"123456 {5}\r\n")
    assert err.code == "TOOBIG"
    assert p.feed(b"b NOOP\r\n") == [c.Noop("b")]


def test_oversized_non_synchronizing_literal_is_fatal() -> None:
    """RFC 7888 4: the octets are on their way; the connection cannot be resynchronized."""
    p = CommandParser(literal_limit=100)
    [err] = p.feed(b"a APPEND INBOX {5000+}\r\n" + b"x" * 100)
    assert err.status == "BAD" and err.code == "TOOBIG" and err.fatal
    assert p.closed and p.feed(b"b NOOP\r\n") == [] and p.buffered == 0


def test_literal_limit_can_be_raised_after_authentication() -> None:
    p = CommandParser(literal_limit=10)
    p.literal_limit = 1 << 20
    events = p.feed(b"a APPEND INBOX {20}\r\n" + b"x" * 20 + b"\r\n")
    assert isinstance(events[-1], c.Append) and events[-1].message == b"x" * 20


@pytest.mark.parametrize("size", [b"-1", b"x", b"", b"1 2", b"99999999999", b"+"])
def test_garbage_literal_lengths_are_syntax_errors(size: bytes) -> None:
    """RFC 3501 9: literal = "{" number "}" CRLF; number is 1*DIGIT of at most 32 bits."""
    p = CommandParser()
    [err] = p.feed(b"a LOGIN {" + size + b"}\r\n")
    assert isinstance(err, ParseError) and err.tag == "a" and err.status == "BAD"
    assert p.feed(b"b NOOP\r\n") == [c.Noop("b")]


def test_line_limit_without_crlf_errors_once_then_resynchronizes() -> None:
    p = CommandParser(line_limit=100)
    [err] = p.feed(b"a1 LOGIN " + b"x" * 200)
    assert err == ParseError("a1", "line too long")
    assert p.buffered == 0
    assert p.feed(b"y" * 500) == []
    assert p.feed(b"zz\r") == []
    assert p.feed(b"\nb NOOP\r\n") == [c.Noop("b")]


def test_line_limit_counts_every_line_of_a_command() -> None:
    p = CommandParser(line_limit=40, literal_limit=1000)
    events = p.feed(b"a LOGIN {3+}\r\nabc {3+}\r\nabc" + b" " * 30 + b"\r\n")
    assert events == [ParseError("a", "line too long")]


def test_error_with_tag_is_tagged_and_without_is_untagged() -> None:
    """RFC 3501 7.1.3: BAD is tagged when the tag is known."""
    [tagged, untagged] = CommandParser().feed(b"a1 SELECT\r\n\r\n")
    assert tagged.tag == "a1" and tagged.to_response().startswith(b"a1 BAD ")
    assert untagged.tag is None and untagged.to_response().startswith(b"* BAD ")
    assert parse_one(b"+x NOOP\r\n").tag is None
    assert parse_one(b"* NOOP\r\n").tag is None


def test_nul_in_a_line_or_a_literal_is_refused() -> None:
    """RFC 3501 9: CHAR8 excludes NUL; only literal8 may carry it."""
    assert isinstance(parse_one(b'a LOGIN "a\0b" c\r\n'), ParseError)
    assert isinstance(parse_one(b"a LOGIN {3+}\r\na\0b c\r\n"), ParseError)
    assert isinstance(parse_one(b"a NOOP\0\r\n"), ParseError)


def test_eight_bit_in_quoted_strings_only_with_utf8() -> None:
    """RFC 3501 9 (quoted is 7-bit), RFC 6855 3 (UTF8=ACCEPT allows UTF-8)."""
    line = 'a SELECT "Entwürfe"\r\n'.encode()
    assert isinstance(parse_one(line), ParseError)
    assert parse_one(line, utf8=True) == c.Select("a", "Entwürfe")
    assert isinstance(parse_one(b'a SELECT "\xff"\r\n', utf8=True), ParseError)
    assert parse_one(b"a CREATE Tom&Jerry\r\n", utf8=True) == c.Create("a", "Tom&Jerry")


def test_nesting_limit() -> None:
    """RFC 3501 9: search-key may nest without bound; the server bounds it."""
    deep = b"a SEARCH " + b"(" * 20 + b"ALL" + b")" * 20 + b"\r\n"
    assert isinstance(parse_one(deep, max_depth=16), ParseError)
    assert isinstance(parse_one(deep, max_depth=32), c.Search)
    nots = b"a SEARCH " + b"NOT " * 5000 + b"ALL\r\n"
    assert isinstance(parse_one(nots, line_limit=30000), ParseError)


def test_idle_waits_for_the_server_then_reads_done() -> None:
    """RFC 2177 3: after "+ idling" the only valid line is DONE."""
    p = CommandParser()
    assert p.feed(b"a IDLE\r\n") == [c.Idle("a")]
    assert p.paused
    assert p.feed(b"done\r\nb NOOP\r\n") == []
    assert p.expect_done() == [IdleDone(), c.Noop("b")]
    assert p.feed(b"c IDLE\r\n") == [c.Idle("c")]
    assert p.expect_done() == []
    [err] = p.feed(b"d NOOP\r\n")
    assert isinstance(err, ParseError) and err.tag is None


def test_refused_idle_resumes_normal_parsing() -> None:
    """RFC 2177 3: a refused IDLE is answered and the next line is a command again."""
    p = CommandParser()
    assert p.feed(b"a IDLE\r\nDONE\r\n") == [c.Idle("a")]
    [err] = p.resume()
    assert isinstance(err, ParseError)


def test_sasl_exchange_pauses_after_every_client_line() -> None:
    """RFC 3501 6.2.2: each challenge gets one response line; "*" cancels."""
    p = CommandParser()
    assert p.feed(b"a AUTHENTICATE PLAIN\r\n") == [c.Authenticate("a", "PLAIN")]
    assert p.expect_sasl_response() == []
    assert p.feed(b"AGFsaWNlAHB3\r\n") == [SaslResponse(b"AGFsaWNlAHB3")]
    assert p.paused
    assert p.feed(b"b NOOP\r\n") == []
    assert p.resume() == [c.Noop("b")]
    p.feed(b"c AUTHENTICATE SCRAM-SHA-256 biwsbj1hLHI9eA==\r\n")
    p.expect_sasl_response()
    [cancel] = p.feed(b"*\r\n")
    assert cancel.cancelled


def test_input_while_paused_is_bounded() -> None:
    p = CommandParser(line_limit=50)
    p.feed(b"a IDLE\r\n")
    [err] = p.feed(b"x" * 100)
    assert err.fatal and p.closed and p.buffered == 0


def test_parser_stops_after_starttls_so_injected_commands_are_not_run() -> None:
    """RFC 3501 6.2.1, RFC 7817 (no plaintext command may survive the TLS handshake)."""
    p = CommandParser()
    assert p.feed(b"a STARTTLS\r\nb LOGIN x y\r\n") == [c.StartTLS("a")]
    assert p.paused
    assert p.feed(b"more") == []
    assert p.take_pending() == b"b LOGIN x y\r\nmore"
    assert p.feed(b"c NOOP\r\n") == [c.Noop("c")]


def test_unknown_command_is_kept_for_a_bad_answer() -> None:
    cmd = roundtrip(b"a1 XYZZY 1 {2+}\r\nab\r\n")
    assert cmd == c.Unknown("a1", "XYZZY", b"1 {2+}\r\nab")


# -- commands -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name", ["CAPABILITY", "NOOP", "LOGOUT", "CHECK", "CLOSE", "UNSELECT", "EXPUNGE", "NAMESPACE"]
)
def test_commands_without_arguments(name: str) -> None:
    """RFC 3501 6.1.1-6.1.3, 6.4.1-6.4.3; RFC 3691 UNSELECT; RFC 2342 NAMESPACE."""
    cmd = roundtrip(b"t " + name.lower().encode() + b"\r\n")
    assert cmd.name == name
    assert isinstance(parse_one(b"t " + name.encode() + b" x\r\n"), ParseError)


def test_login_astrings() -> None:
    """RFC 3501 6.2.3: userid and password are astrings."""
    assert roundtrip(b'a LOGIN alice@example.test "p\\"w\\\\"\r\n') == c.Login(
        "a", "alice@example.test", 'p"w\\'
    )
    assert "secret" not in repr(c.Login("a", "u", "secret"))


def test_authenticate_with_initial_response() -> None:
    """RFC 4959 (SASL-IR): "=" is an empty initial response."""
    ir = base64.b64encode(b"\0alice\0pw")
    assert roundtrip(b"a AUTHENTICATE PLAIN " + ir + b"\r\n") == c.Authenticate("a", "PLAIN", b"\0alice\0pw")
    assert roundtrip(b"a AUTHENTICATE PLAIN =\r\n").initial_response == b""
    assert isinstance(parse_one(b"a AUTHENTICATE PLAIN a*b\r\n"), ParseError)


def test_select_examine_condstore_qresync() -> None:
    """RFC 3501 6.3.1-2; RFC 7162 3.1.8 (CONDSTORE) and 3.2.5 (QRESYNC parameter)."""
    assert roundtrip(b"a select inbox\r\n") == c.Select("a", "INBOX")
    assert roundtrip(b"a EXAMINE Archive (CONDSTORE)\r\n") == c.Examine("a", "Archive", True)
    cmd = roundtrip(b"a SELECT INBOX (QRESYNC (67890007 90060115194045000 41:211,214:541))\r\n")
    assert cmd.qresync == c.QResync(67890007, 90060115194045000, SequenceSet.parse("41:211,214:541"))
    cmd = roundtrip(b"a SELECT INBOX (QRESYNC (1 2 1:9 (1,5 1,9)))\r\n")
    assert cmd.qresync.seq_match == (SequenceSet.parse("1,5"), SequenceSet.parse("1,9"))
    assert isinstance(parse_one(b"a SELECT INBOX (FOO)\r\n"), ParseError)


def test_mailbox_names_are_modified_utf7() -> None:
    """RFC 3501 5.1.3, decoded by the store's codec; INBOX is case-insensitive (5.1)."""
    assert roundtrip(b"a CREATE Entw&APw-rfe.2024\r\n") == c.Create("a", "Entwürfe.2024")
    assert roundtrip(b"a CREATE Drafts (USE (\\Drafts))\r\n").special_use == ("\\Drafts",)  # RFC 6154 5.2
    assert isinstance(parse_one(b"a CREATE Drafts (USE (Drafts))\r\n"), ParseError)
    assert roundtrip(b'a DELETE "My Folder"\r\n') == c.Delete("a", "My Folder")
    assert roundtrip(b"a RENAME iNbOx Old\r\n") == c.Rename("a", "INBOX", "Old")
    assert roundtrip(b"a SUBSCRIBE {3}\r\na b\r\n") == c.Subscribe("a", "a b")
    assert roundtrip(b"a UNSUBSCRIBE Junk\r\n") == c.Unsubscribe("a", "Junk")
    assert isinstance(parse_one(b"a CREATE &Jjo\r\n"), ParseError)
    assert isinstance(parse_one(b"a CREATE &AGE-\r\n"), ParseError)  # "a" encoded: not canonical


def test_list_basic_and_extended() -> None:
    """RFC 3501 6.3.8; RFC 5258 3 (selection and return options); RFC 5819 (RETURN STATUS)."""
    assert roundtrip(b'a LIST "" %\r\n') == c.List("a", "", ("%",))
    assert roundtrip(b"a LIST Archive *\r\n").reference == "Archive"
    cmd = roundtrip(
        b'a LIST (SUBSCRIBED RECURSIVEMATCH) "" ("INBOX" Sent*) '
        b"RETURN (CHILDREN SPECIAL-USE STATUS (MESSAGES UIDNEXT))\r\n"
    )
    assert cmd.select_options == ("SUBSCRIBED", "RECURSIVEMATCH")
    assert cmd.patterns == ("INBOX", "Sent*")
    assert cmd.return_options == ("CHILDREN", "SPECIAL-USE")
    assert cmd.status_items == ("MESSAGES", "UIDNEXT")
    assert roundtrip(b'a LIST () "" % RETURN ()\r\n').return_options == ()
    assert isinstance(parse_one(b'a LIST (BOGUS) "" %\r\n'), ParseError)
    assert roundtrip(b'a LSUB "" *\r\n') == c.Lsub("a", "", "*")


def test_status() -> None:
    """RFC 3501 6.3.10; RFC 7162 HIGHESTMODSEQ; RFC 8438 SIZE."""
    cmd = roundtrip(b"a STATUS INBOX (MESSAGES UNSEEN HIGHESTMODSEQ SIZE)\r\n")
    assert cmd.items == ("MESSAGES", "UNSEEN", "HIGHESTMODSEQ", "SIZE")
    assert isinstance(parse_one(b"a STATUS INBOX ()\r\n"), ParseError)
    assert isinstance(parse_one(b"a STATUS INBOX (FOO)\r\n"), ParseError)


def test_append() -> None:
    """RFC 3501 6.3.11 and 9 (date-time); RFC 3516 4.4 (literal8)."""
    cmd = roundtrip(b'a APPEND Sent (\\Seen $Label1) " 5-Mar-2024 09:08:07 -0130" {5}\r\nhello\r\n')
    assert cmd.flags == ("\\Seen", "$Label1")
    assert cmd.internal_date == dt.datetime(
        2024, 3, 5, 9, 8, 7, tzinfo=dt.timezone(-dt.timedelta(hours=1, minutes=30))
    )
    assert cmd.message == b"hello"
    bin_cmd = roundtrip(b"a APPEND INBOX ~{3}\r\na\0b\r\n")
    assert bin_cmd.binary and bin_cmd.message == b"a\0b"
    assert roundtrip(b"a APPEND INBOX {0}\r\n\r\n").message == b""
    assert isinstance(parse_one(b'a APPEND INBOX "31-Feb-2024 00:00:00 +0000" {1+}\r\nx\r\n'), ParseError)
    assert isinstance(parse_one(b"a APPEND INBOX hello\r\n"), ParseError)
    assert isinstance(parse_one(b"a LOGIN ~{1+}\r\nx y\r\n"), ParseError)
    assert isinstance(parse_one(b"a APPEND INBOX\r\n"), ParseError)


def test_multiappend() -> None:
    """RFC 3502 6.3.11: several messages in one APPEND."""
    cmd = roundtrip(b"a APPEND Sent {1+}\r\nx (\\Seen) {2+}\r\nyz ~{1+}\r\n\0\r\n")
    assert [m.message for m in cmd.messages] == [b"x", b"yz", b"\0"]
    assert cmd.messages[1].flags == ("\\Seen",) and cmd.messages[2].binary


def test_search_every_rfc3501_key() -> None:
    """RFC 3501 6.4.4 and 9 search-key: every key parses and writes back."""
    keys = (
        b"ALL ANSWERED BCC x BEFORE 1-Feb-1994 BODY y CC z DELETED DRAFT FLAGGED FROM f "
        b"HEADER X-Spam yes KEYWORD $Junk LARGER 100 NEW NOT SEEN OLD ON 2-Feb-1994 "
        b'OR FROM a TO b RECENT SEEN SENTBEFORE "3-Feb-1994" SENTON 4-Feb-1994 SENTSINCE 5-Feb-1994 '
        b"SINCE 6-Feb-1994 SMALLER 5 SUBJECT {4}\r\nhi\r\n TEXT t TO u UID 1:* UNANSWERED "
        b"UNDELETED UNDRAFT UNFLAGGED UNKEYWORD $Later UNSEEN 1,2:4 (SEEN FLAGGED) $"
    )
    cmd = roundtrip(b"a SEARCH " + keys + b"\r\n")
    assert len(cmd.keys) == 38
    assert cmd.keys[1] == s.Key("ANSWERED")
    assert cmd.keys[3] == s.Key("BEFORE", (dt.date(1994, 2, 1),))
    assert s.Header(b"X-Spam", b"yes") in cmd.keys
    assert s.Key("SUBJECT", (b"hi\r\n",)) in cmd.keys
    assert cmd.keys[-1] == s.Sequence(SequenceSet(saved=True))


def test_search_charset_return_and_modseq() -> None:
    """RFC 3501 6.4.4 CHARSET; RFC 4731 3.1 RETURN; RFC 7162 3.1.5 MODSEQ."""
    cmd = roundtrip(b'a UID SEARCH RETURN (MIN MAX COUNT ALL) CHARSET UTF-8 TEXT "caf\\\\e"\r\n')
    assert cmd.uid and cmd.charset == "UTF-8" and cmd.return_options == ("MIN", "MAX", "COUNT", "ALL")
    cmd = roundtrip(b'a SEARCH MODSEQ "/flags/\\\\draft" all 620162338\r\n')
    assert cmd.keys == (s.ModSeq(620162338, b"/flags/\\draft", "ALL"),)
    assert roundtrip(b"a SEARCH MODSEQ 5 YOUNGER 60\r\n").keys[0] == s.ModSeq(5)
    assert roundtrip(b"a SEARCH RETURN () ALL\r\n").return_options == ()
    for bad in (b"a SEARCH\r\n", b"a SEARCH FOO\r\n", b"a SEARCH BEFORE 1994\r\n", b"a SEARCH OR A\r\n"):
        assert isinstance(parse_one(bad), ParseError), bad


def test_fetch_attributes_and_macros() -> None:
    """RFC 3501 6.4.5 and 9 fetch-att, section, partial; RFC 3516 BINARY; RFC 7162 MODSEQ."""
    cmd = roundtrip(b"a FETCH 1:* ALL\r\n")
    assert cmd.macro == "ALL" and cmd.items[-1] == f.Attr("ENVELOPE")
    assert roundtrip(b"a FETCH 2 full\r\n").items[-1] == f.Attr("BODY")
    assert roundtrip(b"a FETCH 2 flags\r\n").attributes == (f.Attr("FLAGS"),)
    cmd = roundtrip(
        b"a UID FETCH 1,3 (UID FLAGS INTERNALDATE RFC822.SIZE RFC822 RFC822.HEADER RFC822.TEXT "
        b"ENVELOPE BODY BODYSTRUCTURE MODSEQ BODY[] BODY.PEEK[1.2.HEADER]<0.1024> "
        b"BODY[HEADER.FIELDS.NOT (Received X-Spam)] BODY[2.MIME] BODY[3.TEXT] BODY[4] "
        b"BINARY[1] BINARY.PEEK[]<5.10> BINARY.SIZE[2])\r\n"
    )
    assert cmd.uid and len(cmd.attributes) == 20
    peek = cmd.attributes[12]
    assert peek == f.Section("BODY", True, (1, 2), "HEADER", (), (0, 1024))
    assert peek.response_name() == b"BODY[1.2.HEADER]<0>"
    assert cmd.attributes[13].fields == ("Received", "X-Spam")
    for bad in (
        b"a FETCH 1 BODY[MIME]\r\n",
        b"a FETCH 1 BODY[0]\r\n",
        b"a FETCH 1 BODY[1.]\r\n",
        b"a FETCH 1 BINARY[HEADER]\r\n",
        b"a FETCH 1 BODY[]<1.0>\r\n",
        b"a FETCH 1 (ALL)\r\n",
        b"a FETCH 1 ()\r\n",
        b"a FETCH 0 FLAGS\r\n",
        b"a FETCH 1 BODY[HEADER.FIELDS ()]\r\n",
    ):
        assert isinstance(parse_one(bad), ParseError), bad


def test_fetch_modifiers() -> None:
    """RFC 7162 3.1.4 CHANGEDSINCE and 3.2.6 VANISHED."""
    cmd = roundtrip(b"a UID FETCH 300:500 (FLAGS) (CHANGEDSINCE 12345 VANISHED)\r\n")
    assert cmd.changedsince == 12345 and cmd.vanished
    assert isinstance(parse_one(b"a FETCH 1 FLAGS (CHANGEDSINCE)\r\n"), ParseError)


def test_store() -> None:
    """RFC 3501 6.4.6; RFC 7162 3.1.3 UNCHANGEDSINCE."""
    cmd = roundtrip(b"a STORE 2:4 +FLAGS (\\Deleted)\r\n")
    assert (cmd.mode, cmd.silent, cmd.flags) == ("+", False, ("\\Deleted",))
    cmd = roundtrip(b"a UID STORE 1 (UNCHANGEDSINCE 7) -FLAGS.SILENT \\Seen $Junk\r\n")
    assert (cmd.uid, cmd.mode, cmd.silent, cmd.flags, cmd.unchangedsince) == (
        True,
        "-",
        True,
        ("\\Seen", "$Junk"),
        7,
    )
    assert roundtrip(b"a STORE 1 FLAGS ()\r\n").flags == ()
    assert isinstance(parse_one(b"a STORE 1 *FLAGS (x)\r\n"), ParseError)


def test_copy_move_uid_expunge() -> None:
    """RFC 3501 6.4.7-8; RFC 6851 MOVE; RFC 4315 2.1 UID EXPUNGE."""
    assert roundtrip(b"a COPY 1:3 Archive\r\n") == c.Copy("a", False, SequenceSet.parse("1:3"), "Archive")
    assert roundtrip(b"a UID MOVE 5 Junk\r\n") == c.Move("a", True, SequenceSet.parse("5"), "Junk")
    assert roundtrip(b"a UID EXPUNGE 3000:3002\r\n") == c.UidExpunge("a", SequenceSet.parse("3000:3002"))
    assert isinstance(parse_one(b"a UID NOOP\r\n"), ParseError)


def test_id_enable_compress_quota() -> None:
    """RFC 2971 ID, RFC 5161 ENABLE, RFC 4978 COMPRESS, RFC 9208 GETQUOTA/GETQUOTAROOT."""
    assert roundtrip(b'a ID ("name" "Thunderbird" "version" NIL)\r\n').parameters == (
        ("name", "Thunderbird"),
        ("version", None),
    )
    assert roundtrip(b"a ID NIL\r\n").parameters is None
    assert roundtrip(b"a ENABLE CONDSTORE utf8=accept\r\n").capabilities == ("CONDSTORE", "UTF8=ACCEPT")
    assert roundtrip(b"a COMPRESS DEFLATE\r\n") == c.Compress("a", "DEFLATE")
    assert roundtrip(b'a GETQUOTA ""\r\n') == c.GetQuota("a", "")
    assert roundtrip(b"a GETQUOTAROOT INBOX\r\n") == c.GetQuotaRoot("a", "INBOX")


def test_sort_and_thread() -> None:
    """RFC 5256 3: SORT criteria then charset then search keys; THREAD algorithm then charset."""
    cmd = roundtrip(b"a UID SORT (REVERSE DATE SUBJECT) UTF-8 SINCE 1-Feb-1994\r\n")
    assert cmd.criteria == ((True, "DATE"), (False, "SUBJECT")) and cmd.charset == "UTF-8"
    cmd = roundtrip(b"a THREAD REFERENCES US-ASCII ALL\r\n")
    assert (cmd.algorithm, cmd.charset, cmd.keys) == ("REFERENCES", "US-ASCII", (s.Key("ALL"),))
    assert isinstance(parse_one(b"a SORT (BOGUS) UTF-8 ALL\r\n"), ParseError)


def test_sequence_sets() -> None:
    """RFC 3501 9 sequence-set, "*" is the largest number; RFC 5182 "$"."""
    seq = SequenceSet.parse("4:2,7,9:*")
    assert list(seq.resolve(10)) == [2, 3, 4, 7, 9, 10]
    assert list(SequenceSet.parse("*:5").resolve(3)) == [3]
    assert list(SequenceSet.parse("1:*").resolve(0)) == []
    assert seq.contains(10, 10) and not seq.contains(5, 10)
    for bad in ("", "0", "1:", ":1", "01", "1,,2", "4294967296", "$,1"):
        with pytest.raises(ValueError):
            SequenceSet.parse(bad)


REPEATED = [
    b"NOOP",
    b"IDLE",
    b"SELECT INBOX",
    b'EXAMINE "Sent" (CONDSTORE)',
    b'STATUS "Archive/2024" (MESSAGES UIDNEXT UNSEEN)',
    b'LIST "" "*" RETURN (SPECIAL-USE)',
    b"UID FETCH 1:* (FLAGS)",
    b"FETCH 1:5 (UID RFC822.SIZE BODY.PEEK[HEADER.FIELDS (FROM SUBJECT)]<0.100>)",
    b"UID SEARCH UNSEEN NOT DELETED SINCE 1-Jan-2024",
    b"UID EXPUNGE 3:4",
    b"CLOSE",
]


@pytest.mark.parametrize("line", REPEATED)
def test_a_command_line_seen_before_is_made_from_the_cache_as_parsing_would(line: bytes) -> None:
    parser.clear_cache()
    first = CommandParser().feed(b"a1 " + line + b"\r\n")
    again = CommandParser().feed(b"b.2 " + line + b"\r\n")  # from the cache, with its own tag
    assert len(first) == len(again) == 1 and isinstance(first[0], c.Command)
    assert len(parser._parsed) == 1
    assert again[0] == dataclasses.replace(first[0], tag="b.2")
    assert again[0].to_bytes() == first[0].to_bytes().replace(b"a1 ", b"b.2 ", 1)


def test_the_cache_keeps_no_credentials_and_no_bad_tags() -> None:
    parser.clear_cache()
    login = CommandParser().feed(b'a1 LOGIN "alice" "secret"\r\n')
    assert isinstance(login[0], c.Login) and not parser._parsed
    CommandParser().feed(b"a1 NOOP\r\n")
    [error] = CommandParser().feed(b"a+b NOOP\r\n")  # the cached body behind an invalid tag
    assert isinstance(error, ParseError)
    pausing = CommandParser()
    assert isinstance(pausing.feed(b"a1 IDLE\r\n")[0], c.Idle) and pausing.paused
    pausing = CommandParser()
    assert isinstance(pausing.feed(b"a2 IDLE\r\nDONE\r\n")[0], c.Idle) and pausing.paused  # cached


def test_the_cache_tells_utf8_sessions_apart() -> None:
    parser.clear_cache()
    line = 'a1 SELECT "Entwürfe"\r\n'.encode()
    assert isinstance(CommandParser(utf8=True).feed(line)[0], c.Select)
    assert isinstance(CommandParser().feed(line)[0], ParseError)  # 8-bit without UTF8=ACCEPT
    assert isinstance(CommandParser(utf8=True).feed(line)[0], c.Select)
