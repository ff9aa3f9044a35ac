"""The network lab and ActiveSync (issue 19): a phone behind a firewall that
forgets idle flows after 6 s asks for a 10 s heartbeat. ActiveSync has no
field for nudged's learned hint, so the only way to tell the phone is Status
5 with the safe heartbeat. Shown here:

  * the first answers the firewall eats (the flow was forgotten before
    nudged answered) cost no change: a change published while the path is
    dead is reported on the phone's next Ping (a Status 2 is delivered only
    when the next Ping comes within [heartbeat] grace);
  * once the adaptive heartbeat has learned the path's ceiling, nudged
    answers the 10 s Ping with Status 5 and a heartbeat the path carries;
  * the phone, following it as real clients do, stops losing answers, and
    every later change reaches it.

The phone is a loop in a thread in the client namespace speaking WBXML built
by xml2wbxml (tests/e2e/activesync.py). It gives an answer up after its
heartbeat + 3 s (then closes and pings again on a new connection, as phones
do). Second-scale settings, as test_adaptive.py.
"""
import threading
import time

import pytest

from . import lab as netlab  # noqa: F401  (puts tests/e2e on sys.path)
import harness  # noqa: E402
import activesync as asx  # noqa: E402

pytestmark = pytest.mark.skipif(not asx.tools_present(), reason="libwbxml2-utils not installed")

FW = 6
ASKED = 10
SLACK = 3


class Phone:
    def __init__(self, lab, n, user, password, heartbeat):
        self.lab, self.n = lab, n
        self.user, self.password = user, password
        self.device = "phone"
        self.heartbeat = heartbeat
        self.records = []  # (monotonic time, "answer" | "lost", status, heartbeat used, answer)
        self.cond = threading.Condition()
        self.stopping = False
        self.bodies = {}
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        harness.LIVE.append(self)

    def _body(self, hb):
        if hb not in self.bodies:
            self.bodies[hb] = asx.ping_wbxml(hb, ("INBOX",))
        return self.bodies[hb]

    def _record(self, *rec):
        with self.cond:
            self.records.append((time.monotonic(), *rec))
            self.cond.notify_all()

    def _run(self):
        while not self.stopping:
            hb = self.heartbeat
            try:
                c = self.lab.client_conn(self.n)
            except OSError:
                time.sleep(0.5)
                continue
            try:
                req = harness.build_request("POST", asx.plain_query(self.user, self.device),
                                            self._body(hb),
                                            headers=asx.headers(asx.basic(self.user, self.password)))
                c.send(req)
                r = c.read_response(timeout=hb + SLACK)
                a = asx.Answer(r)
                if a.status == 5 and a.heartbeat:
                    self.heartbeat = a.heartbeat  # what a real client does with Status 5
                self._record("answer", a.status, hb, a)
            except (TimeoutError, harness.ConnectionClosed, OSError):
                if self.stopping:
                    break
                self._record("lost", None, hb, None)
            finally:
                c.close()

    def wait(self, pred, timeout, since=0):
        """The first record after index 'since' that satisfies pred; its index."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for i in range(since, len(self.records)):
                    if pred(self.records[i]):
                        return i
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no matching record in {timeout}s: {self.summary()}\n"
                                         f"{self.n.log_tail(40)}")
                self.cond.wait(left)

    def summary(self):
        return [(r[1], r[2], r[3]) for r in self.records]

    def close(self):
        self.stopping = True
        self.thread.join(ASKED + SLACK + 5)


def test_activesync_phone_behind_a_short_firewall_converges_via_status5_and_loses_nothing(lab, tmp_path):
    lab.set_fw_timeout(FW)
    pf = tmp_path / "passwd"
    asx.passwd_file(pf, {"ann": "pw-ann"})
    # Nothing useful configured (as test_adaptive.py test 3): idle_timeout far above
    # the firewall's, keepalive too slow to refresh the flow.
    n = lab.start_nudged({"auth": {"passwords": f"passwd-file:{pf}"},
                          "network": {"idle_timeout": 120, "keepalive_idle": 600},
                          "heartbeat": {"min": 1, "max": 0, "increment": 1, "sample_size": 1,
                                        "grace": 1},
                          "activesync": {"guidance_interval": 1}})
    phone = Phone(lab, n, "ann", "pw-ann", ASKED)
    # The first Ping idles past the firewall: its answer is eaten.
    first_lost = phone.wait(lambda r: r[1] == "lost", 3 * (ASKED + SLACK))
    # A change while the path is dead or the phone is reconnecting: not lost.
    lab.publish(n, "ann", "INBOX")
    changed = phone.wait(lambda r: r[1] == "answer" and r[2] == 2 and r[4].folders == ["INBOX"],
                         6 * (ASKED + SLACK), since=first_lost + 1)
    # Convergence: a Status 5 with a heartbeat inside the firewall's window.
    guided = phone.wait(lambda r: r[1] == "answer" and r[2] == 5, 12 * (ASKED + SLACK))
    g = phone.records[guided][4]
    assert g.heartbeat is not None and 1 <= g.heartbeat < FW, phone.summary()
    # Following it, the phone loses nothing more: two whole heartbeats expire
    # (Status 1, proving answers cross the firewall again) and changes arrive.
    start = len(phone.records)
    phone.wait(lambda r: r[1] == "answer" and r[2] == 1, 4 * FW, since=start)
    for _ in range(3):
        mark = len(phone.records)
        lab.publish(n, "ann", "INBOX")
        phone.wait(lambda r: r[1] == "answer" and r[2] == 2, 4 * FW, since=mark)
    after = phone.records[start:]
    assert not [r for r in after if r[1] == "lost"], phone.summary()
    assert all(r[3] < FW for r in after), phone.summary()
    assert changed >= 0
    print("phone:", phone.summary())
    phone.close()
