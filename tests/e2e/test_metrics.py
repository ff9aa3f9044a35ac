"""GET /metrics: admin only, Prometheus text, and counters that move."""
from harness import expect_error, parse_metrics

ANSWERED = "nudge_pings_answered_total"


def test_metrics_needs_admin_token(srv):
    expect_error(srv.request("GET", "/metrics"), 401, "unauthorized")
    expect_error(srv.request("GET", "/metrics", token=srv.token("alice")), 403, "forbidden")
    expect_error(srv.request("GET", "/metrics", token=srv.publisher_token()), 403, "forbidden")


def test_metrics_is_prometheus_text_with_the_documented_names(srv):
    r = srv.request("GET", "/metrics", token=srv.admin_token())
    assert r.status == 200, r
    assert (r.header("Content-Type") or "").startswith("text/plain"), r
    m = parse_metrics(r.body.decode())
    for name in ["nudge_connections", "nudge_pings_held", "nudge_events_published_total",
                 "nudge_bytes_received_total", "nudge_bytes_sent_total", "nudge_requests_total"]:
        assert name in m, f"{name} missing from /metrics:\n{r.body.decode()}"
    # This very request is on an open connection.
    assert m["nudge_connections"] >= 1


def test_events_published_counts_events_not_requests(srv):
    alice = srv.user("alice")
    before = srv.metric("nudge_events_published_total")
    r = srv.publish_raw([{"user": alice.name, "folder": f"F{i}"} for i in range(3)])
    assert r.status == 200, r
    assert srv.metric("nudge_events_published_total") == before + 3
    # A refused batch publishes nothing.
    r = srv.publish_raw([{"user": alice.name, "folder": "F"}, {"user": alice.name, "folder": ""}])
    assert r.status == 400, r
    assert srv.metric("nudge_events_published_total") == before + 3


def test_pings_answered_by_status(srv):
    alice = srv.user("alice")

    def answered(status):
        return srv.metric(ANSWERED, 0, status=status)

    changed, expired, superseded = answered("changed"), answered("expired"), answered("superseded")

    alice.publish("INBOX")
    srv.check_ping(alice.ping("phone1", {"INBOX": "0"}, 60), "changed")
    assert answered("changed") == changed + 1

    srv.check_ping(alice.ping("phone1", {"INBOX": "1"}, 1), "expired")
    assert answered("expired") == expired + 1

    first = alice.ping_async("phone1", {"INBOX": "1"}, 300)
    srv.wait_held(1, watch=[first])
    second = alice.ping_async("phone1", {"INBOX": "1"}, 300)
    srv.check_ping(first.result(), "superseded")
    assert answered("superseded") == superseded + 1
    alice.publish("INBOX")
    srv.check_ping(second.result(), "changed")
    assert answered("changed") == changed + 2


def test_held_gauge_follows_pings(srv):
    alice = srv.user("alice")
    srv.wait_held(0)
    pings = [alice.ping_async(f"dev{i}", {"INBOX": "0"}, 300) for i in range(3)]
    srv.wait_held(3, watch=pings)
    alice.publish("INBOX")
    for p in pings:
        srv.check_ping(p.result(), "changed", {"INBOX": "1"})
    srv.wait_held(0)


def test_connections_gauge_follows_open_sockets(srv):
    # The connections an earlier test closed count until nudged has read
    # their end (with workers, each in its own process): a base taken while
    # they are still counted is never reached again once they go, and after
    # header_timeout (10 s) the four idle ones below are closed as well. So
    # the base is taken once only this scrape's own connection is open.
    base = srv.wait_metric("nudge_connections", lambda v: v <= 1)
    conns = [srv.connect() for _ in range(4)]
    try:
        srv.wait_metric("nudge_connections", lambda v: v >= base + 4)
    finally:
        for c in conns:
            c.close()
    srv.wait_metric("nudge_connections", lambda v: v <= base)


def test_request_and_byte_counters_move(srv):
    m0 = srv.metrics()
    for _ in range(5):
        assert srv.request("GET", "/healthz").status == 200
    big = {"user": srv.user("u").name, "folder": "INBOX", "pad": "p" * 2000}
    assert srv.publish_raw(big).status == 200
    m1 = srv.metrics()
    # 5 healthz + 1 publish + the first /metrics itself, at least.
    assert m1["nudge_requests_total"] >= m0["nudge_requests_total"] + 6
    assert m1["nudge_bytes_received_total"] >= m0["nudge_bytes_received_total"] + 2000
    assert m1["nudge_bytes_sent_total"] > m0["nudge_bytes_sent_total"] + 5 * len('{"status":"ok"}')
