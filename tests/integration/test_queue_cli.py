"""`mailroom queue retry|hold|release|delete` against a running deliveryd, real DNS and real remote MTAs."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socketserver
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from mailroom.queue.spool import Envelope, Spool
from tests.conftest import config_data, free_port
from tests.integration import test_delivery
from tests.integration.test_delivery import Fake, Local, Remote, message, start_fake, wait_for

# The fixtures of the delivery tests: dnsmasq with the test zones, the remote MTAs, our deliveryd.
dns_port = test_delivery.dns_port
remote = test_delivery.remote
local_factory = test_delivery.local_factory

pytestmark = pytest.mark.skipif(
    shutil.which("dnsmasq") is None and not Path("/usr/sbin/dnsmasq").exists(),
    reason="dnsmasq is not installed",
)


def queue_cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The real command in its own process (it may change its user: that cannot be undone)."""
    return subprocess.run(
        [sys.executable, "-m", "mailroom.cli", "queue", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_hold_survives_a_restart_and_release_delivers(
    remote: Remote, local_factory: Callable[..., Local]
) -> None:
    local = local_factory(remote.port)
    held = local.spool.enqueue(Envelope("alice@example.test", ("carol@remote.test",)), message("held"))
    done = queue_cli(local.config, "hold", held, "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [{"id": held, "result": "held", "changed": True}]
    assert local.state(held)["held"] is True
    for round_ in range(2):  # held before the start, and still held after a restart
        local.spool.enqueue(Envelope("alice@example.test", ("erin@amx.test",)), message(f"other{round_}"))
        local.start()
        # deliveryd has scanned the spool (and passed over the held entry) once the other one arrived.
        wait_for(lambda r=round_: len(remote.messages("erin@amx.test")) == r + 1, what="the other message")
        wait_for(lambda: local.entries() == [held], what="only the held entry to remain")
        local.stop()
        assert remote.messages("carol@remote.test") == []
        assert local.state(held)["recipients"]["carol@remote.test"]["attempts"] == 0
    listing = queue_cli(local.config, "list")
    assert f"{held}" in listing.stdout and "[held]" in listing.stdout
    again = queue_cli(local.config, "hold", held)
    assert again.returncode == 0 and "already held" in again.stdout
    local.start()
    done = queue_cli(local.config, "release", held)
    assert done.returncode == 0, done.stderr
    assert f"{held}: released" in done.stdout
    wait_for(lambda: remote.messages("carol@remote.test"), what="delivery after the release")
    wait_for(lambda: not local.entries(), what="the entry to be removed")
    wait_for(lambda: f"id={held} queue release by the administrator" in local.log(), what="the log line")


def test_retry_makes_a_deferred_message_due_now(local_factory: Callable[..., Local]) -> None:
    port = free_port()
    fake = Fake(["450 4.2.0 try later", "250 2.1.5 ok"])
    server = start_fake("127.0.0.4", port, fake)
    try:
        local = local_factory(port, retry_schedule=[3600])
        queue_id = local.spool.enqueue(Envelope("alice@example.test", ("x@fake.test",)), message("retry"))
        local.start()
        wait_for(lambda: fake.sessions >= 1 and (local.spool.incoming / f"{queue_id}.state").exists())
        state = local.state(queue_id)["recipients"]["x@fake.test"]
        assert state["status"] == "pending" and state["next_attempt"] > 0
        done = queue_cli(local.config, "retry", "--all")
        assert done.returncode == 0, done.stderr
        assert f"{queue_id}: due now" in done.stdout
        # The next attempt was an hour away: only the retry brings it within the test's wait.
        wait_for(lambda: fake.received, what="the retried delivery")
        wait_for(lambda: not local.entries(), what="the entry to be removed")
        assert f"id={queue_id} queue retry by the administrator" in local.log()
        nothing = queue_cli(local.config, "retry", queue_id)
        assert nothing.returncode == 1 and f"{queue_id}: not in the queue" in nothing.stdout
    finally:
        server.shutdown()
        server.server_close()


def test_delete_removes_for_good_without_a_bounce(local_factory: Callable[..., Local]) -> None:
    port = free_port()
    fake = Fake(["450 4.2.0 try later"])
    server = start_fake("127.0.0.4", port, fake)
    try:
        local = local_factory(port, retry_schedule=[3600])
        queue_id = local.spool.enqueue(Envelope("alice@example.test", ("x@fake.test",)), message("delete"))
        local.start()
        wait_for((local.spool.incoming / f"{queue_id}.state").exists, what="the deferral")
        done = queue_cli(local.config, "delete", queue_id)
        assert done.returncode == 0, done.stderr
        assert f"{queue_id}: deleted" in done.stdout
        assert not list(local.spool.incoming.iterdir())
        wait_for(
            lambda: (
                f"id={queue_id} queue delete by the administrator from=<alice@example.test> to=<x@fake.test>"
                in local.log()
            ),
            what="the log line",
        )
        assert local.messages("alice@example.test") == []  # no bounce
        assert fake.sessions == 1
    finally:
        server.shutdown()
        server.server_close()


def test_hold_during_a_delivery_outlives_its_save(local_factory: Callable[..., Local]) -> None:
    """deliveryd saves the outcome of a delivery that began before the hold: the hold must stay."""
    port = free_port()
    in_rcpt = threading.Event()
    go_on = threading.Event()

    class Slow(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            self.wfile.write(b"220 slow ESMTP\r\n")
            while line := self.rfile.readline():
                if line.upper().startswith(b"RCPT"):
                    in_rcpt.set()
                    go_on.wait(20)
                    self.wfile.write(b"451 4.3.0 later\r\n")
                elif line.upper().startswith(b"QUIT"):
                    self.wfile.write(b"221 bye\r\n")
                    return
                else:
                    self.wfile.write(b"250 ok\r\n")

    server = socketserver.ThreadingTCPServer(("127.0.0.4", port), Slow)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        local = local_factory(port, retry_schedule=[0.2], command_timeout=30)
        queue_id = local.spool.enqueue(Envelope("alice@example.test", ("x@fake.test",)), message("race"))
        local.start()
        assert in_rcpt.wait(15)
        done = queue_cli(local.config, "hold", queue_id)
        assert done.returncode == 0, done.stderr
        go_on.set()
        wait_for(
            lambda: local.state(queue_id)["recipients"]["x@fake.test"]["attempts"] == 1,
            what="deliveryd to save the deferral",
        )
        assert local.state(queue_id)["held"] is True
        # Due again after 0.2 s, but held: the daemon logs and stays away from the entry.
        wait_for(lambda: f"id={queue_id} queue hold by the administrator" in local.log(), what="the note")
        in_rcpt.clear()
        assert not in_rcpt.wait(1.5)
        assert local.state(queue_id)["recipients"]["x@fake.test"]["attempts"] == 1
    finally:
        go_on.set()
        server.shutdown()
        server.server_close()


def test_usage_errors_and_exit_codes(tmp_path: Path) -> None:
    folder = tmp_path / "local"
    data = config_data(folder / "mail", free_port(), None, extra={"queue": {"root": str(folder / "queue")}})
    config = tmp_path / "mailroom.yml"
    config.write_text(yaml.safe_dump(data))
    spool = Spool(folder / "queue")
    queue_id = spool.enqueue(Envelope("alice@example.test", ("x@remote.test",)), b"Subject: x\r\n\r\nx\r\n")
    neither = queue_cli(config, "hold")
    assert neither.returncode == 2 and "give queue ids or --all" in neither.stderr
    both = queue_cli(config, "hold", queue_id, "--all")
    assert both.returncode == 2
    evil = queue_cli(config, "delete", "../incoming/x")
    assert evil.returncode == 1 and "is not a queue id" in evil.stderr
    assert spool.entries() == [queue_id]
    unknown = queue_cli(config, "release", "0123abcd", "--json")
    assert unknown.returncode == 1
    assert json.loads(unknown.stdout) == [{"id": "0123abcd", "result": "not in the queue", "changed": False}]
    broken = tmp_path / "broken.yml"
    broken.write_text(yaml.safe_dump({**data, "delivery": {"concurrency": 0}}))
    bad = queue_cli(broken, "retry", "--all")
    assert bad.returncode == 1 and "delivery.concurrency" in bad.stderr
    nothing = queue_cli(config, "release", queue_id)
    assert nothing.returncode == 0 and "not held" in nothing.stdout
    retry = queue_cli(config, "retry", queue_id)
    assert retry.returncode == 0 and "due now" in retry.stdout
    delete = queue_cli(config, "delete", "--all", "--json")
    assert delete.returncode == 0
    assert json.loads(delete.stdout)[0]["result"] == "deleted"
    assert spool.entries() == []


@pytest.fixture
def world_readable_dir() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="mailroom-queue-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the command as root")
def test_root_writes_as_the_spool_owner(world_readable_dir: Path) -> None:
    """deliveryd (user mailroom) must still read and replace what root's command wrote."""
    owner = pwd.getpwnam("nobody")
    data = config_data(
        world_readable_dir / "mail",
        free_port(),
        None,
        extra={"queue": {"root": str(world_readable_dir / "q")}},
    )
    config = world_readable_dir / "mailroom.yml"
    config.write_text(yaml.safe_dump(data))
    spool = Spool(world_readable_dir / "q")
    queue_id = spool.enqueue(Envelope("alice@example.test", ("x@remote.test",)), b"Subject: x\r\n\r\nx\r\n")
    for path in [spool.root, *spool.root.rglob("*")]:
        os.chown(path, owner.pw_uid, owner.pw_gid)
    done = queue_cli(config, "hold", queue_id)
    assert done.returncode == 0, done.stderr
    state = spool.incoming / f"{queue_id}.state"
    assert (state.stat().st_uid, state.stat().st_gid) == (owner.pw_uid, owner.pw_gid)
    assert oct(state.stat().st_mode & 0o777) == oct(0o600)
    notes = list(spool.admin.iterdir())
    assert notes and all(p.stat().st_uid == owner.pw_uid for p in notes)
