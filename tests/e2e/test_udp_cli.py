"""`nudge listen` and `nudge doctor` (docs/udp.md) against the real nudged:
datagrams printed and acked, forged ones refused, the polling fallback when
UDP is off, and doctor's verdicts. The blocked-UDP case, which needs a
firewall, is in tests/netlab/test_udp_lab.py.
"""
import re

import harness
from harness import DGRAM_NOTIFY, WAIT, dgram_encode, read_until

NUDGED_SETTINGS = {"udp": {"resend_interval": 1}}


def listen(srv, user, device, *extra):
    """Starts nudge listen; returns (Popen, the fields of its registered line)."""
    p = srv.cli_bg("listen", "--url", srv.url, "--token", user.token, "--device", device,
                   "--poll-interval", "1", *extra)
    m, _ = read_until(p, r"^registered (.*)$")
    fields = dict(kv.split("=", 1) for kv in m.group(1).split())
    return p, fields


def finish(p):
    out, err = p.communicate(timeout=WAIT)
    return p.returncode, out, err


def test_listen_prints_each_change_acks_it_and_ends_its_registration(srv):
    u = srv.user()
    acks = srv.metric("nudge_udp_acks_total")
    p, reg = listen(srv, u, "desk", "--count", "2")
    assert reg["server"] == f"127.0.0.1:{srv.udp_port_of(u.name)}" and int(reg["id"]) > 0, reg
    s1 = srv.publish(u.name, "INBOX")
    read_until(p, rf"^changed INBOX={s1} via=udp seq=\d+$")
    srv.wait_metric("nudge_udp_acks_total", lambda v: v >= acks + 1)
    s2 = srv.publish(u.name, "INBOX")
    read_until(p, rf"^changed INBOX={s2} via=udp")
    code, out, err = finish(p)
    assert code == 0, (out, err)
    # At exit it ended its registration.
    harness.wait_event(srv, 1603, lambda e: e.get("device") == "desk" and e.get("why") == "deleted by the device",
                       "udp_ended")


def test_listen_refuses_a_forged_datagram(srv):
    u = srv.user()
    p, reg = listen(srv, u, "desk", "--duration", str(3 * harness.SLOW))
    import socket
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        forged = dgram_encode(DGRAM_NOTIFY, int(reg["id"]), 99, 5, "INBOX", b"\x07" * 32)
        s.sendto(forged, ("127.0.0.1", int(reg["port"])))
        s.sendto(b"junk", ("127.0.0.1", int(reg["port"])))
    finally:
        s.close()
    code, out, err = finish(p)
    assert code == 0, (out, err)
    assert "changed" not in out, out
    assert re.search(r"nudge listen: rejected datagram from 127\.0\.0\.1:\d+: .*tag", err), err
    assert err.count("rejected datagram") == 2, err


def test_listen_without_udp_falls_back_to_polling(make_nudged):
    n = make_nudged({"udp": {"listen": ""}})
    u = n.user()
    p = n.cli_bg("listen", "--url", n.url, "--token", u.token, "--device", "desk",
                 "--poll-interval", "1", "--count", "1")
    m, _ = read_until(p, r"^fallback polling every 1 s: registration failed: (.*)$")
    assert "501" in m.group(1) and "udp-disabled" in m.group(1), m.group(0)
    state = n.publish(u.name, "INBOX")
    read_until(p, rf"^changed INBOX={state} via=poll$")
    code, out, err = finish(p)
    assert code == 0, (out, err)


def test_listen_usage_errors(srv):
    for args, words in ((["listen"], "--device"),
                        (["listen", "--device", "d", "--poll-interval", "0"], "--poll-interval"),
                        (["listen", "--device", "d", "--port", "70000"], "--port")):
        p = srv.cli(*args, "--url", srv.url, "--token", "x")
        assert p.returncode == 2 and words in p.stderr, (args, p.stderr)


def doctor(n, token, *extra):
    p = n.cli("doctor", "--url", n.url, "--token", token, *extra, timeout=WAIT * 2)
    lines = p.stdout.splitlines()
    return p.returncode, lines, p.stderr


def test_doctor_all_ok_against_a_local_server(srv):
    code, lines, err = doctor(srv, srv.user().token)
    assert code == 0, (lines, err)
    kinds = [line.split()[0] for line in lines if line.strip()]
    assert kinds and set(kinds) <= {"OK", "WARN"}, lines
    assert any(line.startswith("OK") and "UDP" in line for line in lines), lines
    assert any(line.startswith("OK") and "ping" in line for line in lines), lines


def test_doctor_fails_on_a_bad_token(srv):
    code, lines, _ = doctor(srv, srv.user().token[:-3] + "AAA")
    assert code == 1, lines
    assert any(line.startswith("FAIL") and "token" in line for line in lines), lines
    code, lines, _ = doctor(srv, srv.publisher_token())
    assert code == 1 and any("nudge token --user" in line for line in lines), lines


def test_doctor_warns_when_udp_is_off(make_nudged):
    n = make_nudged({"udp": {"listen": ""}})
    code, lines, err = doctor(n, n.user().token)
    assert code == 0, (lines, err)
    warn = [line for line in lines if line.startswith("WARN")]
    assert len(warn) == 1 and "UDP" in warn[0] and "[udp] listen" in warn[0], lines


def test_doctor_warns_on_the_server_host_when_udp_is_loopback_only(make_nudged):
    # TCP also on every address, UDP on loopback: the test datagram arrives
    # here, but would reach no device on another host (issue 21, item 6).
    n = make_nudged({"server": {"listen": "127.0.0.1:0, 0.0.0.0:0"},
                     "udp": {"listen": "127.0.0.1:0"}})
    code, lines, err = doctor(n, n.user().token)
    assert code == 0, (lines, err)
    warn = [line for line in lines if line.startswith("WARN") and "UDP" in line]
    assert len(warn) == 1 and "only over loopback" in warn[0], lines
    assert "0.0.0.0:0" in warn[0] and "[udp] listen" in warn[0], lines
    assert not any(line.startswith("OK") and "UDP" in line for line in lines), lines


def test_doctor_fails_when_nothing_listens(srv):
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    p = srv.cli("doctor", "--url", f"http://127.0.0.1:{port}", "--token", "x")
    assert p.returncode == 1 and p.stdout.startswith("FAIL"), (p.stdout, p.stderr)
