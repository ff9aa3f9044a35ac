"""Server-side timers: header_timeout (408) and keepalive_timeout (silent close),
and that neither cuts a held ping short."""
from harness import WAIT, Conn, build_request, expect_error

SETTINGS = {"server": {"header_timeout": 1, "keepalive_timeout": 2}}


def expect_408_then_close(c):
    """The server must give up on an incomplete request: 408 request-timeout,
    then close (docs/api.md)."""
    data = c.wait_closed(WAIT)
    assert data, "closed without the 408 answer"
    answers = Conn.from_bytes(data).read_all_responses()
    assert len(answers) == 1, data
    expect_error(answers[0], 408, "request-timeout")


def test_partial_request_line_times_out(make_nudged):
    srv = make_nudged(SETTINGS)
    c = srv.connect()
    try:
        c.send(b"GET /heal")
        expect_408_then_close(c)
    finally:
        c.close()
    assert srv.healthy()
    srv.wait_log(r"event=1102 name=request_timeout")


def test_partial_headers_time_out(make_nudged):
    srv = make_nudged(SETTINGS)
    c = srv.connect()
    try:
        c.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        expect_408_then_close(c)
    finally:
        c.close()
    assert srv.healthy()


def test_trickling_headers_do_not_extend_the_deadline(make_nudged):
    # header_timeout bounds the whole request, not the gap between bytes: a
    # client sending one header line every 0.4 s must still be cut off.
    srv = make_nudged(SETTINGS)
    c = srv.connect()
    try:
        c.send(b"GET /healthz HTTP/1.1\r\n")
        closed = False
        for i in range(100):  # 40 s of trickle at most; the server gives up long before
            try:
                c.send(b"X-Trickle-%d: y\r\n" % i)
            except OSError:
                closed = True
                break
            if c.poll_bytes(0.4) or c.eof:
                closed = True
                break
        assert closed, "server kept accepting a trickling request for 40 s"
    finally:
        c.close()


def test_incomplete_body_times_out(make_nudged):
    srv = make_nudged(SETTINGS)
    c = srv.connect()
    try:
        req = build_request("POST", "/v1/events", None, srv.publisher_token(),
                            headers={"Content-Length": "40", "Content-Type": "application/json"})
        c.send(req + b'{"user":"a"')
        expect_408_then_close(c)
    finally:
        c.close()
    assert srv.healthy()


def test_idle_keep_alive_connection_is_closed_without_answer(make_nudged):
    srv = make_nudged(SETTINGS)
    c = srv.connect()
    try:
        r = c.request("GET", "/healthz")
        assert r.status == 200, r
        # keepalive_timeout is 2 s: a silent close, no 408.
        assert c.wait_closed(WAIT) == b""
    finally:
        c.close()


def test_held_ping_outlives_header_and_keepalive_timeouts(make_nudged):
    srv = make_nudged(SETTINGS)
    alice = srv.user("alice")
    # Heartbeat 5 s, longer than both timeouts (1 s, 2 s): the ping must end
    # as "expired", not as a 408 or a closed socket.
    r = alice.ping("phone1", {"INBOX": "0"}, 5, timeout=WAIT)
    srv.check_ping(r, "expired")


def test_unused_connection_does_not_hang_forever(make_nudged):
    # A client that connects and sends nothing is closed too (header_timeout
    # or keepalive_timeout, whichever the server applies to a fresh socket).
    srv = make_nudged(SETTINGS)
    c = srv.connect()
    try:
        data = c.wait_closed(WAIT)
        if data:
            expect_error(Conn.from_bytes(data).read_response(1), 408, "request-timeout")
    finally:
        c.close()
