"""GET /v1/state: the polling fallback, its ETag and 304 (docs/api.md)."""
from harness import expect_error


def etag_of(r):
    tag = r.header("ETag")
    assert tag, f"no ETag: {r!r}"
    assert not tag.startswith("W/"), f"ETag must be strong: {tag!r}"
    assert tag.startswith('"') and tag.endswith('"') and len(tag) >= 2, f"ETag not quoted: {tag!r}"
    return tag


def test_listed_folders_with_states(srv):
    alice = srv.user("alice")
    alice.publish("INBOX")
    alice.publish("INBOX")
    alice.publish("Calendar")
    r = alice.state(["INBOX", "Calendar"])
    assert r.status == 200, r
    assert (r.header("Content-Type") or "").startswith("application/json"), r
    assert r.json() == {"folders": {"INBOX": "2", "Calendar": "1"}}
    etag_of(r)


def test_unknown_folder_is_zero(srv):
    alice = srv.user("alice")
    alice.publish("INBOX")
    assert alice.states(["INBOX", "Nothing-here"]) == {"INBOX": "1", "Nothing-here": "0"}


def test_without_folders_lists_all_of_the_users_folders(srv):
    alice = srv.user("alice")
    assert alice.states() == {}
    alice.publish("INBOX")
    alice.publish("Calendar")
    alice.publish("Calendar")
    assert alice.states() == {"INBOX": "1", "Calendar": "2"}


def test_folder_names_are_url_decoded_after_splitting_on_comma(srv):
    alice = srv.user("alice")
    alice.publish("a,b")
    alice.publish("Sent Items")
    # harness quotes each name (',' -> %2C, ' ' -> %20) and joins with ','.
    assert alice.states(["a,b", "Sent Items", "a"]) == {"a,b": "1", "Sent Items": "1", "a": "0"}
    r = srv.request("GET", "/v1/state?folders=a,b", token=alice.token)
    assert r.status == 200 and r.json() == {"folders": {"a": "0", "b": "0"}}, r


def test_if_none_match_current_etag_is_304(srv):
    alice = srv.user("alice")
    alice.publish("INBOX")
    tag = etag_of(alice.state(["INBOX"]))
    r = alice.state(["INBOX"], headers={"If-None-Match": tag})
    assert r.status == 304, r
    assert r.body == b"", r


def test_etag_changes_after_publish(srv):
    alice = srv.user("alice")
    alice.publish("INBOX")
    old = etag_of(alice.state(["INBOX"]))
    alice.publish("INBOX")
    r = alice.state(["INBOX"], headers={"If-None-Match": old})
    assert r.status == 200, r
    assert r.json() == {"folders": {"INBOX": "2"}}
    new = etag_of(r)
    assert new != old
    assert alice.state(["INBOX"], headers={"If-None-Match": new}).status == 304


def test_etag_of_all_folders_changes_when_a_folder_appears(srv):
    alice = srv.user("alice")
    alice.publish("INBOX")
    old = etag_of(alice.state())
    alice.publish("Brand-new")
    r = alice.state(headers={"If-None-Match": old})
    assert r.status == 200 and r.json() == {"folders": {"INBOX": "1", "Brand-new": "1"}}, r


def test_if_none_match_star_is_304(srv):
    alice = srv.user("alice")
    alice.publish("INBOX")
    r = alice.state(["INBOX"], headers={"If-None-Match": "*"})
    assert r.status == 304 and r.body == b"", r


def test_if_none_match_list_containing_current_etag_is_304(srv):
    alice = srv.user("alice")
    alice.publish("INBOX")
    tag = etag_of(alice.state(["INBOX"]))
    r = alice.state(["INBOX"], headers={"If-None-Match": f'"nope", {tag}'})
    assert r.status == 304, r


def test_if_none_match_other_etag_is_200(srv):
    alice = srv.user("alice")
    alice.publish("INBOX")
    r = alice.state(["INBOX"], headers={"If-None-Match": '"certainly-not-the-tag"'})
    assert r.status == 200 and r.json() == {"folders": {"INBOX": "1"}}, r


def test_304_keeps_the_connection_usable(srv):
    alice = srv.user("alice")
    alice.publish("INBOX")
    c = srv.connect()
    try:
        tag = etag_of(c.request("GET", "/v1/state?folders=INBOX", token=alice.token))
        r = c.request("GET", "/v1/state?folders=INBOX", token=alice.token, headers={"If-None-Match": tag})
        assert r.status == 304, r
        r = c.request("GET", "/healthz")
        assert r.status == 200 and r.json() == {"status": "ok"}, r
    finally:
        c.close()


def test_bad_folder_escape_is_bad_request(srv):
    alice = srv.user("alice")
    r = srv.request("GET", "/v1/state?folders=%zz", token=alice.token)
    expect_error(r, 400, "bad-request")
