"""
dovecot.py — a real Dovecot 2.3 for the end-to-end tests: its config written
into a directory of its own, `dovecot -c CONF -F` run as a child, stopped by
its PID.

Design:
  * Self-contained: own base_dir (sockets, master.pid), state_dir, log file,
    passwd-file users and maildirs, LMTP and IMAP on free 127.0.0.1 ports.
    Nothing is read from /etc/dovecot or written to /run or /var.
  * Users running as what: Dovecot runs as root here, but refuses two things
    that a root-only setup would need. Mail access as root ("userdb returned
    0 as uid", and with mail_uid = root "Mail access not allowed for root"),
    so mail processes run as nobody/nogroup, which every Debian has; and
    login processes as root ("imap-login: This process must not be run as
    root"), so they run as dovenull, the user Debian's dovecot-core package
    creates for exactly that. The internal services (auth, config, stats,
    anvil) may run as root, which spares the test any file permissions for
    its passwd-file. (nobody's uid 65534 is inside Dovecot's default
    first_valid_uid = 500 with no upper bound, so that stays as it is.)
  * Where: the directory is a fresh mkdtemp under /tmp, not pytest's
    tmp_path, because pytest's /tmp/pytest-of-root is mode 0700 and the mail
    processes (nobody) must reach their homes and the Lua script through it.
    Its log is copied into the test's tmp_path when it is stopped, so a
    failure can still be read, and the directory is removed.
  * Drivers: "ox" (push_notification_driver = ox:url=...) or "lua" (nudge.lua
    from contrib/dovecot, copied next to the config). Users may override any
    plugin setting with userdb extra fields (userdb_nudge_token=...), which
    is how a test gives one user wrong credentials.
  * Ready means both ports accept and answer their greetings (IMAP "* OK",
    LMTP "220"), so imap-login, auth and lmtp really start.

Only the Python standard library is used (imaplib, smtplib for LMTP).
"""
import imaplib
import os
import re
import shutil
import signal
import smtplib
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import harness
from harness import WAIT

PACKAGES = ("dovecot-core", "dovecot-lmtpd", "dovecot-imapd", "lua-socket", "lua-dkjson")
LUA_SCRIPT = harness.REPO / "contrib" / "dovecot" / "nudge.lua"
METADATA_KEY = "/private/vendor/vendor.dovecot/http-notify"
MAIL_USER, MAIL_GROUP = "nobody", "nogroup"
LOGIN_USER = "dovenull"


def _installed(pkg):
    p = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True, text=True)
    return p.returncode == 0 and "install ok installed" in p.stdout


def ensure_packages():
    """Installs the Debian packages the Dovecot tests need, only those
    missing (make test's scripts/deps.sh normally has). Fails the test with
    apt's words when that is impossible (not root, no package source)."""
    missing = [p for p in PACKAGES if not _installed(p)]
    if not missing:
        return
    if os.geteuid() != 0:
        raise AssertionError(f"Dovecot tests need these Debian packages (run as root to install): {missing}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], capture_output=True, text=True, env=env)
    out = subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
                         capture_output=True, text=True, env=env)
    still = [p for p in PACKAGES if not _installed(p)]
    if still:
        raise AssertionError(f"apt-get could not install {still}:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")


def crypt_hash(password, scheme="SHA512-CRYPT"):
    """password hashed by libcrypt (the library Dovecot and nudge check with)
    in a scheme's format: SHA512-CRYPT ($6$), BLF-CRYPT ($2b$), YESCRYPT ($y$,
    written {CRYPT} in a passwd-file)."""
    import ctypes
    lib = ctypes.CDLL("libcrypt.so.1")
    lib.crypt_gensalt.restype = ctypes.c_char_p
    lib.crypt_gensalt.argtypes = [ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_int]
    lib.crypt.restype = ctypes.c_char_p
    lib.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    prefix = {"SHA512-CRYPT": b"$6$", "BLF-CRYPT": b"$2b$", "YESCRYPT": b"$y$"}[scheme]
    # Low costs: the tests check many passwords, and cost changes nothing of how they are checked.
    count = {"SHA512-CRYPT": 5000, "BLF-CRYPT": 5, "YESCRYPT": 0}[scheme]
    setting = lib.crypt_gensalt(prefix, count, None, 0)
    assert setting, f"crypt_gensalt refused {scheme}"
    out = lib.crypt(password.encode(), setting)
    assert out and not out.startswith(b"*"), f"crypt failed for {scheme}"
    return out.decode()


def free_port():
    """A port nothing listens on right now (the kernel's pick). Another
    process could take it before Dovecot binds: start() retries on that."""
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


class Dovecot:
    def __init__(self, artifacts_dir, driver, plugin=None, settings=None):
        """artifacts_dir: where the log is kept after stop (the test's
        tmp_path). driver: "ox", "lua", or None (no push driver: a Dovecot
        for signing in). plugin: the plugin { } settings,
        push_notification_driver included. settings: more top-level
        settings (auth_failure_delay = 5 secs, auth_debug = yes)."""
        assert driver in ("ox", "lua", None), driver
        ensure_packages()
        self.artifacts = Path(artifacts_dir)
        self.artifacts.mkdir(parents=True, exist_ok=True)
        self.driver = driver
        self.plugin = dict(plugin or {})
        self.dir = Path(tempfile.mkdtemp(prefix="nudge-dovecot-", dir="/tmp"))
        os.chmod(self.dir, 0o755)
        self.conf = self.dir / "dovecot.conf"
        self.log_path = self.dir / "dovecot.log"
        self.users_dir = self.dir / "users"
        self.homes = self.dir / "home"
        self.homes.mkdir()
        shutil.chown(self.homes, MAIL_USER, MAIL_GROUP)
        self.users = {}  # name -> (password, {extra userdb fields})
        self.settings = dict(settings or {})
        self.users_dir.mkdir()
        self.proc = None
        self._out = None
        self.imap_port = None
        self.lmtp_port = None
        if driver == "lua":
            self.script = self.dir / "nudge.lua"
            shutil.copyfile(LUA_SCRIPT, self.script)
            os.chmod(self.script, 0o644)
            self.plugin.setdefault("push_notification_driver", f"lua:file={self.script}")

    # -- config -----------------------------------------------------------
    def add_user(self, name, password="secret", scheme="PLAIN", **extra):
        """Adds (or replaces) a passwd-file user. scheme: PLAIN or
        SHA512-CRYPT (the password is stored hashed, as a real passdb would
        have it). extra: userdb fields that override plugin settings for
        this user only, e.g. nudge_token="bad".

        One passwd-file per user (the path in the config holds %u): Dovecot
        rereads a changed passwd-file at most once a second, so a user added
        to a shared file right after a lookup would not exist yet. A new
        file is read at its first lookup. Replacing a user waits until
        Dovecot answers with the new fields."""
        old = self.users[name][1] if name in self.users else None
        self.users[name] = (password, extra)
        home = self.homes / name
        home.mkdir(exist_ok=True)
        shutil.chown(home, MAIL_USER, MAIL_GROUP)
        # user:password:uid:gid:gecos:home:shell:extra. No uid/gid: the
        # global mail_uid/mail_gid apply.
        fields = " ".join(f"userdb_{k}={v}" for k, v in extra.items())
        tmp = self.users_dir / f".{name}.new"
        stored = f"{{PLAIN}}{password}" if scheme == "PLAIN" else f"{{{scheme}}}{crypt_hash(password, scheme)}"
        tmp.write_text(f"{name}:{stored}::::{home}::{fields}\n")
        path = self.users_dir / name
        if path.exists():
            # Dovecot sees a change by size or mtime in whole seconds: a new
            # hash of the same length written within the second would go
            # unseen, so the new file is dated a second past the old one.
            t = max(int(time.time()), int(path.stat().st_mtime) + 1)
            os.utime(tmp, (t, t))
        tmp.replace(path)
        if old is not None and self.running():
            self._wait_userdb(name, old, extra)
        return name

    def _wait_userdb(self, name, old, new, timeout=WAIT):
        """Waits until Dovecot's userdb answers new's fields for name (and
        none of old's that new drops)."""
        want = {k: str(new.get(k, "")) for k in {**old, **new}}
        deadline = time.monotonic() + timeout
        while True:
            have = {k: self.doveadm("user", "-f", k, name).strip() for k in want}
            if have == want:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"Dovecot's userdb answers {have} for {name}, not {want}")
            time.sleep(0.2)

    @property
    def auth_socket(self):
        """Dovecot's auth-client socket: what [auth] passwords = dovecot:PATH names."""
        return self.dir / "run" / "auth-client"

    def wait_auth_socket(self, timeout=WAIT):
        deadline = time.monotonic() + timeout
        while not self.auth_socket.exists():
            if time.monotonic() > deadline:
                raise AssertionError(f"no auth-client socket at {self.auth_socket}\n{self.log_tail()}")
            time.sleep(0.05)

    def home(self, user):
        return self.homes / user

    def write_config(self):
        # As docs/dovecot.md has it: the OX driver only acts on deliveries,
        # so it is loaded for LMTP and LDA; the Lua driver everywhere.
        if self.driver is None:
            plugins = ""
        elif self.driver == "lua":
            plugins = "mail_plugins = $mail_plugins notify push_notification mail_lua push_notification_lua"
        else:
            plugins = "\n".join(f"protocol {p} {{\n  mail_plugins = $mail_plugins notify push_notification\n}}"
                                for p in ("lmtp", "lda"))
        plugin_lines = "\n".join(f"  {k} = {v}" for k, v in self.plugin.items())
        settings_lines = "\n".join(f"{k} = {v}" for k, v in self.settings.items())
        self.conf.write_text(f"""\
# Written by tests/e2e/dovecot.py: a self-contained Dovecot for one test module.
base_dir = {self.dir}/run
state_dir = {self.dir}/state
instance_name = nudge-test-{self.dir.name}
log_path = {self.log_path}
protocols = imap lmtp
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
# Why these users: see the header of tests/e2e/dovecot.py.
default_internal_user = root
default_internal_group = root
default_login_user = {LOGIN_USER}
mail_uid = {MAIL_USER}
mail_gid = {MAIL_GROUP}
mail_location = maildir:~/Maildir
mail_attribute_dict = file:%h/dovecot-attributes
{plugins}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {self.users_dir}/%u
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {self.users_dir}/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {self.lmtp_port}
  }}
  unix_listener lmtp {{
    mode = 0
  }}
}}
# The socket nudge signs users in through ([auth] passwords = dovecot:PATH), as docs/auth.md has it.
service auth {{
  unix_listener auth-client {{
    mode = 0600
    user = root
  }}
}}
{settings_lines}
plugin {{
{plugin_lines}
}}
""")

    # -- process ----------------------------------------------------------
    def start(self, timeout=WAIT):
        """Starts Dovecot and waits until IMAP and LMTP greet. A port taken
        between free_port() and Dovecot's bind is retried with new ports."""
        last = ""
        for _ in range(3):
            self.imap_port, self.lmtp_port = free_port(), free_port()
            self.write_config()
            offset = self.log_size()
            self._out = open(self.dir / "dovecot.stdout", "ab")
            # A session of its own: the master's process group is then its own
            # PID, so stop() can end any straggler child by that id alone.
            self.proc = subprocess.Popen(["dovecot", "-c", str(self.conf), "-F"],
                                         stdin=subprocess.DEVNULL, stdout=self._out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
            if self._wait_ready(timeout):
                return self
            last = self.log_text()[offset:] + self._stdout_text()
            self.stop()
            if "Address already in use" not in last:
                break
        raise AssertionError(f"Dovecot did not start\n--- {self.log_path} ---\n{last}")

    def _wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        pending = {self.imap_port: b"* OK", self.lmtp_port: b"220"}
        while pending:
            if self.proc.poll() is not None:
                return False
            for port, greeting in list(pending.items()):
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=2 * harness.SLOW) as s:
                        if s.recv(200).startswith(greeting):
                            del pending[port]
                except OSError:
                    pass
            if time.monotonic() > deadline:
                return False
            if pending:
                time.sleep(0.05)
        return True

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=WAIT):
        """SIGTERM to the master and wait; SIGKILL to its process group if it
        does not exit in time. Leftover children of the group are killed too
        (a master killed hard leaves them). Returns the exit code."""
        if self.proc is None:
            return None
        pid = self.proc.pid
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        if self.proc.poll() is None:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
        try:
            os.killpg(pid, signal.SIGKILL)  # only stragglers of our own group
        except ProcessLookupError:
            pass
        if self._out is not None:
            self._out.close()
            self._out = None
        return self.proc.returncode

    def close(self):
        """Stops Dovecot, keeps its log in the artifacts dir, removes its
        directory (maildirs and all)."""
        self.stop()
        for name in ("dovecot.log", "dovecot.conf", "dovecot.stdout"):
            src = self.dir / name
            if src.exists():
                shutil.copyfile(src, self.artifacts / name)
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- log --------------------------------------------------------------
    def log_size(self):
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def log_text(self, since=0):
        try:
            return self.log_path.read_bytes()[since:].decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def _stdout_text(self):
        try:
            return (self.dir / "dovecot.stdout").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, n=40, since=0):
        return "--- tail of dovecot log ---\n" + "\n".join(self.log_text(since).splitlines()[-n:])

    def wait_log(self, pattern, since=0, timeout=WAIT):
        """The first match of pattern in the log after byte offset since."""
        deadline = time.monotonic() + timeout
        while True:
            m = re.search(pattern, self.log_text(since))
            if m:
                return m
            if time.monotonic() > deadline:
                raise AssertionError(f"Dovecot's log never matched {pattern!r}\n{self.log_tail(since=since)}")
            time.sleep(0.05)

    # -- mail -------------------------------------------------------------
    def deliver(self, user, subject="Hello", sender="Alice <alice@example.org>", body="Hello there.",
                headers=None, raw=None, timeout=WAIT):
        """Delivers one message to user over LMTP. Returns the (code, text)
        of the DATA reply (LMTP answers per recipient; there is one).
        raw: the whole message as bytes instead of the built one."""
        if raw is None:
            lines = [f"From: {sender}", f"To: <{user}@example.org>", f"Subject: {subject}",
                     f"Message-ID: <{harness.unique('m')}@nudge.test>"]
            lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
            raw = ("\r\n".join(lines) + "\r\n\r\n" + body + "\r\n").encode("utf-8")
        s = smtplib.LMTP("127.0.0.1", self.lmtp_port, timeout=timeout)
        try:
            code, msg = s.mail("alice@example.org")
            assert code == 250, (code, msg)
            code, msg = s.rcpt(user)
            assert code == 250, f"RCPT {user}: {code} {msg}\n{self.log_tail()}"
            return s.data(raw)
        finally:
            try:
                s.quit()
            except (smtplib.SMTPException, OSError):
                s.close()

    def imap(self, user, password=None):
        """An IMAP4 connection logged in as user."""
        m = imaplib.IMAP4("127.0.0.1", self.imap_port, timeout=WAIT)
        typ, data = m.login(user, password or self.users[user][0])
        assert typ == "OK", data
        return m

    def doveadm(self, *args):
        p = subprocess.run(["doveadm", "-c", str(self.conf), *args], capture_output=True, text=True,
                           timeout=WAIT)
        assert p.returncode == 0, f"doveadm {args} exited {p.returncode}: {p.stderr}"
        return p.stdout

    def enable_http_notify(self, user, value=None):
        """Sets the server METADATA key the OX driver needs for user (its
        value names the user nudge is told about). The -A form of this
        doveadm command is broken in 2.3.19; one user at a time works."""
        self.doveadm("mailbox", "metadata", "set", "-u", user, "-s", "", METADATA_KEY,
                     f"user={value or user}")
