"""HTTP/1.1 level: limits (413/431/411), garbage, keep-alive, pipelining,
routing (404/405) and /healthz (docs/api.md, "HTTP-level errors")."""
import json
import random

import pytest

from harness import SLOW, Conn, build_request, expect_error

# Small limits so the tests stay small (and all data of an oversized request
# fits one read, so the server's close never races our unread bytes).
NUDGED_SETTINGS = {"server": {"max_body_bytes": 4096, "max_header_bytes": 4096}}


def one_answer_then_close(srv, data):
    """Sends raw bytes; the server must answer once and close. Returns the answer."""
    # A correct server closes right after its answer; 5 s (x SLOW) is slack.
    out, closed = srv.raw(data, timeout=5 * SLOW)
    assert closed, f"connection still open after {data[:80]!r}; got {out[:300]!r}"
    answers = Conn.from_bytes(out).read_all_responses()
    assert len(answers) == 1, f"expected one answer to {data[:80]!r}, got {out[:500]!r}"
    return answers[0]


def test_healthz_needs_no_auth(srv):
    r = srv.request("GET", "/healthz")
    assert r.status == 200, r
    assert (r.header("Content-Type") or "").startswith("application/json"), r
    assert r.json() == {"status": "ok"}


def test_unknown_path_is_404(srv):
    tok = srv.token("alice")
    for path in ["/", "/nope", "/v1/pings", "/v1/ping/extra", "/v2/ping", "/healthz/x"]:
        expect_error(srv.request("GET", path, token=tok), 404, "not-found")


@pytest.mark.parametrize("method,path,allowed", [
    ("GET", "/v1/ping", "POST"),
    ("PUT", "/v1/ping", "POST"),
    ("POST", "/v1/state", "GET"),
    ("DELETE", "/v1/state", "GET"),
    ("GET", "/v1/events", "POST"),
    ("POST", "/healthz", "GET"),
    ("POST", "/metrics", "GET"),
])
def test_wrong_method_is_405_with_allow(srv, method, path, allowed):
    tok = {"/v1/events": srv.publisher_token(), "/metrics": srv.admin_token()}.get(path, srv.token("alice"))
    body = b"{}" if method in ("POST", "PUT") else None
    r = srv.request(method, path, body, token=tok)
    expect_error(r, 405, "method-not-allowed")
    allow = r.header("Allow")
    assert allow is not None, f"405 without Allow: {r!r}"
    assert allowed in [m.strip() for m in allow.split(",")], allow


def test_query_string_does_not_change_the_route(srv):
    r = srv.request("GET", "/healthz?x=1")
    assert r.status == 200 and r.json() == {"status": "ok"}, r


def test_body_too_large_is_413_and_closes(srv):
    pad = "x" * 5000
    body = json.dumps({"user": "alice", "folder": "INBOX", "pad": pad}).encode()
    r = one_answer_then_close(srv, build_request("POST", "/v1/events", body, srv.publisher_token()))
    expect_error(r, 413, "body-too-large")
    assert srv.healthy()


def test_announced_huge_body_is_413_without_sending_it(srv):
    req = build_request("POST", "/v1/events", None, srv.publisher_token(),
                        headers={"Content-Length": "1000000000", "Content-Type": "application/json"})
    r = one_answer_then_close(srv, req)
    expect_error(r, 413, "body-too-large")


def test_body_at_the_limit_is_accepted(srv):
    alice = srv.user("alice")
    ev = {"user": alice.name, "folder": "INBOX", "pad": ""}
    ev["pad"] = "x" * (4096 - len(json.dumps(ev)))
    body = json.dumps(ev).encode()
    assert len(body) == 4096
    r = srv.request("POST", "/v1/events", body, token=srv.publisher_token())
    assert r.status == 200, r
    assert alice.states(["INBOX"]) == {"INBOX": "1"}


def test_oversized_ping_body_is_413(srv):
    alice = srv.user("alice")
    folders = {f"folder-{i:05d}-" + "x" * 40: "0" for i in range(100)}
    body = json.dumps({"device": "phone1", "heartbeat": 60, "folders": folders}).encode()
    assert len(body) > 4096
    r = one_answer_then_close(srv, build_request("POST", "/v1/ping", body, alice.token))
    expect_error(r, 413, "body-too-large")


def test_headers_too_large_is_431_and_closes(srv):
    req = build_request("GET", "/healthz", headers={"X-Filler": "y" * 5000})
    r = one_answer_then_close(srv, req)
    expect_error(r, 431, "headers-too-large")
    assert srv.healthy()


def test_many_small_headers_too_large_is_431(srv):
    req = build_request("GET", "/healthz", headers=[(f"X-H{i}", "v" * 50) for i in range(100)])
    r = one_answer_then_close(srv, req)
    expect_error(r, 431, "headers-too-large")


def test_headers_under_the_limit_are_fine(srv):
    r = srv.request("GET", "/healthz", headers={"X-Filler": "y" * 3000})
    assert r.status == 200, r


def test_chunked_body_is_411_and_closes(srv):
    body = b'{"user":"alice","folder":"INBOX"}'
    req = build_request("POST", "/v1/events", None, srv.publisher_token(),
                        headers={"Transfer-Encoding": "chunked", "Content-Type": "application/json"})
    req += b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    r = one_answer_then_close(srv, req)
    expect_error(r, 411, "length-required")
    assert srv.healthy()


GARBAGE = {
    "random-bytes": random.Random(20261122).randbytes(700),
    # A well-formed request in another version (HTTP/9.9) is 505: test_rough_edges.py.
    "nul-bytes": b"\x00" * 64 + b"\r\n\r\n",
    "nul-in-path": b"GET /heal\x00thz HTTP/1.1\r\nHost: x\r\n\r\n",
    "header-without-colon": b"GET /healthz HTTP/1.1\r\nHost: x\r\nThisIsNotAHeader\r\n\r\n",
    "no-version": b"GET /healthz\r\nHost: x\r\n\r\n",
    "bad-content-length": b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    "space-in-header-name": b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Name: v\r\n\r\n",
    "bare-lf-garbage": b"\n\n\n\xff\xfe GARBAGE \xff\r\n\r\n",
    # RFC 9112 5.1: whitespace between a field name and its colon MUST be
    # refused with 400 (a request-smuggling vector behind proxies).
    "space-before-colon": b"GET /healthz HTTP/1.1\r\nHost : x\r\n\r\n",
    "control-in-header-value": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\n\r\n",
    "duplicate-content-length": (b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                                 b"Content-Length: 6\r\n\r\nabcdef"),
}


@pytest.mark.parametrize("name", list(GARBAGE))
def test_garbage_is_400_and_closes(srv, name):
    r = one_answer_then_close(srv, GARBAGE[name])
    expect_error(r, 400, "bad-request")
    # The server survived it and serves the next client.
    assert srv.healthy()


def test_garbage_after_a_good_request_answers_the_good_one(srv):
    c = srv.connect()
    try:
        c.send(build_request("GET", "/healthz") + b"\x00\x01\x02 nonsense\r\n\r\n")
        first = c.read_response()
        assert first.status == 200 and first.json() == {"status": "ok"}, first
        rest = Conn.from_bytes(c.wait_closed()).read_all_responses()
        assert len(rest) == 1, rest
        expect_error(rest[0], 400, "bad-request")
    finally:
        c.close()


def test_keep_alive_serves_several_requests(srv):
    alice = srv.user("alice")
    pub = srv.publisher_token()
    c = srv.connect()
    try:
        for i in range(1, 4):
            r = c.request("POST", "/v1/events", {"user": alice.name, "folder": "INBOX"}, token=pub)
            assert r.status == 200 and r.json()["states"][0]["state"] == str(i), r
            r = c.request("GET", "/v1/state?folders=INBOX", token=alice.token)
            assert r.status == 200 and r.json() == {"folders": {"INBOX": str(i)}}, r
            assert (r.header("Connection") or "").lower() != "close", r
        r = c.request("GET", "/healthz")
        assert r.status == 200, r
    finally:
        c.close()


def test_keep_alive_survives_error_answers(srv):
    c = srv.connect()
    try:
        expect_error(c.request("GET", "/nope"), 404, "not-found")
        expect_error(c.request("GET", "/v1/state"), 401, "unauthorized")
        expect_error(c.request("POST", "/v1/events", b"not json", token=srv.publisher_token()),
                     400, "bad-request")
        r = c.request("GET", "/healthz")
        assert r.status == 200, r
    finally:
        c.close()


def test_connection_close_header_closes_after_answer(srv):
    c = srv.connect()
    try:
        r = c.request("GET", "/healthz", headers={"Connection": "close"})
        assert r.status == 200, r
        assert c.wait_closed() == b""
    finally:
        c.close()


def test_pipelined_requests_answered_in_order(srv):
    alice = srv.user("alice")
    pub = srv.publisher_token()
    c = srv.connect()
    try:
        c.send(build_request("POST", "/v1/events", {"user": alice.name, "folder": "INBOX"}, pub)
               + build_request("GET", "/v1/state?folders=INBOX", token=alice.token)
               + build_request("GET", "/nope")
               + build_request("GET", "/healthz"))
        r1, r2, r3, r4 = (c.read_response() for _ in range(4))
        assert r1.status == 200 and r1.json()["states"][0]["state"] == "1", r1
        assert r2.status == 200 and r2.json() == {"folders": {"INBOX": "1"}}, r2
        assert r3.status == 404, r3
        assert r4.status == 200 and r4.json() == {"status": "ok"}, r4
    finally:
        c.close()


def test_request_split_into_single_bytes(srv):
    alice = srv.user("alice")
    alice.publish("INBOX")
    c = srv.connect()
    try:
        for b in build_request("GET", "/v1/state?folders=INBOX", token=alice.token):
            c.send(bytes([b]))
        r = c.read_response()
        assert r.status == 200 and r.json() == {"folders": {"INBOX": "1"}}, r
    finally:
        c.close()


def test_pipelined_request_behind_held_ping_waits_for_it(srv):
    alice = srv.user("alice")
    c = srv.connect()
    try:
        c.send(build_request("POST", "/v1/ping", {"device": "phone1", "heartbeat": 300, "folders": {"INBOX": "0"}},
                             alice.token)
               + build_request("GET", "/healthz"))
        srv.wait_held(1)
        # Nothing may be answered yet: the healthz answer must not overtake the ping's.
        assert c.poll_bytes(0.3) == b"", c.buf
        alice.publish("INBOX")
        r1 = c.read_response()
        srv.check_ping(r1, "changed", {"INBOX": "1"})
        r2 = c.read_response()
        assert r2.status == 200 and r2.json() == {"status": "ok"}, r2
    finally:
        c.close()


def test_ping_then_more_pings_on_one_connection(srv):
    alice = srv.user("alice")
    c = srv.connect()
    try:
        c.send_request("POST", "/v1/ping", {"device": "phone1", "heartbeat": 300, "folders": {"INBOX": "0"}},
                       alice.token)
        srv.wait_held(1)
        alice.publish("INBOX")
        srv.check_ping(c.read_response(), "changed", {"INBOX": "1"})
        # Keep-alive after a held answer: the next ping on the same socket.
        srv.check_ping(c.request("POST", "/v1/ping", {"device": "phone1", "heartbeat": 1, "folders": {"INBOX": "1"}},
                                 alice.token), "expired")
    finally:
        c.close()


def test_client_closing_a_held_ping_releases_it(srv):
    alice = srv.user("alice")
    c = srv.connect()
    c.send_request("POST", "/v1/ping", {"device": "phone1", "heartbeat": 300, "folders": {"INBOX": "0"}},
                   alice.token)
    srv.wait_held(1)
    c.close()
    srv.wait_held(0)
    # And the device is usable at once.
    alice.publish("INBOX")
    srv.check_ping(alice.ping("phone1", {"INBOX": "0"}, 300), "changed", {"INBOX": "1"})
