"""
test_readme.py — the README's commands run as written, and `make run`'s script.

test_using_it runs every ```sh block under the README's "## Using it" heading,
in order, each command in bash from the repository's top directory, against a
real nudged started from the shipped config (etc/nudged.conf). Variables a
command sets (USER_TOKEN, PUB, ADMIN) carry over to the next, as in one
terminal. Every command must exit 0 and print what EXPECT says; a command
without an entry in EXPECT fails the test, so the README and this file change
together.

What the test changes, and only that: the server listens on a free port with
its data in a temporary directory, so the config file the commands name
(etc/nudged.conf) is replaced by a copy with listen, [udp] listen, data_dir and
workers (NUDGE_TEST_WORKERS) changed, http://127.0.0.1:8080 by the free port's
URL, and NUDGE_URL is set for the nudge client, whose default is that address.

test_second_run_fails: scripts/run.sh while another run.sh's nudged holds the
same database exits nonzero with nudged's own reason, although /healthz of the
first answers on the address.
"""
import os
import re
import shlex
import signal
import socket
import subprocess
import time
from pathlib import Path

import harness

REPO = harness.REPO
WORKERS = int(os.environ.get("NUDGE_TEST_WORKERS", "1"))

# The command's text (as the README writes it, before the substitutions) ->
# a pattern its output must match (re.search, multiline).
EXPECT = {
    "bin/nudged -c etc/nudged.conf --print-config | grep '^data_dir'": r"^data_dir = /\S+$",
    "USER_TOKEN=$(bin/nudge token --user alice --ttl 30d -c etc/nudged.conf)": r"^$",
    "PUB=$(bin/nudge token --publisher -c etc/nudged.conf)": r"^$",
    "ADMIN=$(bin/nudge token --admin -c etc/nudged.conf)": r"^$",
    "curl -sf -X POST http://127.0.0.1:8080/v1/events": r'"INBOX".*"1"',
    "bin/nudge publish --user alice --folder INBOX --token $PUB": r"INBOX.*2",
    "curl -sf -X POST http://127.0.0.1:8080/v1/ping": r'"changed".*"INBOX"',
    "bin/nudge ping --device phone1 --heartbeat 480 --folder INBOX=1 --token $USER_TOKEN":
        r"^changed INBOX=2 heartbeat_hint=480$",
    "curl -sf http://127.0.0.1:8080/v1/state": r'"INBOX".*"2"',
    "bin/nudge sessions -c etc/nudged.conf": r"^0 sessions$",
    "curl -sf http://127.0.0.1:8080/metrics": r"^nudge_pings_held 0$",
}


def readme_commands():
    """The commands of the ```sh blocks under '## Using it', in order, with
    backslash-continued lines joined."""
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Using it\n", 1)[1].split("\n## ", 1)[0]
    commands = []
    for block in re.findall(r"^```sh\n(.*?)^```$", section, re.M | re.S):
        for cmd in re.sub(r"\\\n\s*", "", block).splitlines():
            if cmd.strip():
                commands.append(cmd.strip())
    return commands


def expectation(cmd):
    for prefix, pattern in EXPECT.items():
        if cmd.startswith(prefix):
            return pattern
    raise AssertionError(f"README command without an expectation in EXPECT: {cmd}")


def shipped_config(tmp, port, data_dir):
    """etc/nudged.conf with the listen addresses, data_dir and workers changed."""
    out = []
    for line in (REPO / "etc/nudged.conf").read_text().splitlines():
        if line.startswith("listen = "):
            line = f"listen = 127.0.0.1:{port}"
        elif line.startswith("data_dir = "):
            line = f"data_dir = {data_dir}"
        elif line.startswith("workers = "):
            line = f"workers = {WORKERS}"
        out.append(line)
    conf = tmp / "nudged.conf"
    conf.write_text("\n".join(out) + "\n")
    return conf


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(argv, log, env=None):
    return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO,
                            start_new_session=True)


def stop(proc):
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(harness.WAIT)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(harness.WAIT)
            raise AssertionError("did not stop on SIGTERM")
    return proc.returncode


def wait_healthy(url, proc, log_path):
    deadline = time.monotonic() + harness.WAIT
    while time.monotonic() < deadline:
        assert proc.poll() is None, Path(log_path).read_text()[-3000:]
        if subprocess.run(["curl", "-sf", url + "/healthz"], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, timeout=harness.WAIT).returncode == 0:
            return
        time.sleep(0.1)
    raise AssertionError("nudged did not answer /healthz:\n" + Path(log_path).read_text()[-3000:])


def test_using_it(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    conf = shipped_config(tmp_path, port, tmp_path / "var")
    log_path = tmp_path / "nudged.log"
    with open(log_path, "w") as log:
        srv = start([harness.nudged_path(), "-c", str(conf)], log)
    try:
        wait_healthy(url, srv, log_path)
        state = tmp_path / "vars.sh"
        state.write_text("")
        env = dict(os.environ, NUDGE_URL=url)
        env.pop("NUDGE_TOKEN", None)
        commands = readme_commands()
        assert len(commands) == len(EXPECT), (commands, list(EXPECT))
        for cmd in commands:
            pattern = expectation(cmd)
            run = cmd.replace("etc/nudged.conf", str(conf)).replace("http://127.0.0.1:8080", url)
            script = (f"set -o pipefail; . {shlex.quote(str(state))}\n{run}\nrc=$?\n"
                      f"declare -p USER_TOKEN PUB ADMIN 2>/dev/null > {shlex.quote(str(state))}\n"
                      "exit $rc\n")
            p = subprocess.run(["bash", "-c", script], cwd=REPO, env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               timeout=harness.WAIT)
            assert p.returncode == 0, f"{cmd}\nexited {p.returncode}\n{p.stdout}{p.stderr}"
            assert re.search(pattern, p.stdout.strip(), re.M), \
                f"{cmd}\nprinted {p.stdout!r}, expected /{pattern}/"
        saved = state.read_text()
        for var, kind in (("USER_TOKEN", "u"), ("PUB", "p"), ("ADMIN", "a")):
            assert re.search(rf'^declare -- {var}="v[0-9]+\.{kind}\.', saved, re.M), (var, saved)
    finally:
        code = stop(srv)
    assert code == 0, log_path.read_text()[-3000:]


def test_second_run_fails(tmp_path):
    port = free_port()
    conf = shipped_config(tmp_path, port, tmp_path / "var")
    env = dict(os.environ, NUDGE_CONF=str(conf))
    first_log = tmp_path / "first.log"
    with open(first_log, "w") as log:
        first = start(["scripts/run.sh"], log, env)
    try:
        deadline = time.monotonic() + harness.WAIT
        while "nudged is running on" not in first_log.read_text():
            assert first.poll() is None, first_log.read_text()[-3000:]
            assert time.monotonic() < deadline, first_log.read_text()[-3000:]
            time.sleep(0.1)
        out = first_log.read_text()
        for word in ("user token (alice):", "publisher token:", "admin token:",
                     f"export NUDGE_URL=http://127.0.0.1:{port} USER_TOKEN=v"):
            assert word in out, out

        second = subprocess.run(["scripts/run.sh"], cwd=REPO, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                timeout=harness.WAIT)
        assert second.returncode != 0, second.stdout + second.stderr
        assert "nudged is running" not in second.stdout, second.stdout
        assert re.search(r"^run: nudged did not start \(exit status 1\): .*another nudged is "
                         r"using this database", second.stderr, re.M), second.stderr
        assert first.poll() is None, "the first run stopped"
    finally:
        code = stop(first)
    assert code == 0, first_log.read_text()[-3000:]
