"""Dovecot feeds nudge, end to end (docs/dovecot.md): a real Dovecot 2.3
(tests/e2e/dovecot.py) with its push_notification plugin, mail delivered over
LMTP and changed over IMAP, and the real nudged answering held pings and
sending UDP datagrams.

  * OX driver: PUT /v1/ingest/dovecot with HTTP Basic, only for users with
    the http-notify METADATA key, only for deliveries into INBOX. A retried
    request is not counted twice.
  * Lua driver (contrib/dovecot/nudge.lua): every event of a transaction in
    one POST /v1/events; read/expunge/trash count as caught up for UDP.
  * nudge down or hanging: deliveries still succeed, Dovecot logs the error,
    and the change reaches the device with the user's next event.

States are checked as exact values wherever a double count could hide
(retries, empty flags events, \\Seen raising both FlagsSet and MessageRead).
A fresh user's first access creates its INBOX, which the Lua driver reports
as a mailbox-create: Lua tests open INBOX once over IMAP first and count
from the state that leaves.

Waits are for conditions (held pings via the gauge, answers, log lines,
metrics), never sleeps. The one time bound (a hanging nudge must not hold a
delivery for long) is loose on purpose.
"""
import base64
import signal
import time
import urllib.parse

import pytest

import harness
from dovecot import Dovecot
from harness import SLOW, WAIT, UdpDevice

PW = "s3cret-ingest"
RESEND = 1
NUDGED_SETTINGS = {"ingest": {"basic_user": "dovecot", "basic_password": PW},
                   "udp": {"resend_interval": RESEND, "max_resends": 5}}
# Long enough that a due resend would have come twice (as in test_udp.py).
QUIET = 2.5 * RESEND + (1 if SLOW > 1 else 0)
HB = 300


def ox_driver(port, password=PW, extra=""):
    url = f"http://dovecot:{password}@127.0.0.1:{port}/v1/ingest/dovecot"
    return f"ox:url={url}{extra}"


def basic(user, password):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture
def make_dovecot(request, tmp_path):
    """A factory of Dovecots for one test; every one is stopped after it."""
    made = []

    def make(driver, plugin, start=True):
        d = Dovecot(tmp_path / f"dovecot{len(made)}", driver, plugin)
        made.append(d)
        if start:
            d.start()
        return d

    def teardown():
        for d in made:
            d.close()

    request.addfinalizer(teardown)
    return make


def _module_dovecot(request, tmp_path_factory, driver, plugin):
    d = Dovecot(tmp_path_factory.mktemp(f"dovecot-{driver}"), driver, plugin)
    request.addfinalizer(d.close)
    d.start()
    return d


@pytest.fixture(scope="module")
def ox(srv, request, tmp_path_factory):
    return _module_dovecot(request, tmp_path_factory, "ox",
                           {"push_notification_driver": ox_driver(srv.port)})


@pytest.fixture(scope="module")
def lua(srv, request, tmp_path_factory):
    return _module_dovecot(request, tmp_path_factory, "lua",
                           {"nudge_url": srv.url, "nudge_token": srv.publisher_token()})


def hold(srv, user, folders, device="phone"):
    """A ping of user's device held on folders (a dict of states)."""
    p = user.ping_async(device, folders, heartbeat=HB)
    srv.wait_held(1, watch=[p])
    return p


def changed(srv, p, folders):
    return srv.check_ping(p.result(), "changed", folders)


def state(user, folder):
    return int(user.states([folder])[folder])


def lua_user(srv, lua, prefix="lua", **extra):
    """A nudge user that is also a Dovecot user whose INBOX exists (its
    creation, a mailbox-create, already reported). Returns (user, INBOX state)."""
    u = srv.user(prefix)
    lua.add_user(u.name, **extra)
    m = lua.imap(u.name)
    try:
        typ, data = m.select("INBOX")
        assert typ == "OK", data
    finally:
        m.logout()
    return u, state(u, "INBOX")


def uid_of_last(dv, user):
    """(uidvalidity, uid) of the newest message in user's INBOX."""
    m = dv.imap(user)
    try:
        typ, _ = m.select("INBOX", readonly=True)
        assert typ == "OK"
        uidvalidity = int(m.response("UIDVALIDITY")[1][0])
        typ, data = m.uid("SEARCH", "ALL")
        assert typ == "OK", data
        return uidvalidity, int(data[0].split()[-1])
    finally:
        m.logout()


def store(m, uid, op, flags):
    typ, data = m.uid("STORE", str(uid), op, flags)
    assert typ == "OK", data


def sent_to(srv, dev):
    """Datagrams nudged says it sent to dev's registration (admin API)."""
    path = "/v1/admin/sessions?user=" + urllib.parse.quote(dev.user.name, safe="")
    r = srv.request("GET", path, token=srv.admin_token())
    assert r.status == 200, r
    for s in r.json()["sessions"]:
        if s["device"] == dev.device:
            return s["udp"]["sent"]
    raise AssertionError(f"no session for {dev.device}: {r!r}")


# ---------------------------------------------------------------------------
# OX driver: PUT /v1/ingest/dovecot

def test_ox_each_delivery_answers_the_held_ping_with_the_next_state(srv, ox):
    u = srv.user("ox")
    ox.add_user(u.name)
    ox.enable_http_notify(u.name)
    p = hold(srv, u, {"INBOX": "0"})
    code, msg = ox.deliver(u.name, subject="First")
    assert code == 250, msg
    changed(srv, p, {"INBOX": "1"})
    p = hold(srv, u, {"INBOX": "1"})
    assert ox.deliver(u.name, subject="Second")[0] == 250
    # Exactly one bump per delivery: no retry or second driver counted twice.
    changed(srv, p, {"INBOX": "2"})
    assert u.states(["INBOX"]) == {"INBOX": "2"}


def test_ox_retry_of_the_same_delivery_is_not_counted_twice(srv, ox):
    u = srv.user("oxdup")
    ox.add_user(u.name)
    ox.enable_http_notify(u.name)
    assert ox.deliver(u.name, subject="Once")[0] == 250
    assert u.states(["INBOX"]) == {"INBOX": "1"}
    uidvalidity, uid = uid_of_last(ox, u.name)
    # What Dovecot sends again when its first try timed out: the same body.
    body = {"user": u.name, "event": "messageNew", "folder": "INBOX", "imap-uidvalidity": uidvalidity,
            "imap-uid": uid, "from": "Alice <alice@example.org>", "subject": "Once",
            "snippet": "Hello there.", "unseen": 1}
    dups = srv.metric("nudge_ingest_duplicates_total", 0)
    r = srv.request("PUT", "/v1/ingest/dovecot", body,
                    headers={"Authorization": basic("dovecot", PW),
                             "Content-Type": "application/json; charset=utf-8"})
    assert r.status == 200, r
    answer = r.json()
    assert answer.get("duplicate") is True, r
    assert answer["states"] == [{"user": u.name, "folder": "INBOX", "state": "1"}], r
    assert u.states(["INBOX"]) == {"INBOX": "1"}
    assert srv.metric("nudge_ingest_duplicates_total") == dups + 1
    # The next message is a new delivery again.
    assert ox.deliver(u.name, subject="Twice")[0] == 250
    assert u.states(["INBOX"]) == {"INBOX": "2"}


def test_ox_only_users_with_the_metadata_key_are_published(srv, ox):
    u = srv.user("oxmeta")
    ox.add_user(u.name)
    assert ox.deliver(u.name, subject="Before the key")[0] == 250
    ox.enable_http_notify(u.name)
    p = hold(srv, u, {"INBOX": "0"})
    assert ox.deliver(u.name, subject="After the key")[0] == 250
    # "1", not "2": the delivery before the key was never sent.
    changed(srv, p, {"INBOX": "1"})


def test_ox_user_from_metadata_names_the_nudge_user(srv, make_dovecot):
    """With user_from_metadata the request's user is the key's value: a
    Dovecot login can publish as another nudge user id."""
    dv = make_dovecot("ox", {"push_notification_driver": ox_driver(srv.port, extra=" user_from_metadata")})
    login = dv.add_user(harness.unique("login"))
    u = srv.user("alias")
    dv.enable_http_notify(login, value=u.name)
    p = hold(srv, u, {"INBOX": "0"})
    assert dv.deliver(login)[0] == 250
    changed(srv, p, {"INBOX": "1"})


def test_ox_wrong_password_is_refused_and_logged_by_dovecot_delivery_succeeds(srv, ox):
    u = srv.user("oxbad")
    ox.add_user(u.name, push_notification_driver=ox_driver(srv.port, password="wrong"))
    ox.enable_http_notify(u.name)
    mark = ox.log_size()
    code, msg = ox.deliver(u.name)
    assert code == 250, msg
    line = ox.wait_log(rf"(?m)^.*Error: .*rcpt {u.name}: push-notification-ox: .*$", since=mark).group(0)
    assert "401" in line, line
    assert u.states(["INBOX"]) == {"INBOX": "0"}
    # What Dovecot was told, seen from the outside.
    r = srv.request("PUT", "/v1/ingest/dovecot", {"user": u.name, "event": "messageNew", "folder": "INBOX"},
                    headers={"Authorization": basic("dovecot", "wrong")})
    assert r.status == 401 and r.header("WWW-Authenticate") == 'Basic realm="nudge"', r


def test_ox_encoded_and_raw_8bit_headers_do_not_break_the_delivery(srv, ox):
    u = srv.user("ox8bit")
    ox.add_user(u.name)
    ox.enable_http_notify(u.name)
    p = hold(srv, u, {"INBOX": "0"})
    mark = ox.log_size()
    assert ox.deliver(u.name, subject="=?UTF-8?Q?Caf=C3=A9_=E2=82=AC?= =?ISO-8859-1?B?/Q==?=",
                      sender="=?UTF-8?B?w4lsaXNl?= <elise@example.org>")[0] == 250
    changed(srv, p, {"INBOX": "1"})
    # Raw 8-bit bytes in headers (not UTF-8): Dovecot passes them on as it
    # can; nudge must still count the delivery.
    raw = (b"From: Jos\xe9 <jose@example.org>\r\nSubject: caf\xe9 \xff\xfe\r\n"
           b"Message-ID: <8bit@nudge.test>\r\n\r\nna\xefve body\r\n")
    p = hold(srv, u, {"INBOX": "1"})
    assert ox.deliver(u.name, raw=raw)[0] == 250
    changed(srv, p, {"INBOX": "2"})
    assert " Error: " not in ox.log_text(mark), ox.log_tail(since=mark)


# ---------------------------------------------------------------------------
# Lua driver: contrib/dovecot/nudge.lua, POST /v1/events

def test_lua_delivery_read_expunge_and_new_folder_each_answer_a_held_ping(srv, lua):
    u, s = lua_user(srv, lua)
    p = hold(srv, u, {"INBOX": str(s)})
    code, msg = lua.deliver(u.name, subject="Lua one")
    assert code == 250, msg
    changed(srv, p, {"INBOX": str(s + 1)})

    m = lua.imap(u.name)
    try:
        assert m.select("INBOX")[0] == "OK"
        uid = uid_of_last(lua, u.name)[1]
        # \Seen: Dovecot raises an empty FlagsClear, a FlagsSet of \Seen and
        # MessageRead. One "read" reaches nudge: exactly one bump.
        p = hold(srv, u, {"INBOX": str(s + 1)})
        store(m, uid, "+FLAGS", r"(\Seen)")
        changed(srv, p, {"INBOX": str(s + 2)})
        # \Deleted is a "trash", the EXPUNGE an "expunge": one bump each.
        p = hold(srv, u, {"INBOX": str(s + 2)})
        store(m, uid, "+FLAGS", r"(\Deleted)")
        changed(srv, p, {"INBOX": str(s + 3)})
        p = hold(srv, u, {"INBOX": str(s + 3)})
        assert m.expunge()[0] == "OK"
        changed(srv, p, {"INBOX": str(s + 4)})
        # A new folder: a device waiting for it hears of its creation.
        p = hold(srv, u, {"Projects": "0"})
        assert m.create("Projects")[0] == "OK"
        changed(srv, p, {"Projects": "1"})
    finally:
        m.logout()
    assert u.states(["INBOX", "Projects"]) == {"INBOX": str(s + 4), "Projects": "1"}


def test_lua_flags_bump_once_and_empty_flags_events_are_filtered(srv, lua):
    u, s = lua_user(srv, lua, "luaflags")
    assert lua.deliver(u.name)[0] == 250
    s += 1
    m = lua.imap(u.name)
    try:
        assert m.select("INBOX")[0] == "OK"
        uid = uid_of_last(lua, u.name)[1]
        p = hold(srv, u, {"INBOX": str(s)})
        store(m, uid, "+FLAGS", r"(\Flagged)")
        changed(srv, p, {"INBOX": str(s + 1)})
        # Clearing a flag the message does not have changes nothing; a
        # keyword set is a change.
        store(m, uid, "-FLAGS", r"(\Answered)")
        p = hold(srv, u, {"INBOX": str(s + 1)})
        store(m, uid, "+FLAGS", "($Label1)")
        changed(srv, p, {"INBOX": str(s + 2)})
        # Marking unread (clearing \Seen) is a flags change too.
        store(m, uid, "+FLAGS", r"(\Seen)")
        p = hold(srv, u, {"INBOX": str(s + 3)})
        store(m, uid, "-FLAGS", r"(\Seen)")
        changed(srv, p, {"INBOX": str(s + 4)})
    finally:
        m.logout()


def test_lua_mailbox_events_bump_the_folders_they_name(srv, lua):
    u, _ = lua_user(srv, lua, "luambox")
    m = lua.imap(u.name)
    try:
        assert m.create("Old")[0] == "OK"
        assert u.states(["Old"]) == {"Old": "1"}
        p = hold(srv, u, {"Old": "1"})
        assert m.subscribe("Old")[0] == "OK"
        changed(srv, p, {"Old": "2"})
        # A rename bumps the old name and the new one, in one publish.
        p = hold(srv, u, {"Old": "2", "New": "0"})
        assert m.rename("Old", "New")[0] == "OK"
        body = srv.check_ping(p.result(), "changed")
        assert body["folders"].get("Old") == "3", body
        assert u.states(["Old", "New"]) == {"Old": "3", "New": "1"}
        p = hold(srv, u, {"New": "1"})
        assert m.delete("New")[0] == "OK"
        changed(srv, p, {"New": "2"})
        # A non-ASCII name arrives as UTF-8 (IMAP's modified UTF-7 decoded).
        p = hold(srv, u, {"Entwürfe": "0"})
        assert m.create('"Entw&APw-rfe"')[0] == "OK"
        changed(srv, p, {"Entwürfe": "1"})
    finally:
        m.logout()


def test_lua_one_command_on_many_messages_is_one_bump_per_kind(srv, lua):
    """A STORE or EXPUNGE of many messages is one event per (folder, type);
    a COPY keeps 16 new messages with their own event and folds the rest."""
    u, s = lua_user(srv, lua, "luamany")
    m = lua.imap(u.name)
    try:
        for i in range(20):
            assert m.append("INBOX", None, None, f"Subject: bulk {i}\r\n\r\nbody\r\n".encode())[0] == "OK"
        s += 20  # one transaction each
        assert state(u, "INBOX") == s
        assert m.select("INBOX")[0] == "OK"
        assert m.create("Copies")[0] == "OK"
        p = hold(srv, u, {"INBOX": str(s)})
        typ, data = m.store("1:*", "+FLAGS", r"(\Flagged)")
        assert typ == "OK", data
        changed(srv, p, {"INBOX": str(s + 1)})
        assert m.copy("1:*", "Copies")[0] == "OK"
        assert u.states(["Copies"]) == {"Copies": str(1 + 16 + 1)}
        typ, data = m.store("1:*", "+FLAGS", r"(\Deleted)")
        assert typ == "OK", data
        assert m.expunge()[0] == "OK"
        assert state(u, "INBOX") == s + 3  # flags, trash, expunge
    finally:
        m.logout()


def test_lua_nudge_user_setting_maps_the_login(srv, make_dovecot):
    """nudge_user names the nudge user, with Dovecot's variables expanded."""
    dv = make_dovecot("lua", {"nudge_url": srv.url, "nudge_token": srv.publisher_token(),
                              "nudge_user": "%n@example.org"})
    login = dv.add_user(harness.unique("login"))
    u = harness.User(srv, f"{login}@example.org")
    assert dv.deliver(login)[0] == 250
    # INBOX created by the delivery, then the mail: two bumps.
    assert u.states(["INBOX"]) == {"INBOX": "2"}


def test_lua_encoded_and_raw_8bit_headers_do_not_break_the_batch(srv, lua):
    u, s = lua_user(srv, lua, "lua8bit")
    mark = lua.log_size()
    p = hold(srv, u, {"INBOX": str(s)})
    assert lua.deliver(u.name, subject="=?UTF-8?Q?Caf=C3=A9_=E2=82=AC?=",
                       sender="=?UTF-8?B?w4lsaXNl?= <elise@example.org>")[0] == 250
    changed(srv, p, {"INBOX": str(s + 1)})
    raw = (b"From: Jos\xe9 <jose@example.org>\r\nSubject: caf\xe9 \xff\xfe \x01\x7f\r\n"
           b"Message-ID: <8bit-lua@nudge.test>\r\n\r\nna\xefve body\r\n")
    p = hold(srv, u, {"INBOX": str(s + 1)})
    assert lua.deliver(u.name, raw=raw)[0] == 250
    changed(srv, p, {"INBOX": str(s + 2)})
    assert "nudge:" not in lua.log_text(mark), lua.log_tail(since=mark)


def test_lua_read_and_expunge_count_as_caught_up_for_udp(srv, lua):
    u, s = lua_user(srv, lua, "luaudp")
    dev = UdpDevice(srv, u)
    dev.register(["INBOX"])
    assert lua.deliver(u.name, subject="For the desk")[0] == 250
    d = dev.recv()
    assert d["folder"] == "INBOX" and d["state"] == s + 1, d
    # Read on another device: no datagram for it, and the resends stop.
    m = lua.imap(u.name)
    try:
        assert m.select("INBOX")[0] == "OK"
        uid = uid_of_last(lua, u.name)[1]
        store(m, uid, "+FLAGS", r"(\Seen)")
        assert state(u, "INBOX") == s + 2
        dev.drain()
        count = sent_to(srv, dev)
        dev.quiet(QUIET)
        assert sent_to(srv, dev) == count
        # New mail is announced again; its expunge elsewhere stops it.
        assert lua.deliver(u.name, subject="Second")[0] == 250
        d = dev.recv()
        assert d["state"] == s + 3, d
        uid = uid_of_last(lua, u.name)[1]
        assert m.noop()[0] == "OK"  # this session learns of the new message
        store(m, uid, "+FLAGS", r"(\Deleted)")
        assert m.expunge()[0] == "OK"
        assert state(u, "INBOX") == s + 5
        dev.drain()
        count = sent_to(srv, dev)
        dev.quiet(QUIET)
        assert sent_to(srv, dev) == count
    finally:
        m.logout()


def test_lua_wrong_token_is_logged_by_dovecot_and_sent_once_it_is_fixed(srv, lua):
    u, s = lua_user(srv, lua, "luatok")
    lua.add_user(u.name, nudge_token="v1.p.bm9wZQ.0.bm9wZQ")
    mark = lua.log_size()
    code, msg = lua.deliver(u.name, subject="Unheard")
    assert code == 250, msg
    line = lua.wait_log(rf"(?m)^.*\({u.name}\).*Error: nudge: .*$", since=mark).group(0)
    assert "answered 401" in line, line
    assert state(u, "INBOX") == s
    assert (lua.home(u.name) / ".nudge-missed").exists()
    # The token fixed: the user's next change (another folder) carries the
    # missed INBOX change along.
    lua.add_user(u.name)
    p = hold(srv, u, {"INBOX": str(s)})
    m = lua.imap(u.name)
    try:
        assert m.create("Later")[0] == "OK"
    finally:
        m.logout()
    changed(srv, p, {"INBOX": str(s + 1)})
    assert not (lua.home(u.name) / ".nudge-missed").exists()


# ---------------------------------------------------------------------------
# nudge down, nudge hanging

def restartable_nudged(make_nudged):
    """A nudged that comes back on the same port after a restart (Dovecot's
    config names the port)."""
    n = make_nudged(NUDGED_SETTINGS)
    n.settings["server"]["listen"] = f"127.0.0.1:{n.port}"
    return n


def test_lua_nudge_down_delivery_succeeds_and_the_next_event_brings_the_news(make_nudged, make_dovecot):
    n = restartable_nudged(make_nudged)
    dv = make_dovecot("lua", {"nudge_url": n.url, "nudge_token": n.publisher_token()})
    u, s = lua_user(n, dv, "down")
    n.stop()
    mark = dv.log_size()
    code, msg = dv.deliver(u.name, subject="While nudge was down")
    assert code == 250, msg
    line = dv.wait_log(rf"(?m)^.*\({u.name}\).*Error: nudge: .*$", since=mark).group(0)
    assert "connect to 127.0.0.1" in line and "refused" in line, line
    n.start()
    # The device presents the state it had: nudge never heard of the mail,
    # so the ping is held (no lie about a change nudge does not know)...
    p = hold(n, u, {"INBOX": str(s)})
    # ...until the user's next event, in any folder, carries the missed one.
    m = dv.imap(u.name)
    try:
        assert m.create("Elsewhere")[0] == "OK"
    finally:
        m.logout()
    n.check_ping(p.result(), "changed", {"INBOX": str(s + 1)})


def test_ox_nudge_down_delivery_succeeds_and_the_next_delivery_brings_the_news(make_nudged, make_dovecot):
    n = restartable_nudged(make_nudged)
    dv = make_dovecot("ox", {"push_notification_driver": ox_driver(n.port, extra=" timeout_msecs=1000")})
    u = n.user("oxdown")
    dv.add_user(u.name)
    dv.enable_http_notify(u.name)
    assert dv.deliver(u.name)[0] == 250
    assert u.states(["INBOX"]) == {"INBOX": "1"}
    n.stop()
    mark = dv.log_size()
    code, msg = dv.deliver(u.name, subject="While nudge was down")
    assert code == 250, msg
    dv.wait_log(rf"(?m)^.*Error: .*rcpt {u.name}: push-notification-ox: .*$", since=mark)
    n.start()
    p = hold(n, u, {"INBOX": "1"})
    # The OX driver does not remember: the next delivery is what tells.
    assert dv.deliver(u.name, subject="After")[0] == 250
    n.check_ping(p.result(), "changed", {"INBOX": "2"})


def test_lua_hanging_nudge_holds_a_delivery_only_for_the_timeout(make_nudged, make_dovecot):
    n = make_nudged(NUDGED_SETTINGS)
    dv = make_dovecot("lua", {"nudge_url": n.url, "nudge_token": n.publisher_token(),
                              "nudge_timeout_msecs": 1000})
    u, s = lua_user(n, dv, "hang")
    n.send_signal(signal.SIGSTOP)
    try:
        mark = dv.log_size()
        t0 = time.monotonic()
        code, msg = dv.deliver(u.name, subject="Into the void")
        took = time.monotonic() - t0
        assert code == 250, msg
        line = dv.wait_log(rf"(?m)^.*\({u.name}\).*Error: nudge: .*$", since=mark).group(0)
        assert "no answer within 1000 ms" in line, line
        # 1 s of timeout; the rest is slack for a loaded machine.
        assert took < 1 + 8 * SLOW, f"delivery took {took:.1f}s"
    finally:
        n.send_signal(signal.SIGCONT)
    # The request nudged found in its socket when it woke may have counted;
    # the missed change is sent again with the next event: never fewer.
    m = dv.imap(u.name)
    try:
        assert m.create("Next")[0] == "OK"
    finally:
        m.logout()
    assert state(u, "INBOX") >= s + 1


def test_ox_timeout_retry_is_not_counted_twice(make_nudged, make_dovecot):
    """Dovecot retries a request that timed out: with nudged stopped, both
    the first request and its retry wait in nudged's socket; when it wakes
    it answers both, and counts the delivery once."""
    n = make_nudged(NUDGED_SETTINGS)
    dv = make_dovecot("ox", {"push_notification_driver":
                             ox_driver(n.port, extra=" timeout_msecs=500 max_retries=1")})
    u = n.user("oxretry")
    dv.add_user(u.name)
    dv.enable_http_notify(u.name)
    n.send_signal(signal.SIGSTOP)
    try:
        mark = dv.log_size()
        code, msg = dv.deliver(u.name, subject="Slow")
        assert code == 250, msg
        dv.wait_log(rf"(?m)^.*Error: .*rcpt {u.name}: push-notification-ox: .*$", since=mark)
    finally:
        n.send_signal(signal.SIGCONT)
    n.wait_metric("nudge_ingest_duplicates_total", lambda v: v >= 1)
    n.wait_metric("nudge_ingest_events_total", lambda v: v >= 1)
    assert u.states(["INBOX"]) == {"INBOX": "1"}
    m = n.metrics()
    assert m["nudge_ingest_events_total"] == 1, (m["nudge_ingest_events_total"], m["nudge_ingest_duplicates_total"],
                                                 dv.log_tail(since=mark), n.log_tail())
