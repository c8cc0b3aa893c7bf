"""`mailroom check` on a host whose daemons run under a real supervisord (the fixture of test_metrics)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from mailroom import check, monitoring
from mailroom.config import load
from mailroom.queue import Spool
from mailroom.queue.spool import Envelope
from tests.integration.test_metrics import Host, mail_host, write_backup_status  # noqa: F401 - fixture

pytestmark = pytest.mark.skipif(shutil.which("supervisord") is None, reason="supervisor not installed")


def run_check(host: Host, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mailroom.cli", "check", "--config", str(host.config), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def by_check(result: subprocess.CompletedProcess) -> dict[str, dict]:
    report = json.loads(result.stdout)
    return {c["check"]: c for c in report["checks"]} | {"verdict": report["verdict"]}


def test_a_healthy_host_with_a_certificate_about_to_expire_warns(mail_host: Host) -> None:  # noqa: F811
    result = run_check(mail_host, "--json")
    checks = by_check(result)
    assert result.returncode == 1, result.stdout + result.stderr
    assert checks["verdict"] == "WARN"
    # The test certificate is valid for two days: fewer than 14.
    assert checks["tls"]["status"] == "WARN" and "days: renew it" in checks["tls"]["message"]
    assert checks["ports"]["status"] == "OK"
    assert "all 5 configured listeners" in checks["ports"]["message"]
    # The only resolver the configuration names does not answer: skipped, and said so.
    assert checks["dns"]["status"] == "OK" and checks["dns"]["message"].startswith("skipped")
    assert checks["disk"]["status"] == "OK" and "GiB free" in checks["disk"]["message"]
    assert checks["queue"] == {"check": "queue", "status": "OK", "message": "the outbound queue is empty."}
    assert checks["backup"]["status"] == "OK" and "1.0 hours ago" in checks["backup"]["message"]
    assert checks["daemons"]["status"] == "OK" and "all 5 programs RUNNING" in checks["daemons"]["message"]
    # The text form says the same, one line each, and the verdict last.
    text = run_check(mail_host)
    assert text.returncode == 1
    lines = text.stdout.splitlines()
    assert lines[-1] == "verdict: WARN"
    assert [line.split()[:2] for line in lines[:-1]] == [
        [checks[name]["status"], name]
        for name in ("ports", "tls", "dns", "disk", "queue", "backup", "daemons")
    ]


def test_a_stopped_daemon_an_old_backup_and_a_stuck_queue_are_reported(mail_host: Host) -> None:  # noqa: F811
    mail_host.supervisor().supervisor.stopProcess("mailroom:pop3d")
    write_backup_status(mail_host.backup_dir, time.time() - 30 * 3600)
    config = load(mail_host.config)
    assert config.queue_root is not None
    Spool(config.queue_root).enqueue(
        Envelope("alice@example.test", ("friend@remote.test",), received_at=time.time() - 7 * 3600), b"x\r\n"
    )
    result = run_check(mail_host, "--json")
    assert result.returncode == 2, result.stdout + result.stderr
    checks = by_check(result)
    assert checks["verdict"] == "FAIL"
    assert checks["daemons"]["status"] == "FAIL" and "pop3d STOPPED" in checks["daemons"]["message"]
    assert checks["ports"]["status"] == "FAIL"
    assert f"pop3 pop3 127.0.0.1 port {mail_host.ports['pop3']}" in checks["ports"]["message"]
    assert checks["backup"]["status"] == "FAIL" and "30 hours old" in checks["backup"]["message"]
    assert checks["queue"]["status"] == "WARN"
    assert "1 messages queued (0 held), the oldest 7.0 hours old" in checks["queue"]["message"]


def test_certificate_thresholds(tmp_path: Path, mail_host: Host) -> None:  # noqa: F811
    config = load(mail_host.config)
    assert config.tls_certificate is not None
    expiry = monitoring.certificate_expiry(config.tls_certificate)
    assert check.check_tls(config, now=expiry - 30 * 86400).status == "OK"
    assert check.check_tls(config, now=expiry - 13 * 86400).status == "WARN"
    expired = check.check_tls(config, now=expiry + 60)
    assert expired.status == "FAIL" and "expired" in expired.message
    # A key that does not belong to the certificate.
    data = yaml.safe_load(mail_host.config.read_text())
    other_key = tmp_path / "other.key"
    subprocess.run(["openssl", "genrsa", "-out", str(other_key), "2048"], check=True, capture_output=True)
    data["tls"]["private_key"] = str(other_key)
    broken = tmp_path / "broken.yml"
    broken.write_text(yaml.safe_dump(data))
    result = check.check_tls(load(broken))
    assert result.status == "FAIL" and "cannot be loaded together" in result.message


def test_a_broken_configuration_fails_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "mailroom.yml"
    config.write_text("hostname: mail.example.test\nmetrics: {tls: maybe}\n")
    result = subprocess.run(
        [sys.executable, "-m", "mailroom.cli", "check", "--config", str(config)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert result.stdout == "" and str(config) in result.stderr


def test_backup_states(tmp_path: Path) -> None:
    state = tmp_path / "backup"
    now = time.time()
    assert check.check_backup(state, now).status == "OK"  # not set up: nothing to say
    state.mkdir()
    fresh = check.check_backup(state, now)
    assert fresh.status == "WARN" and "none has run yet" in fresh.message
    (state / "status.json").write_text(json.dumps({"backup": {"ok": False, "last_attempt": now - 60}}))
    assert check.check_backup(state, now).status == "FAIL"
    write_backup_status(state, now - 3600)
    assert check.check_backup(state, now).status == "OK"
    assert check.check_backup(state, now + 26 * 3600).status == "FAIL"
    (state / "status.json").write_text("{not json")
    broken = check.check_backup(state, now)
    assert broken.status == "FAIL" and "cannot be read" in broken.message
