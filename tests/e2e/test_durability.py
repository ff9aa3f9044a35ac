"""Durability with the SQLite store (src/store/store_sqlite.c, docs/store.md).

What nudged promises, and what these tests check exactly:
  * A publish answered 200 is durable: after SIGKILL at any point and a
    restart, every folder's state is >= the highest state any 200 reported.
  * So a client that presents the states it held before the crash is
    answered at once with the folders that changed.
  * Device records (the last ping's parameters) survive a clean stop, and
    survive SIGKILL once any publish queued after the ping was answered: the
    store writes in one queue, in order, so that publish's commit carries the
    record too (sqlite_writer.h). An empty-body ping after the restart then
    reuses them.
  * A damaged or foreign database is refused at start-up with a log line that
    names the file and what to do, and the file is left untouched.

Kill points are random; the seed is in every failure message, and
NUDGE_DURABILITY_SEED replays one.
"""
import os
import random
import signal
import subprocess
import threading
import time

import pytest

import harness
from harness import SLOW, WAIT, Conn

SQLITE = {"store": {"backend": "sqlite", "sync": "full"}}
USERS = 3
FOLDERS = ("INBOX", "Sent", "Archive")
PUBLISHERS = 4
SEED = int(os.environ.get("NUDGE_DURABILITY_SEED") or random.randrange(1 << 30))


class Publishers:
    """PUBLISHERS threads, each on its own keep-alive connection, publishing
    batches of 1-3 events for random (user, folder) pairs until stopped or
    until the server goes away. acked[(user, folder)] is the highest state a
    200 answer reported."""

    def __init__(self, srv, users, rng):
        self.srv = srv
        self.users = users
        self.token = srv.publisher_token()
        self.seeds = [rng.randrange(1 << 30) for _ in range(PUBLISHERS)]
        self.acked = {}
        self.answers = 0
        self.problems = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(s,), daemon=True) for s in self.seeds]
        for t in self.threads:
            t.start()

    def _run(self, seed):
        rng = random.Random(seed)
        try:
            conn = Conn(self.srv.port)
        except OSError:
            return
        try:
            while not self.stop.is_set():
                events = [{"user": rng.choice(self.users).name, "folder": rng.choice(FOLDERS)}
                          for _ in range(rng.randint(1, 3))]
                try:
                    r = conn.request("POST", "/v1/events", events, token=self.token, timeout=WAIT)
                except (harness.ConnectionClosed, TimeoutError, OSError):
                    return  # the server was killed: this publish was never acknowledged
                if r.status != 200:
                    with self.lock:
                        self.problems.append(repr(r))
                    return
                with self.lock:
                    self.answers += 1
                    for st in r.json()["states"]:
                        key = (st["user"], st["folder"])
                        self.acked[key] = max(self.acked.get(key, 0), int(st["state"]))
        finally:
            conn.close()

    def snapshot(self):
        with self.lock:
            return dict(self.acked), self.answers

    def join(self):
        self.stop.set()
        for t in self.threads:
            t.join(WAIT)


def wait_for(pred, what, timeout=WAIT):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what} (seed {SEED})")
        time.sleep(0.01)


def states_of(user):
    return {f: int(s) for f, s in user.states().items()}


@pytest.mark.parametrize("sync,rounds", [("full", 3), ("normal", 2)])
def test_sigkill_keeps_every_acknowledged_publish(make_nudged, sync, rounds):
    rng = random.Random(f"{SEED}-{sync}")
    srv = make_nudged({"store": {"backend": "sqlite", "sync": sync}})
    users = [srv.user("crash") for _ in range(USERS)]
    watcher = users[0]  # the client whose pre-crash view is presented after the restart
    acked = {}
    for rnd in range(rounds):
        where = f"seed {SEED}, sync {sync}, round {rnd}"
        pubs = Publishers(srv, users, rng)
        try:
            # The client's view: taken once some publishes went through, then
            # wait until at least one of its folders moved past it, so the
            # restart has news for it.
            wait_for(lambda: pubs.snapshot()[1] >= 5, "first acknowledgements")
            seen = states_of(watcher)
            wait_for(lambda: any(pubs.snapshot()[0].get((watcher.name, f), 0) > seen.get(f, 0)
                                 for f in FOLDERS), "a publish after the client's view")
            time.sleep(rng.uniform(0.0, 0.4))  # the random kill point
            srv.proc.send_signal(signal.SIGKILL)
            srv.wait()
        finally:
            pubs.join()
        before, answers = pubs.snapshot()
        assert not pubs.problems, f"{where}: publishes failed: {pubs.problems[:3]}"
        for key, state in before.items():
            acked[key] = max(acked.get(key, 0), state)

        srv.start()
        for u in users:
            now = states_of(u)
            for f in FOLDERS:
                want = acked.get((u.name, f), 0)
                assert now.get(f, 0) >= want, (
                    f"{where}: {u.name}/{f} is {now.get(f, 0)} after the restart, but a publish "
                    f"was acknowledged with {want} ({answers} answers this round)\n{srv.log_tail()}")

        # The client presents its pre-crash view: answered at once with what changed.
        now = states_of(watcher)
        t0 = time.monotonic()
        r = watcher.ping("phone", {f: str(seen.get(f, 0)) for f in FOLDERS}, 600, timeout=WAIT)
        elapsed = time.monotonic() - t0
        body = srv.check_ping(r, "changed")
        changed = {f: int(s) for f, s in body["folders"].items()}
        assert changed == {f: now.get(f, 0) for f in FOLDERS if now.get(f, 0) != seen.get(f, 0)}, \
            f"{where}: view {seen}, server {now}, answer {changed}"
        assert any(acked.get((watcher.name, f), 0) > seen.get(f, 0) for f in changed), where
        assert elapsed < 5 * SLOW, f"{where}: the changed answer took {elapsed:.1f} s"


def test_stop_during_publishes_answers_or_drops_them_and_keeps_the_answered(make_nudged):
    # SIGTERM while publishes are in flight: the loop waits for their commits
    # (the store keeps it alive while one is queued), answers them, exits 0
    # (the fixture checks, and under ASan that nothing leaked).
    rng = random.Random(f"{SEED}-stop")
    srv = make_nudged(SQLITE)
    users = [srv.user("stop") for _ in range(USERS)]
    pubs = Publishers(srv, users, rng)
    try:
        wait_for(lambda: pubs.snapshot()[1] >= 20, "first acknowledgements")
        assert srv.stop(signal.SIGTERM) == 0
    finally:
        pubs.join()
    acked, _ = pubs.snapshot()
    assert not pubs.problems or all("503" in p for p in pubs.problems), pubs.problems[:3]
    assert "undelivered=0" in srv.log_text(), srv.log_tail()
    srv.start()
    for u in users:
        now = states_of(u)
        for f in FOLDERS:
            assert now.get(f, 0) >= acked.get((u.name, f), 0), (u.name, f, now, acked)


def test_device_record_survives_a_clean_restart(make_nudged):
    srv = make_nudged(SQLITE)
    alice = srv.user("alice")
    p = alice.ping_async("phone", {"INBOX": "0", "Sent": "0"}, 3)
    srv.wait_held(1, watch=[p])
    assert srv.stop(signal.SIGTERM) == 0
    p.result()  # 503 shutting-down

    srv.start()
    # The heartbeat came back: an empty ping is held and expires after ~3 s.
    t0 = time.monotonic()
    r = alice.srv.request("POST", "/v1/ping?device=phone", b"", token=alice.token, timeout=WAIT)
    srv.check_ping(r, "expired")
    assert time.monotonic() - t0 >= 2.5, r
    # The folders came back: a publish to one of them answers the empty ping.
    p = alice.empty_ping_async("phone")
    srv.wait_held(1, watch=[p])
    alice.publish("Sent")
    srv.check_ping(p.result(), "changed", {"Sent": "1"})


def test_device_record_survives_sigkill_after_a_later_publish(make_nudged):
    srv = make_nudged(SQLITE)
    alice, bob = srv.user("alice"), srv.user("bob")
    p = alice.ping_async("phone", {"INBOX": "0", "Drafts": "0"}, 600)
    srv.wait_held(1, watch=[p])
    # Queued after alice's device record, so acknowledged only once the
    # record is durable too (one writer queue, commits in order).
    bob.publish("INBOX")
    srv.proc.send_signal(signal.SIGKILL)
    srv.wait()
    p.close()

    srv.start()
    p = alice.empty_ping_async("phone")
    srv.wait_held(1, watch=[p])
    alice.publish("Drafts")
    srv.check_ping(p.result(), "changed", {"Drafts": "1"})
    assert bob.states() == {"INBOX": "1"}


def refused_start(srv):
    """Runs nudged on srv's config expecting it to refuse; returns its stderr."""
    srv.write_config()
    srv.data_dir.mkdir(mode=0o700, exist_ok=True)
    p = subprocess.run([harness.nudged_path(), "-c", str(srv.conf)], capture_output=True,
                       text=True, timeout=WAIT, stdin=subprocess.DEVNULL, cwd=str(srv.dir))
    assert p.returncode != 0, f"nudged started on a bad database:\n{p.stderr}"
    if harness.SAN:
        found = [m for m in harness.SANITIZER_MARKERS if m in p.stderr]
        assert not found, p.stderr
    return p.stderr


def failure_line(stderr):
    lines = [l for l in stderr.splitlines() if "event=1006 name=startup_failed" in l]
    assert len(lines) == 1, stderr
    return lines[0]


def test_garbage_database_is_refused_and_left_untouched(make_nudged):
    srv = make_nudged(SQLITE, start=False)
    db = srv.data_dir / "nudge.db"
    srv.data_dir.mkdir(mode=0o700, exist_ok=True)
    garbage = bytes((i * 7 + 3) & 0xFF for i in range(16384))
    db.write_bytes(garbage)
    line = failure_line(refused_start(srv))
    assert str(db) in line, line
    assert "SQLite says: file is not a database" in line, line
    assert "move it away to start empty" in line and "restore a backup" in line, line
    assert db.read_bytes() == garbage


def test_damaged_database_is_refused(make_nudged):
    srv = make_nudged(SQLITE)
    alice = srv.user("alice")
    for i in range(300):
        srv.publish(alice.name, f"folder-{i:04d}")
    assert srv.stop() == 0
    db = srv.data_dir / "nudge.db"
    data = bytearray(db.read_bytes())
    assert len(data) >= 3 * 4096
    data[4096:8192] = b"\x5a" * 4096  # page 2: the folder states' root; the header stays valid
    db.write_bytes(bytes(data))
    line = failure_line(refused_start(srv))
    assert str(db) in line and "damaged" in line and "move it away" in line, line
    assert db.read_bytes() == bytes(data)


def test_second_nudged_on_the_same_database_is_refused(make_nudged):
    srv = make_nudged(SQLITE)
    line = failure_line(refused_start(srv))  # same config, port 0: only the database is shared
    assert str(srv.data_dir / "nudge.db") in line and "another nudged" in line, line
    assert srv.healthy()


def test_memory_backend_stays_available(make_nudged):
    srv = make_nudged({"store": {"backend": "memory"}})
    alice = srv.user("alice")
    assert alice.publish("INBOX") == "1"
    assert not (srv.data_dir / "nudge.db").exists()
    srv.wait_log(r"event=1000 name=started .*store=memory")
