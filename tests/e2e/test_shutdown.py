"""Stopping nudged: held pings are answered 503 shutting-down with Retry-After,
and the process exits 0 promptly (SIGTERM and SIGINT alike)."""
import signal

import pytest

from harness import expect_error

SETTINGS = {"server": {"shutdown_retry_after": 7}}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stop_answers_held_pings_and_exits_0(make_nudged, sig):
    srv = make_nudged(SETTINGS)
    alice, bob = srv.user("alice"), srv.user("bob")
    pings = [alice.ping_async("phone", {"INBOX": "0"}, 300),
             alice.ping_async("tablet", {"INBOX": "0"}, 300),
             bob.ping_async("phone", {"INBOX": "0"}, 300)]
    srv.wait_held(3, watch=pings)
    idle = srv.connect()  # an idle keep-alive connection must not delay the exit
    try:
        assert idle.request("GET", "/healthz").status == 200

        srv.send_signal(sig)
        for p in pings:
            r = p.result()
            expect_error(r, 503, "shutting-down")
            assert r.header("Retry-After") == "7", r
        # "within ~3 s": asserted with slack for a loaded machine.
        code = srv.wait(timeout=15)
        assert code is not None, f"nudged still running 15 s after {sig!r}\n{srv.log_tail()}"
        assert code == 0, f"exit code {code}\n{srv.log_tail()}"
    finally:
        idle.close()
    log = srv.log_text()
    assert "event=1002 name=stopping" in log, srv.log_tail()
    assert "event=1003 name=stopped" in log, srv.log_tail()


def test_stop_does_not_wait_for_incomplete_requests(make_nudged):
    # header_timeout 60 s: a server that waited for the half-sent request
    # (or the idle keep-alive connection, 75 s) would overrun the 15 s below.
    srv = make_nudged({"server": {"header_timeout": 60, "keepalive_timeout": 75}})
    half = srv.connect()
    idle = srv.connect()
    try:
        half.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        assert idle.request("GET", "/healthz").status == 200
        assert srv.stop(signal.SIGTERM, timeout=15) == 0
    finally:
        half.close()
        idle.close()
