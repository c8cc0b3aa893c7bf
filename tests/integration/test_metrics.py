"""smtpd writes its metrics to the shared state directory; metricsd serves their sum."""

from __future__ import annotations

import http.client
import imaplib
import json
import os
import poplib
import re
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import xmlrpc.client
from collections.abc import Callable, Iterator
from dataclasses import dataclass
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


# ---------------------------------------------------------------------------------------------------
# A whole host: every daemon under a real supervisord, as the mailroom role runs them.

SUPERVISOR_PROGRAM = """
[program:{name}]
command={python} -m mailroom.cli {name} --config {config}
directory={folder}
autostart=true
autorestart=true
startsecs=1
startretries=100
stopsignal=TERM
stopwaitsecs=20
stopasgroup=true
killasgroup=true
redirect_stderr=true
stdout_logfile={folder}/{name}.log
"""
DAEMONS = ("smtpd", "imapd", "pop3d", "deliveryd", "metricsd")


@dataclass
class Host:
    folder: Path
    config: Path
    socket: Path
    ports: dict[str, int]
    backup_dir: Path
    supervisord: subprocess.Popen

    def supervisor(self) -> xmlrpc.client.ServerProxy:
        from mailroom.monitoring import _UnixTransport

        return xmlrpc.client.ServerProxy(
            "http://localhost/RPC2", transport=_UnixTransport(str(self.socket), 5)
        )

    def processes(self) -> dict[str, dict]:
        return {p["name"]: p for p in self.supervisor().supervisor.getAllProcessInfo()}

    def scrape(self) -> dict[tuple[str, tuple], float]:
        return scrape(self.ports["metrics"])

    def wait_running(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            states = {name: p["statename"] for name, p in self.processes().items()}
            ready = all(state == "RUNNING" for state in states.values())
            if ready:
                try:
                    for port in self.ports.values():
                        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    return
                except OSError:
                    pass
            if time.monotonic() > deadline:
                logs = {n: (self.folder / f"{n}.log").read_text()[-2000:] for n in DAEMONS}
                raise AssertionError(f"daemons not up: {states}\n{logs}")
            time.sleep(0.2)


def write_backup_status(folder: Path, last_success: float) -> None:
    folder.mkdir(exist_ok=True)
    status = {
        "backup": {"ok": True, "last_success": last_success, "last_attempt": last_success - 60},
        "check": {"ok": True, "last": last_success},
        "verify": {"ok": True, "last_success": last_success},
    }
    (folder / "status.json").write_text(json.dumps(status))


@pytest.fixture
def mail_host(tmp_path: Path, tls_files: tuple[Path, Path]) -> Iterator[Host]:
    ports = {name: free_port() for name in ("mx", "submission", "imap", "pop3", "metrics")}
    # A unix socket path has at most 107 bytes: a short folder of its own.
    run = Path(tempfile.mkdtemp(prefix="mr-sv-", dir="/tmp"))
    sock = run / "supervisor.sock"
    backup_dir = tmp_path / "backup"
    write_backup_status(backup_dir, time.time() - 3600)
    data = config_data(
        tmp_path / "mail",
        ports["mx"],
        tls_files,
        listeners=[
            {"name": "mx", "address": "127.0.0.1", "port": ports["mx"]},
            {"name": "submission", "address": "127.0.0.1", "port": ports["submission"]},
        ],
        extra={
            "queue": {"root": str(tmp_path / "queue")},
            # Nothing answers there: outbound mail is deferred (reason dns), never sent anywhere.
            "delivery": {
                "resolver": {"address": "127.0.0.1", "port": free_port()},
                "retry_schedule": [1],
                "scan_interval": 0.2,
            },
            "imap": {"listeners": [{"name": "imap", "address": "127.0.0.1", "port": ports["imap"]}]},
            "pop3": {"listeners": [{"name": "pop3", "address": "127.0.0.1", "port": ports["pop3"]}]},
            "metrics": {
                "address": "127.0.0.1",
                "port": ports["metrics"],
                "state_dir": str(tmp_path / "metrics-state"),
                "allow": ["127.0.0.1/32"],
                "supervisor_socket": str(sock),
                "backup_state_dir": str(backup_dir),
            },
        },
    )
    data["filtering"]["sender_lists"] = {"alice@example.test": {"block": ["pest.example"]}}
    config = tmp_path / "mailroom.yml"
    config.write_text(yaml.safe_dump(data))
    conf = run / "supervisord.conf"
    conf.write_text(
        f"[unix_http_server]\nfile={sock}\nchmod=0700\n\n"
        f"[supervisord]\nnodaemon=true\nlogfile={tmp_path}/supervisord.log\n"
        f"pidfile={run}/supervisord.pid\nchildlogdir={tmp_path}\n\n"
        "[rpcinterface:supervisor]\n"
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\n"
        f"[supervisorctl]\nserverurl=unix://{sock}\n"
        + "".join(
            SUPERVISOR_PROGRAM.format(name=n, python=sys.executable, config=config, folder=tmp_path)
            for n in DAEMONS
        )
        + f"\n[group:mailroom]\nprograms={','.join(DAEMONS)}\n"
    )
    supervisord = subprocess.Popen(
        ["supervisord", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    host = Host(tmp_path, config, sock, ports, backup_dir, supervisord)
    try:
        deadline = time.monotonic() + 15
        while not sock.exists():
            assert supervisord.poll() is None, (tmp_path / "supervisord.log").read_text()
            assert time.monotonic() < deadline, "supervisord did not open its socket"
            time.sleep(0.1)
        host.wait_running()
        yield host
    finally:
        supervisord.terminate()
        supervisord.wait(60)
        shutil.rmtree(run, ignore_errors=True)


def make_traffic(host: Host) -> None:
    """Mail in, mail out (deferred), a blocked sender, good and bad logins on SMTP, IMAP and POP3, IDLE."""
    from tests.conftest import PASSWORD, insecure

    with smtplib.SMTP("127.0.0.1", host.ports["mx"], timeout=10) as client:
        client.sendmail("s@remote.test", ["alice@example.test"], b"Subject: in\r\n\r\nbody\r\n")
        client.ehlo("c.test")
        client.mail("x@pest.example")
        assert client.rcpt("alice@example.test")[0] == 550
    with smtplib.SMTP("127.0.0.1", host.ports["submission"], timeout=10) as client:
        client.starttls(context=insecure())
        client.ehlo("client.test")
        with pytest.raises(smtplib.SMTPAuthenticationError):
            client.login("alice@example.test", "wrong password")
        client.login("alice@example.test", PASSWORD)
        client.sendmail("alice@example.test", ["friend@remote.test"], b"Subject: out\r\n\r\nbody\r\n")
    imap = imaplib.IMAP4("127.0.0.1", host.ports["imap"], timeout=10)
    imap.starttls(ssl_context=insecure())
    with pytest.raises(imaplib.IMAP4.error):
        imap.login("bob@example.test", "wrong password")
    imap.login("alice@example.test", PASSWORD)
    imap.select("INBOX")
    tag = imap._new_tag().decode()
    imap.send(f"{tag} IDLE\r\n".encode())
    assert imap.readline().startswith(b"+")
    host.idle = imap  # type: ignore[attr-defined]  # kept open: one session in IDLE
    pop = poplib.POP3("127.0.0.1", host.ports["pop3"], timeout=10)
    pop.stls(context=insecure())
    pop.user("alice@example.test")
    pop.pass_(PASSWORD)
    pop.quit()


def wait_for(host: Host, condition: Callable[[dict], bool], what: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        samples = host.scrape()
        if condition(samples):
            return samples
        if time.monotonic() > deadline:
            names = sorted({name for name, _ in samples})
            raise AssertionError(f"{what} not seen in {names}")
        time.sleep(0.3)


DASHBOARD = REPO / "monitoring" / "grafana" / "mailroom.json"


def dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def test_the_dashboard_is_json_with_the_panels_promised() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    titles = " | ".join(panel["title"].lower() for panel in dashboard["panels"])
    for word in (
        "messages in",
        "messages out",
        "queue",
        "deliveries by outcome",
        "authentication failures",
        "sessions per protocol",
        "idle",
        "spam and virus",
        "certificate",
        "backup",
        "disk",
    ):
        assert word in titles, word
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert all(panel["targets"] for panel in dashboard["panels"])


@pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool (Debian package prometheus) not installed"
)
def test_every_dashboard_expression_parses(tmp_path: Path) -> None:
    # promtool cannot parse a lone query offline: each one becomes a recording rule instead.
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:expr{i}", "expr": e} for i, e in enumerate(dashboard_expressions())
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump(rules))
    result = subprocess.run(
        ["promtool", "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(dashboard_expressions())} rules found" in result.stdout
    # And the check does catch a broken one.
    path.write_text(
        yaml.safe_dump({"groups": [{"name": "x", "rules": [{"record": "a:b", "expr": "sum(rate(x[5m])"}]}]})
    )
    assert (
        subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, check=False).returncode
        != 0
    )


@pytest.mark.skipif(shutil.which("supervisord") is None, reason="supervisor (Debian package) not installed")
def test_every_metric_the_dashboard_shows_is_served_after_traffic(mail_host: Host) -> None:
    make_traffic(mail_host)
    wanted = {
        re.sub(r"_(bucket|count|sum)$", "", name)
        for expr in dashboard_expressions()
        for name in re.findall(r"\b(mailroom_[a-z0-9_]+)", expr)
    }
    samples = wait_for(
        mail_host,
        lambda s: (
            wanted <= {name for name, _ in s}
            and value(s, "mailroom_delivery_recipients_total", outcome="deferred") >= 1
            and value(s, "mailroom_imap_idle_sessions") == 1
        ),
        "every dashboard metric",
    )
    # What the traffic was, counted as it happened.
    assert value(samples, "mailroom_smtp_messages_accepted_total", listener="mx") == 1
    assert value(samples, "mailroom_filter_verdicts_total", check="sender_list", result="blocked") == 1
    assert (
        value(samples, "mailroom_smtp_auth_attempts_total", result="failure") >= 1
    )  # smtplib tries two mechanisms
    assert value(samples, "mailroom_smtp_auth_attempts_total", result="success") == 1
    assert value(samples, "mailroom_imap_auth_attempts_total", result="failure") == 1
    assert value(samples, "mailroom_imap_auth_attempts_total", result="success") == 1
    assert value(samples, "mailroom_pop3_auth_attempts_total", result="success") == 1
    assert value(samples, "mailroom_delivery_queue_messages") == 1
    assert value(samples, "mailroom_delivery_deferrals_total", reason="dns") >= 1
    # Read at scrape time: the certificate's notAfter, the store's filesystem, supervisor's daemons.
    from mailroom.monitoring import certificate_expiry

    cert = yaml.safe_load(mail_host.config.read_text())["tls"]["certificate"]
    assert value(samples, "mailroom_tls_certificate_expiry_timestamp_seconds") == certificate_expiry(
        Path(cert)
    )
    st = os.statvfs(mail_host.folder)
    assert value(samples, "mailroom_store_filesystem_size_bytes") == st.f_blocks * st.f_frsize
    assert 0 < value(samples, "mailroom_store_filesystem_free_bytes") <= st.f_blocks * st.f_frsize
    assert value(samples, "mailroom_store_used_bytes") > 0  # alice's message at least
    processes = mail_host.processes()
    for daemon in DAEMONS:
        assert value(samples, "mailroom_daemon_up", daemon=daemon) == 1
        assert (
            value(samples, "mailroom_daemon_start_time_seconds", daemon=daemon) == processes[daemon]["start"]
        )
        assert value(samples, "mailroom_daemon_restarts_total", daemon=daemon) == 0
    assert value(samples, "mailroom_supervisor_up") == 1
    assert value(samples, "mailroom_backup_last_success_timestamp_seconds") > 0
    mail_host.idle.shutdown()  # type: ignore[attr-defined]


@pytest.mark.skipif(shutil.which("supervisord") is None, reason="supervisor (Debian package) not installed")
def test_a_crashed_daemon_is_down_then_counted_as_restarted(mail_host: Host) -> None:
    before = mail_host.scrape()
    assert value(before, "mailroom_daemon_up", daemon="pop3d") == 1
    old = mail_host.processes()["pop3d"]
    # Stopped by hand: down, and no restart.
    mail_host.supervisor().supervisor.stopProcess("mailroom:pop3d")
    samples = mail_host.scrape()
    assert value(samples, "mailroom_daemon_up", daemon="pop3d") == 0
    assert value(samples, "mailroom_daemon_restarts_total", daemon="pop3d") == 0
    mail_host.supervisor().supervisor.startProcess("mailroom:pop3d")
    # Started again: a new pid, one restart.
    current = mail_host.processes()["pop3d"]
    assert current["pid"] != old["pid"]
    assert value(mail_host.scrape(), "mailroom_daemon_restarts_total", daemon="pop3d") == 1
    # Killed: supervisor starts it again by itself, and metricsd counts a second restart.
    os.kill(current["pid"], signal.SIGKILL)
    samples = wait_for(
        mail_host,
        lambda s: (
            value(s, "mailroom_daemon_restarts_total", daemon="pop3d") == 2
            and value(s, "mailroom_daemon_up", daemon="pop3d") == 1
        ),
        "pop3d restarted",
    )
    assert value(samples, "mailroom_daemon_start_time_seconds", daemon="pop3d") > old["start"]
    assert value(samples, "mailroom_daemon_restarts_total", daemon="smtpd") == 0


@pytest.fixture
def guarded(tmp_path: Path, tls_files: tuple[Path, Path]) -> Iterator[dict]:
    """metricsd alone, over TLS with the host certificate and behind basic auth."""
    from mailroom.accounts import hash_password
    from tests.conftest import SALT_KEY

    port = free_port()
    data = config_data(
        tmp_path / "mail",
        free_port(),
        tls_files,
        extra={
            "metrics": {
                "address": "127.0.0.1",
                "port": port,
                "state_dir": str(tmp_path / "metrics-state"),
                "allow": ["127.0.0.1/32"],
                "tls": True,
                "basic_auth": {
                    "user": "prometheus",
                    "password_hash": hash_password("scrape secret", address="prometheus", salt_key=SALT_KEY),
                },
                "supervisor_socket": str(tmp_path / "no-supervisor.sock"),
                "backup_state_dir": str(tmp_path / "no-backups"),
            }
        },
    )
    (tmp_path / "mail").mkdir()
    config = tmp_path / "mailroom.yml"
    config.write_text(yaml.safe_dump(data))
    process = subprocess.Popen(
        [sys.executable, "-m", "mailroom.cli", "metricsd", "--config", str(config)],
        stderr=open(tmp_path / "metricsd.log", "wb"),  # noqa: SIM115 - the child keeps it
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert time.monotonic() < deadline and process.poll() is None, (
                    tmp_path / "metricsd.log"
                ).read_text()
                time.sleep(0.1)
        yield {"port": port, "cert": tls_files[0], "config": config, "log": tmp_path / "metricsd.log"}
    finally:
        process.terminate()
        process.wait(10)


def https_get(port: int, cert: Path, auth: str | None) -> tuple[int, str]:
    import base64
    import ssl

    context = ssl.create_default_context(cafile=str(cert))
    context.check_hostname = False  # the test certificate names mail.example.test, we dial 127.0.0.1
    headers = {"Authorization": "Basic " + base64.b64encode(auth.encode()).decode()} if auth else {}
    request = urllib.request.Request(f"https://127.0.0.1:{port}/metrics", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("WWW-Authenticate", "")


def test_metrics_over_tls_need_the_password(guarded: dict) -> None:
    port, cert = guarded["port"], guarded["cert"]
    assert https_get(port, cert, None) == (401, 'Basic realm="mailroom"')
    assert https_get(port, cert, "prometheus:wrong")[0] == 401
    assert https_get(port, cert, "someone:scrape secret")[0] == 401
    status, body = https_get(port, cert, "prometheus:scrape secret")
    assert status == 200
    families = {f.name for f in text_string_to_metric_families(body)}
    assert {"mailroom_tls_certificate_expiry_timestamp_seconds", "mailroom_supervisor_up"} <= families
    assert "mailroom_daemon_up" not in families  # no supervisord to ask: no made-up answers
    # Plain HTTP gets no metrics.
    with pytest.raises((urllib.error.URLError, ConnectionError, http.client.HTTPException)):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    assert "scrape secret" not in guarded["log"].read_text()


@pytest.mark.skipif(shutil.which("prometheus") is None, reason="prometheus (Debian package) not installed")
def test_a_real_prometheus_scrapes_over_tls_with_basic_auth(guarded: dict, tmp_path: Path) -> None:
    from mailroom.monitoring import scrape_config

    prom_port = free_port()
    password_file = tmp_path / "password"
    password_file.write_text("scrape secret")
    job = scrape_config([f"127.0.0.1:{guarded['port']}"], tls=True, basic_auth_user="prometheus")[
        "scrape_configs"
    ][0]
    job["basic_auth"]["password_file"] = str(password_file)
    # The test certificate has a Common Name and no SAN, which Go refuses to match: no name check.
    job["tls_config"] = {"insecure_skip_verify": True}
    config = tmp_path / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(RULES / "mailroom-alerts.yml")],
                "scrape_configs": [job],
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
        deadline = time.monotonic() + 30
        result: list[dict] = []
        while time.monotonic() < deadline:
            try:
                result = query(
                    '(mailroom_tls_certificate_expiry_timestamp_seconds{job="mailroom"} - time()) / 86400'
                )
            except (OSError, urllib.error.URLError, KeyError):
                result = []
            if result:
                break
            time.sleep(0.5)
        # The test certificate is valid for 2 days: the expiry alert's condition holds.
        if not result:
            with urllib.request.urlopen(f"{api}/targets", timeout=5) as response:
                targets = json.loads(response.read())["data"]["activeTargets"]
            raise AssertionError([t.get("lastError") for t in targets])
        assert 0 < float(result[0]["value"][1]) <= 2, result
        assert float(query('up{job="mailroom"}')[0]["value"][1]) == 1
        assert float(query("mailroom_store_filesystem_free_bytes")[0]["value"][1]) > 0
        assert float(query("mailroom_supervisor_up")[0]["value"][1]) == 0
    finally:
        prometheus.terminate()
        prometheus.wait(20)


@pytest.mark.parametrize(
    ("metrics", "key"),
    [
        ({"tls": True}, "metrics.tls"),
        ({"tls": "yes"}, "metrics.tls"),
        (
            {"basic_auth": {"user": "prometheus", "password_hash": "plain password"}},
            "metrics.basic_auth.password_hash",
        ),
        ({"basic_auth": {"user": "a:b", "password_hash": "$argon2id$x"}}, "metrics.basic_auth.user"),
        ({"basic_auth": {"user": "prometheus"}}, "metrics.basic_auth.password_hash"),
        ({"supervisor_socket": "relative.sock"}, "metrics.supervisor_socket"),
    ],
)
def test_bad_metrics_settings_are_refused_naming_the_key(tmp_path: Path, metrics: dict, key: str) -> None:
    from mailroom.config import ConfigError, parse

    data = config_data(tmp_path / "mail", free_port(), None, extra={"metrics": metrics})
    with pytest.raises(ConfigError) as info:
        parse(data)
    assert str(info.value).startswith(key), str(info.value)
