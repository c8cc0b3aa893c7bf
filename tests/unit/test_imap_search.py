"""The SEARCH engine: every RFC 3501 search key, MODSEQ, sequence sets, decoding, ESEARCH shaping."""

from __future__ import annotations

import base64
import datetime as dt
from dataclasses import dataclass

import pytest

from mailroom.imap import search as s
from mailroom.imap.protocol import CommandParser, ContinuationNeeded, responses
from mailroom.imap.protocol import commands as c


# ------------------------------------------------------------------------------------ helpers
@dataclass
class View:
    seq: int
    uid: int
    flags: frozenset[str] = frozenset()
    modseq: int = 1
    size: int = 100
    internaldate: float = 0.0
    raw: bytes = b""
    reads: int = 0

    def data(self) -> bytes:
        self.reads += 1
        return self.raw


class Untouchable(View):
    def data(self) -> bytes:
        raise AssertionError("a flag-only search read the message")


def command(program: bytes) -> c.Search:
    """Parse `SEARCH <program>` with the real parser (literals included)."""
    parser = CommandParser()
    events = parser.feed(b"a SEARCH " + program + b"\r\n")
    events = [e for e in events if not isinstance(e, ContinuationNeeded)]
    assert len(events) == 1 and isinstance(events[0], c.Search), events
    return events[0]


def lit(text: str) -> bytes:
    """An IMAP literal holding `text` in UTF-8."""
    raw = text.encode()
    return b"{%d}\r\n%s" % (len(raw), raw)


def run(program: bytes | str, views: list[View], **ctx) -> list[int]:
    """The sequence numbers SEARCH answers for `program`."""
    cmd = command(program.encode() if isinstance(program, str) else program)
    ctx.setdefault("charset", cmd.charset)
    return [v.seq for v in s.evaluate(cmd.keys, views, s.SearchContext(**ctx))]


def message(
    subject: str = "Hello",
    frm: str = "Alice Example <alice@example.com>",
    to: str = "Bob <bob@example.org>",
    date: str | None = "Mon, 15 Jan 2024 10:00:00 +0000",
    body: bytes | str = "Just a plain body.\r\n",
    headers: tuple[str, ...] = (),
) -> bytes:
    lines = [f"From: {frm}", f"To: {to}", f"Subject: {subject}"]
    if date is not None:
        lines.append(f"Date: {date}")
    lines += headers
    head = "\r\n".join(lines).encode("utf-8")
    return head + b"\r\n\r\n" + (body.encode("utf-8") if isinstance(body, str) else body)


def views_of(*raws: bytes, **fields) -> list[View]:
    return [View(i, 10 * i, raw=raw, **fields) for i, raw in enumerate(raws, 1)]


def ts(text: str) -> float:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp()


# ------------------------------------------------------------------------------------- flags
FLAGGED = [
    View(1, 10, frozenset({"\\Seen"})),
    View(2, 20, frozenset({"\\Answered", "\\Seen"})),
    View(3, 30, frozenset({"\\Deleted"})),
    View(4, 40, frozenset({"\\Draft", "\\Flagged"})),
    View(5, 50, frozenset({"$Forwarded", "Work"})),
]


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("ALL", [1, 2, 3, 4, 5]),
        ("SEEN", [1, 2]),
        ("UNSEEN", [3, 4, 5]),
        ("ANSWERED", [2]),
        ("UNANSWERED", [1, 3, 4, 5]),
        ("DELETED", [3]),
        ("UNDELETED", [1, 2, 4, 5]),
        ("DRAFT", [4]),
        ("UNDRAFT", [1, 2, 3, 5]),
        ("FLAGGED", [4]),
        ("UNFLAGGED", [1, 2, 3, 5]),
        ("KEYWORD $Forwarded", [5]),
        ("KEYWORD work", [5]),  # keywords compare case-insensitively
        ("KEYWORD Missing", []),
        ("UNKEYWORD WORK", [1, 2, 3, 4]),
    ],
)
def test_flag_keys(key: str, expected: list[int]) -> None:
    assert run(key, FLAGGED) == expected


def test_recent_new_old() -> None:
    views = [View(1, 10, frozenset({"\\Seen"})), View(2, 20), View(3, 30)]
    recent = frozenset({10, 20})
    assert run("RECENT", views, recent_uids=recent) == [1, 2]
    assert run("NEW", views, recent_uids=recent) == [2]
    assert run("OLD", views, recent_uids=recent) == [3]
    # Without \Recent (what Mailroom reports today) nothing is new and everything is old.
    assert run("NEW", views) == []
    assert run("OLD", views) == [1, 2, 3]


def test_flag_only_search_never_reads_messages() -> None:
    views = [
        Untouchable(i, i, frozenset({"\\Seen"}) if i % 3 else frozenset(), modseq=i)
        for i in range(1, 100_001)
    ]
    matched = run("UNSEEN", views)
    assert len(matched) == 33_333 and matched[:2] == [3, 6]
    assert run("OR FLAGGED NOT (SEEN UID 1:50000)", views)[:3] == [3, 6, 9]
    assert run("OR FLAGGED NOT (SEEN UID 1:50000) MODSEQ 99999", views) == [99999, 100000]
    assert len(run("NOT KEYWORD x 99990:*", views)) == 11


def test_cheap_keys_run_first_so_only_candidates_are_read() -> None:
    views = views_of(*(message(body="needle") for _ in range(6)))
    for v in views[:4]:
        v.flags = frozenset({"\\Seen"})
    assert run("BODY needle UNSEEN", views) == [5, 6]
    assert [v.reads for v in views] == [0, 0, 0, 0, 1, 1]


def test_size_and_attribute_keys_do_not_read_messages() -> None:
    views = [Untouchable(1, 1, size=99), Untouchable(2, 2, size=100), Untouchable(3, 3, size=101)]
    assert run("LARGER 100", views) == [3]
    assert run("SMALLER 100", views) == [1]
    assert run("NOT LARGER 100 NOT SMALLER 100", views) == [2]
    assert run("LARGER 99 SMALLER 101", views) == [2]


# -------------------------------------------------------------------------------------- dates
def test_internal_date_keys_use_utc_days() -> None:
    views = [
        View(1, 1, internaldate=ts("2024-03-09T23:59:59")),
        View(2, 2, internaldate=ts("2024-03-10T00:00:00")),
        View(3, 3, internaldate=ts("2024-03-10T23:59:59")),
        View(4, 4, internaldate=ts("2024-03-11T00:00:00")),
    ]
    assert run("BEFORE 10-Mar-2024", views) == [1]
    assert run("ON 10-Mar-2024", views) == [2, 3]
    assert run("SINCE 10-Mar-2024", views) == [2, 3, 4]
    assert run("SINCE 11-Mar-2024", views) == [4]
    # Another server zone moves the day boundaries.
    plus2 = dt.timezone(dt.timedelta(hours=2))
    assert run("ON 10-Mar-2024", views, tz=plus2) == [1, 2]


def test_sent_date_keys_use_the_written_date_and_ignore_its_zone() -> None:
    views = views_of(
        message(date="Sun, 10 Mar 2024 23:30:00 -0500"),  # 11 Mar in UTC, but written as 10 Mar
        message(date="Mon, 11 Mar 2024 00:30:00 +1400"),  # 10 Mar in UTC, written as 11 Mar
        message(date="not a date at all"),  # falls back to the INTERNALDATE
        message(date=None),
        message(date="Thu, 31 Feb 2024 10:00:00 +0000"),  # no such day
        message(date="Mon, 11 Mar 2024 10:00:00 +9999"),  # absurd zone, date still readable
    )
    for v in views[2:5]:
        v.internaldate = ts("2024-03-12T12:00:00")
    assert run("SENTON 10-Mar-2024", views) == [1]
    assert run("SENTON 11-Mar-2024", views) == [2, 6]
    assert run("SENTBEFORE 11-Mar-2024", views) == [1]
    assert run("SENTSINCE 11-Mar-2024", views) == [2, 3, 4, 5, 6]
    assert run("SENTON 12-Mar-2024", views) == [3, 4, 5]


def test_older_younger() -> None:
    now = ts("2024-01-01T12:00:00")
    views = [View(1, 1, internaldate=now - 3600), View(2, 2, internaldate=now - 60)]
    assert run("OLDER 600", views, now=now) == [1]
    assert run("YOUNGER 600", views, now=now) == [2]
    assert run("YOUNGER 3600", views, now=now) == [1, 2]


# ------------------------------------------------------------------------------------ headers
def test_address_and_subject_keys() -> None:
    views = views_of(
        message(headers=("Cc: Carol <carol@example.net>", "Bcc: dave@example.net")),
        message(frm="bob@example.org", to="alice@example.com", subject="Quarterly REPORT"),
    )
    assert run("FROM alice", views) == [1]
    assert run("FROM ALICE@EXAMPLE.COM", views) == [1]
    assert run('FROM "Alice Example"', views) == [1]
    assert run("TO alice", views) == [2]
    assert run("CC carol", views) == [1]
    assert run("CC bob", views) == []
    assert run("BCC dave", views) == [1]
    assert run("SUBJECT report", views) == [2]
    assert run('SUBJECT "quarterly report"', views) == [2]
    assert run("SUBJECT absent", views) == []
    assert run('SUBJECT ""', views) == [1, 2]  # the empty string is in every value


def test_encoded_words_are_matched_after_decoding() -> None:
    views = views_of(
        message(subject="=?UTF-8?Q?Gr=C3=BC=C3=9Fe_aus_K=C3=B6ln?="),
        message(frm="=?iso-8859-1?B?Suly9G1l?= <jerome@example.fr>"),  # "Jérôme"
        message(subject="=?utf-8?b?5pel5pys6Kqe?= =?utf-8?b?44Gu5Lu25ZCN?="),  # split across words
        message(subject="=?utf-8?q?caf=C3?= =?utf-8?q?=A9_cr=C3=A8me?="),  # a character split in two
    )
    assert run(b"SUBJECT " + lit("Köln"), views) == [1]
    assert run(b"SUBJECT " + lit("GRÜSSE AUS"), views) == [1]  # ß folds to ss
    assert run(b"CHARSET UTF-8 FROM " + lit("jérôme"), views) == [2]
    assert run(b"SUBJECT " + lit("語の件"), views) == [3]
    assert run(b"SUBJECT " + lit("café crème"), views) == [4]
    # The encoded form itself is not what is searched.
    assert run("SUBJECT =?UTF-8?Q?", views) == []


def test_header_key() -> None:
    views = views_of(
        message(headers=("X-Spam-Flag: YES", "List-Id: <dev.lists.example.com>")),
        message(headers=("X-Spam-Flag: no",)),
        message(),
    )
    assert run("HEADER X-Spam-Flag yes", views) == [1]
    assert run("HEADER x-spam-flag NO", views) == [2]
    assert run('HEADER X-Spam-Flag ""', views) == [1, 2]  # empty: the field is present
    assert run('HEADER List-Id "dev.lists"', views) == [1]
    assert run("HEADER Subject hello", views) == [1, 2, 3]


def test_folded_and_repeated_headers() -> None:
    raw = (
        b"Subject: a very long\r\n subject that folds\r\n\tover lines\r\n"
        b"Received: from a\r\nReceived: from b\r\n\r\nbody\r\n"
    )
    views = views_of(raw)
    assert run('SUBJECT "long subject that"', views) == [1]
    assert run('SUBJECT "folds over"', views) == []  # the tab is kept, as unfolding says
    assert run('HEADER Received "from b"', views) == [1]


# --------------------------------------------------------------------------------------- body
def mime(parts: list[tuple[str, str, bytes]], boundary: str = "XyZ") -> bytes:
    """A multipart/mixed body from (content-type, transfer-encoding, encoded body) parts."""
    out = b"This is the preamble, not a part.\r\n"
    for ctype, cte, body in parts:
        out += f"--{boundary}\r\nContent-Type: {ctype}\r\n".encode()
        if cte:
            out += f"Content-Transfer-Encoding: {cte}\r\n".encode()
        out += b"\r\n" + body + b"\r\n"
    return out + f"--{boundary}--\r\nepilogue needle-epilogue\r\n".encode()


def test_base64_body_is_found_by_body() -> None:
    text = "Die Rechnung für März liegt bei.\r\n".encode()
    raw = message(
        body=base64.encodebytes(text),
        headers=("Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: base64"),
    )
    views = views_of(raw, message())
    assert run(b"BODY " + lit("MÄRZ"), views) == [1]
    assert run("BODY Rechnung", views) == [1]
    assert run("BODY UmVjaG51bmc", views) == []  # not the encoded text


def test_quoted_printable_and_charsets() -> None:
    raw = message(
        body=b"Caf=E9 au lait, a soft=\r\nly broken line.\r\n",
        headers=(
            'Content-Type: text/plain; charset="ISO-8859-1"',
            "Content-Transfer-Encoding: quoted-printable",
        ),
    )
    views = views_of(raw)
    assert run(b"BODY " + lit("café"), views) == [1]
    assert run("BODY softly", views) == [1]


def test_every_text_part_of_a_multipart_is_searched() -> None:
    body = mime(
        [
            ("text/plain; charset=us-ascii", "", b"first part apple"),
            ("text/html; charset=utf-8", "base64", base64.encodebytes(b"<p>second banana</p>")),
            ("application/octet-stream", "base64", base64.encodebytes(b"binary cherry")),
            (
                'multipart/alternative; boundary="inner"',
                "",
                b"--inner\r\nContent-Type: text/plain\r\n\r\nnested damson\r\n--inner--",
            ),
            (
                "message/rfc822",
                "",
                b"Subject: forwarded elderberry\r\n\r\nforwarded fig\r\n",
            ),
        ]
    )
    views = views_of(message(body=body, headers=('Content-Type: multipart/mixed; boundary="XyZ"',)))
    for word in ("apple", "banana", "damson", "elderberry", "fig"):
        assert run(f"BODY {word}", views) == [1], word
    assert run("BODY cherry", views) == []  # not a text part
    assert run("BODY preamble", views) == []
    assert run("BODY needle-epilogue", views) == []


def test_body_and_text() -> None:
    views = views_of(message(subject="Invoice 42", body="Please pay soon.\r\n"))
    assert run("BODY invoice", views) == []
    assert run("TEXT invoice", views) == [1]
    assert run("TEXT pay", views) == [1]
    assert run("TEXT subject", views) == [1]  # the header, field names included
    assert run("TEXT nowhere", views) == []


# ---------------------------------------------------------------------------- NOT, OR, nesting
def test_not_or_and_nesting() -> None:
    views = views_of(
        message(frm="alice@a.example", subject="one"),
        message(frm="bob@b.example", subject="two"),
        message(frm="carol@c.example", subject="three"),
    )
    views[0].flags = frozenset({"\\Seen"})
    views[1].flags = frozenset({"\\Flagged"})
    assert run("NOT SEEN", views) == [2, 3]
    assert run("NOT NOT SEEN", views) == [1]
    assert run("OR SEEN FLAGGED", views) == [1, 2]
    assert run("OR SEEN NOT FLAGGED", views) == [1, 3]
    assert run("NOT (SEEN FROM alice)", views) == [2, 3]
    assert run("NOT (SEEN FROM bob)", views) == [1, 2, 3]
    assert run("OR (FROM alice UNSEEN) (SUBJECT three)", views) == [3]
    assert run("OR OR SUBJECT one SUBJECT two SUBJECT three", views) == [1, 2, 3]
    assert run("NOT OR FROM alice FROM carol", views) == [2]
    assert run("(OR SEEN FLAGGED) NOT SUBJECT two", views) == [1]


# ----------------------------------------------------------------------------- sequence sets
def test_sequence_and_uid_sets() -> None:
    views = [View(i, uid) for i, uid in enumerate([3, 7, 8, 20, 41], 1)]
    assert run("2:4", views) == [2, 3, 4]
    assert run("4:2", views) == [2, 3, 4]
    assert run("*", views) == [5]
    assert run("3:*", views) == [3, 4, 5]
    assert run("1,5,9", views) == [1, 5]
    assert run("UID 7:20", views) == [2, 3, 4]
    assert run("UID *", views) == [5]
    assert run("UID 100:*", views) == [5]  # "n:*" always includes the last message
    assert run("UID 1:5,40:41", views) == [1, 5]
    assert run("UID 9:19", views) == []
    assert run("NOT UID 8", views) == [1, 2, 4, 5]
    assert run("2:* UID 1:10", views) == [2, 3]


def test_star_uses_the_context_not_the_subset() -> None:
    views = [View(1, 5), View(2, 9)]
    # The session may pass a subset; "*" is still the last message of the mailbox.
    assert run("*", views, max_seq=7, max_uid=30) == []
    assert run("UID 10:*", views, max_seq=7, max_uid=30) == []
    assert run("UID 9:*", views, max_seq=7, max_uid=30) == [2]


def test_saved_result() -> None:
    views = [View(1, 10), View(2, 20), View(3, 30)]
    assert run("$", views, saved_uids=frozenset({10, 30})) == [1, 3]
    assert run("UID $", views, saved_uids=frozenset({20})) == [2]
    assert run("NOT $", views, saved_uids=frozenset({20})) == [1, 3]
    assert run("$", views) == []  # nothing saved yet


def test_empty_mailbox() -> None:
    assert run("1:*", []) == []
    assert run("UID *", []) == []


# ------------------------------------------------------------------------------------- MODSEQ
def test_modseq() -> None:
    views = [View(1, 1, modseq=4), View(2, 2, modseq=5), View(3, 3, modseq=9)]
    assert run("MODSEQ 5", views) == [2, 3]
    assert run("MODSEQ 10", views) == []
    assert run('MODSEQ "/flags/\\\\Seen" all 9', views) == [3]
    cmd = command(b"OR SEEN (NOT MODSEQ 3)")
    assert s.mentions_modseq(cmd.keys)
    assert not s.mentions_modseq(command(b"OR SEEN (NOT UID 3)").keys)
    assert s.highest_modseq(views[:2]) == 5
    assert s.highest_modseq([]) is None


# ------------------------------------------------------------------------------------ charsets
def test_charsets() -> None:
    assert s.charset_supported(None)
    assert s.charset_supported("utf-8")
    assert s.charset_supported("US-ASCII")
    assert not s.charset_supported("ISO-8859-1")
    assert not s.charset_supported("UTF-7")
    views = views_of(message(subject="Grüße"))
    with pytest.raises(s.SearchError, match="US-ASCII"):
        run(b"CHARSET US-ASCII SUBJECT " + lit("Grüße"), views)
    with pytest.raises(s.SearchError, match="UTF-8"):
        run(b"CHARSET UTF-8 SUBJECT {2}\r\n\xff\xfe", views)
    assert run(b"CHARSET US-ASCII SUBJECT gr", views) == [1]


# ------------------------------------------------------------------------------------ ESEARCH
def test_esearch_shapes() -> None:
    views = [View(i, uid, modseq=m) for i, uid, m in [(2, 12, 7), (3, 13, 3), (4, 14, 9), (7, 20, 1)]]

    r = s.esearch_result(views, (), uid=False)  # RETURN () is RETURN (ALL)
    assert r.fields == {"all_numbers": [2, 3, 4, 7]} and r.saved_uids is None
    assert responses.esearch("a", **r.fields) == b'* ESEARCH (TAG "a") ALL 2:4,7\r\n'

    r = s.esearch_result(views, ("MIN", "MAX", "COUNT"), uid=True)
    assert r.fields == {"minimum": 12, "maximum": 20, "count": 4}
    line = responses.esearch("a", uid=True, **r.fields)
    assert line == b'* ESEARCH (TAG "a") UID MIN 12 MAX 20 COUNT 4\r\n'

    r = s.esearch_result([], ("MIN", "MAX", "COUNT", "ALL"), uid=False)
    assert responses.esearch("a", **r.fields) == b'* ESEARCH (TAG "a") COUNT 0\r\n'


def test_esearch_save() -> None:
    views = [View(2, 12, modseq=7), View(3, 13, modseq=3), View(4, 14, modseq=9)]
    r = s.esearch_result(views, ("SAVE",), uid=False)
    assert r.fields is None and r.saved_uids == frozenset({12, 13, 14})
    r = s.esearch_result(views, ("SAVE", "MIN"), uid=False)
    assert r.fields == {"minimum": 2} and r.saved_uids == frozenset({12})
    r = s.esearch_result(views, ("SAVE", "MIN", "MAX"), uid=False)
    assert r.saved_uids == frozenset({12, 14})
    r = s.esearch_result(views, ("SAVE", "MIN", "COUNT"), uid=False)
    assert r.saved_uids == frozenset({12, 13, 14})
    r = s.esearch_result([], ("SAVE",), uid=False)
    assert r.fields is None and r.saved_uids == frozenset()


def test_esearch_modseq() -> None:
    views = [View(2, 12, modseq=7), View(3, 13, modseq=30), View(4, 14, modseq=9)]
    assert s.esearch_result(views, ("ALL",), uid=False, with_modseq=True).fields["modseq"] == 30
    # Only MIN/MAX reported: the highest modseq of those messages.
    fields = s.esearch_result(views, ("MIN", "MAX"), uid=False, with_modseq=True).fields
    assert fields == {"minimum": 2, "maximum": 4, "modseq": 9}
    assert "modseq" not in s.esearch_result([], ("COUNT",), uid=False, with_modseq=True).fields


# ------------------------------------------------------------------------------ hostile input
def test_hostile_headers_and_bodies_do_not_break_search() -> None:
    raws = [
        b"",  # empty message
        b"no header separator at all, just one line",
        b"\x00\xff\xfe: binary\r\nSubject: \xff\xfe\xfd raw bytes\r\n\r\n\xff body",
        b"From nobody Mon Jan  1 00:00:00 2024\r\n continuation of nothing\r\nSubject: ok\r\n\r\n",
        message(subject="=?x-no-such-charset?q?secret?= visible"),
        message(subject="=?zlib?b?eJzLSM3JyQcABiwCFQ==?= =?unicode_escape?q?=5Cu0041?= z"),
        message(subject="=?utf-8?b?!!!not base64!!!?= =?utf-8?q?=ZZ?="),
        message(
            body=b"\xe9t\xe9",
            headers=("Content-Type: text/plain; charset=no-such-charset",),
        ),
        message(body=b"\r\n\r\n\r\n", headers=("Content-Type: text/plain; charset=base64",)),
        message(
            body=b"--x\r\n\r\nunterminated part kiwi",
            headers=("Content-Type: multipart/mixed; boundary=x",),
        ),
        message(body=b"text", headers=("Content-Type: multipart/mixed",)),  # no boundary
    ]
    views = views_of(*raws)
    assert run("SUBJECT ok", views) == [4]
    assert run("SUBJECT raw", views) == [3]
    assert run("SUBJECT =?x-no-such-charset?q?secret?=", views) == [5]  # unknown: kept as written
    assert run("SUBJECT unicode_escape", views) == [6]  # a codec that is not a charset: kept
    assert run("SUBJECT eJzLSM3JyQcABiwCFQ", views) == [6]  # zlib is no charset either
    assert run('SUBJECT "=zz"', views) == [7]  # a broken Q word keeps what it cannot decode
    assert run(b"BODY " + lit("\ufffd body"), views) == [3]
    # An unknown body charset is read as UTF-8, what does not fit becoming U+FFFD.
    assert run(b"BODY " + lit("\ufffdt\ufffd"), views) == [8]
    assert run("BODY kiwi", views) == [10]
    assert run("BODY zzz", views) == []
    assert run("SENTSINCE 1-Jan-1970", views) == list(range(1, 12))


def test_decode_header_directly() -> None:
    assert s.decode_header(b"=?utf-8?q?a?= =?utf-8?q?b?=") == "ab"  # blank between words dropped
    assert s.decode_header(b"=?utf-8?q?a?= x =?utf-8?q?b?=") == "a x b"
    assert s.decode_header(b"=?UTF-8*en?Q?hi_there?=") == "hi there"  # RFC 2231 language
    assert s.decode_header("plain ünïcode".encode()) == "plain ünïcode"
    assert s.decode_header(b"latin \xe9") == "latin \xe9"


def nested_multipart(depth: int, text: bytes) -> bytes:
    out = message(body=b"--b0\r\n", headers=("Content-Type: multipart/mixed; boundary=b0",))
    for i in range(1, depth):
        out += f"Content-Type: multipart/mixed; boundary=b{i}\r\n\r\n--b{i}\r\n".encode()
    return out + b"Content-Type: text/plain\r\n\r\n" + text + b"\r\n"


def test_mime_nesting_is_followed_up_to_a_limit() -> None:
    views = views_of(nested_multipart(5, b"shallow text"), nested_multipart(5000, b"deep text"))
    assert run("BODY shallow", views) == [1]
    assert run("BODY deep", views) == []  # beyond MAX_MIME_DEPTH: not searched, and no crash
    assert run("BODY text", views) == [1]


def test_search_with_keyword_context() -> None:
    views = [View(1, 10), View(2, 20, frozenset({"\\Seen"})), View(3, 30)]
    cmd = command(b"UNSEEN $")
    assert [v.seq for v in s.search(cmd.keys, views, saved_uids=[30, 20])] == [3]
    assert s.search(cmd.keys, views) == []
    cmd = command(b"NEW")
    assert [v.seq for v in s.search(cmd.keys, views, recent_uids={10, 20})] == [1]
