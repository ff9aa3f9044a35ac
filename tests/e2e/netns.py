"""
netns.py — a network namespace that a test creates and deletes, so that
what happens to a connection on the way (a client that vanishes, a path
that drops packets) is the kernel's real behaviour, not a mock.

Design:
  * NetNS adds a namespace with `ip netns add`, brings its loopback up, and
    deletes it in delete() (call it from a finalizer, after every process
    inside has been stopped: a namespace lives on while a process is in it).
  * Sockets inside it come from one worker thread that has joined the
    namespace with setns(2) (called through ctypes: Debian's python3.11 has
    no os.setns). A socket belongs to the namespace it was created in, for
    its whole life, so the test uses it from any thread afterwards. Only
    socket creation happens on the worker; connecting may block and does not.
  * NsNudged is a harness.Nudged started with `ip netns exec NS nudged`
    (ip execs nudged, so the pid the harness signals is nudged's) and whose
    connections, and so every harness helper that speaks HTTP to it
    (request, metrics, held, wait_held), are made inside the namespace.
  * nft() loads rules into the namespace's own nftables ruleset, which goes
    away with the namespace.

Needs root and the ip and nft commands (Debian: iproute2, nftables);
unavailable() says which is missing so a test can skip with that reason.
"""
import ctypes
import itertools
import os
import queue
import shutil
import socket
import subprocess
import threading
from pathlib import Path

import harness

CLONE_NEWNET = 0x40000000

_names = itertools.count(1)


def unavailable():
    """None when namespaces can be used here, else why not (a skip reason)."""
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add, nft)"
    for tool, pkg in (("ip", "iproute2"), ("nft", "nftables")):
        if shutil.which(tool) is None:
            return f"'{tool}' is not installed (Debian package {pkg})"
    return None


def _run(argv, input=None):
    p = subprocess.run(argv, capture_output=True, text=True, input=input, timeout=harness.WAIT)
    if p.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {p.returncode}: {p.stderr.strip()}")
    return p.stdout


class NetNS:
    def __init__(self):
        # Short (it is a file name under /run/netns) and unique per test process.
        self.name = f"nudge{os.getpid()}x{next(_names)}"
        self._jobs = None
        self._thread = None
        _run(["ip", "netns", "add", self.name])
        try:
            self.run("ip", "link", "set", "lo", "up")
            self._start_worker()
        except BaseException:
            self.delete()
            raise

    # -- commands inside -------------------------------------------------
    def prefix(self):
        """The argv prefix that runs a command inside the namespace."""
        return ["ip", "netns", "exec", self.name]

    def run(self, *argv, input=None):
        """Runs a command inside; returns its stdout; fails with its stderr."""
        return _run([*self.prefix(), *argv], input=input)

    def nft(self, script):
        """Loads an nftables script (nft -f syntax) into the namespace's ruleset."""
        return self.run("nft", "-f", "-", input=script)

    # -- sockets inside --------------------------------------------------
    def _start_worker(self):
        ready = queue.Queue()
        self._jobs = queue.Queue()
        self._thread = threading.Thread(target=self._worker, args=(ready,), daemon=True,
                                        name=f"netns-{self.name}")
        self._thread.start()
        err = ready.get(timeout=harness.WAIT)
        if err is not None:
            raise AssertionError(f"setns into {self.name}: {err}")

    def _worker(self, ready):
        libc = ctypes.CDLL(None, use_errno=True)
        path = Path("/run/netns") / self.name
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            ready.put(f"open {path}: {e}")
            return
        # setns changes the namespace of the calling thread only.
        rc = libc.setns(fd, CLONE_NEWNET)
        errno = ctypes.get_errno()
        os.close(fd)
        if rc != 0:
            ready.put(os.strerror(errno))
            return
        ready.put(None)
        while True:
            job = self._jobs.get()
            if job is None:
                return
            fn, args, out = job
            try:
                out.put((True, fn(*args)))
            except BaseException as e:  # handed to the caller
                out.put((False, e))

    def call(self, fn, *args):
        """Runs fn(*args) on the thread inside the namespace; returns its result."""
        out = queue.Queue()
        self._jobs.put((fn, args, out))
        ok, value = out.get(timeout=harness.WAIT)
        if not ok:
            raise value
        return value

    def socket(self, family=socket.AF_INET, type=socket.SOCK_STREAM):
        return self.call(socket.socket, family, type)

    def connect(self, addr, timeout=harness.WAIT, source=None):
        """A TCP socket inside the namespace, connected to addr (from 'source' if given)."""
        s = self.socket()
        try:
            s.settimeout(timeout)
            if source is not None:
                s.bind(source)
            s.connect(addr)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except BaseException:
            s.close()
            raise
        return s

    # -- teardown --------------------------------------------------------
    def delete(self):
        """Stops the worker and deletes the namespace (its nftables rules go with it)."""
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join(5)
            self._thread = None
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, timeout=harness.WAIT)


class NsNudged(harness.Nudged):
    """A nudged running inside 'ns'; every harness connection to it is made inside too."""

    def __init__(self, ns, workdir, settings=None):
        super().__init__(workdir, settings)
        self.ns = ns
        self.command_prefix = ns.prefix()

    def connect(self, timeout=harness.WAIT, source=None):
        try:
            sock = self.ns.connect(("127.0.0.1", self.port), timeout, source)
        except OSError as e:
            state = "running" if self.running() else f"exited {self.proc.poll()}"
            raise AssertionError(f"cannot connect to nudged in {self.ns.name} ({state}): {e}\n"
                                 f"{self.log_tail()}") from None
        c = harness.Conn(None)
        c.sock = sock
        return c

    def pending(self, *args, **kwargs):
        raise NotImplementedError("harness.Pending connects outside the namespace; "
                                  "use connect() and send_request()")
