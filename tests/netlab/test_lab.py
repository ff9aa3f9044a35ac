"""The network lab's tests: what a stateful middlebox's idle timeout does to
held pings, how nudged finds a client that vanished behind it, and `nudge
probe` measuring that timeout. Each test gets a fresh lab (conftest.py):
client, firewall and server namespaces, the firewall forgetting idle TCP
flows after a few seconds, so everything here takes seconds, not the
field's minutes.

Waits poll (the firewall's conntrack table, /metrics, nudged's log) with
generous bounds. The only timing assertions are the issue's: a vanished
client is freed within its keepalive budget plus a margin, and a probe run
takes about 3 times the timeout it finds (with a margin for the lab's
second-scale constants).
"""
import re
import time

import harness
from harness import SLOW, WAIT

from . import lab as netlab

# The probe bracket must hold the firewall's timeout and be this narrow.
PROBE_WITHIN = 0.20


def hold_ping(lab, n, token, device, heartbeat, folders):
    """Sends a ping from the client namespace and waits until nudged holds
    it; returns the Conn and the client port of its flow."""
    c = lab.client_conn(n)
    held = n.held()
    c.send_request("POST", "/v1/ping", harness.ping_body(device, folders, heartbeat), token)
    n.wait_held(held + 1)
    return c, c.sock.getsockname()[1]


def unacked_to(lab, n, port):
    """The server's socket towards the client's 'port' has written bytes the
    client never acknowledged (ss shows them as unacked)."""
    out = lab.server.run("ss", "-tni", "state", "established", f"( sport = :{n.port} )")
    parts = out.split(f"{netlab.CLIENT_ADDR}:{port}", 1)
    # The socket's details are on the line after its addresses.
    return len(parts) == 2 and re.search(r"\bunacked:\d+", "\n".join(parts[1].split("\n")[:2])) is not None


# ---------------------------------------------------------------------------
# 1. The failure the lab exists for

def test_a_held_ping_idle_past_the_firewall_timeout_loses_its_answer_silently(lab):
    fw = 3
    heartbeat = 4 * fw  # longer than the firewall keeps an idle flow
    margin = 3
    lab.set_fw_timeout(fw)
    # Keepalive far above the firewall's timeout: nothing refreshes the flow.
    n = lab.start_nudged({"network": {"keepalive_idle": 600}})
    user = n.user("lost")

    # Control: a held ping answered while the firewall still tracks its flow
    # reaches the client, so the path itself works.
    c, port = hold_ping(lab, n, user.token, "phone", heartbeat, {"INBOX": "0"})
    assert lab.flows(port), f"the firewall does not track the ping's flow\n{lab.flows()}"
    state = lab.publish(n, user.name, "INBOX")
    n.check_ping(c.read_response(WAIT), "changed", {"INBOX": state})
    c.close()

    # The same ping left idle until the firewall forgets its flow.
    sent = time.monotonic()
    c, port = hold_ping(lab, n, user.token, "phone", heartbeat, {"INBOX": state})
    lab.wait_flow_gone(port, fw + WAIT)
    lab.publish(n, user.name, "INBOX")
    # nudged answered it (the ping is no longer held) and its kernel keeps
    # retransmitting the answer: it left the server and died on the path.
    n.wait_held(0)
    deadline = time.monotonic() + WAIT
    while not unacked_to(lab, n, port):
        assert time.monotonic() < deadline, "nudged's answer never showed up as unacknowledged"
        time.sleep(0.1)

    # The client hears nothing until its heartbeat + margin: no answer, and
    # neither a FIN nor a reset to tell it the connection is gone.
    while time.monotonic() < sent + heartbeat + margin:
        assert c.poll_bytes(0.2) == b"" and not c.eof, \
            f"the client received {c.buf!r} (eof={c.eof}): the firewall let the answer through"
    assert not lab.flows(port), "the firewall picked the forgotten flow up again"


# ---------------------------------------------------------------------------
# 4. A client that vanishes

def test_a_vanished_client_is_found_dead_by_keepalive_and_its_session_freed(lab):
    idle, interval, count = 2, 1, 3
    budget = idle + interval * count
    margin = 5 * SLOW
    # The firewall keeps the flow far longer: here only the client is gone.
    lab.set_fw_timeout(120)
    n = lab.start_nudged({"network": {"keepalive_idle": idle, "keepalive_interval": interval,
                                      "keepalive_count": count}})
    user = n.user("gone")
    c, port = hold_ping(lab, n, user.token, "phone", 300, {"INBOX": "0"})
    held_at = time.monotonic()

    lab.cut_client()
    cut_at = time.monotonic()
    ev = netlab.wait_event(n, 1302, lambda e: e.get("user") == user.name and e.get("device") == "phone",
                           "for the vanished phone", timeout=budget + margin + WAIT)
    found_at = time.monotonic()
    assert ev["why"] == "connection timed out", ev
    assert found_at - cut_at <= budget + margin, \
        f"found dead {found_at - cut_at:.1f}s after the cut; keepalive allows {budget}s + {margin}s"
    # Keepalive counts from the last packet, the ping itself: not sooner.
    assert found_at - held_at >= budget - 1, f"closed after {found_at - held_at:.1f}s, before keepalive could"
    assert n.held() == 0
    r = n.request("GET", f"/v1/admin/sessions?user={user.name}", token=n.admin_token())
    assert r.status == 200 and r.json()["sessions"] == [], r
    assert c.poll_bytes(0.05) == b""


# ---------------------------------------------------------------------------
# 5. nudge probe

def probe(lab, n, fw):
    """Runs nudge probe from the client namespace with the firewall at
    'fw' s; returns (survived, lost, took, stdout)."""
    lab.set_fw_timeout(fw)
    user = n.user("probe")  # its own user: another run's probes do not count against it
    top = 6 * fw  # bounds a broken lab's run ("no timeout") to a minute or two
    p = lab.client_cli(n, "probe", "--token", user.token, "--min", "1", "--max", str(top),
                       timeout=3 * top + 60)
    assert p.returncode == 0, f"nudge probe exited {p.returncode}\n{p.stdout}{p.stderr}"
    m = re.search(r"^bracket: flows idle for (\d+) s survive; (\d+) s do not$", p.stdout, re.M)
    assert m, f"no bracket in the output:\n{p.stdout}"
    took = re.search(r"^took (\d+) s, (\d+) probes$", p.stdout, re.M)
    assert took, p.stdout
    return int(m.group(1)), int(m.group(2)), int(took.group(1)), p.stdout


def test_probe_brackets_the_firewall_timeout(lab):
    n = lab.start_nudged()
    brackets = []
    for fw in (6, 10):
        survived, lost, took, out = probe(lab, n, fw)
        assert survived <= fw <= lost, f"bracket {survived}..{lost} s misses the firewall's {fw} s\n{out}"
        assert lost - survived <= PROBE_WITHIN * fw, f"bracket {survived}..{lost} s is wider than 20%\n{out}"
        # Every result line is consistent with the bracket.
        for hold, verdict in re.findall(r"^probe (\d+) s: (survived|lost)", out, re.M):
            assert (int(hold) <= survived) == (verdict == "survived"), out
        # The advice follows nudged's rule for [network] idle_timeout.
        margin = max(1, min(120, survived // 10))
        assert f"heartbeat: {survived - margin} s recommended" in out, out
        assert f"keepalive: idle {max(1, min(300, survived // 2))} s recommended" in out, out
        assert f"[network] idle_timeout = {survived}" in out, out
        # About 3 times the timeout; 10 s more for the lab's second-scale constants
        # (each lost probe waits hold * 1.2 + 2 s).
        assert took <= 3 * lost + 10, f"took {took} s for a {lost} s timeout\n{out}"
        brackets.append((survived, lost))
    assert brackets[0][1] <= brackets[1][0], f"the two timeouts gave overlapping brackets: {brackets}"


def test_probe_exits_1_when_the_server_cannot_be_reached(lab):
    n = lab.start_nudged()
    user = n.user("probe")
    p = lab.client_cli(n, "probe", "--token", user.token, url=f"http://{netlab.SERVER_ADDR}:1")
    assert p.returncode == 1, f"{p.returncode}\n{p.stdout}{p.stderr}"
    assert "cannot connect to" in p.stderr and "refused" in p.stderr, p.stderr
    assert "bracket" not in p.stdout, p.stdout

    lab.cut_client()
    p = lab.client_cli(n, "probe", "--token", user.token)
    assert p.returncode == 1, f"{p.returncode}\n{p.stdout}{p.stderr}"
    assert f"cannot connect to {netlab.SERVER_ADDR}:{n.port}" in p.stderr, p.stderr


def test_probe_refuses_a_bad_token_and_bad_options(lab):
    n = lab.start_nudged()
    p = lab.client_cli(n, "probe", "--token", "v1.user.bad")
    assert p.returncode == 1 and "HTTP 401 unauthorized" in p.stderr, f"{p.returncode}\n{p.stderr}"
    for args, word in ((["--precision", "0"], "--precision"), (["--min", "10", "--max", "5"], "--min"),
                       (["--max", "0"], "--max"), (["extra"], "unexpected argument")):
        p = lab.client_cli(n, "probe", "--token", "t", *args)
        assert p.returncode == 2 and word in p.stderr and "nudge probe --help" in p.stderr, \
            f"{args}: {p.returncode}\n{p.stderr}"
