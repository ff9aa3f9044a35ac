"""Running nudged as a service (docs/operations.md): signals, logs,
listeners, readiness, privileges.

  * SIGHUP reloads without dropping a held ping (one process and workers),
    applies a new log level, names what needs a restart, survives a
    configuration that no longer reads (event 1009), and reopens the log
    file after a rotation renamed it.
  * systemd's readiness protocol: READY=1 once serving, RELOADING=1 and
    READY=1 around a reload, STOPPING=1, read from a NOTIFY_SOCKET the test
    binds.
  * Several listen addresses, IPv4 and IPv6 together; UDP follows the first
    TCP address unless set; a public TCP listener with a loopback UDP socket
    is warned about (event 1012).
  * [server] user: started as root, nudged runs as that user with no
    capability left; an unknown user is refused at start.
  * [log] burst: a flood of one event is written up to the burst, then
    counted into one line (event 1010).

Waits are for conditions (log lines, datagrams, answers), never sleeps.
"""
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

import harness
from harness import WAIT, Conn


def reload_lines(n):
    return re.findall(r"event=1008 name=reloaded log_level=\S+ log=\S+ passwords=\S+ tls=\S+ restart_needed=\S+.*",
                      n.log_text())


def processes(n):
    return n.workers + 1 if n.workers > 1 else 1


def wait_reloads(n, count):
    """Until every process of n has logged 'count' reloads in all."""
    deadline = time.monotonic() + WAIT
    while len(reload_lines(n)) < count * processes(n):
        assert time.monotonic() < deadline, n.log_tail()
        time.sleep(0.05)


# ---- SIGHUP ---------------------------------------------------------------


def test_sighup_keeps_a_held_ping_and_the_server(make_nudged):
    n = make_nudged()
    alice = n.user("alice")
    p = alice.ping_async(device="phone1", folders={"INBOX": "0"}, heartbeat=120)
    deadline = time.monotonic() + WAIT
    while int(n.metric("nudge_pings_held", 0)) < 1:
        assert time.monotonic() < deadline, n.log_tail()
        time.sleep(0.05)
    n.send_signal(signal.SIGHUP)
    wait_reloads(n, 1)
    assert n.running(), n.log_tail()
    assert not p.done(), "the reload answered or dropped the held ping"
    assert all("restart_needed=-" in line for line in reload_lines(n)), reload_lines(n)
    alice.publish("INBOX")
    r = p.result()
    assert r.status == 200 and r.json()["status"] == "changed", r
    # A second reload, and the server still answers.
    n.send_signal(signal.SIGHUP)
    wait_reloads(n, 2)
    assert n.request("GET", "/healthz").status == 200


def test_sighup_applies_the_log_level_and_names_what_needs_a_restart(make_nudged):
    n = make_nudged()
    n.settings["server"]["log_level"] = "warn"
    n.settings["heartbeat"]["max"] = 600
    n.write_config()
    n.send_signal(signal.SIGHUP)
    # Every process has applied the first reload before the second one: a
    # worker still on the first would read the second file and log twice.
    deadline = time.monotonic() + WAIT
    while len(re.findall(r"event=1008 name=reloaded log_level=warn was=info", n.log_text())) < processes(n):
        assert time.monotonic() < deadline, n.log_tail()
        time.sleep(0.05)
    # Quieter now: the info line of a reload is not written, a warn one is.
    n.settings["server"]["log_level"] = "info"
    n.write_config()
    n.send_signal(signal.SIGHUP)
    n.wait_log(r"event=1008 name=reloaded log_level=info was=warn")
    wait_reloads(n, 1)
    lines = reload_lines(n)
    assert len(lines) == processes(n), lines
    assert all("restart_needed=heartbeat.max" in line for line in lines), lines


def test_sighup_with_a_broken_config_changes_nothing(make_nudged):
    n = make_nudged()
    alice = n.user("alice")
    n.conf.write_text("[server]\nlisten = 127.0.0.1:0\nno_such_key = 1\n")
    n.send_signal(signal.SIGHUP)
    n.wait_log(r"event=1009 name=reload_failed reason=.*no_such_key")
    assert n.running()
    assert alice.state().status == 200


def test_sighup_reopens_the_log_file_after_a_rename(make_nudged):
    n = make_nudged(start=False)
    # nudged writes its own lines to the harness's log file (O_APPEND beside stderr).
    n.settings["log"] = {"target": "file", "file": str(n.log_path)}
    n.start()
    rotated = n.log_path.with_name("nudged.log.1")
    os.rename(n.log_path, rotated)
    n.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + WAIT
    while not (n.log_path.exists() and len(re.findall("event=1008", n.log_path.read_text())) >= processes(n)):
        assert time.monotonic() < deadline, rotated.read_text()[-3000:]
        time.sleep(0.05)
    assert "name=listening" in rotated.read_text()
    assert "name=listening" not in n.log_path.read_text()
    assert "log=reopened" in n.log_path.read_text()
    # Lines go on to the new file.
    n.user("bob").ping(device="d", folders={"INBOX": "0"}, heartbeat=1)
    n.stop()
    assert "name=stopped" in n.log_path.read_text()


def test_log_target_file_needs_a_path(make_nudged):
    n = make_nudged(start=False)
    n.settings["log"] = {"target": "file"}
    n.write_config()
    p = subprocess.run([harness.nudged_path(), "-c", str(n.conf)], capture_output=True, text=True,
                       timeout=WAIT)
    assert p.returncode == 2, p
    assert "[log] target = file needs [log] file = PATH" in p.stderr, p.stderr


# ---- readiness --------------------------------------------------------------


def test_readiness_reload_and_stop_are_told_to_the_notify_socket(make_nudged, monkeypatch):
    d = tempfile.mkdtemp(prefix="nudge-notify-")
    path = os.path.join(d, "notify")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(WAIT)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    try:
        n = make_nudged()

        def until(word):
            seen = []
            while True:
                msg = s.recv(4096).decode()
                seen.append(msg)
                if word in msg.split("\n"):
                    return seen

        ready = until("READY=1")
        assert n.request("GET", "/healthz").status == 200
        assert any(m.startswith("READY=1") for m in ready), ready
        n.send_signal(signal.SIGHUP)
        until("RELOADING=1")
        until("READY=1")
        n.stop()
        until("STOPPING=1")
    finally:
        s.close()
        shutil.rmtree(d, ignore_errors=True)


# ---- listeners ----------------------------------------------------------------


def ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as t:
            t.bind(("::1", 0))
        return True
    except OSError:
        return False


def test_ipv4_and_ipv6_listeners_together(make_nudged):
    if not ipv6_loopback():
        pytest.fail("this machine has no IPv6 loopback; the test needs ::1")
    n = make_nudged({"server": {"listen": "127.0.0.1:0, [::1]:0"}})
    m = re.search(r"name=listening addr=127\.0\.0\.1:(\d+),\[::1\]:(\d+)", n.log_text())
    assert m, n.log_tail()
    v6 = int(m.group(2))
    alice = n.user("alice")
    c = Conn(None)
    c.sock = socket.create_connection(("::1", v6), timeout=WAIT)
    try:
        resp = c.request("GET", "/v1/state", token=alice.token)
    finally:
        c.close()
    assert resp.status == 200, resp
    assert n.request("GET", "/healthz").status == 200


def test_listen_list_errors_name_the_entry(tmp_path):
    p = subprocess.run([harness.nudged_path(), "--listen", "127.0.0.1:0,,[::1]:0", "--print-config"],
                       capture_output=True, text=True, timeout=WAIT)
    assert p.returncode == 2 and "address 2 of the list is empty" in p.stderr, p
    p = subprocess.run([harness.nudged_path(), "--listen", "127.0.0.1:0, nohost", "--print-config"],
                       capture_output=True, text=True, timeout=WAIT)
    assert p.returncode == 2 and "--listen" in p.stderr, p


def test_tcp_port_taken_names_tcp_and_the_address(make_nudged):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    try:
        n = make_nudged({"server": {"listen": f"127.0.0.1:{port}"}}, start=False)
        with pytest.raises(AssertionError):
            n.start(timeout=WAIT)
        text = n.log_text()
        assert f"[server] listen: cannot listen on TCP 127.0.0.1:{port}: Address already in use" in text, text
        assert "[udp]" not in text.split("startup_failed", 1)[-1].split("\n")[0], text
    finally:
        taken.close()


def test_udp_follows_the_tcp_address_unless_set():
    p = subprocess.run([harness.nudged_path(), "--listen", "127.0.0.2:8080, [::1]:8080", "--print-config"],
                       capture_output=True, text=True, timeout=WAIT)
    assert p.returncode == 0, p
    udp = p.stdout.split("[udp]", 1)[1]
    assert "; in effect: 127.0.0.2:8080, from [server] listen\nlisten = auto\n" in udp, udp
    p = subprocess.run([harness.nudged_path(), "--listen", "127.0.0.2:8080", "--udp-listen", "127.0.0.3:9",
                        "--print-config"], capture_output=True, text=True, timeout=WAIT)
    assert "\nlisten = 127.0.0.3:9\n" in p.stdout.split("[udp]", 1)[1], p.stdout


def test_public_tcp_with_loopback_udp_is_warned_about(make_nudged):
    n = make_nudged({"server": {"listen": "127.0.0.1:0, 0.0.0.0:0"}, "udp": {"listen": "127.0.0.1:0"}})
    n.wait_log(r"event=1012 name=udp_loopback_only listen=0\.0\.0\.0:0 udp=127\.0\.0\.1:0")
    quiet = make_nudged({"udp": {"listen": "127.0.0.1:0"}})
    assert "event=1012" not in quiet.log_text()


# ---- privileges ---------------------------------------------------------------


def status_of(pid):
    with open(f"/proc/{pid}/status") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def test_user_drops_root_after_binding(make_nudged):
    if os.geteuid() != 0:
        pytest.fail("this test starts nudged as root (make test runs as root)")
    nobody = pwd.getpwnam("nobody")
    data = tempfile.mkdtemp(prefix="nudge-priv-")
    os.chmod(data, 0o755)
    os.chown(data, nobody.pw_uid, nobody.pw_gid)
    try:
        n = make_nudged({"server": {"user": "nobody", "data_dir": data}})
        n.wait_log(rf"event=1011 name=privileges_dropped user=nobody uid={nobody.pw_uid}")
        # A worker gives up its last capability after its own setup and then logs
        # "started"; reading its status before that line would race it.
        deadline = time.monotonic() + WAIT
        while n.log_text().count("event=1000 name=started ") < n.workers:
            assert time.monotonic() < deadline, n.log_tail()
            time.sleep(0.05)
        for pid in n.pids():
            st = status_of(pid)
            assert st["Uid"].split() == [str(nobody.pw_uid)] * 4, (pid, st["Uid"])
            assert st["Gid"].split()[0] == str(nobody.pw_gid), (pid, st["Gid"])
        # The processes serving requests hold no capability at all.
        serving = n.pids()[1:] if n.workers > 1 else n.pids()
        for pid in serving:
            assert int(status_of(pid)["CapEff"], 16) == 0, (pid, status_of(pid)["CapEff"])
        assert os.stat(os.path.join(data, "secret")).st_uid == nobody.pw_uid
        assert n.user("alice").state().status == 200
    finally:
        if "n" in locals():
            n.stop()
        shutil.rmtree(data, ignore_errors=True)


def test_unknown_user_is_refused(make_nudged):
    n = make_nudged({"server": {"user": "no-such-user-here"}}, start=False)
    with pytest.raises(AssertionError):
        n.start()
    assert "[server] user no-such-user-here: no such user" in n.log_text(), n.log_tail()


# ---- coalescing -----------------------------------------------------------------


def test_a_flood_of_one_event_is_counted_not_written(make_nudged):
    n = make_nudged({"log": {"burst": 3}})
    for _ in range(10):
        r = n.request("GET", "/v1/state", token="v2.u.bad")
        assert r.status == 401, r
    n.wait_log(r"event=1010 name=log_coalesced of=1200 of_name=auth_failed more=\d+", timeout=WAIT + 12)
    text = n.log_text()
    written = len(re.findall(r"event=1200 name=auth_failed", text))
    held = sum(int(x) for x in re.findall(r"event=1010 name=log_coalesced of=1200 of_name=auth_failed more=(\d+)", text))
    assert written + held == 10, (written, held, text[-2000:])
    assert written <= 3 * processes(n), written
    assert '... and ' in text


# ---- syslog and the journal ------------------------------------------------------


def in_mount_namespace(n, src, dst):
    """Runs n's nudged in a mount namespace of its own where src is mounted at
    dst: the log socket the test reads sits where the system's would be."""
    os.makedirs(dst, exist_ok=True)
    n.command_prefix = ["unshare", "-m", "sh", "-c",
                        f'mount --bind "{src}" "{dst}" && exec "$0" "$@"']


def recv_until(s, want):
    """Datagrams from s until one holds 'want'; all of them."""
    got = []
    while True:
        got.append(s.recv(65536))
        if want in got[-1]:
            return got


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for a mount namespace")
def test_journal_target_sends_the_event_id_as_a_field(make_nudged):
    d = tempfile.mkdtemp(prefix="nudge-journal-")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(os.path.join(d, "socket"))
    s.settimeout(WAIT)
    try:
        n = make_nudged({"log": {"target": "journal"}}, start=False)
        in_mount_namespace(n, d, "/run/systemd/journal")
        n.write_config()
        # The listening line goes to the journal, not to the harness's log: read it there.
        n.proc = subprocess.Popen([*n.command_prefix, harness.nudged_path(), "-c", str(n.conf)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        got = b"\n".join(recv_until(s, b"NUDGE_EVENT=1001"))
        assert b"NUDGE_EVENT_NAME=listening" in got, got
        assert b"SYSLOG_IDENTIFIER=nudged" in got, got
        assert b"PRIORITY=6" in got, got
        m = re.search(rb"MESSAGE=level=info event=1001 name=listening addr=127\.0\.0\.1:(\d+)", got)
        assert m, got
        assert b"MESSAGE=ts=" not in got, "the journal stamps lines itself"
        n.proc.terminate()
        # Read on while it stops: a log socket nobody reads holds the writer, as journald's would.
        got = b"\n".join(recv_until(s, b"exit=0 workers=" if n.workers > 1 else b"NUDGE_EVENT=1003"))
        assert b"NUDGE_EVENT_NAME=stopped" in got, got
        assert n.proc.wait(WAIT) == 0
    finally:
        if n.proc and n.proc.poll() is None:
            n.proc.kill()
        s.close()
        shutil.rmtree(d, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for a mount namespace")
def test_syslog_target_writes_to_dev_log(make_nudged):
    d = tempfile.mkdtemp(prefix="nudge-syslog-")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(os.path.join(d, "log"))
    s.settimeout(WAIT)
    try:
        n = make_nudged({"log": {"target": "syslog"}}, start=False)
        n.write_config()
        # /dev/log itself is replaced by a bind of the test's socket.
        n.command_prefix = ["unshare", "-m", "sh", "-c",
                            f'touch /dev/log 2>/dev/null; mount --bind "{d}/log" /dev/log && exec "$0" "$@"']
        n.proc = subprocess.Popen([*n.command_prefix, harness.nudged_path(), "-c", str(n.conf)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        got = b"\n".join(recv_until(s, b"name=listening"))
        # <30> is facility daemon (3 * 8) + info (6).
        assert re.search(rb"<30>.*nudged\[\d+\]: level=info event=1001 name=listening", got), got
        n.proc.terminate()
        recv_until(s, b"exit=0 workers=" if n.workers > 1 else b"name=stopped")
        assert n.proc.wait(WAIT) == 0
    finally:
        if n.proc and n.proc.poll() is None:
            n.proc.kill()
        s.close()
        shutil.rmtree(d, ignore_errors=True)
