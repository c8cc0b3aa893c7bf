"""SORT (RFC 5256, RFC 5957) and THREAD (ORDEREDSUBJECT, REFERENCES) over message views."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pytest

from mailroom.imap import sort as so
from mailroom.imap import thread as th
from mailroom.imap.protocol import responses
from mailroom.imap.protocol.responses import ThreadNode


# ------------------------------------------------------------------------------------ helpers
@dataclass
class View:
    seq: int
    uid: int
    raw: bytes
    flags: frozenset[str] = frozenset()
    modseq: int = 1
    size: int = 100
    internaldate: float = 0.0

    def data(self) -> bytes:
        return self.raw


BASE = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)


def date(minutes: int) -> str:
    """A Date: value `minutes` after a fixed instant."""
    from email.utils import format_datetime

    return format_datetime(BASE + dt.timedelta(minutes=minutes))


def mail(
    subject: str | None = "Hello",
    *,
    msgid: str | None = None,
    refs: str | None = None,
    irt: str | None = None,
    when: int | str | None = 0,
    frm: str | None = None,
    to: str | None = None,
    cc: str | None = None,
) -> bytes:
    lines = []
    for name, value in (
        ("From", frm),
        ("To", to),
        ("Cc", cc),
        ("Subject", subject),
        ("Message-ID", msgid),
        ("References", refs),
        ("In-Reply-To", irt),
        ("Date", date(when) if isinstance(when, int) else when),
    ):
        if value is not None:
            lines.append(f"{name}: {value}")
    return "\r\n".join(lines).encode() + b"\r\n\r\nbody\r\n"


def box(*raws: bytes, **fields) -> list[View]:
    return [View(i, 100 + i, raw, **fields) for i, raw in enumerate(raws, 1)]


def sort_seqs(criteria: str, views: list[View]) -> list[int]:
    """SORT with criteria written as in the command, e.g. "REVERSE DATE SUBJECT"."""
    parsed = []
    reverse = False
    for word in criteria.split():
        if word == "REVERSE":
            reverse = True
            continue
        parsed.append((reverse, word))
        reverse = False
    return [v.seq for v in so.sort(parsed, views)]


def wire(roots: list[ThreadNode]) -> bytes:
    return responses.thread(roots).removeprefix(b"* THREAD ").removesuffix(b"\r\n")


def threads(algorithm: str, views: list[View], **kw) -> bytes:
    return wire(th.thread(algorithm, views, **kw))


# ------------------------------------------------------------------------------ base subject
@pytest.mark.parametrize(
    ("subject", "base", "reply"),
    [
        ("Hello", "Hello", False),
        ("Re: hello", "hello", True),
        ("RE: Re: re:hello", "hello", True),
        ("Fwd: hello", "hello", True),
        ("FW: hello", "hello", True),
        ("Re[2]: hello", "hello", True),
        ("Re [2] : hello", "hello", True),
        ("[list] Re: hello", "hello", True),
        ("Re: [list] hello", "hello", True),
        ("[list] [other] hello", "hello", False),
        ("[list]", "[list]", False),  # a blob that is all there is stays
        ("[a] [b]", "[b]", False),
        ("hello (fwd)", "hello", True),
        ("hello (FWD) (fwd)  ", "hello", True),
        ("[fwd: hello]", "hello", True),
        ("[Fwd: Re: [list] hello (fwd)]", "hello", True),
        ("Re: [fwd: [list] re: topic ]", "topic", True),
        ("  spaced \t out\r\n  text ", "spaced out text", False),
        ("Rebecca: hi", "Rebecca: hi", False),
        ("Antwort: hallo", "Antwort: hallo", False),
        ("Re:", "", True),
        ("", "", False),
    ],
)
def test_base_subject(subject: str, base: str, reply: bool) -> None:
    assert so.base_subject(subject) == (base, reply)


# -------------------------------------------------------------------------------------- SORT
def test_sort_arrival_and_size_with_ties_in_sequence_order() -> None:
    views = box(mail(), mail(), mail(), mail())
    for v, arrival, size in zip(views, [30, 10, 20, 10], [5, 9, 5, 7], strict=True):
        v.internaldate, v.size = arrival, size
    assert sort_seqs("ARRIVAL", views) == [2, 4, 3, 1]
    assert sort_seqs("REVERSE ARRIVAL", views) == [1, 3, 2, 4]  # ties stay in sequence order
    assert sort_seqs("SIZE", views) == [1, 3, 4, 2]
    assert sort_seqs("REVERSE SIZE", views) == [2, 4, 1, 3]
    assert sort_seqs("SIZE REVERSE ARRIVAL", views) == [1, 3, 4, 2]
    assert sort_seqs("SIZE ARRIVAL", views) == [3, 1, 4, 2]


def test_sort_date_uses_utc_and_falls_back_to_internaldate() -> None:
    views = box(
        mail(when="Wed, 01 May 2024 10:00:00 +0200"),  # 08:00 UTC
        mail(when="Wed, 01 May 2024 09:00:00 +0000"),  # 09:00 UTC
        mail(when="yesterday-ish"),  # unreadable: INTERNALDATE 07:00 UTC
        mail(when=None),  # missing: INTERNALDATE 08:30 UTC
        mail(when="Wed, 01 May 2024 03:30:00 -0500"),  # 08:30 UTC, ties with 4: sequence order
    )
    views[2].internaldate = dt.datetime(2024, 5, 1, 7, tzinfo=dt.UTC).timestamp()
    views[3].internaldate = dt.datetime(2024, 5, 1, 8, 30, tzinfo=dt.UTC).timestamp()
    assert sort_seqs("DATE", views) == [3, 1, 4, 5, 2]
    assert sort_seqs("REVERSE DATE", views) == [2, 4, 5, 1, 3]


def test_sort_by_addresses() -> None:
    views = box(
        mail(frm="Zoe <amy@example.com>", to="x@y", cc="Mallory <zz@example.com>"),
        mail(frm="bob@example.com", to='"Zed" <aaron@y>', cc="bob@x, alice@x"),
        mail(frm=None, to=None, cc=None),
        mail(frm="=?utf-8?q?=C3=81gnes?= <zed@example.com>", to="undisclosed-recipients:;"),
        mail(frm="Carl <Carl@example.com>", to="Ann <ann@y>"),
    )
    # FROM: the local part; missing fields sort first (the empty string).
    assert sort_seqs("FROM", views) == [3, 1, 2, 5, 4]
    assert sort_seqs("REVERSE FROM", views) == [4, 5, 2, 1, 3]
    # DISPLAYFROM: the decoded display name, else the address.
    assert sort_seqs("DISPLAYFROM", views) == [3, 2, 5, 1, 4]  # "ágnes" after the ASCII names
    assert sort_seqs("TO", views) == [3, 4, 2, 5, 1]
    assert sort_seqs("DISPLAYTO", views) == [3, 4, 5, 1, 2]
    assert sort_seqs("CC", views) == [3, 4, 5, 2, 1]


def test_sort_by_subject_uses_the_base_subject() -> None:
    views = box(
        mail("Re: beta", when=1),
        mail("alpha", when=2),
        mail("[list] Gamma", when=3),
        mail("Fwd: ALPHA", when=0),
        mail(None, when=4),
        mail("=?utf-8?q?=C3=A4rger?=", when=5),  # "ärger" sorts after the ASCII letters
    )
    assert sort_seqs("SUBJECT", views) == [5, 2, 4, 1, 3, 6]
    assert sort_seqs("SUBJECT DATE", views) == [5, 4, 2, 1, 3, 6]
    assert sort_seqs("SUBJECT REVERSE DATE", views) == [5, 2, 4, 1, 3, 6]
    assert sort_seqs("REVERSE SUBJECT", views) == [6, 3, 1, 2, 4, 5]
    assert sort_seqs("DATE", views) == [4, 1, 2, 3, 5, 6]


def test_sort_subject_then_reverse_date() -> None:
    views = box(mail("x", when=1), mail("Re: x", when=3), mail("y", when=0), mail("x", when=2))
    assert sort_seqs("SUBJECT REVERSE DATE", views) == [2, 4, 1, 3]


def test_sort_unknown_key() -> None:
    with pytest.raises(ValueError, match="unknown sort key"):
        so.sort([(False, "COLOUR")], box(mail()))


# ---------------------------------------------------------------------------- ORDEREDSUBJECT
def test_orderedsubject() -> None:
    views = box(
        mail("A", when=10),
        mail("Re: B", when=20),
        mail("Re: A", when=30),
        mail("B", when=0),
        mail("C", when=40),
        mail("Fwd: A", when=25),
    )
    # Each subject's earliest message holds the others as children, threads by that date.
    assert threads("ORDEREDSUBJECT", views) == b"(4 2)(1 (6)(3))(5)"
    assert threads("orderedsubject", views, uid=True) == b"(104 102)(101 (106)(103))(105)"


# -------------------------------------------------------------------------------- REFERENCES
def test_references_basic_tree() -> None:
    views = box(
        mail("Plan", msgid="<a@x>", when=0),
        mail("Re: Plan", msgid="<b@x>", refs="<a@x>", when=1),
        mail("Re: Plan", msgid="<c@x>", refs="<a@x> <b@x>", when=2),
        mail("Re: Plan", msgid="<d@x>", irt="<a@x>", when=3),
        mail("Other", msgid="<e@x>", when=4),
    )
    assert threads("REFERENCES", views) == b"(1 (2 3)(4))(5)"


def test_references_missing_parents() -> None:
    views = box(
        mail("One", msgid="<b@x>", refs="<gone@x>", when=0),
        mail("Two", msgid="<c@x>", refs="<gone@x>", when=1),
        mail("Three", msgid="<d@x>", refs="<lost@x>", when=2),
        mail("Four", msgid="<e@x>", refs="<d@x> <missing@x>", when=3),
    )
    # Two replies to one lost message stay together under a missing parent; a single one
    # becomes a thread of its own; a missing message in the middle is skipped over.
    assert threads("REFERENCES", views) == b"((1)(2))(3 4)"
    roots = th.thread("REFERENCES", views)
    assert roots[0] == ThreadNode(None, (ThreadNode(1), ThreadNode(2)))


def test_references_in_reply_to_only_when_no_references() -> None:
    views = box(
        mail("A", msgid="<a@x>", when=0),
        mail("B", msgid="<b@x>", when=1),
        mail("C", msgid="<c@x>", refs="<b@x>", irt="<a@x>", when=2),
        mail("D", msgid="<d@x>", refs="garbage without ids", irt="<a@x> <b@x>", when=3),
    )
    assert threads("REFERENCES", views) == b"(1 4)(2 3)"


def test_references_loops_do_not_hang() -> None:
    views = box(
        mail("A", msgid="<a@x>", refs="<b@x>", when=0),
        mail("B", msgid="<b@x>", refs="<a@x>", when=1),
        mail("C", msgid="<c@x>", refs="<c@x>", when=2),  # refers to itself
        mail("D", msgid="<d@x>", refs="<p@x> <q@x> <r@x> <p@x> <q@x>", when=3),
        mail("E", msgid="<e@x>", refs="<q@x> <p@x>", when=4),
    )
    # B came last and has A as its reference, but A already hangs under B: no loop is made.
    assert threads("REFERENCES", views) == b"(2 1)(3)((4)(5))"


def test_references_duplicate_message_ids() -> None:
    views = box(
        mail("First", msgid="<same@x>", when=0),
        mail("Second", msgid="<same@x>", when=1),
        mail("Re: First", msgid="<r@x>", refs="<same@x>", when=2),
        mail("Third", msgid="<same@x>", refs="<r@x>", when=3),
        mail("No id", when=4),
        mail("No id either", msgid="not-bracketed@x", when=5),
    )
    # The first message with an ID owns it; duplicates and messages without one get a fresh ID.
    assert threads("REFERENCES", views) == b"(1 3 4)(2)(5)(6)"


def test_references_message_that_arrived_after_its_reply() -> None:
    views = box(
        mail("Re: Q", msgid="<r@x>", refs="<q@x>", when=5),
        mail("Q", msgid="<q@x>", when=0),
    )
    assert threads("REFERENCES", views) == b"(2 1)"


def test_references_groups_by_subject() -> None:
    views = box(
        mail("Re: Topic", msgid="<1@x>", when=0),
        mail("Topic", msgid="<2@x>", when=1),
        mail("Lunch", msgid="<3@x>", when=2),
        mail("Lunch", msgid="<4@x>", when=3),
        mail("Re: Lunch", msgid="<5@x>", when=4),
        mail("", msgid="<6@x>", when=5),
        mail(None, msgid="<7@x>", when=6),
        mail("[list] Re: Topic (fwd)", msgid="<8@x>", when=7),
    )
    # A reply without references joins the original with its subject; two originals with one
    # subject get a missing parent; empty subjects never group.
    assert threads("REFERENCES", views) == b"(2 (1)(8))((3)(4)(5))(6)(7)"


def test_references_groups_threads_under_missing_parents_by_subject() -> None:
    views = box(
        mail("Re: Party", msgid="<1@x>", refs="<gone@x>", when=0),
        mail("Re: Party", msgid="<2@x>", refs="<gone@x>", when=1),
        mail("Re: Party", msgid="<3@x>", refs="<lost@x>", when=2),
        mail("Re: Party", msgid="<4@x>", refs="<lost@x>", when=3),
        mail("Party", msgid="<5@x>", when=4),
    )
    assert threads("REFERENCES", views) == b"((1)(2)(3)(4)(5))"


def test_references_siblings_and_threads_sorted_by_sent_date() -> None:
    views = box(
        mail("Root", msgid="<a@x>", when=10),
        mail("Re: Root", msgid="<b@x>", refs="<a@x>", when=30),
        mail("Re: Root", msgid="<c@x>", refs="<a@x>", when=20),
        mail("Early", msgid="<d@x>", when=0),
        mail("Undated", msgid="<e@x>", when="32 Foo 2024 99:99"),  # INTERNALDATE: the epoch
        mail("Tie", msgid="<f@x>", when=20),
    )
    assert threads("REFERENCES", views) == b"(5)(4)(1 (3)(2))(6)"


def test_references_bounded_on_ten_thousand_references() -> None:
    refs = " ".join(f"<r{i}@x>" for i in range(10_000))
    start = mail("Start", msgid="<r0@x>", when=0)
    # Only the last MAX_REFERENCES IDs count: naming the first message first ties nothing...
    assert threads("REFERENCES", box(start, mail("Long", refs=refs, when=1))) == b"(1)(2)"
    # ...naming it last does.
    others = " ".join(f"<s{i}@x>" for i in range(10_000))
    views = box(start, mail("Long", refs=others + " <r0@x>", when=1))
    assert threads("REFERENCES", views) == b"(1 2)"


def test_references_deep_thread_is_iterative() -> None:
    n = 1500  # deeper than Python's recursion limit
    raws = [mail("Chain", msgid="<m0@x>", when=0)]
    for i in range(1, n):
        previous = " ".join(f"<m{j}@x>" for j in range(max(0, i - 150), i))
        raws.append(mail("Re: Chain", msgid=f"<m{i}@x>", refs=previous, when=i))
    views = box(*raws)
    assert threads("REFERENCES", views) == b"(" + b" ".join(b"%d" % i for i in range(1, n + 1)) + b")"


def test_references_deeper_than_the_loop_check_starts_new_threads(monkeypatch) -> None:
    monkeypatch.setattr(th, "MAX_DEPTH", 50)
    raws = [mail(f"S{i}", msgid=f"<m{i}@x>", irt=f"<m{i - 1}@x>" if i else None) for i in range(60)]
    roots = th.thread("REFERENCES", box(*raws))
    assert [r.number for r in roots] == [1, 52]
    assert wire(roots) == b"(" + b" ".join(b"%d" % i for i in range(1, 52)) + b")(52 53 54 55 56 57 58 59 60)"


def test_thread_numbers_by_uid_and_unknown_algorithm() -> None:
    views = box(mail("A", msgid="<a@x>"), mail("Re: A", msgid="<b@x>", refs="<a@x>", when=1))
    assert threads("REFERENCES", views, uid=True) == b"(101 102)"
    assert th.thread("REFERENCES", []) == []
    with pytest.raises(ValueError, match="unknown THREAD algorithm"):
        th.thread("X-KMEANS", views)


def test_base_subject_of_hostile_subjects() -> None:
    # Linear work: these would take minutes if each step rescanned or copied the text.
    assert so.base_subject("[x] " * 50_000 + "y") == ("y", False)
    assert so.base_subject("[x]" * 50_000) == ("[x]", False)
    assert so.base_subject("re: " * 50_000 + "y") == ("y", True)
    assert so.base_subject("y" + " (fwd)" * 50_000) == ("y", True)
    assert so.base_subject("[fwd: " * 20_000 + "y" + "]" * 20_000) == ("y", True)
    assert so.base_subject("[" * 50_000 + "z") == ("[" * 50_000 + "z", False)


def test_sort_reads_each_message_once() -> None:
    reads = []

    class Counting(View):
        def data(self) -> bytes:
            reads.append(self.seq)
            return self.raw

    views = [Counting(i, i, mail(f"s{i}", frm=f"u{i}@x", when=-i)) for i in range(1, 4)]
    assert [v.seq for v in so.sort([(False, "FROM"), (True, "DATE"), (False, "SUBJECT")], views)] == [
        1,
        2,
        3,
    ]
    assert sorted(reads) == [1, 2, 3]
    reads.clear()
    assert [v.seq for v in so.sort([(True, "SIZE"), (False, "ARRIVAL")], views)] == [1, 2, 3]
    assert reads == []  # SIZE and ARRIVAL never read the message


def test_references_missing_message_inside_a_thread_is_spliced_out() -> None:
    views = box(
        mail("A", msgid="<a@x>", when=0),
        mail("Re: A", msgid="<b@x>", refs="<a@x> <lost@x>", when=1),
        mail("Re: A", msgid="<c@x>", refs="<a@x> <lost@x>", when=2),
        mail("Re: A", msgid="<d@x>", refs="<a@x>", when=3),
    )
    # The lost message's replies become siblings of the message that replied to A directly.
    roots = th.thread("REFERENCES", views)
    assert roots == [ThreadNode(1, (ThreadNode(2), ThreadNode(3), ThreadNode(4)))]
    assert wire(roots) == b"(1 (2)(3)(4))"


def test_references_missing_parent_takes_the_subject_table_over_a_message() -> None:
    views = box(
        mail("Party", msgid="<p@x>", when=0),
        mail("Re: Party", msgid="<1@x>", refs="<gone@x>", when=1),
        mail("Re: Party", msgid="<2@x>", refs="<gone@x>", when=2),
    )
    # The missing parent holding 2 and 3 wins the subject: the original joins it as a sibling.
    assert threads("REFERENCES", views) == b"((1)(2)(3))"


def test_references_only_the_last_ids_count() -> None:
    refs = " ".join(f"<r{i}@x>" for i in range(th.MAX_REFERENCES + 1))
    start = mail("Start", msgid="<r0@x>", when=0)
    assert threads("REFERENCES", box(start, mail("Next", refs=refs, when=1))) == b"(1)(2)"
    refs = " ".join(f"<r{i}@x>" for i in range(th.MAX_REFERENCES))
    assert threads("REFERENCES", box(start, mail("Next", refs=refs, when=1))) == b"(1 2)"


def test_references_own_references_override_where_others_put_a_message() -> None:
    views = box(
        mail("Alpha", msgid="<p1@x>", when=0),
        mail("Beta", msgid="<p2@x>", when=1),
        mail("Re: Beta", msgid="<z@x>", refs="<p1@x> <x@x>", when=3),  # wrongly puts x under p1
        mail("Re: Beta", msgid="<x@x>", refs="<p2@x>", when=2),
    )
    assert threads("REFERENCES", views) == b"(1)(2 4 3)"
    views = box(
        mail("Alpha", msgid="<p1@x>", when=0),
        mail("Re: Gamma", msgid="<z@x>", refs="<p1@x> <x@x>", when=3),
        mail("Gamma", msgid="<x@x>", when=2),  # no references: no parent, whatever others said
    )
    assert threads("REFERENCES", views) == b"(1)(3 2)"
