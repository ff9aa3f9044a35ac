"""
test_activesync_nginx.py — a real nginx in front, as docs/activesync.md says
an operator deploys nudge: Cmd=Ping (both query forms) to nudged, every
other command to the existing ActiveSync server (here a stub: a Python
http.server thread that records what reached it). A held Ping through nginx
is answered by a publish; a FolderSync reaches the stub.

nginx runs as a non-daemon on loopback with its own prefix, config, pid, log
and temp paths in tmp_path; the test skips only when nginx is not installed.
"""
import http.server
import os
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest

import harness
import activesync as asx
from conftest import finish

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
pytestmark = [
    pytest.mark.skipif(not os.access(NGINX, os.X_OK), reason="nginx not installed (apt-get install nginx)"),
    pytest.mark.skipif(not asx.tools_present(), reason="libwbxml2-utils not installed"),
]

# The routing of docs/activesync.md: the plain form names the command in Cmd=;
# the base64 form (MS-ASHTTP 2.2.1.1.1.1) carries it in its second byte
# (18 = Ping) after the version byte, so in the base64 text the 2nd
# character holds the version's low 2 bits and the command's high nibble and
# the 3rd starts with the command's low nibble: for versions 2.5..16.1 and
# command 18 the query starts with one of GR eB eR jB jR oB oR, then I-L.
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

    # Plain queries as docs/activesync.md routes them: by $arg_Cmd.
    # Base64 queries (no Cmd): by the prefix above, which the docs leave to the
    # ActiveSync server; a plain map on $args is enough, no njs needed.
    map $args $as_b64 {{
        default                             activesync;
        "~^(GR|eB|eR|jB|jR|oB|oR)[IJKL]"    nudge;
    }}
    map $arg_Cmd $as_upstream {{
        default     activesync;
        "~*^ping$"  nudge;
        ""          $as_b64;
    }}
    upstream nudge      {{ server 127.0.0.1:{nudge}; }}
    upstream activesync {{ server 127.0.0.1:{stub}; }}

    server {{
        listen 127.0.0.1:{port};
        location /Microsoft-Server-ActiveSync {{
            proxy_pass http://$as_upstream;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_buffering off;
            # Longer than [heartbeat] max (60 below), so nginx never cuts a held Ping.
            proxy_read_timeout 120s;
            proxy_send_timeout 120s;
            client_max_body_size 1m;
        }}
    }}
}}
"""


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Stub(http.server.BaseHTTPRequestHandler):
    seen = []

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n)
        Stub.seen.append((self.path, body))
        self.send_response(200)
        self.send_header("Content-Type", asx.WBXML)
        self.send_header("Content-Length", "0")
        self.send_header("X-Stub", "activesync")
        self.end_headers()

    def log_message(self, *a):
        pass


@pytest.fixture
def stack(tmp_path, request):
    pf = tmp_path / "passwd"
    asx.passwd_file(pf, {"ann": "pw-ann"})
    n = harness.Nudged(tmp_path / "nudged", {"auth": {"passwords": f"passwd-file:{pf}"},
                                              "heartbeat": {"min": 2, "max": 60}})
    stub = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    threading.Thread(target=stub.serve_forever, daemon=True).start()
    ng = {"proc": None}

    def teardown():
        if ng["proc"] is not None and ng["proc"].poll() is None:
            ng["proc"].send_signal(signal.SIGQUIT)  # graceful; a held Ping is long closed
            try:
                ng["proc"].wait(harness.WAIT)
            except subprocess.TimeoutExpired:
                ng["proc"].kill()
                ng["proc"].wait()
        stub.shutdown()
        stub.server_close()
        problems = finish(n)
        if problems:
            pytest.fail("\n".join(problems), pytrace=False)

    request.addfinalizer(teardown)
    n.start()
    ngx = tmp_path / "nginx"
    ngx.mkdir()
    port = free_port()
    (ngx / "nginx.conf").write_text(CONF.format(tmp=ngx, nudge=n.port, stub=stub.server_address[1], port=port))
    log = open(ngx / "stderr.log", "wb")
    ng["proc"] = subprocess.Popen([NGINX, "-p", str(ngx), "-c", str(ngx / "nginx.conf")],
                                  stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + harness.WAIT
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if ng["proc"].poll() is not None or time.monotonic() > deadline:
                err = (ngx / "error.log").read_text() if (ngx / "error.log").exists() else ""
                raise AssertionError("nginx did not start: " + (ngx / "stderr.log").read_text() + err)
            time.sleep(0.05)

    class Front:
        """What a Device needs of a server, pointing its HTTP at nginx."""
        def __init__(self):
            self.port = port

        def request(self, *a, **kw):
            return harness.Nudged.request(self, *a, **kw)

        def pending(self, *a, **kw):
            return harness.Nudged.pending(self, *a, **kw)

        def connect(self, timeout=harness.WAIT):
            return harness.Conn(self.port, timeout)

    Stub.seen = []
    return n, Front(), asx.Device(Front(), "ann", "pw-ann")


def test_held_ping_through_nginx_answered_by_a_publish(stack):
    n, front, dev = stack
    p = dev.ping_async(heartbeat=50)
    n.wait_held(1, watch=[p])
    n.publish("ann", "INBOX")
    a = asx.Answer(p.result())
    assert a.status == 2 and a.folders == ["INBOX"], a
    assert Stub.seen == [], Stub.seen


def test_base64_ping_through_nginx_reaches_nudge(stack):
    n, front, dev = stack
    p = dev.send_async(asx.ping_wbxml(50), query=asx.b64_query(dev.device, version=141))
    n.wait_held(1, watch=[p])
    n.publish("ann", "INBOX")
    a = asx.Answer(p.result())
    assert a.status == 2 and a.folders == ["INBOX"], a
    assert Stub.seen == []


def test_other_commands_reach_the_activesync_server(stack):
    n, front, dev = stack
    body = asx.file_wbxml("foldersync.xml")
    r = dev.send(body, query=asx.plain_query("ann", dev.device, cmd="FolderSync"))
    assert r.status == 200 and r.header("X-Stub") == "activesync", r
    assert len(Stub.seen) == 1 and "Cmd=FolderSync" in Stub.seen[0][0] and Stub.seen[0][1] == body, Stub.seen
    # The base64 form of a Sync (command code 0) goes to the stub as well.
    r = dev.send(body, query=asx.b64_query(dev.device, cmd=0))
    assert r.status == 200 and r.header("X-Stub") == "activesync", r
    assert len(Stub.seen) == 2
    assert n.held() == 0
