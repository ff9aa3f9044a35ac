"""
test_activesync.py — POST /Microsoft-Server-ActiveSync?Cmd=Ping (issue 19).

Requests are WBXML built by libwbxml2's xml2wbxml from tests/activesync/*.xml,
answers decoded by wbxml2xml (tests/e2e/activesync.py). Held-ness is proven
by the nudge_pings_held gauge, never by sleeping; the only sleep waits for
[heartbeat] grace to pass on a server whose grace is 1 s (a condition, not a
timing assertion).
"""
import base64
import random
import sqlite3
import time
from pathlib import Path

import pytest

import harness
import activesync as asx
from conftest import finish

pytestmark = pytest.mark.skipif(not asx.tools_present(),
                                reason="libwbxml2-utils (xml2wbxml, wbxml2xml) not installed")

USERS = {f"as{i}": f"pw-as{i}" for i in range(120)}
MAX_FOLDERS = 5
SETTINGS = {
    "heartbeat": {"min": 2, "max": 900},
    "activesync": {"max_folders": MAX_FOLDERS},
    "sessions": {"per_user_limit": 2},
}
_next_user = iter(sorted(USERS))


def mail_user():
    """A user of the passwd-file no other test of this module uses."""
    name = next(_next_user)
    return name, USERS[name]


@pytest.fixture(scope="module")
def asrv(request, tmp_path_factory):
    d = tmp_path_factory.mktemp("as")
    pf = d / "passwd"
    asx.passwd_file(pf, USERS)
    settings = {**SETTINGS, "auth": {"passwords": f"passwd-file:{pf}"}}
    n = harness.Nudged(d / "nudged", settings)

    def teardown():
        problems = finish(n)
        if problems:
            pytest.fail("\n".join(problems), pytrace=False)

    request.addfinalizer(teardown)
    n.start()
    return n


@pytest.fixture(autouse=True)
def _settled(asrv):
    """The previous test's held Pings (closed by conftest) are gone from the gauge
    before this test counts held Pings by it."""
    asrv.wait_held(0)


@pytest.fixture
def dev(asrv):
    name, pw = mail_user()
    return asx.Device(asrv, name, pw)


def wait_held_more(srv, before, watch=()):
    """Waits until the held gauge is above 'before' (other tests' Pings may be held too)."""
    deadline = time.monotonic() + harness.WAIT
    while True:
        for p in watch:
            if p.done():
                raise AssertionError(f"Ping answered instead of held: {p.result(0)!r}")
        if srv.held() > before:
            return
        assert time.monotonic() < deadline, f"no Ping held\n{srv.log_tail()}"
        time.sleep(0.05)


def hold(dev, heartbeat=60, folders=("INBOX",), body=None, **kw):
    """Sends a Ping and waits until nudged holds it; returns the Pending."""
    before = dev.srv.held()
    p = dev.send_async(asx.ping_wbxml(heartbeat, folders) if body is None else body, **kw)
    wait_held_more(dev.srv, before, watch=[p])
    return p


def answer(p):
    return asx.Answer(p.result())


# ---- the tools ------------------------------------------------------------------


def test_the_tools_write_activesync_wbxml():
    data = asx.file_wbxml("ping-inbox.xml")
    assert data[:4] == bytes.fromhex("03016a00"), data.hex()
    assert data[4:6] == bytes.fromhex("000d"), "SWITCH_PAGE 13 (Ping) expected: " + data.hex()
    back = asx.wbxml_to_xml(data)
    assert "<Id>INBOX</Id>" in back and "<HeartbeatInterval>60</HeartbeatInterval>" in back, back


# ---- Status 2 and 1 ---------------------------------------------------------------


def test_status2_held_ping_woken_by_a_publish(asrv, dev):
    p = hold(dev, folders=("INBOX", "Sent"))
    asrv.publish(dev.user, "INBOX")
    a = answer(p)
    assert a.status == 2 and a.folders == ["INBOX"], a


def test_a_publish_to_an_unlisted_folder_does_not_wake(asrv, dev):
    p = hold(dev, folders=("INBOX",))
    asrv.publish(dev.user, "Trash")
    asrv.publish(dev.user, "INBOX")  # the one that must answer
    a = answer(p)
    assert a.status == 2 and a.folders == ["INBOX"], a


def test_status1_at_the_heartbeat_end(asrv, dev):
    p = hold(dev, heartbeat=2)
    a = answer(p)
    assert a.status == 1 and a.folders == [], a


def test_supersede_answers_the_older_ping_status1_at_once(asrv, dev):
    old = hold(dev, heartbeat=600)
    new = dev.ping_async(heartbeat=600)
    a = answer(old)  # well before its 600 s heartbeat: WAIT is 20 s
    assert a.status == 1, a
    asrv.wait_log(r"name=ping_superseded user=\"?%s" % dev.user)
    # The newer Ping is held, not answered (no Status 5 guidance on a superseding Ping).
    assert not new.done(), new.result(0)
    asrv.publish(dev.user, "INBOX")
    b = answer(new)
    assert b.status == 2 and b.folders == ["INBOX"], b


# ---- No lost change, no needless wake-up --------------------------------------------


def test_a_change_between_two_pings_answers_the_next_at_once(asrv, dev):
    p = hold(dev)
    asrv.publish(dev.user, "INBOX")
    assert answer(p).status == 2
    asrv.publish(dev.user, "INBOX")  # while the device syncs: no Ping held
    a = dev.ping()
    assert a.status == 2 and a.folders == ["INBOX"], a


def test_a_change_heard_of_is_not_reported_twice(asrv, dev):
    p = hold(dev)
    asrv.publish(dev.user, "INBOX")
    assert answer(p).status == 2
    # The next Ping comes at once (well within [heartbeat] grace, 30 s): delivered.
    q = hold(dev)
    asrv.publish(dev.user, "INBOX")
    a = answer(q)
    assert a.status == 2 and a.folders == ["INBOX"], a


def test_status2_not_proven_within_grace_is_reported_again(make_nudged, tmp_path):
    pf = tmp_path / "passwd"
    asx.passwd_file(pf, {"ann": "pw-ann"})
    n = make_nudged({**SETTINGS, "auth": {"passwords": f"passwd-file:{pf}"},
                     "heartbeat": {"min": 2, "max": 900, "grace": 1}})
    d = asx.Device(n, "ann", "pw-ann")
    p = hold(d)
    n.publish("ann", "INBOX")
    assert answer(p).status == 2
    time.sleep(2.5)  # past the 1 s grace: the answer counts as eaten by a middlebox
    a = d.ping()
    assert a.status == 2 and a.folders == ["INBOX"], a
    # That one was proven (the next Ping comes at once): now the device is held.
    q = hold(d)
    q.close()


# ---- Status 3: the empty Ping ---------------------------------------------------------


def test_status3_empty_ping_with_nothing_cached(asrv, dev):
    a = asx.Answer(dev.send(b""))
    assert a.status == 3, a


def test_empty_ping_reuses_cached_heartbeat_and_folders(asrv, dev):
    p = hold(dev, folders=("INBOX", "Work"))
    asrv.publish(dev.user, "Work")
    assert answer(p).folders == ["Work"]
    q = hold(dev, body=b"")
    asrv.publish(dev.user, "INBOX")
    a = answer(q)
    assert a.status == 2 and a.folders == ["INBOX"], a


# ---- Status 4: malformed -------------------------------------------------------------


def alive(srv):
    assert srv.running() and srv.healthy(), srv.log_tail()


@pytest.mark.parametrize("name", ["ping-folder-no-id.xml", "ping-heartbeat-text.xml", "foldersync.xml"])
def test_status4_wrong_structure_or_code_page(asrv, dev, name):
    a = asx.Answer(dev.send(asx.file_wbxml(name)))
    assert a.status == 4, a
    alive(asrv)


def test_status4_random_bytes_and_truncated_documents(asrv, dev):
    good = asx.ping_wbxml(60, ("INBOX", "Sent"))
    rnd = random.Random(19)
    bodies = [bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 200))) for _ in range(20)]
    bodies += [good[:i] for i in range(1, len(good) - 1)]
    bodies += [good + b"\x01" * 100, good + good]  # trailing bytes after the document
    bodies += [asx.HEADER, good.replace(b"\x00\x0d", b"\x00\x0e", 1), b"\x03\x01\x6a\x00\x00\x0d\x45"]
    for i, b in enumerate(bodies):
        # A device of its own per body: the battery guard holds a device's fourth
        # quick Status 4 in a row to heartbeat min (tested below), which is not this test.
        d = asx.Device(asrv, dev.user, dev.password, device=f"{dev.device}-{i}")
        r = d.send(b)
        assert r.status in (200, 400), (b, r)
        if r.status == 200:
            a = asx.Answer(r)
            assert a.status == 4, (b.hex(), a)
    alive(asrv)


def test_ten_megabyte_body_is_refused_and_the_server_lives(asrv, dev):
    big = asx.ping_wbxml(60) + b"\x01" * (10 * 1024 * 1024)
    c = asrv.connect()
    try:
        try:
            c.send(harness.build_request("POST", asx.plain_query(dev.user, dev.device), big,
                                         headers=asx.headers(asx.basic(dev.user, dev.password))))
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            r = c.read_response()
        except harness.ConnectionClosed:
            r = None
    finally:
        c.close()
    if r is not None:
        assert r.status in (400, 413) or (r.status == 200 and asx.Answer(r).status == 4), r
    alive(asrv)


# ---- Status 5, 6, 7 --------------------------------------------------------------


def test_status5_heartbeat_outside_the_bounds(asrv, dev):
    a = dev.ping(heartbeat=1)
    assert a.status == 5 and a.heartbeat == 2, a
    b = dev.ping(heartbeat=901)
    assert b.status == 5 and b.heartbeat == 900, b


def test_status6_too_many_folders_names_max_folders(asrv, dev):
    a = dev.ping(folders=[f"F{i}" for i in range(MAX_FOLDERS + 1)])
    assert a.status == 6 and a.max_folders == MAX_FOLDERS, a
    p = hold(dev, folders=[f"F{i}" for i in range(MAX_FOLDERS)])  # exactly the cap is fine
    p.close()


def test_folder_map_status7_and_put_get_delete(asrv, dev):
    tok = asrv.publisher_token()
    path = f"/v1/activesync/folders/{dev.user}"
    r = asrv.request("GET", path, token=tok)
    assert r.status == 404, r
    r = asrv.request("PUT", path, {"folders": {"5": "INBOX", "7": "Sent"}}, token=tok)
    assert r.status == 200 and r.json() == {"folders": {"5": "INBOX", "7": "Sent"}}, r
    r = asrv.request("GET", path, token=tok)
    assert r.status == 200 and r.json() == {"folders": {"5": "INBOX", "7": "Sent"}}, r
    a = dev.ping(folders=("5", "INBOX"))
    assert a.status == 7, a
    p = hold(dev, folders=("5", "7"))
    asrv.publish(dev.user, "Sent")
    a = answer(p)
    assert a.status == 2 and a.folders == ["7"], a
    # Without a token, with a user's token: refused.
    assert asrv.request("GET", path).status == 401
    r = asrv.request("DELETE", path, token=tok)
    assert r.status == 200, r
    assert asrv.request("GET", path, token=tok).status == 404
    q = hold(dev, folders=("INBOX",))  # Ids name folders again
    asrv.publish(dev.user, "INBOX")
    assert answer(q).folders == ["INBOX"]


def test_folder_map_survives_a_restart(make_nudged, tmp_path):
    """The map is saved in the store: after a restart, Id 5 still names INBOX
    (without it Id 5 would silently watch a folder named "5")."""
    name, pw = mail_user()
    pf = tmp_path / "passwd"
    asx.passwd_file(pf, {name: pw})
    settings = {**SETTINGS, "auth": {"passwords": f"passwd-file:{pf}"},
                "server": {"data_dir": str(tmp_path / "data")}}
    srv = make_nudged(settings)
    path = f"/v1/activesync/folders/{name}"
    r = srv.request("PUT", path, {"folders": {"5": "INBOX"}}, token=srv.publisher_token())
    assert r.status == 200, r
    assert srv.stop() == 0
    srv = make_nudged(settings)
    tok = srv.publisher_token()
    r = srv.request("GET", path, token=tok)
    assert r.status == 200 and r.json() == {"folders": {"5": "INBOX"}}, r
    dev = asx.Device(srv, name, pw)
    assert dev.ping(folders=("INBOX",)).status == 7  # only mapped Ids are known
    p = hold(dev, folders=("5",))
    srv.publish(name, "INBOX")
    a = answer(p)
    assert a.status == 2 and a.folders == ["5"], a
    # A deleted map stays deleted.
    assert srv.request("DELETE", path, token=tok).status == 200
    assert srv.stop() == 0
    srv = make_nudged(settings)
    assert srv.request("GET", path, token=srv.publisher_token()).status == 404


def test_folder_map_bad_bodies(asrv):
    tok = asrv.publisher_token()
    name, _ = mail_user()
    path = f"/v1/activesync/folders/{name}"
    for body in [b"", b"{", {"folders": []}, {"folders": {"x": 3}}, {"nope": {}}]:
        r = asrv.request("PUT", path, body, token=tok)
        assert r.status == 400, (body, r)
    alive(asrv)


def store_files(srv):
    """nudged's SQLite files: nudge.db (worker 0, or the single process) and
    nudge.db.shard<i> for the other workers (src/store/reshard.c)."""
    base = srv.data_dir / "nudge.db"
    return [base] + [Path(f"{base}.shard{i}") for i in range(1, srv.workers)]


def sql_everywhere(srv, text):
    """Runs SQL in every store file while nudged runs, as an operator's sqlite3 would."""
    for path in store_files(srv):
        assert path.exists(), f"no store file {path}"
        db = sqlite3.connect(str(path), timeout=harness.WAIT, isolation_level=None)
        try:
            db.execute(text)
        finally:
            db.close()


def test_status8_while_the_store_fails_and_not_once_it_writes_again(make_nudged, tmp_path):
    pf = tmp_path / "passwd"
    asx.passwd_file(pf, {"dora": "pw-dora"})
    n = make_nudged({**SETTINGS, "auth": {"passwords": f"passwd-file:{pf}"}})
    phone, tablet = asx.Device(n, "dora", "pw-dora"), asx.Device(n, "dora", "pw-dora")
    assert n.metric("nudge_store_failing") == 0
    # A trigger refusing every device record stands in for a failing disk.
    sql_everywhere(n, "CREATE TRIGGER refuse BEFORE INSERT ON devices "
                      "BEGIN SELECT RAISE(ABORT, 'refused for the test'); END")
    # Another device of the user (so of the same worker) Pings: saving its record fails.
    held = hold(tablet)
    harness.wait_event(n, 1501, lambda e: "refused for the test" in e.get("error", ""),
                       "store_write_failed")
    assert n.metric("nudge_store_failing") == 1
    before = n.metric("nudge_pings_answered_total", 0, status="store-error")
    a = phone.ping()  # at once, not held: no publish could wake it
    assert a.status == 8, a
    assert n.metric("nudge_pings_answered_total", status="store-error") == before + 1
    held.close()
    sql_everywhere(n, "DROP TRIGGER refuse")
    # Nobody publishes: the record each Status 8 saves is the write that brings health back.
    # (heartbeat 2 = [heartbeat] min: the first answer that is not 8 is Status 1 after it.)
    deadline = time.monotonic() + harness.WAIT
    while True:
        a = phone.ping(heartbeat=2)
        if a.status != 8:
            break
        assert time.monotonic() < deadline, f"still Status 8 after the trigger went\n{n.log_tail()}"
    assert a.status == 1, a
    harness.wait_event(n, 1505, lambda e: True, "store_write_recovered")
    assert n.metric("nudge_store_failing") == 0


# ---- The query forms, the headers, the sign-in -----------------------------------


@pytest.mark.parametrize("version,policy_key", [(141, None), (121, 0x12345678), (161, 7)])
def test_base64_query_form(asrv, dev, version, policy_key):
    q = asx.b64_query(dev.device, version=version, policy_key=policy_key)
    p = hold(dev, query=q)
    asrv.publish(dev.user, "INBOX")
    a = answer(p)
    assert a.status == 2 and a.folders == ["INBOX"], a


def test_base64_and_plain_forms_are_the_same_device(asrv, dev):
    old = hold(dev, heartbeat=600, query=asx.b64_query(dev.device))
    new = dev.ping_async(heartbeat=600)
    assert answer(old).status == 1
    new.close()


def test_bad_base64_queries_are_400(asrv, dev):
    good = asx.b64_query(dev.device).split("?", 1)[1]
    raw = base64.b64decode(good)
    # not base64; cut short; no device type; a device id longer than the rest; version 1.0
    for q in ["!!!!", good[:3], base64.b64encode(raw[:5]).decode(),
              base64.b64encode(raw[:4] + b"\xff" + raw[5:]).decode(),
              base64.b64encode(b"\x0a" + raw[1:]).decode()]:
        r = dev.send(asx.ping_wbxml(60), query=f"{asx.PATH}?{q}")
        assert r.status == 400, (q, r)
    alive(asrv)


def test_no_credentials_is_401_basic(asrv, dev):
    r = dev.send(asx.ping_wbxml(60), auth="")
    assert r.status == 401, r
    assert (r.header("WWW-Authenticate") or "").startswith('Basic realm="nudge"'), r


def test_wrong_password_is_401(asrv, dev):
    r = dev.send(asx.ping_wbxml(60), auth=asx.basic(dev.user, "not-it"))
    assert r.status == 401 and (r.header("WWW-Authenticate") or "").startswith("Basic"), r


def test_user_in_query_not_the_signed_in_user(asrv, dev):
    other, _ = mail_user()
    r = dev.send(asx.ping_wbxml(60), query=asx.plain_query(other, dev.device))
    assert r.status in (401, 403), r


def test_domain_prefix_in_user_is_accepted(asrv, dev):
    p = hold(dev, query=asx.plain_query("CORP\\" + dev.user, dev.device))
    asrv.publish(dev.user, "INBOX")
    assert answer(p).status == 2


@pytest.mark.parametrize("version", [None, "", "2.0", "17.0", "abc", "14.1x"])
def test_protocol_version_missing_or_bad_is_400(asrv, dev, version):
    r = dev.send(asx.ping_wbxml(60), version=version)
    assert r.status == 400, r


@pytest.mark.parametrize("version", ["2.5", "12.1", "14.0", "16.1"])
def test_protocol_versions_served(asrv, dev, version):
    a = dev.ping(heartbeat=1, version=version)  # Status 5 at once: the version was accepted
    assert a.status == 5, a


@pytest.mark.parametrize("cmd", ["Sync", "FolderSync", "Provision"])
def test_other_commands_are_501(asrv, dev, cmd):
    r = dev.send(asx.file_wbxml("foldersync.xml"), query=asx.plain_query(dev.user, dev.device, cmd=cmd))
    assert r.status == 501, r


def test_options_names_ping(asrv):
    r = asrv.request("OPTIONS", asx.PATH, headers={"Authorization": asx.basic("as0", USERS["as0"])})
    assert r.status == 200 and "Ping" in (r.header("MS-ASProtocolCommands") or ""), r


# ---- Session rules ---------------------------------------------------------------


def test_per_user_cap_counts_activesync_devices(asrv):
    name, pw = mail_user()
    devs = [asx.Device(asrv, name, pw) for _ in range(3)]
    held = [hold(d) for d in devs[:2]]
    r = devs[2].send(asx.ping_wbxml(60))
    assert r.status in (429, 503), r
    for p in held:
        p.close()


def test_endpoint_absent_without_passwords(make_nudged):
    n = make_nudged({})
    r = n.request("POST", asx.plain_query("x", "d"), asx.ping_wbxml(60),
                  headers=asx.headers(asx.basic("x", "y")))
    assert r.status in (401, 404, 501), r
    assert r.header("Content-Type") != asx.WBXML, r


# ---- The FolderSync loop, the synced API, the battery guard -------------------------


def test_status7_twice_for_the_same_ids_then_they_are_ignored(asrv, dev):
    tok = asrv.publisher_token()
    r = asrv.request("PUT", f"/v1/activesync/folders/{dev.user}", {"folders": {"5": "INBOX"}}, token=tok)
    assert r.status == 200, r
    assert dev.ping(folders=("5", "99")).status == 7
    assert dev.ping(folders=("5", "99")).status == 7
    # The third time is the FolderSync loop: "99" is ignored, the Ping held on "5".
    p = hold(dev, folders=("5", "99"))
    ev = harness.wait_event(asrv, 1800, lambda e: e.get("device") == dev.device, "as_folders_ignored")
    assert "99" in ev.get("ids", ""), ev
    asrv.publish(dev.user, "INBOX")
    a = answer(p)
    assert a.status == 2 and a.folders == ["5"], a


def test_synced_api_clears_a_change_the_device_already_has(asrv, dev):
    tok = asrv.publisher_token()
    p = hold(dev)
    asrv.publish(dev.user, "INBOX")
    assert answer(p).status == 2
    q = hold(dev)  # proves the Status 2 (within grace); the device is up to date
    asrv.publish(dev.user, "INBOX")
    assert answer(q).status == 2
    # The device syncs the change itself; the ActiveSync server tells nudge so.
    asrv.publish(dev.user, "INBOX")
    r = asrv.request("POST", f"/v1/activesync/synced/{dev.user}",
                     {"device": dev.device, "folders": ["INBOX"]}, token=tok)
    assert r.status == 200 and r.json() == {"cleared": 1}, r
    s = hold(dev)  # not woken for what it synced
    asrv.publish(dev.user, "INBOX")
    assert answer(s).folders == ["INBOX"]
    r = asrv.request("POST", f"/v1/activesync/synced/{dev.user}", {"device": "nope", "folders": []}, token=tok)
    assert r.status == 404, r


def test_battery_guard_holds_quick_repings_to_heartbeat_min(make_nudged, tmp_path):
    pf = tmp_path / "passwd"
    asx.passwd_file(pf, {"bob": "pw-bob"})
    n = make_nudged({"auth": {"passwords": f"passwd-file:{pf}"}, "heartbeat": {"min": 60, "max": 900}})
    d = asx.Device(n, "bob", "pw-bob")
    hold(d, heartbeat=60)  # the device exists (a first Ping out of bounds creates none)
    # Status 5 at once, again and again, within seconds of each other.
    for _ in range(3):
        assert d.ping(heartbeat=30).status == 5
    p = d.ping_async(heartbeat=30)
    harness.wait_event(n, 1801, lambda e: e.get("device") == d.device, "as_battery_guard")
    # Held to heartbeat min (60 s), not answered at once: a tight loop is broken.
    time.sleep(0.5)
    assert not p.done(), p.result(0)
    p.close()
    assert n.healthy()


def test_battery_guard_also_for_a_device_never_held(make_nudged, tmp_path):
    pf = tmp_path / "passwd"
    asx.passwd_file(pf, {"cat": "pw-cat"})
    n = make_nudged({"auth": {"passwords": f"passwd-file:{pf}"}, "heartbeat": {"min": 60, "max": 900}})
    d = asx.Device(n, "cat", "pw-cat")
    answers = []
    for _ in range(8):  # an iPhone that re-pings with the same too-short heartbeat
        p = d.ping_async(heartbeat=30)
        try:
            r = p.result(timeout=harness.WAIT / 2)
        except AssertionError:
            break  # held: the guard works
        answers.append(asx.Answer(r).status)
        p.close()
    assert len(answers) < 8, f"answered at once {len(answers)} times in a row: {answers}"
