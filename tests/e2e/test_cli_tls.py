"""
test_cli_tls.py — the nudge client over TLS (https:// URLs), against a real
nginx terminating TLS on loopback in front of a real nudged (plain HTTP
behind it), so every request gets nudged's real answer.

The certificates are made here with the openssl CLI: a test CA; a server
certificate for 127.0.0.1 and localhost; one that expired; one for another
host name; one that expires in 5 days; a self-signed one. nginx listens on
one port per certificate. Checked: verified with --cacert (publish, ping,
sessions, doctor), refused without it (unknown issuer), refused when
expired and for the wrong host (exit 3, the sentence naming what failed
and the subject), --insecure works and warns, doctor's TLS report
(protocol, cipher, ALPN, chain, expiry, host name, resumption). Then the
same against nudged's own TLS (a listener with the tls flag): publish, ping,
a refusal, and doctor's report of the chain nudged sends and of resumption
with its tickets. Also: listen's registration, token --revoke and probe
over TLS, and a server that speaks only TLS 1.0/1.1 (Python's ssl) refused.
"""
import os
import shutil
import signal
import socket
import subprocess

import pytest

import harness
from conftest import finish

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"
pytestmark = [
    pytest.mark.skipif(not os.access(NGINX, os.X_OK), reason="nginx not installed (apt-get install nginx)"),
    pytest.mark.skipif(not os.access(OPENSSL, os.X_OK), reason="openssl CLI not installed"),
]

EXIT_TLS = 3
KINDS = ("good", "expired", "wronghost", "soon", "selfsigned", "notickets", "tls12")
# "notickets": the good certificate on a server with neither tickets nor a session cache;
# "tls12": the good certificate on a server that speaks TLS 1.2 only.

CONF = """
worker_processes 1;
daemon off;
master_process on;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {tmp}/access.log;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    upstream nudge {{ server 127.0.0.1:{nudge}; }}
{servers}
}}
"""

SERVER = """
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols {protocols};
        ssl_session_tickets {tickets};
        location / {{
            proxy_pass http://nudge;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_read_timeout 120s;
        }}
    }}
"""


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def openssl(*args, cwd):
    p = subprocess.run([OPENSSL, *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, f"openssl {args}: {p.stderr}"


def make_certs(d):
    """The CA and the server certificates of KINDS; returns {kind: (cert, key)} and the CA path."""
    d.mkdir()
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "30",
            "-subj", "/CN=nudge test CA", cwd=d)
    (d / "ca.cnf").write_text(
        "[ca]\ndefault_ca = test\n"
        "[test]\ndatabase = index.txt\nnew_certs_dir = .\nserial = serial\n"
        "default_md = sha256\npolicy = any\ncopy_extensions = copy\n"
        "[any]\ncommonName = supplied\n")
    (d / "index.txt").write_text("")
    (d / "serial").write_text("1000\n")
    out = {}
    sans = {"good": "IP:127.0.0.1,DNS:localhost", "expired": "IP:127.0.0.1,DNS:localhost",
            "wronghost": "DNS:wrong.example", "soon": "IP:127.0.0.1,DNS:localhost"}
    for kind, san in sans.items():
        openssl("req", *ec, "-keyout", f"{kind}.key", "-out", f"{kind}.csr", "-subj",
                f"/CN={kind}.nudge.test", "-addext", f"subjectAltName={san}", cwd=d)
        dates = {"expired": ["-startdate", "20200101000000Z", "-enddate", "20200201000000Z"],
                 "soon": ["-days", "5"]}.get(kind, ["-days", "20"])
        openssl("ca", "-batch", "-config", "ca.cnf", "-cert", "ca.pem", "-keyfile", "ca.key",
                "-in", f"{kind}.csr", "-out", f"{kind}.pem", "-notext", *dates, cwd=d)
        out[kind] = (d / f"{kind}.pem", d / f"{kind}.key")
    openssl("req", "-x509", *ec, "-keyout", "selfsigned.key", "-out", "selfsigned.pem", "-days", "20",
            "-subj", "/CN=selfsigned.nudge.test", "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost", cwd=d)
    out["selfsigned"] = (d / "selfsigned.pem", d / "selfsigned.key")
    return out, d / "ca.pem"


class Stack:
    pass


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("clitls")
    certs, ca = make_certs(tmp / "certs")
    n = harness.Nudged(tmp / "nudged", {"heartbeat": {"min": 1, "max": 60}})
    ng = None
    try:
        n.start()
        ngx = tmp / "nginx"
        ngx.mkdir()
        ports = {k: free_port() for k in KINDS}
        certs["notickets"] = certs["tls12"] = certs["good"]
        servers = "".join(SERVER.format(port=ports[k], cert=certs[k][0], key=certs[k][1],
                                        tickets="off" if k == "notickets" else "on",
                                        protocols="TLSv1.2" if k == "tls12" else "TLSv1.2 TLSv1.3")
                          for k in KINDS)
        (ngx / "nginx.conf").write_text(CONF.format(tmp=ngx, nudge=n.port, servers=servers))
        ng = subprocess.Popen([NGINX, "-p", str(ngx), "-c", str(ngx / "nginx.conf")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for k in KINDS:
            harness_wait_port(ports[k], ng)
        s = Stack()
        s.n, s.ca, s.certs, s.ports = n, str(ca), certs, ports
        s.selfsigned = str(certs["selfsigned"][0])
        yield s
    finally:
        if ng is not None and ng.poll() is None:
            ng.send_signal(signal.SIGQUIT)
            try:
                ng.wait(harness.WAIT)
            except subprocess.TimeoutExpired:
                ng.kill()
                ng.wait()
        problems = finish(n)
        if problems:
            pytest.fail("\n".join(problems), pytrace=False)


def harness_wait_port(port, proc):
    import time
    deadline = time.monotonic() + harness.WAIT
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"nginx exited: {proc.stderr.read().decode()}"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nginx did not listen on {port}")


def url(stack, kind, host="127.0.0.1"):
    return f"https://{host}:{stack.ports[kind]}"


def publish(stack, kind, *extra, user=None, host="127.0.0.1"):
    user = user or harness.unique("tls")
    return stack.n.cli("publish", "--user", user, "--folder", "INBOX", "--url", url(stack, kind, host),
                       "--token", stack.n.publisher_token(), *extra), user


# -- verified ------------------------------------------------------------------

def test_publish_verified_with_cacert(stack):
    p, user = publish(stack, "good", "--cacert", stack.ca)
    assert p.returncode == 0, p
    assert p.stdout == f"user={user} folder=INBOX state=1\n", p
    assert p.stderr == "", p
    # The same through the host name, which also goes out as SNI.
    p, user = publish(stack, "good", "--cacert", stack.ca, host="localhost")
    assert p.returncode == 0 and p.stdout == f"user={user} folder=INBOX state=1\n", p


def test_cacert_from_environment(stack):
    user = harness.unique("tls")
    p = stack.n.cli("publish", "--user", user, "--folder", "INBOX", "--url", url(stack, "good"),
                    "--token", stack.n.publisher_token(), env={"NUDGE_CACERT": stack.ca})
    assert p.returncode == 0 and p.stdout == f"user={user} folder=INBOX state=1\n", p


def test_ping_and_sessions_over_tls(stack):
    user = harness.unique("tls")
    tok = stack.n.token(user)
    stack.n.cli("publish", "--user", user, "--folder", "INBOX", "--url", stack.n.url,
                "--token", stack.n.publisher_token())
    p = stack.n.cli("ping", "--device", "phone1", "--heartbeat", "60", "--folder", "INBOX=0",
                    "--url", url(stack, "good"), "--cacert", stack.ca, "--token", tok)
    assert p.returncode == 0, p
    assert p.stdout.startswith("changed INBOX=1"), p
    p = stack.n.cli("sessions", "--url", url(stack, "good"), "--cacert", stack.ca,
                    "--token", stack.n.admin_token())
    assert p.returncode == 0, p


def test_self_signed_trusted_with_cacert(stack):
    p, user = publish(stack, "selfsigned", "--cacert", stack.selfsigned)
    assert p.returncode == 0 and p.stdout == f"user={user} folder=INBOX state=1\n", p


# -- refused -------------------------------------------------------------------

def test_unknown_issuer_refused_without_cacert(stack):
    p, user = publish(stack, "good")
    assert p.returncode == EXIT_TLS, p
    assert "unknown issuer" in p.stderr and "CN=good.nudge.test" in p.stderr, p.stderr
    assert "--cacert" in p.stderr, p.stderr
    assert p.stdout == "", p


def test_self_signed_refused_without_cacert(stack):
    p, _ = publish(stack, "selfsigned", "--cacert", stack.ca)
    assert p.returncode == EXIT_TLS, p
    assert "unknown issuer" in p.stderr and "CN=selfsigned.nudge.test" in p.stderr, p.stderr


def test_expired_refused(stack):
    p, _ = publish(stack, "expired", "--cacert", stack.ca)
    assert p.returncode == EXIT_TLS, p
    assert "certificate has expired" in p.stderr, p.stderr
    assert "CN=expired.nudge.test" in p.stderr and "2020-02-01" in p.stderr, p.stderr


def test_wrong_host_refused(stack):
    p, _ = publish(stack, "wronghost", "--cacert", stack.ca)
    assert p.returncode == EXIT_TLS, p
    assert "host name mismatch" in p.stderr and "127.0.0.1" in p.stderr, p.stderr
    assert "CN=wronghost.nudge.test" in p.stderr, p.stderr
    # A name, not an address: checked against the DNS names.
    p, _ = publish(stack, "wronghost", "--cacert", stack.ca, host="localhost")
    assert p.returncode == EXIT_TLS and "host name mismatch" in p.stderr, p


def test_refused_certificate_nothing_reaches_nudged(stack):
    p, user = publish(stack, "expired", "--cacert", stack.ca)
    assert p.returncode == EXIT_TLS, p
    tok = stack.n.token(user)
    assert stack.n.get_state(tok, ["INBOX"]).json()["folders"].get("INBOX", "0") == "0"


def test_insecure_skips_verification_and_warns(stack):
    for kind in ("good", "expired", "wronghost", "selfsigned"):
        p, user = publish(stack, kind, "--insecure")
        assert p.returncode == 0, (kind, p)
        assert p.stdout == f"user={user} folder=INBOX state=1\n", (kind, p)
        assert "warning" in p.stderr and "--insecure" in p.stderr, (kind, p.stderr)


def test_bad_cacert_is_a_usage_error(stack, tmp_path):
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    p, _ = publish(stack, "good", "--cacert", str(junk))
    assert p.returncode == 2 and "--cacert" in p.stderr, p
    p, _ = publish(stack, "good", "--cacert", stack.ca, "--insecure")
    assert p.returncode == 2, p


def test_plain_http_port_with_https_url(stack):
    # nudged itself speaks plain HTTP: the handshake fails, an ordinary network failure.
    p = stack.n.cli("publish", "--user", "x", "--folder", "INBOX",
                    "--url", f"https://127.0.0.1:{stack.n.port}", "--cacert", stack.ca,
                    "--token", stack.n.publisher_token())
    assert p.returncode == 1, p
    assert "TLS handshake" in p.stderr and "plain http:// port" in p.stderr, p.stderr


def test_tls_below_1_2_is_refused(stack, tmp_path):
    # A real TLS server (Python's ssl, on OpenSSL) that speaks TLS 1.0 and 1.1 only.
    import ssl
    import threading
    import warnings
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    ctx.load_cert_chain(*stack.certs["good"])
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen()
    seen = []

    def serve():
        c, _ = ls.accept()
        try:
            ctx.wrap_socket(c, server_side=True)
        except (ssl.SSLError, OSError) as e:
            seen.append(str(e))
        finally:
            c.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        p = stack.n.cli("publish", "--user", "u", "--folder", "INBOX", "--cacert", stack.ca,
                        "--url", f"https://127.0.0.1:{ls.getsockname()[1]}", "--token", "x")
        t.join(harness.WAIT)
    finally:
        ls.close()
    assert p.returncode == 1, p
    assert "TLS 1.2 and 1.3 only" in p.stderr, p.stderr
    assert seen and "unsupported protocol" in seen[0].lower(), seen


# -- doctor --------------------------------------------------------------------

def doctor(stack, kind, *extra, host="127.0.0.1"):
    user = harness.unique("doc")
    return stack.n.cli("doctor", "--url", url(stack, kind, host), "--token", stack.n.token(user),
                       "--udp-timeout", "1", *extra, timeout=60)


def lines_of(p, prefix):
    return [ln for ln in p.stdout.splitlines() if ln[5:].startswith(prefix)]


def test_doctor_reports_tls(stack):
    p = doctor(stack, "good", "--cacert", stack.ca)
    server = lines_of(p, "server:")
    assert len(server) == 1 and server[0].startswith("OK ") and "(TLS)" in server[0], p.stdout
    tls = lines_of(p, "TLS:")
    assert len(tls) == 1 and tls[0].startswith("OK "), p.stdout
    assert "TLSv1.3" in tls[0] and "cipher TLS_" in tls[0] and "ALPN http/1.1" in tls[0], tls
    certs = lines_of(p, "certificate ")
    assert len(certs) == 1, p.stdout  # nginx sends the leaf only: the CA is the client's
    assert certs[0].startswith("OK ") and "subject CN=good.nudge.test" in certs[0], certs
    assert "issuer CN=nudge test CA" in certs[0] and "not after" in certs[0], certs
    assert "days left" in certs[0], certs
    assert lines_of(p, "chain:")[0].startswith("OK ") and stack.ca in lines_of(p, "chain:")[0], p.stdout
    assert lines_of(p, "host name:")[0].startswith("OK "), p.stdout
    res = lines_of(p, "resumption:")
    assert len(res) == 1 and res[0].startswith("OK "), p.stdout
    assert "session ticket" in res[0] and "resumed" in res[0], res
    # The rest of the checks ran over TLS too.
    assert lines_of(p, "token:")[0].startswith("OK "), p.stdout
    assert lines_of(p, "ping:")[0].startswith("OK "), p.stdout


def test_doctor_warns_when_nothing_resumes(stack):
    p = doctor(stack, "notickets", "--cacert", stack.ca)
    res = lines_of(p, "resumption:")
    # TLS 1.3 still hands out a ticket the server then cannot take back: WARN either way.
    assert res and res[0].startswith("WARN ") and "full handshake" in res[0], p.stdout
    assert p.returncode == 0, p


def test_doctor_over_tls12_resumes_with_a_ticket(stack):
    p = doctor(stack, "tls12", "--cacert", stack.ca)
    tls = lines_of(p, "TLS:")
    assert tls and tls[0].startswith("OK ") and "TLSv1.2" in tls[0] and "ALPN http/1.1" in tls[0], p.stdout
    res = lines_of(p, "resumption:")
    assert res and res[0].startswith("OK ") and "session ticket" in res[0], p.stdout
    assert p.returncode == 0, p


def test_doctor_warns_of_near_expiry(stack):
    p = doctor(stack, "soon", "--cacert", stack.ca)
    cert = lines_of(p, "certificate 0:")
    assert cert and cert[0].startswith("WARN ") and "days left" in cert[0], p.stdout
    assert "renew" in cert[0], cert


def test_doctor_refused_certificate(stack):
    p = doctor(stack, "good")
    assert p.returncode == EXIT_TLS, p
    server = lines_of(p, "server:")
    assert server[0].startswith("FAIL ") and "unknown issuer" in server[0], p.stdout
    assert not lines_of(p, "token:"), p.stdout


def test_doctor_insecure_still_reports_what_is_wrong(stack):
    p = doctor(stack, "expired", "--insecure")
    assert p.returncode == 1, p
    assert lines_of(p, "certificate 0:")[0].startswith("FAIL ") and "expired" in p.stdout, p.stdout
    chain = lines_of(p, "chain:")
    assert chain[0].startswith("FAIL ") and "--insecure" in chain[0], p.stdout
    p = doctor(stack, "wronghost", "--insecure")
    host = lines_of(p, "host name:")
    assert host[0].startswith("FAIL ") and "does not name 127.0.0.1" in host[0], p.stdout
    assert lines_of(p, "certificate 0:")[0].startswith("OK "), p.stdout


def test_ping_loop_stops_at_a_refused_certificate(stack):
    # Retrying cannot fix a certificate: --loop stops at once with exit 3.
    user = harness.unique("tls")
    p = stack.n.cli("ping", "--device", "phone1", "--heartbeat", "60", "--folder", "INBOX",
                    "--loop", "--url", url(stack, "expired"), "--cacert", stack.ca,
                    "--token", stack.n.token(user))
    assert p.returncode == EXIT_TLS, p
    assert "certificate has expired" in p.stdout + p.stderr, p


# -- nudged's own TLS (the tls flag on a listener) -----------------------------

@pytest.fixture(scope="module")
def native(tmp_path_factory, stack):
    """A nudged listening with TLS itself, on the test CA's server certificate (chain: leaf, CA)."""
    tmp = tmp_path_factory.mktemp("native")
    cert, key = stack.certs["good"]
    chain = tmp / "chain.pem"
    chain.write_text(cert.read_text() + open(stack.ca).read())
    n = harness.Nudged(tmp / "nudged", {"server": {"listen": "127.0.0.1:0 tls"},
                                        "tls": {"cert": str(chain), "key": str(key)},
                                        "heartbeat": {"min": 1, "max": 60}})
    n.start()
    yield n
    problems = finish(n)
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


def test_native_publish_ping_and_refusals(native, stack):
    base = f"https://127.0.0.1:{native.port}"
    user = harness.unique("nat")
    p = native.cli("publish", "--user", user, "--folder", "INBOX", "--url", base, "--cacert", stack.ca,
                   "--token", native.publisher_token())
    assert p.returncode == 0 and p.stdout == f"user={user} folder=INBOX state=1\n", p
    p = native.cli("ping", "--device", "phone1", "--heartbeat", "60", "--folder", "INBOX=0",
                   "--url", base, "--cacert", stack.ca, "--token", native.token(user))
    assert p.returncode == 0 and p.stdout.startswith("changed INBOX=1"), p
    p = native.cli("publish", "--user", user, "--folder", "INBOX", "--url", base,
                   "--token", native.publisher_token())
    assert p.returncode == EXIT_TLS and "unknown issuer" in p.stderr, p
    p = native.cli("publish", "--user", user, "--folder", "INBOX", "--url",
                   f"https://localhost:{native.port}", "--cacert", stack.ca,
                   "--token", native.publisher_token())
    assert p.returncode == 0 and "state=2" in p.stdout, p


def test_native_doctor(native, stack):
    p = native.cli("doctor", "--url", f"https://127.0.0.1:{native.port}", "--cacert", stack.ca,
                   "--token", native.token(harness.unique("nat")), "--udp-timeout", "1", timeout=60)
    assert lines_of(p, "server:")[0].startswith("OK "), p.stdout
    tls = lines_of(p, "TLS:")[0]
    assert tls.startswith("OK ") and "TLSv1.3" in tls, p.stdout
    certs = lines_of(p, "certificate ")
    # nudged sends the whole chain of [tls] cert: the leaf, then the CA.
    assert len(certs) == 2, p.stdout
    assert "subject CN=good.nudge.test" in certs[0] and "subject CN=nudge test CA" in certs[1], certs
    assert lines_of(p, "host name:")[0].startswith("OK "), p.stdout
    # nudged keys its session tickets from the server secret: a second connection resumes.
    res = lines_of(p, "resumption:")[0]
    assert res.startswith("OK ") and "resumed" in res, p.stdout
    assert lines_of(p, "ping:")[0].startswith("OK "), p.stdout
    assert p.returncode == 0, p


# -- listen and token --revoke over TLS ----------------------------------------

def test_listen_registers_over_tls_and_gets_datagrams(stack):
    # Only the HTTP registration goes through TLS (nginx); the datagrams come straight from nudged.
    n = stack.n
    user = harness.unique("lis")
    p = n.cli_bg("listen", "--url", url(stack, "good"), "--cacert", stack.ca, "--token", n.token(user),
                 "--device", "desk", "--poll-interval", "1", "--count", "1")
    m, _ = harness.read_until(p, r"^registered (.*)$")
    fields = dict(kv.split("=", 1) for kv in m.group(1).split())
    assert int(fields["id"]) > 0, fields
    state = n.publish(user, "INBOX")
    harness.read_until(p, rf"^changed INBOX={state} via=udp")
    out, err = p.communicate(timeout=harness.WAIT)
    assert p.returncode == 0, (out, err)


def test_token_revoke_over_tls(stack):
    n = stack.n
    user = harness.unique("rev")
    p = n.cli("token", "--revoke", user, "--url", url(stack, "good"), "--cacert", stack.ca,
              "-c", str(n.conf))
    assert p.returncode == 0, p
    p = n.cli("token", "--revoke", user, "--url", url(stack, "good"), "-c", str(n.conf))
    assert p.returncode == EXIT_TLS and "unknown issuer" in p.stderr, p
    p = n.cli("token", "--user", user, "--cacert", stack.ca, "-c", str(n.conf))
    assert p.returncode == 2 and "--revoke" in p.stderr, p


# -- probe over TLS --------------------------------------------------------------

def test_probe_over_tls(stack):
    # Loopback forgets nothing: every hold up to --max survives, through TLS and nginx.
    user = harness.unique("prb")
    p = stack.n.cli("probe", "--url", url(stack, "good"), "--cacert", stack.ca,
                    "--token", stack.n.token(user), "--min", "1", "--max", "2", timeout=60)
    assert p.returncode == 0, p
    assert "probe 1 s: survived" in p.stdout and "probe 2 s: survived" in p.stdout, p.stdout
    p = stack.n.cli("probe", "--url", url(stack, "wronghost"), "--cacert", stack.ca,
                    "--token", stack.n.token(user), "--min", "1", "--max", "2", timeout=60)
    assert p.returncode == EXIT_TLS and "host name mismatch" in p.stderr, p
