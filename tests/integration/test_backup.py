"""Backups with real borg and borgmatic against a repository in a temporary directory.

The tree under `root` stands for a host's /: a Maildir store made by the store itself (UIDs and
flags in the file names, state and UIDVALIDITY files, folders), /etc/mailroom and the queue.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from mailroom import backup
from mailroom.metricsd import render
from mailroom.store import Folder, Mailbox, Maildir, Mode

BORGMATIC = Path(sys.executable).parent / "borgmatic"
PASSPHRASE = "test-passphrase-never-printed"

pytestmark = pytest.mark.skipif(
    shutil.which("borg") is None or not BORGMATIC.exists(), reason="borgbackup or borgmatic not installed"
)


def message(n: int) -> bytes:
    return f"From: a@example.net\nTo: alice@example.test\nSubject: message {n}\n\nbody {n}\n".encode()


def maildir_state(root: Path) -> dict[str, list[str]]:
    """Every Maildir file name and IMAP state file under the store, by directory."""
    found: dict[str, list[str]] = {}
    for dirpath, _dirnames, filenames in os.walk(root):
        rel = Path(dirpath).relative_to(root).as_posix()
        names = sorted(n for n in filenames if n != "mailroom-lock")
        found[rel] = names
    return found


def state_files(store: Path) -> dict[str, bytes]:
    return {
        p.relative_to(store).as_posix(): p.read_bytes()
        for p in store.rglob("mailroom-*")
        if p.name in ("mailroom-state", "mailroom-uidvalidity")
    }


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    # borg's cache and security dirs and borgmatic's state go under this test's HOME.
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    root = tmp_path / "root"
    store = root / "var/lib/mailroom/mail"
    user = store / "example.test/alice"
    mailbox = Mailbox(user)  # INBOX and the special-use folders
    mailbox.create("Lists.python")
    inbox = Maildir(user)
    for n in range(5):
        inbox.deliver(message(n))
    folder = Folder(user)
    folder.sync()  # UIDs: new/ -> cur/<base>,U=n,M=m:2,
    uids = [info.uid for info in folder.messages()]
    folder.store_flags(uids[:2], ["\\Seen"], Mode.ADD)
    folder.store_flags(uids[1:3], ["\\Flagged", "$Label1"], Mode.ADD)
    lists = mailbox.folder("Lists.python")
    lists.append(message(99), ["\\Answered"])
    inbox.deliver(message(100))  # one left in new/, as delivery leaves it
    etc = root / "etc/mailroom"
    (etc / "tls").mkdir(parents=True)
    (etc / "mailroom.yml").write_text("hostname: mail.example.test\n")
    (etc / "password-salt.key").write_bytes(os.urandom(32))
    (etc / "tls/mail.key").write_text("key\n")
    (etc / "backup").mkdir()
    (etc / "backup/passphrase").write_text(PASSPHRASE)
    queue = root / "var/lib/mailroom/queue/incoming"
    queue.mkdir(parents=True)
    (queue / "Q1.env").write_text('{"sender": "alice@example.test"}\n')

    state_dir = tmp_path / "state"
    repo = tmp_path / "repo"
    borgmatic_config = tmp_path / "borgmatic.yaml"
    sources = ["/var/lib/mailroom/mail", "/var/lib/mailroom/queue", "/etc/mailroom"]
    borgmatic_config.write_text(
        yaml.safe_dump(
            {
                "source_directories": [backup.MANIFEST_DIR] + [s.lstrip("/") for s in sources],
                "working_directory": str(state_dir / "snapshot"),
                "repositories": [{"path": str(repo), "label": "local"}],
                "encryption_passcommand": f"cat {etc / 'backup/passphrase'}",
                "archive_name_format": "mailroom-{now:%Y-%m-%dT%H:%M:%S.%f}",
                "files_cache": "mtime,size,inode",
                "keep_daily": 7,
                "checks": [
                    {"name": "repository"},
                    {"name": "archives"},
                    {"name": "data", "frequency": "1 month"},
                ],
                "bootstrap": {"store_config_files": False},
            }
        )
    )
    settings_file = tmp_path / "backup.yml"
    settings_file.write_text(
        yaml.safe_dump(
            {
                "borgmatic": str(BORGMATIC),
                "borgmatic_config": str(borgmatic_config),
                "state_dir": str(state_dir),
                "sources": sources,
                "exclude": ["/etc/mailroom/backup"],
                "maildir_root": "/var/lib/mailroom/mail",
                "root": str(root),
            }
        )
    )
    (state_dir / "snapshot").mkdir(parents=True)
    result = subprocess.run(
        [str(BORGMATIC), "-c", str(borgmatic_config), "repo-create", "--encryption", "repokey-blake2"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return {
        "root": root,
        "store": store,
        "user": user,
        "repo": repo,
        "settings_file": settings_file,
        "settings": backup.load_settings(settings_file),
        "state_dir": state_dir,
    }


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mailroom.cli", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def samples(state_dir: Path, tmp_path: Path) -> dict[str, float]:
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir(exist_ok=True)
    text = render(metrics_dir, state_dir).decode()
    return {
        s.name: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("mailroom_backup_")
    }


def flip_bytes(repo: Path) -> Path:
    """Damage the biggest segment file of the repository, past its header."""
    segment = max((p for p in (repo / "data").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    data = bytearray(segment.read_bytes())
    for i in range(20, min(len(data), 120)):
        data[i] ^= 0xFF
    segment.write_bytes(bytes(data))
    return segment


def test_backup_and_restore_drill_keep_the_imap_state_byte_for_byte(host: dict, tmp_path: Path) -> None:
    before = maildir_state(host["store"])
    names = [n for n in before["example.test/alice/cur"]]
    assert any(",U=1," in n and n.endswith(":2,S") for n in names), names
    assert any(n.endswith(":2,FSa") for n in names), names  # \Flagged, \Seen and a keyword

    run = cli("backup", "run", "--settings", str(host["settings_file"]))
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["files"] > 10 and result["original_size"] > 0
    assert list((host["state_dir"] / "snapshot").iterdir()) == []
    # The live Maildir is untouched by the snapshot (links removed again).
    assert maildir_state(host["store"]) == before
    assert all(os.stat(p).st_nlink == 1 for p in (host["user"] / "cur").iterdir())

    drill = cli("backup", "verify", "--settings", str(host["settings_file"]))
    assert drill.returncode == 0, drill.stderr
    assert json.loads(drill.stdout)["archive"] == result["archive"]
    assert PASSPHRASE not in run.stdout + run.stderr + drill.stdout + drill.stderr

    # Extract the archive by hand, with borg itself: the names are those of the live store.
    out = tmp_path / "extracted"
    out.mkdir()
    env = {**os.environ, "BORG_PASSPHRASE": PASSPHRASE}
    subprocess.run(
        ["borg", "extract", f"{host['repo']}::{result['archive']}"],
        cwd=out,
        env=env,
        check=True,
        capture_output=True,
    )
    restored = out / "var/lib/mailroom/mail"
    assert maildir_state(restored) == before
    assert state_files(restored) == state_files(host["store"])
    assert not (out / "etc/mailroom/backup").exists()  # the host's own backup secrets stay out
    assert (out / "etc/mailroom/password-salt.key").read_bytes() == (
        host["root"] / "etc/mailroom/password-salt.key"
    ).read_bytes()
    # The store reads the restored copy with the same UIDVALIDITY, UIDs and flags.
    live, copy = Folder(host["user"]), Folder(restored / "example.test/alice")
    assert copy.uidvalidity == live.uidvalidity
    assert [(m.uid, m.flags) for m in copy.messages()] == [(m.uid, m.flags) for m in live.messages()]
    assert [f.name for f in Mailbox(restored / "example.test/alice").folders()] == [
        f.name for f in Mailbox(host["user"]).folders()
    ]

    metrics = samples(host["state_dir"], tmp_path)
    assert metrics["mailroom_backup_last_run_success"] == 1
    assert metrics["mailroom_backup_check_success"] == 1
    assert metrics["mailroom_backup_last_verify_success"] == 1
    assert metrics["mailroom_backup_last_archive_size_bytes"] == result["original_size"]
    assert metrics["mailroom_backup_last_archive_files"] == result["files"]
    assert metrics["mailroom_backup_last_success_timestamp_seconds"] > 0
    assert metrics["mailroom_backup_last_duration_seconds"] > 0
    assert (
        metrics["mailroom_backup_last_verified_restore_timestamp_seconds"]
        >= metrics["mailroom_backup_last_success_timestamp_seconds"]
    )


def test_a_stale_state_file_in_an_archive_is_healed_upward(host: dict, tmp_path: Path) -> None:
    """A restore whose mailroom-state is older than some names: UIDs continue above them."""
    folder = Folder(host["user"])
    folder.sync()
    uidvalidity = folder.uidvalidity
    top = max(m.uid for m in folder.messages())
    # As if the state file had been written before the last messages got their UIDs.
    (host["user"] / "mailroom-state").write_bytes(
        f"version=1\nuidvalidity={uidvalidity}\nuidnext=2\nhighestmodseq=1\n".encode()
    )
    assert cli("backup", "run", "--settings", str(host["settings_file"])).returncode == 0
    restored = tmp_path / "restored"
    restored.mkdir()
    env = {**os.environ, "BORG_PASSPHRASE": PASSPHRASE}
    archive = json.loads(Path(host["state_dir"] / "status.json").read_text())["backup"]["archive"]
    subprocess.run(["borg", "extract", f"{host['repo']}::{archive}"], cwd=restored, env=env, check=True)
    copy_path = restored / "var/lib/mailroom/mail/example.test/alice"
    assert b"uidnext=2\n" in (copy_path / "mailroom-state").read_bytes()  # restored as it was
    copy = Folder(copy_path)
    assert copy.uidvalidity == uidvalidity
    assert copy.uidnext == top + 1
    assert b"uidnext=%d\n" % (top + 1) in (copy_path / "mailroom-state").read_bytes()  # healed on disk
    Maildir(copy_path).deliver(message(7))
    copy.sync()
    assert max(m.uid for m in copy.messages()) == top + 1  # no UID is handed out twice


def test_restore_puts_the_archive_in_place_and_keeps_the_host_secrets(host: dict) -> None:
    settings = host["settings_file"]
    before = maildir_state(host["store"])
    assert cli("backup", "run", "--settings", str(settings)).returncode == 0
    # The host changes after the backup: a new message arrives, a file is lost.
    Maildir(host["user"]).deliver(message(500))
    (host["root"] / "etc/mailroom/mailroom.yml").write_text("changed\n")
    (host["root"] / "etc/mailroom/backup/passphrase").write_text(PASSPHRASE)  # kept as it is

    done = cli("backup", "restore", "--settings", str(settings))
    assert done.returncode == 0, done.stderr
    assert maildir_state(host["store"]) == before
    assert (host["root"] / "etc/mailroom/mailroom.yml").read_text() == "hostname: mail.example.test\n"
    assert (host["root"] / "etc/mailroom/backup/passphrase").read_text() == PASSPHRASE
    previous = [r["previous"] for r in json.loads(done.stdout)["replaced"]]
    assert any(p and "pre-restore" in p for p in previous)


def test_a_corrupted_repository_fails_check_and_verify_loudly(host: dict, tmp_path: Path) -> None:
    settings = host["settings_file"]
    assert cli("backup", "run", "--settings", str(settings)).returncode == 0
    flip_bytes(host["repo"])

    check = cli("backup", "check", "--settings", str(settings))
    assert check.returncode == 1
    assert "FAILED" in check.stderr and "check" in check.stderr
    metrics = samples(host["state_dir"], tmp_path)
    assert metrics["mailroom_backup_check_success"] == 0

    drill = cli("backup", "verify", "--settings", str(settings))
    assert drill.returncode == 1
    assert "FAILED" in drill.stderr
    metrics = samples(host["state_dir"], tmp_path)
    assert metrics["mailroom_backup_last_verify_success"] == 0
    assert metrics["mailroom_backup_last_verified_restore_timestamp_seconds"] == 0

    # The next scheduled run reports the damage too, in its check metric.
    run = cli("backup", "run", "--settings", str(settings))
    assert run.returncode == 1, run.stdout
    assert samples(host["state_dir"], tmp_path)["mailroom_backup_check_success"] == 0

    # A restore from the damaged repository replaces nothing.
    before = maildir_state(host["store"])
    assert cli("backup", "restore", "--settings", str(settings)).returncode == 1
    assert maildir_state(host["store"]) == before


def test_a_restore_that_differs_from_its_manifest_is_refused(host: dict, tmp_path: Path) -> None:
    settings = backup.load_settings(host["settings_file"])
    manifest = backup.make_snapshot(settings)
    tree = settings.snapshot_dir
    assert backup.compare(tree, manifest) == []
    victim = next(p for p in (tree / "var/lib/mailroom/mail/example.test/alice/cur").iterdir())
    data = victim.read_bytes()
    victim.unlink()  # break the link: the live file stays as it is
    victim.write_bytes(data.replace(b"body", b"bodY"))
    os.chmod(victim, manifest["files"][victim.relative_to(tree).as_posix()]["mode"])
    extra = tree / "var/lib/mailroom/mail/example.test/alice/cur/extra:2,"
    extra.write_bytes(b"x")
    problems = backup.compare(tree, manifest, check_owner=False)
    assert any("sha256 differs" in p for p in problems), problems
    assert any("extra:2," in p and "not in the manifest" in p for p in problems), problems
    shutil.rmtree(tree / "var/lib/mailroom/mail/example.test/alice/.Trash")
    assert any(".Trash" in p and "missing" in p for p in backup.compare(tree, manifest)), problems


def test_status_file_drives_the_metrics(host: dict, tmp_path: Path) -> None:
    state = host["state_dir"]
    # Set up but never ran: every timestamp is 0, so the "too old" alerts fire.
    metrics = samples(state, tmp_path)
    assert metrics["mailroom_backup_last_success_timestamp_seconds"] == 0
    assert metrics["mailroom_backup_last_verified_restore_timestamp_seconds"] == 0
    assert metrics["mailroom_backup_status_valid"] == 1
    (state / "status.json").write_text(
        json.dumps(
            {
                "version": 1,
                "backup": {
                    "ok": True,
                    "last_success": 1700000000.5,
                    "last_attempt": 1699999990,
                    "duration_seconds": 10.5,
                    "original_size": 12345,
                    "deduplicated_size": 678,
                    "files": 42,
                },
                "check": {"ok": False, "last": 1700000001},
                "verify": {"ok": True, "last_success": 1700000100},
            }
        )
    )
    metrics = samples(state, tmp_path)
    assert metrics["mailroom_backup_last_success_timestamp_seconds"] == 1700000000.5
    assert metrics["mailroom_backup_last_duration_seconds"] == 10.5
    assert metrics["mailroom_backup_last_archive_size_bytes"] == 12345
    assert metrics["mailroom_backup_last_archive_deduplicated_bytes"] == 678
    assert metrics["mailroom_backup_check_success"] == 0
    assert metrics["mailroom_backup_last_check_timestamp_seconds"] == 1700000001
    assert metrics["mailroom_backup_last_verified_restore_timestamp_seconds"] == 1700000100
    assert metrics["mailroom_backup_last_verify_success"] == 1
    (state / "status.json").write_text("{not json")
    assert samples(state, tmp_path)["mailroom_backup_status_valid"] == 0
    # No state directory at all: backups are not set up on this host, nothing is exposed.
    assert samples(tmp_path / "nowhere", tmp_path) == {}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"sources": "/var/lib/mailroom/mail"}, "sources: must be a non-empty list"),
        (
            {"sources": ["var/lib/mailroom/mail"]},
            "sources[0]: 'var/lib/mailroom/mail' is not an absolute path",
        ),
        ({"sources": ["/var/../etc"]}, "sources[0]"),
        ({"exclude": ["/"]}, "exclude[0]"),
        ({"retention": 3}, "retention: unknown key"),
        ({"state_dir": None}, "state_dir"),
    ],
)
def test_bad_settings_name_the_key(host: dict, change: dict, message: str) -> None:
    data = yaml.safe_load(host["settings_file"].read_text())
    data.update(change)
    if change.get("state_dir", 1) is None:
        del data["state_dir"]
    host["settings_file"].write_text(yaml.safe_dump(data))
    result = cli("backup", "run", "--settings", str(host["settings_file"]))
    assert result.returncode == 1
    assert message in result.stderr


def test_a_snapshot_does_not_change_when_the_store_writes_in_place(host: dict) -> None:
    """The state file and the high-water mark are overwritten in place: linked into the snapshot
    they would change under borg and no longer match the manifest."""
    folder = Folder(host["user"])
    folder.store_flags([1], ["\\Deleted"], Mode.ADD)
    folder.expunge()  # the folder now has a high-water mark
    settings = backup.load_settings(host["settings_file"])
    manifest = backup.make_snapshot(settings)
    for _ in range(3):  # every one of the state's inodes is written at least once
        folder.store_flags([2], ["\\Answered"], Mode.REPLACE if _ % 2 else Mode.ADD)
        folder.store_flags([3], ["\\Deleted"], Mode.ADD)
        folder.expunge()
        folder.append(b"Subject: more\r\n\r\nmore\r\n", ["\\Deleted"])
    assert backup.compare(settings.snapshot_dir, manifest) == []
    snap = settings.snapshot_dir / host["user"].relative_to(host["root"])
    for name in ("mailroom-state", "mailroom-highwater"):
        assert (snap / name).read_bytes() != (host["user"] / name).read_bytes()
