"""Native TLS on a listener with the tls flag (docs/tls.md), against the real
nudged and real TLS clients (Python's ssl, OpenSSL's s_client):

  * the handshake in TLS 1.3 and TLS 1.2 with every cipher nudged offers,
    ALPN http/1.1, nothing older than TLS 1.2;
  * after the handshake nudged seals and opens records itself: keep-alive,
    pipelining, bodies over many records, records split anywhere, a client's
    KeyUpdate, a clean close_notify;
  * a held ping over TLS answered by a publish, also for users of other
    workers (the connection moves with its keys), SSE over TLS;
  * resumption with a session ticket, across connections and workers;
  * SIGHUP reloads the certificate without dropping a held connection;
    a bad file keeps the old one;
  * garbage, plain HTTP and a client that distrusts the certificate end in
    a closed connection and event 1150, never an answer in clear.
"""
import os
import re
import signal
import socket
import ssl
import subprocess
import time

import pytest

import harness
from harness import WAIT, Conn

USER_COUNT = 6  # enough that, with workers = 3, some users live in another worker than the acceptor


def make_cert(d, name, cn="localhost", days=30, key="ec"):
    """A self-signed certificate for 127.0.0.1 and localhost; returns (cert, key) paths."""
    cert, keyf = d / f"{name}.pem", d / f"{name}.key"
    algo = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"] if key == "ec" else \
        ["-newkey", "rsa:2048"]
    subprocess.run(["openssl", "req", "-x509", *algo, "-nodes", "-keyout", str(keyf), "-out",
                    str(cert), "-days", str(days), "-subj", f"/CN={cn}", "-addext",
                    "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True)
    return cert, keyf


class TlsConn(Conn):
    """harness.Conn over TLS: the same request and response helpers."""

    def __init__(self, port, ctx, timeout=WAIT, session=None):
        super().__init__(None)
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = ctx.wrap_socket(raw, server_hostname="localhost", session=session)


def client_ctx(cafile, **kw):
    ctx = ssl.create_default_context(cafile=str(cafile))
    ctx.set_alpn_protocols(["http/1.1"])
    for k, v in kw.items():
        setattr(ctx, k, v)
    return ctx


def tls_port(n):
    """The port of the tls listener: the second address of the listening line."""
    m = re.search(r"event=1001 name=listening addr=127\.0\.0\.1:\d+,127\.0\.0\.1:(\d+)",
                  n.log_text())
    assert m, n.log_tail()
    return int(m.group(1))


@pytest.fixture
def certs(tmp_path):
    d = tmp_path / "certs"
    d.mkdir()
    return d


@pytest.fixture
def srv(make_nudged, certs):
    cert, key = make_cert(certs, "server")
    n = make_nudged({"server": {"listen": "127.0.0.1:0, 127.0.0.1:0 tls"},
                     "tls": {"cert": str(cert), "key": str(key)}})
    n.tls_port = tls_port(n)
    n.cert = cert
    return n


def get(srv, ctx, path="/healthz", **kw):
    c = TlsConn(srv.tls_port, ctx, **kw)
    try:
        return c.request("GET", path), c.sock.version(), c.sock.cipher()[0], \
            c.sock.selected_alpn_protocol()
    finally:
        c.close()


# ---- the handshake ------------------------------------------------------------


def test_tls13_answers_with_alpn(srv):
    r, version, _, alpn = get(srv, client_ctx(srv.cert))
    assert r.status == 200 and r.json() == {"status": "ok"}, r
    assert version == "TLSv1.3" and alpn == "http/1.1"


@pytest.mark.parametrize("cipher", ["ECDHE-ECDSA-AES128-GCM-SHA256",
                                    "ECDHE-ECDSA-AES256-GCM-SHA384",
                                    "ECDHE-ECDSA-CHACHA20-POLY1305"])
def test_tls12_every_cipher(srv, cipher):
    ctx = client_ctx(srv.cert, maximum_version=ssl.TLSVersion.TLSv1_2)
    ctx.set_ciphers(cipher)
    r, version, got, _ = get(srv, ctx)
    assert r.status == 200, r
    assert (version, got) == ("TLSv1.2", cipher)


@pytest.mark.parametrize("suite", ["TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384",
                                   "TLS_CHACHA20_POLY1305_SHA256"])
def test_tls13_every_suite(srv, suite):
    """s_client picks the suite (Python's ssl cannot); two requests on one connection."""
    req = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    p = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{srv.tls_port}",
                        "-CAfile", str(srv.cert), "-ciphersuites", suite, "-quiet",
                        "-verify_return_error"],
                       input=req + req.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"),
                       capture_output=True, timeout=WAIT)
    assert p.stdout.count(b"HTTP/1.1 200 OK") == 2, (p.stdout, p.stderr)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_older_than_tls12_refused(srv):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1
    ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    try:
        ctx.set_ciphers("ALL:@SECLEVEL=0")
    except ssl.SSLError:
        pass
    with pytest.raises((ssl.SSLError, ConnectionError)):
        get(srv, ctx)
    harness.wait_event(srv, 1150, lambda e: True, "tls_failed")


def test_rsa_certificate(make_nudged, certs):
    cert, key = make_cert(certs, "rsa", key="rsa")
    n = make_nudged({"server": {"listen": "127.0.0.1:0, 127.0.0.1:0 tls"},
                     "tls": {"cert": str(cert), "key": str(key)}})
    n.tls_port = tls_port(n)
    for maxv in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        r, version, cipher, _ = get(n, client_ctx(cert, maximum_version=maxv))
        assert r.status == 200, r
        assert version == maxv.name.replace("_", "."), version


# ---- records ------------------------------------------------------------------


@pytest.mark.parametrize("maxv", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_keepalive_pipelining_and_big_bodies(srv, maxv):
    ctx = client_ctx(srv.cert, maximum_version=maxv)
    alice = srv.user("alice")
    c = TlsConn(srv.tls_port, ctx)
    try:
        for _ in range(3):
            assert c.request("GET", "/healthz").status == 200
        # Two requests in one write: one record holding both.
        c.send(harness.build_request("GET", "/healthz") * 2)
        assert c.read_response().status == 200
        assert c.read_response().status == 200
        # A body over several records (the record limit is 16 KiB).
        folders = {f"folder-{i:04d}-" + "x" * 200: "7" for i in range(90)}  # not current: answered at once
        body = harness.encode_body(harness.ping_body("phone", folders, 60))
        assert len(body) > 16384
        r = c.request("POST", "/v1/ping", body, token=alice.token)
        assert r.status in (200, 400), r  # read whole and answered, whatever about long names
        assert c.request("GET", "/healthz").status == 200  # and the records after it too
    finally:
        c.close()


def test_records_split_anywhere(srv):
    """Ciphertext dribbled one byte at a time still opens (incomplete records are kept)."""
    ctx = client_ctx(srv.cert)
    inb, outb = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inb, outb, server_hostname="localhost")
    s = socket.create_connection(("127.0.0.1", srv.tls_port), timeout=WAIT)

    def pump_out(one_byte):
        data = outb.read()
        if one_byte:
            for i in range(len(data)):
                s.sendall(data[i:i + 1])
                time.sleep(0.0005)
        else:
            s.sendall(data)

    while True:
        try:
            obj.do_handshake()
            break
        except ssl.SSLWantReadError:
            pump_out(True)
            inb.write(s.recv(65536))
    pump_out(True)
    obj.write(harness.build_request("GET", "/healthz"))
    pump_out(True)
    got = b""
    deadline = time.monotonic() + WAIT
    while b"\r\n\r\n" not in got and time.monotonic() < deadline:
        try:
            got += obj.read(65536)
        except ssl.SSLWantReadError:
            inb.write(s.recv(65536))
    s.close()
    assert got.startswith(b"HTTP/1.1 200 OK"), got


def test_key_update_from_the_client(srv):
    """s_client's K asks nudged to update its key too, k only the client's."""
    req = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    out_path = srv.dir / "s_client.out"
    with open(out_path, "wb") as out_f:
        p = subprocess.Popen(["openssl", "s_client", "-connect", f"127.0.0.1:{srv.tls_port}",
                              "-CAfile", str(srv.cert), "-tls1_3"],
                             stdin=subprocess.PIPE, stdout=out_f, stderr=subprocess.STDOUT)
        try:
            for line in (req, b"K\n", req, b"k\n", req):
                p.stdin.write(line)
                p.stdin.flush()
                # Each answer before the next line: s_client reads commands only between them.
                deadline = time.monotonic() + WAIT
                want = out_path.read_bytes().count(b"HTTP/1.1 200 OK") + (line == req)
                while out_path.read_bytes().count(b"HTTP/1.1 200 OK") < want and \
                        time.monotonic() < deadline:
                    time.sleep(0.05)
                time.sleep(0.2)
            p.stdin.close()
            p.wait(timeout=WAIT)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
    out = out_path.read_bytes()
    assert out.count(b"HTTP/1.1 200 OK") == 3, out
    assert out.count(b"KEYUPDATE") == 2, out


def test_close_notify_before_the_fin(srv):
    """A Connection: close answer ends with close_notify: unwrap() succeeds."""
    c = TlsConn(srv.tls_port, client_ctx(srv.cert))
    try:
        r = c.request("GET", "/healthz", headers={"Connection": "close"})
        assert r.status == 200
        c.sock.settimeout(WAIT)
        assert c.sock.recv(100) == b""  # a clean TLS EOF, not a ragged one
    finally:
        c.close()


# ---- pushes -------------------------------------------------------------------


def test_held_pings_over_tls_answered_by_publish(srv):
    ctx = client_ctx(srv.cert)
    users = [srv.user(f"u{i}") for i in range(USER_COUNT)]
    conns = []
    for u in users:
        c = TlsConn(srv.tls_port, ctx)
        c.send_request("POST", "/v1/ping", harness.ping_body("phone", u.states(["INBOX"]), 60),
                       token=u.token)
        conns.append(c)
    srv.wait_held(USER_COUNT)  # every one is held: none answers before its publish
    for u, c in zip(users, conns):
        state = u.publish("INBOX")
        r = c.read_response()
        assert r.status == 200 and r.json()["status"] == "changed", r
        assert r.json()["folders"]["INBOX"] == state, r
        c.close()
    if int(srv.setting("server", "workers")) > 1:
        m = harness.parse_metrics(srv.request("GET", "/metrics",
                                              token=srv.admin_token()).body.decode())
        assert m.get("nudge_tls_handshakes_total", 0) >= USER_COUNT, m
        # Some users live in another worker than the acceptor: their connections moved, keys and all.
        moved = sum(v for k, v in m.items() if k.startswith("nudge_worker_handoffs_sent_total"))
        assert moved > 0, m


def test_stream_over_tls(srv):
    alice = srv.user("alice")
    c = TlsConn(srv.tls_port, client_ctx(srv.cert))
    try:
        c.send(harness.build_request("GET", "/v1/stream?device=tab", token=alice.token,
                                     headers={"Accept": "text/event-stream"}))
        status, _, _ = harness.peek_head(c)
        assert status == 200
        state = alice.publish("INBOX")
        deadline = time.monotonic() + WAIT
        while f'"INBOX":"{state}"'.encode() not in c.buf and time.monotonic() < deadline:
            c.sock.settimeout(deadline - time.monotonic())
            c.buf += c.sock.recv(65536)
        assert f'"INBOX":"{state}"'.encode() in c.buf, c.buf
    finally:
        c.close()


# ---- resumption -----------------------------------------------------------------


@pytest.mark.parametrize("maxv", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_resumption_with_a_ticket(srv, maxv):
    ctx = client_ctx(srv.cert, maximum_version=maxv)
    c = TlsConn(srv.tls_port, ctx)
    assert c.request("GET", "/healthz").status == 200  # TLS 1.3 tickets arrive after the handshake
    session = c.sock.session
    c.close()
    assert session is not None and session.has_ticket
    for _ in range(3):
        c = TlsConn(srv.tls_port, ctx, session=session)
        assert c.request("GET", "/healthz").status == 200
        assert c.sock.session_reused
        session = c.sock.session
        c.close()


def test_ticket_of_another_nudged_is_not_resumed(srv, make_nudged, certs):
    """Tickets are keyed from the server secret: another secret means a full handshake."""
    other = make_nudged({"server": {"listen": "127.0.0.1:0, 127.0.0.1:0 tls"},
                         "tls": {"cert": str(srv.cert), "key": str(srv.cert.with_suffix(".key"))}})
    other.tls_port = tls_port(other)
    ctx = client_ctx(srv.cert)
    c = TlsConn(srv.tls_port, ctx)
    assert c.request("GET", "/healthz").status == 200
    session = c.sock.session
    c.close()
    c = TlsConn(other.tls_port, ctx, session=session)
    assert c.request("GET", "/healthz").status == 200
    assert not c.sock.session_reused
    c.close()


# ---- reload --------------------------------------------------------------------


def test_reload_changes_certificate_and_keeps_held_pings(srv, certs):
    alice = srv.user("alice")
    ctx = client_ctx(srv.cert)
    c = TlsConn(srv.tls_port, ctx)
    c.send_request("POST", "/v1/ping", harness.ping_body("phone", alice.states(["INBOX"]), 60),
                   token=alice.token)
    srv.wait_held(1)
    # New files at the same paths, as a certificate renewal writes them.
    new_cert, new_key = make_cert(certs, "renewed", cn="renewed.example")
    os.replace(new_key, srv.cert.with_suffix(".key"))
    os.replace(new_cert, srv.cert)
    srv.send_signal(signal.SIGHUP)
    # Every worker reloads on its own; wait for all of them.
    workers = int(srv.setting("server", "workers"))
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        done = [e for e in harness.log_events(srv, 1151) if "renewed.example" in e.get("subject", "")]
        if len(done) >= workers:
            break
        time.sleep(0.1)
    assert len(done) >= workers, srv.log_tail()
    # New handshakes see the new certificate (trusted now by its own file).
    c2 = TlsConn(srv.tls_port, client_ctx(srv.cert))
    assert "renewed.example" in str(c2.sock.getpeercert()["subject"])
    c2.close()
    # The held ping survived the reload and is answered over its old keys.
    state = alice.publish("INBOX")
    r = c.read_response()
    assert r.status == 200 and r.json()["folders"]["INBOX"] == state, r
    c.close()


def test_reload_with_a_broken_key_keeps_the_old_one(srv):
    srv.cert.with_suffix(".key").write_text("not a key\n")
    srv.send_signal(signal.SIGHUP)
    harness.wait_event(srv, 1009, lambda e: "[tls] key" in e.get("reason", ""), "reload_failed")
    r, _, _, _ = get(srv, client_ctx(srv.cert))
    assert r.status == 200


# ---- refusals --------------------------------------------------------------------


def test_garbage_and_plain_http_are_closed(srv):
    for data in (b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", b"\x16\x03\x01\x00\x05hello",
                 b"\x17\x03\x03\x00\x10" + b"\x00" * 16):
        s = socket.create_connection(("127.0.0.1", srv.tls_port), timeout=WAIT)
        s.sendall(data)
        got = b""
        try:
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                got += chunk
        except ConnectionResetError:
            pass
        s.close()
        assert b"HTTP/1.1" not in got, got  # nothing answered in clear
    harness.wait_event(srv, 1150, lambda e: True, "tls_failed")


def test_client_that_distrusts_the_certificate(srv, certs):
    other, _ = make_cert(certs, "other", cn="someone-else")
    with pytest.raises(ssl.SSLCertVerificationError):
        get(srv, client_ctx(other))
    # The server saw the client's alert and closed; it still serves others.
    assert get(srv, client_ctx(srv.cert))[0].status == 200


def test_tls_flag_without_cert_refuses_to_start(make_nudged):
    n = make_nudged({"server": {"listen": "127.0.0.1:0 tls"}}, start=False)
    with pytest.raises(AssertionError):
        n.start(timeout=10)
    assert "[tls] cert" in n.log_text()


def test_unreadable_key_names_the_file(make_nudged, certs):
    cert, _ = make_cert(certs, "server")
    n = make_nudged({"server": {"listen": "127.0.0.1:0 tls"},
                     "tls": {"cert": str(cert), "key": str(certs / "missing.key")}}, start=False)
    with pytest.raises(AssertionError):
        n.start(timeout=10)
    assert "missing.key" in n.log_text()


# ---- the login cookie ----------------------------------------------------------


def test_login_cookie_is_secure_over_tls_only(make_nudged, certs):
    """[auth] cookie_secure = auto: Secure on the tls listener, not on the plain one."""
    import base64
    from test_browser_auth import PASSWORD, write_passwd
    cert, key = make_cert(certs, "server")
    pf = certs / "passwd"
    write_passwd(pf, ["carol"])
    n = make_nudged({"server": {"listen": "127.0.0.1:0, 127.0.0.1:0 tls"},
                     "tls": {"cert": str(cert), "key": str(key)},
                     "auth": {"passwords": f"passwd-file:{pf}"}})
    n.tls_port = tls_port(n)
    auth = {"Authorization": "Basic " + base64.b64encode(f"carol:{PASSWORD}".encode()).decode()}
    c = TlsConn(n.tls_port, client_ctx(cert))
    r = c.request("POST", "/v1/login", headers=auth)
    c.close()
    assert r.status == 200, r
    assert r.header("Set-Cookie").endswith("; Secure"), r
    r = n.request("POST", "/v1/login", headers=auth)
    assert r.status == 200 and not r.header("Set-Cookie").endswith("; Secure"), r
