"""The nudge client: publish, ping (one-shot and --loop), token, usage errors."""
import hashlib
import hmac
import os
import queue
import re
import socket
import subprocess
import threading
import time

import pytest

import harness
from harness import WAIT, b64url_decode


class BackgroundCli:
    """A nudge process whose stdout lines are collected as they are flushed."""

    def __init__(self, srv, *args, env=None):
        full_env = dict(os.environ)
        full_env.pop("NUDGE_URL", None)
        full_env.pop("NUDGE_TOKEN", None)
        full_env.update(env or {})
        self.srv = srv
        self.args = args
        self.proc = subprocess.Popen([harness.nudge_path(), *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=full_env)
        self.lines = queue.Queue()
        self.seen = []
        self.stderr = ""
        self._out = threading.Thread(target=self._read_out, daemon=True)
        self._err = threading.Thread(target=self._read_err, daemon=True)
        self._out.start()
        self._err.start()
        harness.LIVE.append(self)

    def _read_out(self):
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def _read_err(self):
        self.stderr = self.proc.stderr.read()

    def line(self, timeout=WAIT):
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"nudge {self.args} printed nothing within {timeout}s; so far {self.seen}") from None
        assert line is not None, f"nudge exited ({self.proc.poll()}) after {self.seen}; stderr {self.stderr!r}"
        self.seen.append(line)
        return line

    def wait(self, timeout=WAIT):
        code = self.proc.wait(timeout)
        self._err.join(5)
        self.srv._note_cli_stderr(self.stderr)
        return code

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def outcome(line):
    """'changed INBOX=18 heartbeat_hint=480' -> ('changed', {'INBOX': '18', 'heartbeat_hint': '480'})."""
    words = line.split()
    assert words, f"empty output line {line!r}"
    fields = {}
    for w in words[1:]:
        assert "=" in w, f"not key=value: {w!r} in {line!r}"
        k, v = w.split("=", 1)
        fields[k] = v
    return words[0], fields


def check_hint(srv, fields, line):
    hint = fields.pop("heartbeat_hint", None)
    assert hint is not None and hint.isdigit(), f"no heartbeat_hint in {line!r}"
    assert srv.hb_min <= int(hint) <= srv.hb_max, line


def wait_held_or_output(srv, cli, n):
    """Waits until n pings are held; a CLI that prints or exits first fails."""
    deadline = time.monotonic() + WAIT
    while srv.held() != n:
        if not cli.lines.empty() or cli.proc.poll() is not None:
            extra = []
            while not cli.lines.empty():
                extra.append(cli.lines.get())
            raise AssertionError(f"nudge answered before being held: {cli.seen + extra}; stderr {cli.stderr!r}")
        assert time.monotonic() < deadline, f"held gauge never reached {n}\n{srv.log_tail()}"
        time.sleep(0.05)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# -- publish -----------------------------------------------------------------

def test_publish_prints_new_state(srv):
    alice = srv.user("alice")
    tok = srv.publisher_token()
    for i in (1, 2):
        p = srv.cli("publish", "--user", alice.name, "--folder", "INBOX", "--url", srv.url, "--token", tok)
        assert p.returncode == 0, p
        assert p.stdout == f"user={alice.name} folder=INBOX state={i}\n", p
    p = srv.cli("publish", "--user", alice.name, "--folder", "Calendar", "--type", "mailbox-create",
                "--url", srv.url, "--token", tok)
    assert p.returncode == 0 and p.stdout == f"user={alice.name} folder=Calendar state=1\n", p
    assert alice.states() == {"INBOX": "2", "Calendar": "1"}


def test_publish_reads_url_and_token_from_environment(srv):
    alice = srv.user("alice")
    p = srv.cli("publish", "--user", alice.name, "--folder", "INBOX",
                env={"NUDGE_URL": srv.url, "NUDGE_TOKEN": srv.publisher_token()})
    assert p.returncode == 0, p
    assert p.stdout == f"user={alice.name} folder=INBOX state=1\n", p


def test_publish_refused_exits_nonzero(srv):
    alice = srv.user("alice")
    # A user token may not publish: the server says 403 and nudge says so.
    p = srv.cli("publish", "--user", alice.name, "--folder", "INBOX", "--url", srv.url, "--token", alice.token)
    assert p.returncode not in (0, 2) and p.returncode > 0, p
    assert "state=" not in p.stdout, p
    assert alice.states(["INBOX"]) == {"INBOX": "0"}


def test_publish_to_unreachable_server_fails_cleanly(srv):
    p = srv.cli("publish", "--user", "alice", "--folder", "INBOX", "--url", f"http://127.0.0.1:{free_port()}",
                "--token", srv.publisher_token())
    assert p.returncode > 0 and p.returncode != 2, p
    assert p.stderr.strip() or p.stdout.startswith("error"), p


# -- ping --------------------------------------------------------------------

def test_ping_loop_reports_each_change(srv):
    alice = srv.user("alice")
    cli = BackgroundCli(srv, "ping", "--device", "phone1", "--heartbeat", "300", "--folder", "INBOX",
                        "--loop", "--count", "2", "--url", srv.url, "--token", alice.token)
    wait_held_or_output(srv, cli, 1)
    alice.publish("INBOX")
    line = cli.line()
    kind, fields = outcome(line)
    check_hint(srv, fields, line)
    assert (kind, fields) == ("changed", {"INBOX": "1"}), line
    # The loop pings again with the state it was told, so it is held again.
    wait_held_or_output(srv, cli, 1)
    alice.publish("INBOX")
    line = cli.line()
    kind, fields = outcome(line)
    check_hint(srv, fields, line)
    assert (kind, fields) == ("changed", {"INBOX": "2"}), line
    assert cli.wait() == 0, cli.stderr
    assert cli.lines.get(timeout=5) is None, "output after --count 2 answers"


def test_ping_expired(srv):
    alice = srv.user("alice")
    p = srv.cli("ping", "--device", "phone1", "--heartbeat", "1", "--folder", "INBOX",
                "--url", srv.url, "--token", alice.token)
    assert p.returncode == 0, p
    kind, fields = outcome(p.stdout.strip())
    check_hint(srv, fields, p.stdout)
    assert (kind, fields) == ("expired", {}), p.stdout


def test_ping_with_stale_states_prints_only_changed_folders(srv):
    alice = srv.user("alice")
    alice.publish("INBOX")
    alice.publish("INBOX")
    p = srv.cli("ping", "--device", "phone1", "--heartbeat", "300", "--folder", "INBOX=0",
                "--folder", "Calendar=0", "--url", srv.url, "--token", alice.token)
    assert p.returncode == 0, p
    assert p.stdout.count("\n") == 1, p
    kind, fields = outcome(p.stdout.strip())
    check_hint(srv, fields, p.stdout)
    assert (kind, fields) == ("changed", {"INBOX": "2"}), p.stdout


def test_ping_reads_url_and_token_from_environment(srv):
    alice = srv.user("alice")
    alice.publish("INBOX")
    p = srv.cli("ping", "--device", "phone1", "--heartbeat", "60", "--folder", "INBOX=0",
                env={"NUDGE_URL": srv.url, "NUDGE_TOKEN": alice.token})
    assert p.returncode == 0, p
    assert outcome(p.stdout.strip())[0] == "changed", p


def test_ping_superseded(srv):
    alice = srv.user("alice")
    cli = BackgroundCli(srv, "ping", "--device", "phone1", "--heartbeat", "300", "--folder", "INBOX",
                        "--url", srv.url, "--token", alice.token)
    wait_held_or_output(srv, cli, 1)
    newer = alice.ping_async("phone1", {"INBOX": "0"}, 300)
    line = cli.line()
    kind, fields = outcome(line)
    check_hint(srv, fields, line)
    assert (kind, fields) == ("superseded", {}), line
    cli.wait()
    srv.wait_held(1, watch=[newer])
    alice.publish("INBOX")
    srv.check_ping(newer.result(), "changed", {"INBOX": "1"})


def test_ping_empty_reuses_last_parameters(srv):
    alice = srv.user("alice")
    p = srv.cli("ping", "--device", "phone1", "--heartbeat", "1", "--folder", "INBOX",
                "--url", srv.url, "--token", alice.token)
    assert p.returncode == 0 and p.stdout.startswith("expired"), p
    cli = BackgroundCli(srv, "ping", "--device", "phone1", "--empty", "--url", srv.url, "--token", alice.token)
    line = cli.line()
    kind, fields = outcome(line)
    check_hint(srv, fields, line)
    assert (kind, fields) == ("expired", {}), line
    assert cli.wait() == 0


def test_ping_error_is_reported(srv):
    bad = harness.flip_mac_char(srv.token("alice"))
    p = srv.cli("ping", "--device", "phone1", "--heartbeat", "60", "--folder", "INBOX",
                "--url", srv.url, "--token", bad)
    assert p.returncode > 0 and p.returncode != 2, p
    assert p.stdout.startswith("error"), p


# -- token -------------------------------------------------------------------

def split_token(tok):
    parts = tok.split(".")
    assert len(parts) == 7 and parts[0] == "v2", tok
    return parts


def test_token_is_signed_with_the_server_secret(srv):
    before = int(time.time() * 1000)
    tok = srv.token("alice@example.com")
    v, kind, subj, exp, issued, kid, mac = split_token(tok)
    assert kind == "u"
    assert b64url_decode(subj) == b"alice@example.com"
    assert re.fullmatch(r"0|[1-9][0-9]*", exp), exp
    assert before - 1000 <= int(issued) <= int(time.time() * 1000) + 1000, issued
    assert kid == hashlib.sha256(srv.secret()).hexdigest()[:8]
    want = hmac.new(srv.secret(), f"{v}.{kind}.{subj}.{exp}.{issued}.{kid}".encode(),
                    hashlib.sha256).digest()
    assert b64url_decode(mac) == want
    assert "=" not in tok and "+" not in tok and "/" not in tok


def test_cli_tokens_work_for_their_endpoints(srv):
    alice = srv.user("alice")
    r = srv.publish_raw({"user": alice.name, "folder": "INBOX"}, token=srv.publisher_token())
    assert r.status == 200, r
    assert split_token(srv.publisher_token())[1] == "p"
    r = srv.request("GET", "/v1/state?folders=INBOX", token=alice.token)
    assert r.status == 200 and r.json() == {"folders": {"INBOX": "1"}}, r
    r = srv.request("GET", "/metrics", token=srv.admin_token())
    assert r.status == 200, r
    assert split_token(srv.admin_token())[1] == "a"


def test_token_ttl_sets_expiry(srv):
    p = srv.cli("token", "--user", "alice", "--ttl", "1h", "-c", str(srv.conf))
    assert p.returncode == 0, p
    exp = int(split_token(p.stdout.strip())[3])
    now = time.time()
    assert now + 3600 - 120 <= exp <= now + 3600 + 120, (exp, now)
    assert srv.request("GET", "/v1/state", token=p.stdout.strip()).status == 200


@pytest.mark.parametrize("args", [
    [],
    ["frobnicate"],
    ["publish", "--folder", "INBOX"],
    ["publish", "--user", "alice"],
    ["ping", "--heartbeat", "60", "--folder", "INBOX"],
    ["ping", "--device", "d", "--heartbeat", "soon", "--folder", "INBOX"],
    ["token"],
    ["token", "--user", "alice", "--ttl", "garbage"],
    ["token", "--user", "alice", "--no-such-flag"],
], ids=["no-args", "unknown-command", "publish-no-user", "publish-no-folder", "ping-no-device",
        "ping-bad-heartbeat", "token-no-kind", "token-bad-ttl", "unknown-flag"])
def test_bad_usage_exits_2(srv, args):
    env = {"NUDGE_URL": srv.url, "NUDGE_TOKEN": srv.publisher_token()}
    if args[:1] == ["token"]:
        args = args + ["-c", str(srv.conf)]
    p = srv.cli(*args, env=env)
    assert p.returncode == 2, p
    assert p.stderr.strip(), f"no usage message on stderr: {p!r}"
    assert "state=" not in p.stdout, p
