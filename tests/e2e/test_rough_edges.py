"""Rough edges of running nudged as a service (issue 21): bind errors that name
the socket that failed, a probe recommendation nudged accepts, the per-network
idle-timeout alert's evidence, HEAD and HTTP versions, admin input limits and
the backup of every shard file."""
import re
import socket
import subprocess
from pathlib import Path

import pytest

import harness
from harness import WAIT, expect_error


def write_conf(tmp_path, sections, name="nudged.conf"):
    """A config file from {section: {key: value}}, data in tmp_path/var."""
    sections = {s: dict(kv) for s, kv in sections.items()}
    sections.setdefault("server", {}).setdefault("data_dir", str(tmp_path / "var"))
    (tmp_path / "var").mkdir(exist_ok=True)
    lines = []
    for section, kv in sections.items():
        lines.append(f"[{section}]")
        lines.extend(f"{k} = {v}" for k, v in kv.items())
    conf = tmp_path / name
    conf.write_text("\n".join(lines) + "\n")
    return conf


def run_nudged(conf, *args):
    p = subprocess.run([harness.nudged_path(), "-c", str(conf), *args], capture_output=True,
                       text=True, timeout=WAIT * 2, stdin=subprocess.DEVNULL)
    if harness.SAN:
        found = [m for m in harness.SANITIZER_MARKERS if m in p.stderr]
        assert not found, p.stderr
    return p


def startup_failure(p):
    """The reason of the startup_failed line (event 1006)."""
    assert p.returncode == 1, p.stderr
    m = re.search(r'event=1006 name=startup_failed reason="((?:[^"\\]|\\.)*)"', p.stderr)
    assert m, p.stderr
    return m.group(1)


def held_tcp_port(reuseport):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuseport:
        # As another nudged with workers holds it: SO_REUSEPORT would let ours join silently.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s, s.getsockname()[1]


def udp_port_pair():
    """A free UDP port p whose p + 1 we hold: (p, holder of p + 1)."""
    for _ in range(50):
        hold = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        hold.bind(("127.0.0.1", 0))
        p = hold.getsockname()[1] - 1
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            probe.bind(("127.0.0.1", p))
        except OSError:
            hold.close()
            continue
        finally:
            probe.close()
        return p, hold
    pytest.skip("no free UDP port below a held one")


# -- item 5: bind errors ---------------------------------------------------

@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("reuseport", [False, True])
def test_taken_tcp_port_is_named_as_tcp_with_its_option(tmp_path, workers, reuseport):
    holder, port = held_tcp_port(reuseport)
    try:
        conf = write_conf(tmp_path, {"server": {"listen": f"127.0.0.1:{port}",
                                                "workers": workers},
                                     "udp": {"listen": "127.0.0.1:0"}})
        reason = startup_failure(run_nudged(conf))
    finally:
        holder.close()
    assert f"TCP 127.0.0.1:{port}" in reason, reason
    assert "[server] listen" in reason, reason
    assert "Address already in use" in reason, reason
    assert "[udp]" not in reason and "UDP" not in reason, reason


def test_taken_udp_port_of_a_worker_is_the_one_named(tmp_path):
    base, holder = udp_port_pair()
    try:
        conf = write_conf(tmp_path, {"server": {"listen": "127.0.0.1:0", "workers": 2},
                                     "udp": {"listen": f"127.0.0.1:{base}"}})
        reason = startup_failure(run_nudged(conf))
    finally:
        holder.close()
    assert f"UDP 127.0.0.1:{base + 1}" in reason, reason
    assert "worker 1" in reason and "[udp] listen" in reason, reason
    assert "TCP" not in reason and "[server] listen" not in reason, reason


# -- item 7: nudge probe's recommendation ------------------------------------

def recommended_config(out):
    """{section: {key: value}} from the probe's 'nudged.conf: [s] k = v' lines."""
    conf = {}
    for section, key, value in re.findall(r"^nudged\.conf: \[(\w+)\] (\w+) = (\d+)", out, re.M):
        conf.setdefault(section, {})[key] = value
    return conf


@pytest.mark.parametrize("top", [1, 8])
def test_probe_capped_by_max_recommends_a_config_nudged_accepts(make_nudged, tmp_path, top):
    srv = make_nudged()
    user = srv.user("probe")
    p = srv.cli("probe", "--url", srv.url, "--token", srv.token(user.name), "--max", str(top),
                timeout=3 * top + WAIT)
    assert p.returncode == 0, p.stdout + p.stderr
    # Loopback forgets nothing: the measurement is capped, and says so.
    assert re.search(rf"^bracket: no idle timeout up to {top} s: .*{top} s is a lower bound, "
                     r"not the timeout \(raise --max to measure it\)$", p.stdout, re.M), p.stdout
    assert re.search(r"^nudged\.conf: \[network\] idle_timeout = \d+ .*at least", p.stdout,
                     re.M), p.stdout
    rec = recommended_config(p.stdout)
    assert "idle_timeout" in rec.get("network", {}), p.stdout
    # The recommendation, on nudged's own defaults otherwise, is accepted as it stands.
    conf = write_conf(tmp_path, rec, name="recommended.conf")
    check = run_nudged(conf, "--print-config")
    assert check.returncode == 0, f"{p.stdout}\n--- nudged refused it ---\n{check.stderr}"
    # And the heartbeat it derives is the one the probe recommended.
    m = re.search(r"heartbeat_max=(\d+)", check.stdout)
    hb = re.search(r"^heartbeat: (\d+) s recommended", p.stdout, re.M)
    assert m and hb, check.stdout + p.stdout
    assert int(m.group(1)) == int(hb.group(1)), check.stdout + p.stdout


# -- item 9: HEAD, reason phrases, versions ----------------------------------

def raw_exchange(srv, data, n=1, head=False):
    """Sends raw bytes on a new connection; the first n answers and what follows them."""
    c = srv.connect()
    try:
        c.send(data)
        out = [c.read_response(head=head and i == 0) for i in range(n)]
        return out, c
    except Exception:
        c.close()
        raise


@pytest.mark.parametrize("path,admin", [("/healthz", False), ("/metrics", True)])
def test_head_is_answered_like_get_without_the_body(srv, path, admin):
    auth = f"Authorization: Bearer {srv.admin_token()}\r\n" if admin else ""
    get = srv.request("GET", path, token=srv.admin_token() if admin else None)
    assert get.status == 200, get
    # HEAD, then a pipelined GET: if HEAD's answer carried a body, the GET's
    # status line would not follow its head at once.
    data = (f"HEAD {path} HTTP/1.1\r\nHost: t\r\n{auth}\r\n"
            f"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").encode()
    (head, after), c = raw_exchange(srv, data, n=2, head=True)
    c.close()
    assert head.status == 200, head
    assert head.header("Content-Type") == get.header("Content-Type"), head
    n = int(head.header("Content-Length"))
    if path == "/healthz":
        assert n == len(get.body), (head, get)
    else:
        assert n > 0, head  # the counters move between two scrapes
    assert after.status == 200 and after.json() == {"status": "ok"}, after


def test_head_on_a_post_route_is_405_naming_its_method(srv):
    (r,), c = raw_exchange(srv, b"HEAD /v1/ping HTTP/1.1\r\nHost: t\r\n\r\n", head=True)
    c.close()
    assert r.status == 405 and r.header("Allow") == "POST", r
    (r,), c = raw_exchange(srv, b"POST /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n")
    c.close()
    assert r.status == 405 and r.header("Allow") == "GET, HEAD", r


@pytest.mark.parametrize("line", [b"GET /healthz HTTP/9.9", b"GET /healthz HTTP/2.0",
                                  b"GET /healthz HTTP/1.2"])
def test_an_unknown_http_version_is_505(srv, line):
    (r,), c = raw_exchange(srv, line + b"\r\nHost: t\r\n\r\n")
    c.close()
    body = expect_error(r, 505, "http-version-not-supported", has_error=True)
    assert r.reason == "HTTP Version Not Supported", r
    assert "HTTP/1.1" in body["error"] and "llhttp" not in body["error"].lower(), body


@pytest.mark.parametrize("version", [b"1.0", b"1.1"])
def test_http_1_0_and_1_1_are_spoken(srv, version):
    (r,), c = raw_exchange(srv, b"GET /healthz HTTP/" + version + b"\r\nHost: t\r\n\r\n")
    c.close()
    assert r.status == 200, r


def test_an_http2_preface_is_told_to_use_http_1_1(srv):
    (r,), c = raw_exchange(srv, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    c.close()
    body = expect_error(r, 505, "http-version-not-supported", has_error=True)
    assert "HTTP/2 is not spoken here" in body["error"] and "use HTTP/1.1" in body["error"], body
    assert "Pause" not in body["error"], body


def test_501_has_its_reason_phrase(srv):
    # Sign-in is off without [auth] passwords: 501.
    r = srv.request("POST", "/v1/login", headers={"Authorization": "Basic YWxpY2U6c2VjcmV0"})
    assert r.status == 501, r
    assert r.reason == "Not Implemented", r


def test_a_wrong_token_kind_for_admin_says_an_admin_token(srv):
    r = srv.request("GET", "/v1/admin/workers", token=srv.token("alice"))
    body = expect_error(r, 403, "forbidden", has_error=True)
    assert "needs an admin token, not a user token" in body["error"], body


# -- item 10: admin sessions' user= ------------------------------------------

@pytest.mark.parametrize("user,why", [
    ("a" * 256, "256 bytes decoded"),        # one past the longest id
    ("%61" * 100 + "a" * 200, "300 bytes decoded"),  # fits the encoded buffer, not an id
    ("", "0 bytes decoded"),
    ("a" * 800, "longer than 255 bytes"),    # longer than any encoding of an id
    ("%zz", "badly encoded"),
], ids=["256", "300-encoded", "empty", "800", "bad-escape"])
def test_admin_sessions_refuses_a_user_no_id_can_be(srv, user, why):
    r = srv.request("GET", f"/v1/admin/sessions?user={user}", token=srv.admin_token())
    body = expect_error(r, 400, "bad-request", has_error=True)
    assert why in body["error"] and "user" in body["error"], body


def test_admin_sessions_of_the_longest_user_id_is_a_list(srv):
    r = srv.request("GET", f"/v1/admin/sessions?user={'a' * 255}", token=srv.admin_token())
    assert r.status == 200 and r.json()["sessions"] == [], r


# -- item 10: backup and restore of every shard file -------------------------

def doc_block(heading):
    """The first ```sh block after '## heading' in docs/store.md."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "store.md").read_text()
    section = text.split(f"\n## {heading}\n", 1)[1]
    return section.split("```sh\n", 1)[1].split("```", 1)[0]


def test_documented_backup_of_every_shard_restores_into_a_fresh_data_dir(make_nudged, tmp_path):
    workers = 3
    srv = make_nudged({"server": {"workers": workers}})
    users = []
    while {harness.worker_of(u.name, workers) for u in users} != set(range(workers)):
        u = srv.user("bk")
        if harness.worker_of(u.name, workers) not in {harness.worker_of(v.name, workers)
                                                      for v in users}:
            users.append(u)
    want = {}
    for i, u in enumerate(users):
        for _ in range(i + 2):
            state = u.publish("INBOX")  # asserts it was committed
        want[u.name] = state
        assert u.states()["INBOX"] == state
    # The documented commands, on this server's files, while it runs.
    dest = tmp_path / "backup"
    script = doc_block("Backup").replace("/var/lib/nudge", str(srv.data_dir)) \
                                .replace("/backup/nudge-$(date +%F)", str(dest))
    p = subprocess.run(["sh", "-ec", script], capture_output=True, text=True, timeout=WAIT)
    assert p.returncode == 0, p.stderr
    names = sorted(f.name for f in dest.iterdir())
    assert names == ["nudge.db", "nudge.db.shard1", "nudge.db.shard2", "nudge.db.workers",
                     "secret"], names
    # Restore into a fresh data_dir with the documented commands, and start there.
    fresh = tmp_path / "fresh"
    fresh_dir = fresh / "var"
    fresh_dir.mkdir(parents=True, mode=0o700)
    script = doc_block("Restore").replace("/var/lib/nudge", str(fresh_dir)) \
                                 .replace("/backup/nudge-2026-12-07", str(dest))
    p = subprocess.run(["sh", "-ec", script], capture_output=True, text=True, timeout=WAIT)
    assert p.returncode == 0, p.stderr
    again = make_nudged({"server": {"workers": workers, "data_dir": str(fresh_dir)}})
    for u in users:
        # The restored secret signs the tokens: the old one is still good.
        got = harness.User(again, u.name).states()
        assert got.get("INBOX") == want[u.name], (u.name, got, want)
        assert again.request("GET", "/v1/state", token=u.token).status == 200
