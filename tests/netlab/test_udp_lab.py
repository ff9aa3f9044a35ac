"""UDP through a real firewall: the lab's stateful firewall (lab.py) drops
every UDP datagram unless the test opens it, which is what many networks do
to push datagrams without anybody noticing. Here it is noticed:

  - `nudge doctor` run from the client reports the UDP FAIL line and exits 1;
  - `nudge listen` registers (HTTP gets through), gets no datagram, polls,
    says it fell back to polling, and still reports the new mail;
  - with UDP let through, the same commands see datagrams, and the ack from
    the client stops the resends.

The CLI runs inside the client namespace, nudged inside the server
namespace; publishing happens on the server side. Waits are bounded by the
harness's generous WAIT, never asserted tight.
"""
import time

from harness import WAIT, read_until

FALLBACK = "fallback polling every"
UDP_FAIL = "UDP from server to this client is blocked: clients will fall back to polling every 60 s"


def listen(lab, n, user, device, *extra):
    p = lab.client_cli_bg(n, "listen", "--device", device, "--folder", "INBOX", "--poll-interval", "2",
                          "--token", user.token, *extra)
    read_until(p, r"^registered ")
    return p


def test_doctor_reports_blocked_udp_and_fails(lab):
    n = lab.start_nudged()
    user = n.user("doc")
    p = lab.client_cli(n, "doctor", "--token", user.token, timeout=WAIT * 2)
    assert p.returncode == 1, f"doctor exited {p.returncode}\n{p.stdout}\n{p.stderr}"
    lines = p.stdout.splitlines()
    fails = [line for line in lines if line.startswith("FAIL")]
    assert len(fails) == 1 and UDP_FAIL in fails[0], p.stdout
    # Everything else about the server works through this firewall.
    assert any(line.startswith("OK") and "token" in line for line in lines), p.stdout


def test_doctor_passes_once_udp_is_let_through(lab):
    lab.allow_udp()
    n = lab.start_nudged()
    user = n.user("doc")
    p = lab.client_cli(n, "doctor", "--token", user.token, timeout=WAIT * 2)
    assert p.returncode == 0, f"doctor exited {p.returncode}\n{p.stdout}\n{p.stderr}"
    assert not [line for line in p.stdout.splitlines() if line.startswith("FAIL")], p.stdout
    assert any(line.startswith("OK") and "UDP" in line for line in p.stdout.splitlines()), p.stdout


def test_listen_falls_back_to_polling_and_still_reports_new_mail(lab):
    n = lab.start_nudged({"udp": {"resend_interval": 1}})
    user = n.user("lis")
    p = listen(lab, n, user, "desk", "--count", "1")
    state = lab.publish(n, user.name, "INBOX")
    _, lines = read_until(p, rf"^changed INBOX={state} via=poll")
    assert any(FALLBACK in line and "no datagram" in line for line in lines), lines
    assert p.wait(WAIT) == 0
    # nudged did send: the firewall ate it.
    assert n.metric("nudge_udp_datagrams_sent_total", kind="notify") >= 1
    assert n.metric("nudge_udp_acks_total") == 0


def test_listen_hears_datagrams_when_udp_gets_through_and_acks_them(lab):
    lab.allow_udp()
    n = lab.start_nudged({"udp": {"resend_interval": 1}})
    user = n.user("lis")
    p = listen(lab, n, user, "desk", "--count", "2")
    first = lab.publish(n, user.name, "INBOX")
    _, lines = read_until(p, rf"^changed INBOX={first} via=udp")
    n.wait_metric("nudge_udp_acks_total", lambda v: v >= 1)
    second = lab.publish(n, user.name, "INBOX")
    _, more = read_until(p, rf"^changed INBOX={second} via=udp")
    assert p.wait(WAIT) == 0
    assert not [line for line in lines + more if FALLBACK in line], lines + more
    # Acked each time: resends stopped (at most the ones in flight before an ack landed).
    resends = n.metric("nudge_udp_datagrams_sent_total", kind="resend")
    time.sleep(3)
    assert n.metric("nudge_udp_datagrams_sent_total", kind="resend") == resends
