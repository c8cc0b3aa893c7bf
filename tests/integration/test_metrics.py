"""smtpd writes its metrics to the shared state directory; metricsd serves their sum."""

from __future__ import annotations

import json
import shutil
import smtplib
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import config_data, free_port, kill_smtpd, start_smtpd


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[dict]:
    smtp_port, metrics_port = free_port(), free_port()
    state = tmp_path / "metrics-state"
    config = tmp_path / "mailroom.yml"
    config.write_text(
        yaml.safe_dump(
            config_data(
                tmp_path / "mail",
                smtp_port,
                None,
                extra={
                    "metrics": {
                        "address": "127.0.0.1",
                        "port": metrics_port,
                        "state_dir": str(state),
                        "allow": ["127.0.0.1/32"],
                    }
                },
            )
        )
    )
    running = {"smtpd": start_smtpd(config, smtp_port)}
    running["metricsd"] = subprocess.Popen(
        [sys.executable, "-m", "mailroom.cli", "metricsd", "--config", str(config)]
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                scrape(metrics_port)
                break
            except (OSError, urllib.error.URLError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield {"smtp": smtp_port, "metrics": metrics_port, "config": config, "running": running}
    finally:
        for p in running.values():
            p.terminate()
            p.wait(10)


def test_counters_follow_what_happened_and_survive_a_restart(servers: dict) -> None:
    smtp_port, metrics_port = servers["smtp"], servers["metrics"]
    with smtplib.SMTP("127.0.0.1", smtp_port, timeout=10) as client:
        client.sendmail("s@remote.test", ["alice@example.test"], b"Subject: one\r\n\r\nbody\r\n")
        client.ehlo("c.test")
        client.mail("s@remote.test")
        assert client.rcpt("nobody@example.test")[0] == 550
        assert client.rcpt("x@elsewhere.test")[0] == 550
    samples = scrape(metrics_port)
    assert value(samples, "mailroom_smtp_messages_accepted_total", listener="mx") == 1
    assert value(samples, "mailroom_smtp_received_bytes_total", listener="mx") == len(
        b"Subject: one\r\n\r\nbody\r\n"
    )
    assert (
        value(
            samples, "mailroom_smtp_rejections_total", listener="mx", stage="rcpt", reason="unknown_recipient"
        )
        == 1
    )
    assert (
        value(samples, "mailroom_smtp_rejections_total", listener="mx", stage="rcpt", reason="relay_denied")
        == 1
    )
    # The readiness probe of the test harness counts as a connection too.
    assert value(samples, "mailroom_smtp_connections_total", listener="mx") >= 2
    assert value(samples, "mailroom_smtp_delivery_seconds_count") == 1

    # A crashed and restarted smtpd keeps adding to the same totals.
    kill_smtpd(servers["running"]["smtpd"], smtp_port)
    servers["running"]["smtpd"] = start_smtpd(servers["config"], smtp_port)
    with smtplib.SMTP("127.0.0.1", smtp_port, timeout=10) as client:
        client.sendmail("s@remote.test", ["alice@example.test"], b"Subject: two\r\n\r\nbody\r\n")
    assert value(scrape(metrics_port), "mailroom_smtp_messages_accepted_total", listener="mx") == 2


def test_only_get_metrics_from_allowed_addresses(servers: dict) -> None:
    metrics_port = servers["metrics"]
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/other", timeout=5)
    assert info.value.code == 404
    # 127.0.0.2 is loopback too, but not in the allow list.
    with socket.create_connection(
        ("127.0.0.1", metrics_port), timeout=5, source_address=("127.0.0.2", 0)
    ) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 403")


REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "monitoring" / "prometheus"


@pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool (Debian package prometheus) not installed"
)
def test_alert_rules_are_valid_and_their_unit_tests_pass() -> None:
    for args in (["check", "rules", "mailroom-alerts.yml"], ["test", "rules", "mailroom-alerts.test.yml"]):
        result = subprocess.run(["promtool", *args], cwd=RULES, capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(shutil.which("prometheus") is None, reason="prometheus (Debian package) not installed")
def test_a_real_prometheus_scrapes_metricsd_and_loads_the_rules(servers: dict, tmp_path: Path) -> None:
    prom_port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(RULES / "mailroom-alerts.yml")],
                "scrape_configs": [
                    {
                        "job_name": "mailroom",
                        "static_configs": [{"targets": [f"127.0.0.1:{servers['metrics']}"]}],
                    }
                ],
            }
        )
    )
    prometheus = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    api = f"http://127.0.0.1:{prom_port}/api/v1"

    def query(expr: str) -> list[dict]:
        url = f"{api}/query?query={urllib.parse.quote(expr)}"
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.loads(response.read())["data"]["result"]

    try:
        with smtplib.SMTP("127.0.0.1", servers["smtp"], timeout=10) as client:
            client.sendmail("s@remote.test", ["alice@example.test"], b"Subject: p\r\n\r\nbody\r\n")
        deadline = time.monotonic() + 30
        result: list[dict] = []
        while time.monotonic() < deadline:
            try:
                result = query('mailroom_smtp_messages_accepted_total{job="mailroom",listener="mx"}')
            except (OSError, urllib.error.URLError, KeyError):
                result = []
            if result and float(result[0]["value"][1]) >= 1:
                break
            time.sleep(0.5)
        assert result and float(result[0]["value"][1]) == 1, result
        assert float(query('up{job="mailroom"}')[0]["value"][1]) == 1
        with urllib.request.urlopen(f"{api}/rules", timeout=5) as response:
            groups = json.loads(response.read())["data"]["groups"]
        rules = {rule["name"]: rule["health"] for group in groups for rule in group["rules"]}
        assert "MailroomDown" in rules and set(rules.values()) == {"ok"}, rules
    finally:
        prometheus.terminate()
        prometheus.wait(20)
