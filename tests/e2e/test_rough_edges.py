"""Rough edges of running nudged as a service (issue 21): bind errors that name
the socket that failed, a probe recommendation nudged accepts, the per-network
idle-timeout alert's evidence, HEAD and HTTP versions, admin input limits and
the backup of every shard file."""
import re
import socket
import subprocess

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
