"""
test_status.py — the status page (docs/status.md): GET /v1/admin/status,
POST /v1/admin/tickets and GET /status, against the real nudged, with one
process and with workers (NUDGE_TEST_WORKERS).

  * /v1/admin/status needs the admin token; its JSON has the documented
    shape, its totals are the sums of the workers', and every worker answers;
  * held pings and streams move the counts of the worker owning their user;
  * the heartbeat histogram counts devices by the hint they hold;
  * a user refused at the session cap (event 1301) and a held ping that
    closed unanswered (event 1302) show up in the merged log, with the
    worker that logged them;
  * /v1/admin/tickets mints a ticket for any user that opens /v1/stream
    once and is refused the second time, and refuses bad bodies with 400;
  * /status serves the embedded page, GET and HEAD, with its CSP naming
    the page's inline style and script by their hashes.

Counts are compared as deltas and waited for (by polling the endpoint, never
sleeping): the module's server is shared with the other tests of this file.
"""
import base64
import hashlib
import re
import time

import harness
import sse
import ws
from harness import WAIT, expect_error, worker_of

# A cap of 2 so that a third device of one user is refused (event 1301).
NUDGED_SETTINGS = {"sessions": {"per_user_limit": 2}}

COUNTS = ["connections", "pings_held", "streams_held", "websockets", "udp_registrations", "sessions", "users",
          "devices", "events_applied"]
BOUNDS = [60, 120, 300, 600, 900, 1200, 1680]


def status(srv):
    r = srv.request("GET", "/v1/admin/status", token=srv.admin_token())
    assert r.status == 200, r
    assert (r.header("Content-Type") or "").startswith("application/json"), r
    return r.json()


def wait_status(srv, pred, what, timeout=WAIT):
    """Polls /v1/admin/status until pred(doc) holds; returns that doc."""
    deadline = time.monotonic() + timeout
    while True:
        doc = status(srv)
        if pred(doc):
            return doc
        if time.monotonic() > deadline:
            raise AssertionError(f"/v1/admin/status never showed {what}: {doc}\n{srv.log_tail()}")
        time.sleep(0.05)


def users_by_worker(srv, prefix, per_worker):
    """Fresh users, per_worker(i) of them owned by worker i: a list per worker."""
    found = [[] for _ in range(srv.workers)]
    while any(len(found[i]) < per_worker(i) for i in range(srv.workers)):
        u = srv.user(prefix)
        i = worker_of(u.name, srv.workers)
        if len(found[i]) < per_worker(i):
            found[i].append(u)
    return found


def bucket(hint):
    """The index of the bucket a hint falls in (the last: above every bound)."""
    for i, le in enumerate(BOUNDS):
        if hint <= le:
            return i
    return len(BOUNDS)


def ticket(srv, user, device="status-page"):
    r = srv.request("POST", "/v1/admin/tickets", {"user": user, "device": device},
                    token=srv.admin_token())
    assert r.status == 200, r
    assert r.header("Cache-Control") == "no-store", r
    return r.json()


# ---- GET /v1/admin/status ---------------------------------------------------


def test_status_needs_the_admin_token(srv):
    expect_error(srv.request("GET", "/v1/admin/status"), 401, "unauthorized")
    expect_error(srv.request("GET", "/v1/admin/status", token=srv.token("alice")), 403, "forbidden")
    expect_error(srv.request("GET", "/v1/admin/status", token=srv.publisher_token()), 403,
                 "forbidden")
    expect_error(srv.request("GET", "/v1/admin/status", token="v1.admin.x.0.y"), 401, "unauthorized")


def test_status_shape_and_totals(srv):
    r = srv.request("GET", "/v1/admin/status", token=srv.admin_token())
    assert r.status == 200, r
    assert r.header("Cache-Control") == "no-store", r
    doc = r.json()
    assert isinstance(doc["version"], str) and re.fullmatch(r"\d+\.\d+\.\d+.*", doc["version"]), doc
    assert abs(doc["time_ms"] / 1000 - time.time()) < 60, doc
    assert doc["store"] == "ok", doc
    assert isinstance(doc["uptime_s"], int) and doc["uptime_s"] >= 0, doc
    assert isinstance(doc["log"], list), doc
    workers = doc["workers"]
    assert [w["worker"] for w in workers] == list(range(srv.workers)), doc
    pids = set(srv.pids()[1:] if srv.workers > 1 else srv.pids())
    for w in workers:
        assert w["up"] is True, doc
        assert w["pid"] in pids, (w, pids)
        assert w["store"] == "ok", doc
        assert w["uptime_s"] <= doc["uptime_s"], doc
        for k in COUNTS:
            assert isinstance(w[k], int) and w[k] >= 0, (k, w)
        h = w["heartbeat_hints"]
        assert h["le"] == BOUNDS, h
        assert len(h["counts"]) == len(BOUNDS) + 1, h
        assert sum(h["counts"]) + h["none"] == w["devices"], w
    total = doc["total"]
    for k in ["pings_held", "streams_held", "udp_registrations", "sessions", "users", "devices",
              "events_applied"]:
        assert total[k] == sum(w[k] for w in workers), (k, doc)
    # The connections gauge moves with this very request (the scrape's own connection).
    assert total["connections"] >= 1, doc
    th = total["heartbeat_hints"]
    assert th["counts"] == [sum(w["heartbeat_hints"]["counts"][i] for w in workers)
                            for i in range(len(BOUNDS) + 1)], doc
    assert th["none"] == sum(w["heartbeat_hints"]["none"] for w in workers), doc
    # HEAD as GET, without the body.
    h = srv.request("HEAD", "/v1/admin/status", token=srv.admin_token())
    assert h.status == 200 and h.body == b"", h


def test_held_pings_and_streams_count_on_their_owner(srv):
    # Worker i holds i + 1 pings, of as many users, so each worker's count is told apart.
    by_worker = users_by_worker(srv, "stp", lambda i: i + 1)
    users = [u for us in by_worker for u in us]
    before = status(srv)
    base = [w["pings_held"] for w in before["workers"]]
    users_base = [w["users"] for w in before["workers"]]
    pings = [u.ping_async("dev0", {"INBOX": "0"}, 300) for u in users]
    n = len(pings)
    doc = wait_status(srv, lambda d: [w["pings_held"] for w in d["workers"]] ==
                      [base[i] + i + 1 for i in range(srv.workers)],
                      f"{n} more held pings, i + 1 on worker i")
    assert doc["total"]["pings_held"] == sum(base) + n, doc
    for i, w in enumerate(doc["workers"]):
        assert w["users"] == users_base[i] + i + 1, doc
        assert w["sessions"] >= i + 1, doc
    # A stream is held on its user's worker too.
    u = users[-1]
    streams_base = [w["streams_held"] for w in doc["workers"]]
    s = sse.Stream(srv, u.token, "types=INBOX&device=web1")
    assert s.status == 200, s.response
    owner = worker_of(u.name, srv.workers)
    doc = wait_status(srv, lambda d: d["workers"][owner]["streams_held"] == streams_base[owner] + 1,
                      "one more held stream on the user's worker")
    assert doc["total"]["streams_held"] == sum(streams_base) + 1, doc
    s.close()
    # And a WebSocket.
    ws_base = [w["websockets"] for w in doc["workers"]]
    w = ws.WebSocket(srv, u.token, "device=web2")
    assert w.status == 101, w.response
    doc = wait_status(srv, lambda d: d["workers"][owner]["websockets"] == ws_base[owner] + 1,
                      "one more WebSocket on the user's worker")
    assert doc["total"]["websockets"] == sum(ws_base) + 1, doc
    w.close()
    applied = [w["events_applied"] for w in doc["workers"]]
    for u in users:
        u.publish("INBOX")
    for p in pings:
        srv.check_ping(p.result(), "changed")
    # Each publish is applied by the worker owning its user.
    doc = status(srv)
    assert [w["events_applied"] - applied[i] for i, w in enumerate(doc["workers"])] == \
        [i + 1 for i in range(srv.workers)], doc
    wait_status(srv, lambda d: [w["pings_held"] for w in d["workers"]] == base and
                [w["streams_held"] for w in d["workers"]] == streams_base,
                "the pings and the stream gone again")


def test_heartbeat_histogram_counts_devices(srv):
    # A new device's hint is the heartbeat it asked for, within [heartbeat] min and max (1..900).
    asked = [45, 300, 900]
    users = [srv.user("sth") for _ in asked]
    before = status(srv)
    want = [[0] * (len(BOUNDS) + 1) for _ in range(srv.workers)]
    for u, hb in zip(users, asked):
        want[worker_of(u.name, srv.workers)][bucket(hb)] += 1
    pings = [u.ping_async("h1", {"INBOX": "0"}, hb) for u, hb in zip(users, asked)]
    doc = wait_status(srv, lambda d: d["total"]["pings_held"] >= before["total"]["pings_held"] + 3,
                      "three more held pings")

    def delta(a, b):
        return [x - y for x, y in zip(a["heartbeat_hints"]["counts"], b["heartbeat_hints"]["counts"])]

    for i in range(srv.workers):
        assert delta(doc["workers"][i], before["workers"][i]) == want[i], (i, want, doc)
        assert doc["workers"][i]["devices"] - before["workers"][i]["devices"] == sum(want[i]), doc
    assert delta(doc["total"], before["total"]) == [sum(c) for c in zip(*want)], doc
    assert doc["total"]["heartbeat_hints"]["none"] == before["total"]["heartbeat_hints"]["none"], doc
    for u in users:
        u.publish("INBOX")
    for p in pings:
        srv.check_ping(p.result(), "changed")


def test_session_limit_and_closed_sessions_show_in_the_log(srv):
    u = srv.user("stl")
    owner = worker_of(u.name, srv.workers)
    held = [u.ping_async(f"d{i}", {"INBOX": "0"}, 300) for i in range(2)]
    wait_status(srv, lambda d: d["workers"][owner]["pings_held"] >= 2, "two held pings")
    r = u.ping("d2", {"INBOX": "0"}, 300)
    assert r.status == 429, r
    doc = wait_status(srv, lambda d: any(e["event"] == 1301 and u.name in e["line"]
                                         for e in d["log"]), "event 1301 for the user")
    e = [e for e in doc["log"] if e["event"] == 1301 and u.name in e["line"]][-1]
    assert e["name"] == "session_limit", e
    assert e["level"] in ("info", "warn"), e
    assert e["worker"] == owner, (e, owner)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", e["time"]), e
    assert abs(e["ts_ms"] / 1000 - time.time()) < 120, e
    assert e["line"].startswith(f"level={e['level']} event=1301 name=session_limit "), e
    assert "ts=" not in e["line"], e
    # The same line is in nudged's log.
    assert any(u.name in x.get("user", "") for x in harness.log_events(srv, 1301)), srv.log_tail()
    # A held ping whose client goes away is a session closed unanswered (event 1302).
    held[0].close()
    doc = wait_status(srv, lambda d: any(e["event"] == 1302 and u.name in e["line"]
                                         for e in d["log"]), "event 1302 for the user")
    # Oldest first, at most 50, merged by time across workers.
    times = [e["ts_ms"] for e in doc["log"]]
    assert times == sorted(times), doc["log"]
    assert len(doc["log"]) <= 50, doc
    u.publish("INBOX")
    srv.check_ping(held[1].result(), "changed")


# ---- POST /v1/admin/tickets -------------------------------------------------


def test_admin_ticket_opens_a_stream_once(srv):
    u = srv.user("stt")
    doc = ticket(srv, u.name)
    assert doc["user"] == u.name and doc["device"] == "status-page", doc
    assert 0 < doc["expires"] - time.time() <= 61, doc
    fields = doc["ticket"].split(".")
    assert fields[0] == "t1" and harness.b64url_decode(fields[1]).decode() == u.name, doc
    s = sse.Stream(srv, None, f"types=INBOX&ticket={doc['ticket']}")
    assert s.status == 200, s.response
    first = s.next_of("state")
    assert first.json()["changed"] == {u.name: {"INBOX": "0"}}, first
    # What the page shows: the user's push, live.
    u.publish("INBOX")
    ev = s.next_of("state")
    assert ev.json() == {"@type": "StateChange", "changed": {u.name: {"INBOX": "1"}}}, ev
    s.close()
    again = sse.Stream(srv, None, f"types=INBOX&ticket={doc['ticket']}")
    assert again.status == 401, again.response
    assert again.response.json() == {"status": "unauthorized", "error": "ticket already used"}, \
        again.response
    assert doc["ticket"] not in srv.log_text()


def test_admin_ticket_errors(srv):
    admin = srv.admin_token()

    def post(body, token=admin):
        return srv.request("POST", "/v1/admin/tickets", body, token=token)

    expect_error(post({"user": "a", "device": "b"}, token=None), 401, "unauthorized")
    expect_error(post({"user": "a", "device": "b"}, token=srv.token("a")), 403, "forbidden")
    expect_error(post({"user": "a", "device": "b"}, token=srv.publisher_token()), 403, "forbidden")
    cases = [
        (b"", "the body must be a JSON object"),
        (b"{", "malformed JSON"),
        ([1], "the body must be a JSON object"),
        ({"device": "tab1"}, "user is required"),
        ({"user": "alice"}, "device is required"),
        ({"user": 7, "device": "tab1"}, "user must be a string"),
        ({"user": "", "device": "tab1"}, "user must not be empty"),
        ({"user": "a\u0001b", "device": "tab1"}, "user must not contain control characters"),
        ({"user": "a\u0000b", "device": "tab1"}, "malformed JSON"),  # jansson refuses NUL
        ({"user": "u" * 256, "device": "tab1"}, "user must be at most 255 bytes"),
        ({"user": "alice", "device": "d" * 129}, "device must be at most 128 bytes"),
        ({"user": "alice", "device": "x\ty"}, "device must not contain control characters"),
    ]
    for body, why in cases:
        b = expect_error(post(body), 400, "bad-request", has_error=True)
        assert why in b["error"], (body, b)
    # The longest names are fine.
    r = post({"user": "u" * 255, "device": "d" * 128})
    assert r.status == 200, r


# ---- GET /status ------------------------------------------------------------


def csp_of(r):
    """The policy as {directive: [values]}."""
    out = {}
    for part in (r.header("Content-Security-Policy") or "").split(";"):
        words = part.split()
        if words:
            out[words[0]] = words[1:]
    return out


def sha256_b64(text):
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def test_status_page_is_served_without_a_token(srv):
    r = srv.request("GET", "/status")
    assert r.status == 200, r
    assert r.header("Content-Type") == "text/html; charset=utf-8", r
    assert r.header("Cache-Control") == "no-cache", r
    assert r.header("X-Content-Type-Options") == "nosniff", r
    html = r.body.decode("utf-8")
    assert html.startswith("<!doctype html>"), html[:100]
    for ident in ["token", "token-save", "updated", "totals", "workers", "hist", "log", "watch-user",
                  "watch-folder", "watch-go", "watch-stop", "watch-state", "watch-events"]:
        assert f'id="{ident}"' in html, ident
    # Self-contained: nothing loaded from anywhere, not even from this server.
    assert not re.search(r"<(script|link|img|iframe)[^>]*\s(src|href)=", html, re.I), html
    assert not re.search(r"https?://", html.split("-->", 1)[1]), html
    # The endpoints it calls.
    assert "/v1/admin/status" in html and "/v1/admin/tickets" in html and "/v1/stream" in html
    # The policy allows this server only, and exactly the page's inline blocks.
    csp = csp_of(r)
    assert csp["default-src"] == ["'none'"], csp
    assert csp["connect-src"] == ["'self'"], csp
    assert csp["frame-ancestors"] == ["'none'"], csp
    scripts = re.findall(r"<script>(.*?)</script>", html, re.S)
    styles = re.findall(r"<style>(.*?)</style>", html, re.S)
    assert len(scripts) == 1 and len(styles) == 1, html
    assert csp["script-src"] == [sha256_b64(scripts[0])], csp
    assert csp["style-src"] == [sha256_b64(styles[0])], csp
    assert "'unsafe-inline'" not in r.header("Content-Security-Policy")
    # No inline handlers or style attributes, which the policy would block.
    assert not re.search(r"\son[a-z]+=\"", html), html
    assert not re.search(r"\sstyle=\"", html), html


def test_status_page_head_and_methods(srv):
    g = srv.request("GET", "/status")
    h = srv.request("HEAD", "/status")
    assert h.status == 200 and h.body == b"", h
    assert h.header("Content-Length") == str(len(g.body)), (h, len(g.body))
    for k in ["Content-Type", "Content-Security-Policy", "Cache-Control"]:
        assert h.header(k) == g.header(k), k
    r = srv.request("POST", "/status", b"")
    expect_error(r, 405, "method-not-allowed")
    assert r.header("Allow") == "GET, HEAD", r


def test_an_admin_can_send_a_test_notification(srv):
    # The status page's "send a test notification": POST /v1/admin/events with the admin token.
    alice = srv.user("alice")
    s = sse.Stream(srv, alice.token, "types=INBOX,@meta&device=watch")
    assert s.status == 200, s.response
    s.next_of("state")
    r = srv.request("POST", "/v1/admin/events",
                    {"user": alice.name, "folder": "INBOX", "type": "test", "subject": "hello"},
                    token=srv.admin_token())
    assert r.status == 200, r
    state = r.json()["states"][0]["state"]
    meta = s.next_of("meta").json()
    assert meta["type"] == "test" and meta["subject"] == "hello", meta
    assert sse.changed(s.next_of("state"), alice.name) == {"INBOX": state}
    s.close()
    # Only with the admin token: a user's is refused.
    r = srv.request("POST", "/v1/admin/events", {"user": alice.name, "folder": "INBOX"},
                    token=alice.token)
    assert r.status in (401, 403), r
