"""The network lab, tests 2 and 3: a device that follows nudged's heartbeat
hint through a firewall that forgets idle flows gets every notification.

  2. nudged told the path's idle timeout ([network] idle_timeout below the
     firewall's): its heartbeat max stays inside it, so a device pinging
     with the hint never idles past the firewall, and every event published
     at random moments over several heartbeats reaches it.
  3. nudged told nothing useful (idle_timeout far above the firewall's): the
     adaptive hint, starting at heartbeat.min, climbs until an answer is
     eaten, falls back to the last heartbeat proven, and settles between
     70% and 100% of the firewall's timeout; nothing published meanwhile is
     lost, because every ping presents the device's states.

The device is the real client, `nudge ping --loop --adaptive`, run in the
client namespace; its lines say which heartbeat it used, the answer, the
hint, and the answers the path ate ("lost"). Second-scale settings.
"""
import random
import re
import subprocess
import time

import harness
from harness import WAIT

CHANGED = re.compile(r"^changed INBOX=(\d+) heartbeat=(\d+) heartbeat_hint=(\d+)$")
EXPIRED = re.compile(r"^expired heartbeat=(\d+) heartbeat_hint=(\d+)$")


class Device:
    """`nudge ping --loop --adaptive` in the client namespace, its output
    read line by line as it comes."""

    def __init__(self, lab, n, user, heartbeat, slack):
        cmd = [*lab.client.prefix(), harness.nudge_path(), "ping", "--url", n.client_url,
               "--token", user.token, "--device", "phone", "--folder", "INBOX",
               "--heartbeat", str(heartbeat), "--loop", "--adaptive", "--slack", str(slack)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, bufsize=1)
        self.lines = []
        harness.LIVE.append(self)

    def read_until(self, pred, timeout):
        """Reads lines until one satisfies pred; returns it (AssertionError on timeout)."""
        import selectors
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if not sel.select(timeout=max(0.05, deadline - time.monotonic())):
                    continue
                line = self.proc.stdout.readline()
                if line == "":
                    raise AssertionError(f"nudge ping exited: {self.proc.stderr.read()}\n"
                                         + "\n".join(self.lines))
                self.lines.append(line.rstrip("\n"))
                if pred(self.lines[-1]):
                    return self.lines[-1]
        finally:
            sel.close()
        raise AssertionError(f"no matching line within {timeout}s:\n" + "\n".join(self.lines))

    def seen_states(self):
        return [int(m.group(1)) for m in map(CHANGED.match, self.lines) if m]

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()
        self.proc.stderr.close()


def test_2_hint_inside_the_firewall_timeout_gets_every_notification(lab):
    fw = 6
    lab.set_fw_timeout(fw)
    # idle_timeout 4 below the firewall's 6: heartbeat max 3, keepalive at 2 s.
    n = lab.start_nudged({"network": {"idle_timeout": 4},
                          "heartbeat": {"min": 1, "max": 0, "increment": 1, "sample_size": 1,
                                        "grace": 2}})
    user = n.user("every")
    dev = Device(lab, n, user, heartbeat=3, slack=3)
    dev.read_until(lambda l: l.startswith("expired"), WAIT + 10)
    published = []
    rng = random.Random(7)
    end = time.monotonic() + 4 * fw  # several heartbeats and firewall timeouts
    while time.monotonic() < end:
        time.sleep(rng.uniform(0.5, 3.5))
        published.append(int(lab.publish(n, user.name, "INBOX")))
        # Each change is seen before the next publish, so every state shows once.
        want = published[-1]
        dev.read_until(lambda l, w=want: (m := CHANGED.match(l)) and int(m.group(1)) == w, WAIT)
    assert dev.seen_states() == published, (published, dev.lines)
    assert not [l for l in dev.lines if l.startswith("lost")], dev.lines
    # The hint never left the firewall's window.
    hints = [int(m.group(m.lastindex)) for m in map(lambda l: CHANGED.match(l) or EXPIRED.match(l),
                                                       dev.lines) if m]
    assert hints and max(hints) <= 3, dev.lines


def test_3_adaptive_hint_converges_below_the_firewall_timeout_and_loses_nothing(lab):
    fw = 6
    lab.set_fw_timeout(fw)
    # Nothing useful configured: idle_timeout far above the firewall, keepalive
    # too slow to refresh the flow (as a 5-minute keepalive behind a 2-minute NAT).
    n = lab.start_nudged({"network": {"idle_timeout": 120, "keepalive_idle": 600},
                          "heartbeat": {"min": 1, "max": 0, "increment": 1, "sample_size": 1,
                                        "grace": 1}})
    user = n.user("learns")
    dev = Device(lab, n, user, heartbeat=1, slack=3)
    published = []
    # Climb: 1, 2, 3 ... until the path eats an answer.
    lost = dev.read_until(lambda l: l.startswith("lost"), 120)
    assert int(re.search(r"heartbeat=(\d+)", lost).group(1)) > fw - 1, dev.lines
    # Publish while it recovers: the eaten answer costs nothing.
    published.append(int(lab.publish(n, user.name, "INBOX")))
    want = published[-1]
    dev.read_until(lambda l: (m := CHANGED.match(l)) and int(m.group(1)) == want, 60)
    # Settled: a few more answers, every hint within 70%..100% of the firewall's timeout.
    settled = []
    for _ in range(3):
        line = dev.read_until(lambda l: bool(EXPIRED.match(l) or CHANGED.match(l)), 60)
        settled.append(int(re.search(r"heartbeat_hint=(\d+)", line).group(1)))
        published.append(int(lab.publish(n, user.name, "INBOX")))
        want = published[-1]
        dev.read_until(lambda l, w=want: (m := CHANGED.match(l)) and int(m.group(1)) == w, 60)
    assert all(0.7 * fw <= h <= fw for h in settled), (settled, dev.lines)
    # Every published state reached the device, in order.
    assert [s for s in dev.seen_states() if s in published] == published, (published, dev.lines)
