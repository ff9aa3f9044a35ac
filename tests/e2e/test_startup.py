"""Start-up: the secret file, refused configurations (src/common/config.h,
src/auth/secret.h, src/common/events.h)."""
import os
import stat
import subprocess

import harness
from harness import WAIT, expect_error


def run_nudged_expecting_refusal(tmp_path, conf_text):
    conf = tmp_path / "bad.conf"
    conf.write_text(conf_text)
    (tmp_path / "var").mkdir(exist_ok=True)
    p = subprocess.run([harness.nudged_path(), "-c", str(conf)], capture_output=True, text=True,
                       timeout=WAIT, stdin=subprocess.DEVNULL)
    if harness.SAN:
        found = [m for m in harness.SANITIZER_MARKERS if m in p.stderr]
        assert not found, p.stderr
    return conf, p


def test_first_start_creates_a_private_secret(make_nudged):
    srv = make_nudged()
    path = srv.secret_path()
    mode = stat.S_IMODE(os.stat(path).st_mode)
    assert mode & 0o077 == 0, oct(mode)
    text = path.read_text()
    assert len(text.strip()) == 64 and text.endswith("\n"), text
    srv.secret()  # 64 hex characters
    srv.wait_log(r"event=1005 name=secret_created")


def test_nudged_creates_its_data_dir(make_nudged, tmp_path):
    data_dir = tmp_path / "fresh-data-dir"
    srv = make_nudged({"server": {"data_dir": str(data_dir)}}, create_data_dir=False)
    assert data_dir.is_dir()
    assert srv.secret_path() == data_dir / "secret"
    srv.secret()
    assert srv.request("GET", "/v1/state", token=srv.token("alice")).status == 200


def test_secret_file_setting_is_used(make_nudged, tmp_path):
    secret = tmp_path / "elsewhere.secret"
    srv = make_nudged({"server": {"secret_file": str(secret)}})
    assert secret.exists() and not (srv.data_dir / "secret").exists()
    # Tokens minted by nudge -c (which reads secret_file) and by hand agree.
    tok = srv.token("alice")
    assert srv.request("GET", "/v1/state", token=tok).status == 200
    assert srv.request("GET", "/v1/state", token=srv.sign("u", "alice")).status == 200


def test_secret_survives_restart(make_nudged):
    srv = make_nudged()
    tok = srv.token("alice")
    secret = srv.secret()
    assert srv.stop() == 0
    srv.start()
    assert srv.secret() == secret
    assert srv.request("GET", "/v1/state", token=tok).status == 200
    assert "event=1005" not in srv.log_text().split("event=1003 name=stopped", 1)[-1]


def test_readable_secret_is_refused(tmp_path):
    (tmp_path / "var").mkdir()
    secret = tmp_path / "var" / "secret"
    secret.write_text("ab" * 32 + "\n")
    os.chmod(secret, 0o644)
    conf, p = run_nudged_expecting_refusal(
        tmp_path, f"[server]\nlisten = 127.0.0.1:0\ndata_dir = {tmp_path / 'var'}\n")
    assert p.returncode != 0, p
    assert "chmod" in p.stderr, p.stderr
    assert "event=1001" not in p.stderr


def test_unknown_key_is_refused_with_file_and_line(tmp_path):
    conf, p = run_nudged_expecting_refusal(
        tmp_path, f"[server]\nlisten = 127.0.0.1:0\ndata_dir = {tmp_path / 'var'}\nno_such_key = 1\n")
    assert p.returncode != 0, p
    assert f"{conf}:4" in p.stderr, p.stderr
    assert "event=1001" not in p.stderr


def test_out_of_range_value_is_refused(tmp_path):
    conf, p = run_nudged_expecting_refusal(
        tmp_path, f"[server]\nlisten = 127.0.0.1:0\ndata_dir = {tmp_path / 'var'}\n"
                  "[heartbeat]\nmin = 100\nmax = 50\n")
    assert p.returncode != 0, p
    assert "event=1001" not in p.stderr, p.stderr
    assert "heartbeat" in p.stderr, p.stderr


def test_flags_override_the_file(make_nudged):
    srv = make_nudged({"heartbeat": {"min": 1, "max": 900}}, start=False)
    srv.extra_args = ["--heartbeat-max", "77", "--ping.max_folders=3"]
    srv.start()
    alice = srv.user("alice")
    body = expect_error(alice.ping("phone1", {"INBOX": "0"}, 78), 400, "heartbeat-out-of-range")
    assert (body.get("min"), body.get("max")) == (1, 77), body
    body = expect_error(alice.ping("phone1", {f"F{i}": "0" for i in range(4)}, 60), 400, "too-many-folders")
    assert body.get("max") == 3, body


def test_print_config_is_accepted_back(make_nudged, tmp_path):
    srv = make_nudged({"heartbeat": {"min": 3, "max": 444}, "ping": {"max_folders": 9}}, start=False)
    srv.write_config()
    p = subprocess.run([harness.nudged_path(), "-c", str(srv.conf), "--print-config"], capture_output=True,
                       text=True, timeout=WAIT, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p
    printed = p.stdout
    assert "444" in printed and "max_folders" in printed, printed
    # Start a server from the printed file alone: same bounds.
    srv.conf.write_text(printed)
    srv.write_config = lambda: None
    srv.start()
    body = expect_error(srv.user("alice").ping("phone1", {"INBOX": "0"}, 445), 400, "heartbeat-out-of-range")
    assert (body.get("min"), body.get("max")) == (3, 444), body
