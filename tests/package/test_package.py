"""
test_package.py — nudge installed as a real service would be: make install, the
systemd unit, and the Debian package in a minimal Debian 12.

  * test_unit_verifies: `make install` into a scratch PREFIX (so ExecStart names a
    binary that exists) and `systemd-analyze verify` on the unit it installed.
  * test_make_install: DESTDIR is honoured, the config lands in
    /etc/nudge/nudged.conf with data_dir /var/lib/nudge, and a second install
    keeps an admin's edited config.
  * test_deb_in_chroot: builds the .deb from this worktree (dpkg-buildpackage in
    a copy, so nothing is written beside the worktree), installs it with apt into
    a debootstrap --variant=minbase bookworm chroot (its dependencies from the
    mirror), starts nudged the way nudged.service does (ExecStart, User= and
    Group= read from the installed unit; setpriv for User=, since a chroot has no
    systemd) in a private network namespace with loopback up, and checks: it runs
    as nudge, tells NOTIFY_SOCKET READY=1, holds a ping across SIGHUP (reloading
    and ready again), answers it with a later publish, drains on SIGTERM with exit
    0; then `apt purge` removes the user, the group, the config and /var/lib/nudge.
  * test_minimal_debian_runs_make_deps: the repository copied into a fresh
    chroot, `scripts/deps.sh test` there, then sysctl exists and `make all` builds.

The debootstrap result is cached as a tarball in /var/cache/nudge-test/ (made
once, from the mirror, on a fresh machine), and the .debs apt downloads into the
chroots in /var/cache/nudge-test/archives, so a second run downloads nothing
but the package lists. Every chroot command runs in a mount namespace of its
own (unshare --mount) that mounts /proc, /dev and the archive cache: the mounts
vanish with it and nothing is left mounted on the host. Every wait is bounded.
Needs root (make test runs as root); skipped otherwise.
"""
import fcntl
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("NUDGE_PKG_CACHE", "/var/cache/nudge-test"))
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
# Bump the suffix when the way the chroot is made changes, so an old tarball is
# not reused.
TARBALL = CACHE / f"{SUITE}-minbase-v1.tar"
ARCHIVES = CACHE / "archives"
WAIT = 20

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chroot, namespaces)")

# Runs "$@" chrooted into $0 in the mount namespace unshare made: /proc, /dev and
# the shared apt archive are mounted for this command only.
CHROOT_SH = r"""
set -e
r=$0
mount -t proc proc "$r/proc"
mount --rbind /dev "$r/dev"
mount --bind "$NUDGE_PKG_ARCHIVES" "$r/var/cache/apt/archives"
exec chroot "$r" "$@"
"""


def chroot_argv(root, argv, netns=None):
    pre = ["ip", "netns", "exec", netns] if netns else []
    return pre + ["unshare", "--mount", "--propagation", "private", "--",
                  "sh", "-c", CHROOT_SH, str(root)] + list(argv)


def chroot_env(extra=None):
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
           "LANG": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive", "HOME": "/root",
           "NUDGE_PKG_ARCHIVES": str(ARCHIVES)}
    env.update(extra or {})
    return env


def run_in(root, argv, timeout, netns=None, check=True, env=None):
    """Runs argv in the chroot; returns the CompletedProcess (text)."""
    p = subprocess.run(chroot_argv(root, argv, netns), env=chroot_env(env), text=True,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
    if check:
        assert p.returncode == 0, f"{argv} exited {p.returncode}:\n{p.stdout[-4000:]}"
    return p


def sh_in(root, script, timeout, **kw):
    return run_in(root, ["sh", "-ec", script], timeout, **kw)


def mounted_under(path):
    """Mount points of the host under path (there should be none)."""
    prefix = str(Path(path).resolve()) + "/"
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(prefix)]


def ensure_tarball():
    """The minbase chroot as a tarball, made once (under a lock, for parallel runs)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    ARCHIVES.mkdir(exist_ok=True)
    (ARCHIVES / "partial").mkdir(exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if TARBALL.exists():
            return TARBALL
        work = Path(tempfile.mkdtemp(prefix="debootstrap-", dir=CACHE))
        try:
            root = work / "root"
            p = subprocess.run(["debootstrap", "--variant=minbase", f"--cache-dir={ARCHIVES}",
                                SUITE, str(root), MIRROR], text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=900)
            assert p.returncode == 0, f"debootstrap failed:\n{p.stdout[-4000:]}"
            assert not mounted_under(root), "debootstrap left mounts behind"
            tmp = work / "root.tar"
            subprocess.run(["tar", "-C", str(root), "-cf", str(tmp), "."], check=True,
                           timeout=300)
            os.rename(tmp, TARBALL)
        finally:
            if not mounted_under(work):
                shutil.rmtree(work, ignore_errors=True)
    return TARBALL


@pytest.fixture
def make_root(tmp_path):
    """Factory: a fresh chroot unpacked from the cached tarball, with the host's
    apt sources and name resolution; removed afterwards (never while anything
    is mounted in it)."""
    roots = []

    def make(name="root"):
        tarball = ensure_tarball()
        root = tmp_path / name
        root.mkdir()
        roots.append(root)
        subprocess.run(["tar", "-C", str(root), "-xf", str(tarball)], check=True, timeout=300)
        for f in ("etc/resolv.conf", "etc/hosts"):
            if Path("/" + f).exists():
                shutil.copy("/" + f, root / f)
        # The same suites as this machine (bookworm, -updates, -security), so
        # what the .deb was built against is what apt finds.
        sources = sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))
        if sources:
            (root / "etc/apt/sources.list").unlink(missing_ok=True)
            for s in sources:
                shutil.copy(s, root / "etc/apt/sources.list.d" / s.name)
        return root

    yield make
    for root in roots:
        left = mounted_under(root)
        assert not left, f"still mounted, not removing {root}: {left}"
        shutil.rmtree(root, ignore_errors=True)


def copy_worktree(dest):
    """The worktree's files as git sees them (tracked and new, not ignored)."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                           check=True, stdout=subprocess.PIPE, timeout=60).stdout
    dest.mkdir(parents=True)
    for name in files.decode().split("\0"):
        if name and (REPO / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)


@pytest.fixture(scope="module")
def deb(tmp_path_factory):
    """The .deb built from this worktree with dpkg-buildpackage -us -uc -b."""
    top = tmp_path_factory.mktemp("deb")
    copy_worktree(top / "src")
    p = subprocess.run(["dpkg-buildpackage", "-us", "-uc", "-b"], cwd=top / "src", text=True,
                       env=dict(os.environ, DEB_BUILD_OPTIONS="parallel=2"),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600)
    assert p.returncode == 0, f"dpkg-buildpackage failed:\n{p.stdout[-4000:]}"
    debs = [d for d in top.glob("nudge_*.deb")]
    assert len(debs) == 1, debs
    return debs[0]


def make(args, timeout=300, **kw):
    p = subprocess.run(["make", "--no-print-directory"] + args, cwd=REPO, text=True,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout, **kw)
    assert p.returncode == 0, f"make {args} failed:\n{p.stdout[-4000:]}"
    return p.stdout


def test_unit_verifies(tmp_path):
    make(["install", f"PREFIX={tmp_path}", f"SYSCONFDIR={tmp_path}/etc"])
    unit = tmp_path / "lib/systemd/system/nudged.service"
    text = unit.read_text()
    assert f"ExecStart={tmp_path}/sbin/nudged -c {tmp_path}/etc/nudge/nudged.conf\n" in text
    for line in ("Type=notify", "ExecReload=/bin/kill -HUP $MAINPID", "Restart=on-failure",
                 "User=nudge", "StateDirectory=nudge", "ProtectSystem=strict",
                 "NoNewPrivileges=yes", "LimitNOFILE=1048576",
                 "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK"):
        assert line + "\n" in text, line
    p = subprocess.run(["systemd-analyze", "verify", str(unit)], text=True,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
    assert p.returncode == 0 and p.stdout.strip() == "", p.stdout
    # The repository's own unit, as the package installs it, differs only in paths.
    assert (REPO / "contrib/systemd/nudged.service").read_text().replace(
        "/usr/sbin/nudged -c /etc/nudge/", f"{tmp_path}/sbin/nudged -c {tmp_path}/etc/nudge/") == text


def test_make_install(tmp_path):
    dest = tmp_path / "dest"
    make(["install", f"DESTDIR={dest}"])
    for f, mode in (("usr/local/sbin/nudged", 0o755), ("usr/local/bin/nudge", 0o755),
                    ("usr/local/lib/systemd/system/nudged.service", 0o644),
                    ("etc/nudge/nudged.conf", 0o644)):
        assert (dest / f).is_file(), f
        assert (dest / f).stat().st_mode & 0o777 == mode, f
    conf = dest / "etc/nudge/nudged.conf"
    assert "\ndata_dir = /var/lib/nudge\n" in conf.read_text()
    p = subprocess.run([str(dest / "usr/local/sbin/nudged"), "-c", str(conf), "--print-config"],
                       text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=WAIT)
    assert p.returncode == 0, p.stdout
    assert "\ndata_dir = /var/lib/nudge\n" in p.stdout
    # An admin's config survives a second install.
    conf.write_text(conf.read_text() + "\n; edited by the admin\n")
    out = make(["install", f"DESTDIR={dest}"])
    assert "keeping" in out
    assert conf.read_text().endswith("; edited by the admin\n")
    # The shipped file itself is what the README runs with.
    p = subprocess.run([str(REPO / "bin/nudged"), "-c", str(REPO / "etc/nudged.conf"),
                        "--print-config"], text=True, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=WAIT, cwd=REPO)
    assert p.returncode == 0 and "\ndata_dir = ./var\n" in p.stdout, p.stdout


class Notify:
    """A NOTIFY_SOCKET: the datagrams nudged sends systemd, in order."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        os.chmod(path, 0o777)          # nudged writes to it as the user nudge
        self.seen = []

    def wait_for(self, word, timeout=WAIT):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                msg = self.sock.recv(4096).decode()
            except socket.timeout:
                break
            self.seen.append(msg)
            if word in msg.split("\n"):
                return msg
        raise AssertionError(f"no {word} from nudged within {timeout} s; got {self.seen}")

    def close(self):
        self.sock.close()


def unit_settings(root):
    """ExecStart, User and Group of the installed unit, as systemd would read them."""
    found = {}
    for line in (root / "lib/systemd/system/nudged.service").read_text().splitlines():
        m = re.match(r"(ExecStart|User|Group)=(.*)", line)
        if m:
            found[m.group(1)] = m.group(2)
    return found["ExecStart"].split(), found["User"], found["Group"]


def passwd_ids(root, name):
    for line in (root / "etc/passwd").read_text().splitlines():
        f = line.split(":")
        if f[0] == name:
            return int(f[2]), int(f[3])
    return None


def group_names(root):
    return [line.split(":")[0] for line in (root / "etc/group").read_text().splitlines()]


def proc_uids(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Uid:"):
                return set(int(x) for x in line.split()[1:])


def children(pid):
    kids = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/children") as f:
            kids += [int(x) for x in f.read().split()]
    return kids


def read_line(proc, timeout):
    """One line of a process's stdout, or None when none came within timeout."""
    out = []
    t = threading.Thread(target=lambda: out.append(proc.stdout.readline()), daemon=True)
    t.start()
    t.join(timeout)
    return out[0] if out else None


@pytest.fixture
def netns():
    name = f"nudge-pkg-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=WAIT)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True, timeout=WAIT)
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], timeout=WAIT)


def test_deb_in_chroot(deb, make_root, netns, tmp_path):
    root = make_root()
    shutil.copy(deb, root / "tmp" / deb.name)
    sh_in(root, f"apt-get update -qq && apt-get install -y -qq /tmp/{deb.name}", timeout=300)

    # What postinst made.
    ids = passwd_ids(root, "nudge")
    assert ids is not None, "postinst made no user nudge"
    uid, gid = ids
    assert "nudge" in group_names(root)
    st = (root / "var/lib/nudge").stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (uid, gid, 0o750)
    st = (root / "etc/nudge/nudged.conf").stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (0, gid, 0o640)
    conffiles = (root / "var/lib/dpkg/info/nudge.conffiles").read_text().split()
    assert conffiles == ["/etc/nudge/nudged.conf"]

    # Built with Debian's hardening flags (dpkg-buildflags reach the Makefile):
    # full RELRO, PIE, and glibc's checked string calls.
    for binary in ("usr/sbin/nudged", "usr/bin/nudge"):
        dyn = subprocess.run(["readelf", "-d", "-W", str(root / binary)], check=True, text=True,
                             stdout=subprocess.PIPE, timeout=60).stdout
        assert "BIND_NOW" in dyn and "PIE" in dyn, f"{binary} not hardened:\n{dyn}"
        syms = subprocess.run(["readelf", "--dyn-syms", "-W", str(root / binary)], check=True,
                              text=True, stdout=subprocess.PIPE, timeout=60).stdout
        assert "_chk@" in syms, f"{binary} has no _FORTIFY_SOURCE calls"

    # Start it as nudged.service would: its ExecStart as its User and Group.
    exec_start, user, group = unit_settings(root)
    assert exec_start[0] == "/usr/sbin/nudged" and (user, group) == ("nudge", "nudge")
    notify = Notify(root / "run/nudge-notify.sock")
    log = open(tmp_path / "nudged.log", "w+")
    nudged = subprocess.Popen(
        chroot_argv(root, ["setpriv", f"--reuid={user}", f"--regid={group}", "--init-groups",
                           "--"] + exec_start, netns),
        env=chroot_env({"NOTIFY_SOCKET": "/run/nudge-notify.sock"}),
        stdout=log, stderr=subprocess.STDOUT)
    ping = None
    try:
        try:
            ready = notify.wait_for("READY=1")
        except AssertionError:
            log.seek(0)
            raise AssertionError(f"{notify.seen}; nudged's log:\n{log.read()[-3000:]}")
        # ip netns exec, unshare, sh, chroot and setpriv all exec: the pid is nudged's.
        assert os.readlink(f"/proc/{nudged.pid}/exe").endswith("/usr/sbin/nudged")
        procs = [nudged.pid] + children(nudged.pid)
        for pid in procs:
            assert proc_uids(pid) == {uid}, f"pid {pid} runs as {proc_uids(pid)}, not nudge"
        assert "STATUS=" in ready

        conf = "/etc/nudge/nudged.conf"
        token = run_in(root, ["nudge", "token", "--user", "alice", "-c", conf], WAIT).stdout.strip()
        pub = run_in(root, ["nudge", "token", "--publisher", "-c", conf], WAIT).stdout.strip()

        ping = subprocess.Popen(
            chroot_argv(root, ["nudge", "ping", "--device", "phone1", "--heartbeat", "480",
                               "--folder", "INBOX", "--loop", "--count", "1", "--token", token],
                        netns),
            env=chroot_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + WAIT
        while True:
            out = run_in(root, ["nudge", "sessions", "-c", conf], WAIT, netns).stdout
            if re.search(r"^alice\s+phone1\s.*\sping\s", out, re.M):
                break
            assert time.monotonic() < deadline, f"the ping is not held:\n{out}"
            time.sleep(0.2)

        os.kill(nudged.pid, signal.SIGHUP)
        notify.wait_for("RELOADING=1")
        notify.wait_for("READY=1")
        assert nudged.poll() is None and ping.poll() is None
        out = run_in(root, ["nudge", "sessions", "-c", conf], WAIT, netns).stdout
        assert re.search(r"^alice\s+phone1\s", out, re.M), f"held ping gone after SIGHUP:\n{out}"

        run_in(root, ["nudge", "publish", "--user", "alice", "--folder", "INBOX", "--token", pub],
               WAIT, netns)
        line = read_line(ping, WAIT)
        assert line is not None and line.startswith("changed INBOX=1"), line
        assert ping.wait(WAIT) == 0

        nudged.send_signal(signal.SIGTERM)
        notify.wait_for("STOPPING=1")
        assert nudged.wait(WAIT) == 0
        log.seek(0)
        text = log.read()
        assert "name=reloaded" in text and "reload_failed" not in text, text[-3000:]
    finally:
        for p in (ping, nudged):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait(WAIT)
        notify.close()
        (root / "run/nudge-notify.sock").unlink(missing_ok=True)
        log.close()

    sh_in(root, "apt-get purge -y -qq nudge", timeout=120)
    assert passwd_ids(root, "nudge") is None, "purge left the user nudge"
    assert "nudge" not in group_names(root), "purge left the group nudge"
    for gone in ("etc/nudge", "var/lib/nudge", "usr/sbin/nudged", "lib/systemd/system/nudged.service"):
        assert not (root / gone).exists(), f"purge left /{gone}"


def test_minimal_debian_runs_make_deps(make_root):
    root = make_root()
    copy_worktree(root / "root/nudge")
    # Daemons the test packages bring (dovecot) must not start inside the chroot:
    # policy-rc.d 101 is Debian's way to say so (invoke-rc.d, deb-systemd-invoke).
    policy = root / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    assert not (root / "usr/sbin/sysctl").exists(), "minbase already has procps"
    sh_in(root, "cd /root/nudge && scripts/deps.sh test", timeout=900)
    sh_in(root, "command -v sysctl && sysctl -n kernel.pid_max", timeout=WAIT)
    sh_in(root, "cd /root/nudge && make -j2 all && bin/nudged --version && "
                "bin/nudged -c etc/nudged.conf --print-config >/dev/null", timeout=600)
