"""The event log: every line is `ts=... level=... event=ID name=NAME k=v...`,
splits cleanly on spaces, and names an event from src/common/events.h."""
import re
import signal

import harness
from harness import build_request, flip_mac_char

LINE = re.compile(
    r'^ts=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z level=(debug|info|warn|error) event=(\d+) name=([a-z_]+)'
    r'((?: [a-z_][a-z0-9_]*=(?:"(?:[^"\\]|\\.)*"|[^ "=]+|-))*)$')


def known_events():
    text = (harness.REPO / "src/common/events.h").read_text()
    return {int(i): n for i, n in re.findall(r"EVENT\((\d+),\s*([a-z_]+),", text)}


def test_every_log_line_is_well_formed(make_nudged):
    srv = make_nudged({"server": {"log_level": "debug", "header_timeout": 1}})
    # Values with spaces, quotes, '=' and backslashes must be quoted in the log.
    odd = srv.user('od d"q=\\x ')
    pings = [odd.ping_async("dev ice\"1", {"IN BOX": "0"}, 300)]
    srv.wait_held(1, watch=pings)
    odd.ping_async("dev ice\"1", {"IN BOX": "0"}, 300)  # supersedes the first
    pings[0].result()
    srv.request("GET", "/v1/state", token=flip_mac_char(odd.token))        # auth_failed
    srv.request("POST", "/v1/events", {"user": odd.name, "folder": "x"}, token=odd.token)  # forbidden
    srv.publish_raw([{"user": odd.name, "folder": "F"}, {"user": odd.name, "folder": "bad\x01 \"f"}])
    srv.raw(b"\x01\x02 garbage \"=\\\r\n\r\n", timeout=5)                   # bad_request
    srv.raw(build_request("GET", "/healthz", headers={"X-Pad": "p" * 10000}), timeout=5)
    c = srv.connect()
    c.send(b"GET /heal")                                                     # request_timeout
    c.wait_closed()
    c.close()
    assert srv.stop(signal.SIGTERM) == 0

    events = known_events()
    assert events.get(1001) == "listening"
    seen, bad = set(), []
    for line in srv.log_text().splitlines():
        if harness.SAN and not line.startswith("ts="):
            continue  # sanitizer chatter is judged by the fixture
        m = LINE.match(line)
        if not m:
            bad.append(f"does not split cleanly into key=value fields: {line}")
            continue
        eid, name = int(m.group(2)), m.group(3)
        if events.get(eid) != name:
            bad.append(f"event {eid} name={name} is not in events.h: {line}")
        seen.add(name)
    assert not bad, "\n".join(bad)
    for name in ["started", "listening", "stopping", "stopped", "auth_failed", "auth_forbidden",
                 "publish_rejected", "bad_request", "ping_superseded"]:
        assert name in seen, f"no {name} line in the log:\n{srv.log_text()}"
