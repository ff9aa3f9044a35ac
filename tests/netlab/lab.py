#!/usr/bin/python3
"""
lab.py — the network lab: a client and a server with a stateful firewall
between them, each in its own network namespace, so that what a middlebox
does to an idle connection is the kernel's real behaviour, not a mock.

    client ns               firewall ns                       server ns
    eth0 10.231.1.2 ---- vclient 10.231.1.1
                                      vserver 10.231.2.1 ---- eth0 10.231.2.2
                                                               nudged, listening on :PORT

The firewall forwards between its two veths with an nftables ruleset that is
a typical stateful middlebox:

    forward chain, policy drop
    ct state established,related accept
    from the client side, ct state new accepted only for a TCP SYN

and its conntrack forgets an established TCP flow after
nf_conntrack_tcp_timeout_established seconds without a packet (the idle
timeout under test; seconds here, minutes in the field). With
nf_conntrack_tcp_loose=0 the kernel does not pick a forgotten flow up again
from a mid-stream packet: such a packet is "invalid", matches no accept rule
and is dropped silently. Exactly the field failure: the server's answer to a
long-held ping vanishes, and neither end learns it.

Those sysctls are per network namespace on current kernels, so the lab
sets them in the firewall namespace only and the host's conntrack settings
stay as they are. Should a kernel share them, the lab notices (the host's
value changed) and puts the host's values back when it is torn down.

Addresses are private (10.231.1.0/24, 10.231.2.0/24) and exist only inside
the namespaces, so parallel runs, each with its own pid-based namespace
names, never see each other.

Use from pytest: the `lab` fixture (conftest.py) builds one Lab per test and
tears it down whatever happens. By hand (as root), see README:

    tests/netlab/lab.py up [--name NAME] [--timeout SECONDS]
    tests/netlab/lab.py timeout SECONDS [--name NAME]
    tests/netlab/lab.py status [--name NAME]
    tests/netlab/lab.py down [--name NAME]

Needs root, iproute2 (ip netns) and nftables (nft); unavailable() says which
is missing so that a test can skip with that reason.
"""
import argparse
import itertools
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "e2e"))

import harness  # noqa: E402
import netns  # noqa: E402

CLIENT_ADDR = "10.231.1.2"
FW_CLIENT_ADDR = "10.231.1.1"
FW_SERVER_ADDR = "10.231.2.1"
SERVER_ADDR = "10.231.2.2"
PREFIX_LEN = 24
# Device names inside the namespaces. The veths are created inside them
# (ip -n), never in the host, so these names cannot collide across runs.
DEV = "eth0"
FW_CLIENT_DEV = "vclient"
FW_SERVER_DEV = "vserver"

SYSCTL_DIR = "/proc/sys/net/netfilter"
TIMEOUT_KEY = "net.netfilter.nf_conntrack_tcp_timeout_established"
LOOSE_KEY = "net.netfilter.nf_conntrack_tcp_loose"
# The field default of many firewalls is an hour; the lab's tests use seconds.
DEFAULT_FW_TIMEOUT = 30

_labs = itertools.count(1)


def unavailable():
    """None when the lab can be built here, else why not (a skip reason)."""
    why = netns.unavailable()
    if why:
        return why
    p = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    if p.returncode != 0:
        return f"'ip netns' does not work here: {p.stderr.strip()}"
    return None


def _run(argv, input=None, check=True):
    p = subprocess.run(argv, capture_output=True, text=True, input=input, timeout=harness.WAIT)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {p.returncode}: {p.stderr.strip()}")
    return p


def namespaces():
    """The names `ip netns list` shows now."""
    out = _run(["ip", "netns", "list"]).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _host_sysctl(key):
    try:
        return Path("/proc/sys", *key.split(".")).read_text().strip()
    except OSError:
        return None


class Namespace(netns.NetNS):
    """netns.NetNS with a name of our choosing; the thread that makes
    sockets inside (worker) is only needed where the tests make sockets."""

    def __init__(self, name, worker=True, create=True):
        self.name = name
        self._jobs = None
        self._thread = None
        if create:
            _run(["ip", "netns", "add", name])
        try:
            if create:
                self.run("ip", "link", "set", "lo", "up")
            if worker:
                self._start_worker()
        except BaseException:
            self.delete()
            raise

    def sysctl(self, key, value=None):
        """Reads (or writes, then reads back) a sysctl inside the namespace."""
        if value is not None:
            self.run("sysctl", "-q", "-w", f"{key}={value}")
        return self.run("sysctl", "-n", key).strip()


class LabNudged(netns.NsNudged):
    """A nudged in the server namespace, listening on every IPv4 address of
    it: the client reaches it through the firewall at SERVER_ADDR, and the
    harness helpers (tokens, publish, metrics, admin API) reach it on
    127.0.0.1 inside the server namespace, not through the firewall."""

    LISTENING = re.compile(r"event=1001 name=listening addr=[0-9.]+:(\d+)")

    def __init__(self, ns, workdir, settings=None):
        settings = {s: dict(kv) for s, kv in (settings or {}).items()}
        settings.setdefault("server", {}).setdefault("listen", ":0")
        settings.setdefault("udp", {}).setdefault("listen", ":0")
        super().__init__(ns, workdir, settings)

    def start(self, timeout=harness.WAIT):
        """harness.Nudged.start, but the listening line names 0.0.0.0."""
        self.write_config()
        if self.create_data_dir:
            self.data_dir.mkdir(mode=0o700, exist_ok=True)
        exe = harness.nudged_path()
        assert os.access(exe, os.X_OK), f"nudged binary {exe} missing (set NUDGED)"
        self._log = open(self.log_path, "ab")
        offset = self.log_path.stat().st_size
        self.proc = subprocess.Popen([*self.command_prefix, exe, "-c", str(self.conf), *self.extra_args],
                                     stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log,
                                     cwd=str(self.dir))
        deadline = time.monotonic() + timeout
        while True:
            text = self.log_path.read_bytes()[offset:].decode("utf-8", "replace")
            m = self.LISTENING.search(text)
            if m:
                self.port = int(m.group(1))
                self.udp_port = harness.udp_port_in(text)
                return self
            if self.proc.poll() is not None:
                self.returncode = self.proc.returncode
                raise AssertionError(f"nudged exited {self.returncode} before listening\n"
                                     f"{self.log_tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"nudged did not log its listening line within {timeout}s\n"
                                     f"{self.log_tail()}")
            time.sleep(0.02)

    @property
    def client_url(self):
        """The URL a client in the client namespace uses (through the firewall)."""
        return f"http://{SERVER_ADDR}:{self.port}"


def stop_nudged(n):
    """Stops 'n' if it runs (SIGTERM; it must exit 0), kills it if it hangs;
    returns a list of problems, with the log's tail when there are any."""
    problems = []
    if n.proc is None:
        return problems
    if n.running():
        try:
            code = n.stop(signal.SIGTERM, timeout=harness.WAIT)
            if code != 0:
                problems.append(f"nudged exited {code} on SIGTERM (expected 0)")
        except AssertionError as e:
            problems.append(str(e))
    else:
        n.kill()  # reaps, closes the log
    if harness.SAN:
        reports = n.sanitizer_reports()
        if reports:
            problems.append(f"sanitizer reports: {reports}")
    if problems:
        problems.append(n.log_tail(80))
    return problems


class Lab:
    """Three namespaces, two veth pairs, a stateful firewall. Build it with
    Lab(...); close() tears everything down and is safe to call twice.

    For tests:
      start_nudged(settings)   a LabNudged in the server namespace
      client_conn(n)           a harness.Conn from the client, through the firewall
      client_request(n, ...)   one request from the client; the Response
      client_cli(n, *args)     runs nudge inside the client namespace, --url set
      set_fw_timeout(s)        the firewall's idle timeout for established TCP flows
      allow_udp()              lets UDP through (by default the firewall drops it)
      flows(port)              the firewall's conntrack entries of a client port
      cut_client()             the client's link goes down: it vanishes silently
      restore_client()         and comes back
      publish(n, user, folder) publishes from the server side (not through the firewall)
    """

    def __init__(self, workdir=None, fw_timeout=DEFAULT_FW_TIMEOUT, name=None, sockets=True):
        # Short: namespace names are file names, and "ip netns exec" prints them.
        self.name = name or f"nl{os.getpid()}x{next(_labs)}"
        self.workdir = Path(workdir) if workdir else None
        self.client = self.fw = self.server = None
        self.nudgeds = []
        self.fw_timeout = None
        self._conns = []
        self._procs = []
        self._host_timeout = _host_sysctl(TIMEOUT_KEY)
        self._host_loose = _host_sysctl(LOOSE_KEY)
        self._restore_host = False
        try:
            self._build(fw_timeout, sockets)
        except BaseException:
            self.close()
            raise

    # -- building ------------------------------------------------------------
    def ns_names(self):
        return [f"{self.name}{r}" for r in ("c", "f", "s")]

    def _build(self, fw_timeout, sockets):
        c_name, f_name, s_name = self.ns_names()
        self.client = Namespace(c_name, worker=sockets)
        self.fw = Namespace(f_name, worker=False)
        self.server = Namespace(s_name, worker=sockets)
        fw = self.fw.prefix()[-1]
        # Each pair is made inside the firewall namespace, its far end moved
        # straight into the client's (server's) namespace under the name eth0.
        for far, fw_dev, fw_addr, far_addr in ((self.client, FW_CLIENT_DEV, FW_CLIENT_ADDR, CLIENT_ADDR),
                                                (self.server, FW_SERVER_DEV, FW_SERVER_ADDR, SERVER_ADDR)):
            _run(["ip", "-n", fw, "link", "add", fw_dev, "type", "veth", "peer", "name", DEV,
                  "netns", far.name])
            self.fw.run("ip", "addr", "add", f"{fw_addr}/{PREFIX_LEN}", "dev", fw_dev)
            self.fw.run("ip", "link", "set", fw_dev, "up")
            far.run("ip", "addr", "add", f"{far_addr}/{PREFIX_LEN}", "dev", DEV)
            far.run("ip", "link", "set", DEV, "up")
            far.run("ip", "route", "add", "default", "via", fw_addr)
        # Static neighbours on the firewall: when the client vanishes
        # (cut_client), a forgotten ARP entry would make the firewall answer
        # the server with ICMP host-unreachable, which a real path to a phone
        # that lost coverage does not do, and which TCP would report instead
        # of a timeout. With them, packets to a vanished client are dropped
        # silently, like everything else this firewall drops.
        for far, fw_dev, far_addr in ((self.client, FW_CLIENT_DEV, CLIENT_ADDR),
                                      (self.server, FW_SERVER_DEV, SERVER_ADDR)):
            mac = re.search(r"link/ether ([0-9a-f:]{17})", far.run("ip", "link", "show", DEV)).group(1)
            self.fw.run("ip", "neigh", "replace", far_addr, "lladdr", mac, "dev", fw_dev,
                        "nud", "permanent")
        self.fw.sysctl("net.ipv4.ip_forward", 1)
        self.fw.nft(self._ruleset())
        self._conntrack_sysctls()
        self.set_fw_timeout(fw_timeout)
        self.fw.sysctl(LOOSE_KEY, 0)
        self._check_host_untouched()

    @staticmethod
    def _ruleset():
        return f"""
table inet lab {{
    chain forward {{
        type filter hook forward priority filter; policy drop;
        ct state established,related accept
        iifname "{FW_CLIENT_DEV}" ct state new tcp flags & (fin | syn | rst | ack) == syn accept
        iifname "{FW_CLIENT_DEV}" ct state new icmp type echo-request accept
    }}
}}
"""

    def _conntrack_sysctls(self):
        """The conntrack sysctls exist in a namespace once nf_conntrack is
        loaded (it is built in or loaded on most kernels; the ruleset's ct
        expressions load it where modules are used)."""
        probe = f"{SYSCTL_DIR}/nf_conntrack_tcp_timeout_established"
        if self.fw.run("sh", "-c", f"test -e {probe} && echo yes || echo no").strip() == "yes":
            return
        _run(["modprobe", "nf_conntrack"], check=False)
        if self.fw.run("sh", "-c", f"test -e {probe} && echo yes || echo no").strip() != "yes":
            raise AssertionError(f"{probe} does not exist in the firewall namespace, even after "
                                 "'modprobe nf_conntrack': this kernel has no usable conntrack")

    def _check_host_untouched(self):
        """Per-namespace sysctls leave the host's alone; a kernel that shares
        them is noticed here, and the host's values are put back on close."""
        if _host_sysctl(TIMEOUT_KEY) != self._host_timeout or _host_sysctl(LOOSE_KEY) != self._host_loose:
            self._restore_host = True

    # -- the firewall ----------------------------------------------------------
    def set_fw_timeout(self, seconds):
        """Sets the firewall's idle timeout for established TCP flows. A flow
        already tracked keeps its old deadline until its next packet."""
        got = self.fw.sysctl(TIMEOUT_KEY, int(seconds))
        assert got == str(int(seconds)), f"{TIMEOUT_KEY} reads {got} after writing {seconds}"
        self.fw_timeout = int(seconds)
        self._check_host_untouched()

    def allow_udp(self):
        """Lets UDP through the firewall both ways (new-mail datagrams from
        the server, acks from the client); ICMP errors about them pass as
        related traffic. Without it the firewall drops all UDP, silently."""
        self.fw.run("nft", "add", "rule", "inet", "lab", "forward", "meta", "l4proto", "udp", "accept")

    def flows(self, port=None):
        """The firewall's conntrack entries (lines of /proc/net/nf_conntrack),
        those of client port 'port' only when given."""
        text = self.fw.run("cat", "/proc/net/nf_conntrack")
        lines = [line for line in text.splitlines() if " tcp " in line]
        if port is not None:
            lines = [line for line in lines if f" sport={port} " in line]
        return lines

    def wait_flow_gone(self, port, timeout):
        """Waits until the firewall has forgotten the flow of client port
        'port'; returns the seconds waited."""
        start = time.monotonic()
        while self.flows(port):
            if time.monotonic() - start > timeout:
                raise AssertionError(f"the firewall still tracks client port {port} after {timeout}s: "
                                     f"{self.flows(port)}")
            time.sleep(0.1)
        return time.monotonic() - start

    # -- the client --------------------------------------------------------------
    def cut_client(self):
        """The client vanishes: its link goes down, so nothing it sends
        leaves and nothing reaches it, and no FIN or reset is ever sent
        (its sockets stay open), like a phone that lost coverage."""
        self.client.run("ip", "link", "set", DEV, "down")

    def restore_client(self):
        """Undoes cut_client (a link going down takes its routes with it)."""
        self.client.run("ip", "link", "set", DEV, "up")
        self.client.run("ip", "route", "replace", "default", "via", FW_CLIENT_ADDR)

    def client_conn(self, n, timeout=harness.WAIT):
        """A harness.Conn from the client namespace to nudged, through the firewall."""
        sock = self.client.connect((SERVER_ADDR, n.port), timeout)
        c = harness.Conn(None)
        c.sock = sock
        self._conns.append(c)
        return c

    def client_request(self, n, method, path, body=None, token=None, headers=None, timeout=harness.WAIT):
        c = self.client_conn(n, timeout)
        try:
            return c.request(method, path, body, token, headers, timeout)
        finally:
            c.close()

    def client_cli_bg(self, n, *args, url=None):
        """Starts `nudge ARGS --url URL` inside the client namespace in the
        background; returns the Popen (text mode, stdout and stderr piped).
        The caller waits for it; close() kills it if it is still running."""
        env = dict(os.environ)
        env.pop("NUDGE_URL", None)
        env.pop("NUDGE_TOKEN", None)
        p = subprocess.Popen([*self.client.prefix(), harness.nudge_path(), *args, "--url", url or n.client_url],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        self._procs.append(p)
        return p

    def client_cli(self, n, *args, url=None, timeout=harness.WAIT):
        """Runs `nudge ARGS --url URL` inside the client namespace, URL
        being nudged's through the firewall unless given; returns the
        CompletedProcess (text mode)."""
        env = dict(os.environ)
        env.pop("NUDGE_URL", None)
        env.pop("NUDGE_TOKEN", None)
        p = subprocess.run([*self.client.prefix(), harness.nudge_path(), *args, "--url", url or n.client_url],
                           capture_output=True, text=True, env=env, timeout=timeout)
        n._note_cli_stderr(p.stderr)
        return p

    # -- the server --------------------------------------------------------------
    def start_nudged(self, settings=None):
        """Starts a nudged in the server namespace with 'settings'
        ({"section": {"key": value}}, over the harness's test defaults)."""
        assert self.workdir is not None, "Lab(workdir=...) is needed to run nudged"
        n = LabNudged(self.server, self.workdir / f"nudged{len(self.nudgeds)}", settings)
        self.nudgeds.append(n)
        n.start()
        return n

    @staticmethod
    def publish(n, user, folder, **fields):
        """Publishes one event from the server side; returns the new state."""
        return n.publish(user, folder, **fields)

    # -- teardown -----------------------------------------------------------------
    def close(self):
        """Closes the client connections, stops every nudged (each must exit
        0 on SIGTERM, and with NUDGE_SAN=1 its log must hold no sanitizer
        report), deletes the namespaces and restores the host's sysctls if
        they were not per namespace. Returns a list of problems (empty: fine)."""
        problems = []
        while self._conns:
            self._conns.pop().close()
        while self._procs:
            p = self._procs.pop()
            if p.poll() is None:
                p.kill()
            p.communicate()
        for n in self.nudgeds:
            try:
                problems += stop_nudged(n)
            except Exception as e:  # keep tearing down
                problems.append(f"stopping nudged: {e!r}")
        self.nudgeds = []
        for ns in (self.client, self.fw, self.server):
            if ns is not None:
                ns.delete()
        self.client = self.fw = self.server = None
        if self._restore_host:
            for key, value in ((TIMEOUT_KEY, self._host_timeout), (LOOSE_KEY, self._host_loose)):
                if value is not None:
                    _run(["sysctl", "-q", "-w", f"{key}={value}"], check=False)
            self._restore_host = False
        left = [name for name in namespaces() if name in self.ns_names()]
        if left:
            problems.append(f"namespaces left behind: {left}")
        return problems

    @classmethod
    def attach(cls, name):
        """The lab built by hand under 'name' (lab.py up), to change or tear down."""
        lab = cls.__new__(cls)
        lab.name = name
        lab.workdir = None
        lab.nudgeds = []
        lab._conns = []
        lab._procs = []
        lab.fw_timeout = None
        lab._host_timeout = _host_sysctl(TIMEOUT_KEY)
        lab._host_loose = _host_sysctl(LOOSE_KEY)
        lab._restore_host = False
        present = namespaces()
        c_name, f_name, s_name = lab.ns_names()
        lab.client = Namespace(c_name, worker=False, create=False) if c_name in present else None
        lab.fw = Namespace(f_name, worker=False, create=False) if f_name in present else None
        lab.server = Namespace(s_name, worker=False, create=False) if s_name in present else None
        return lab


# ---------------------------------------------------------------------------
# nudged's log

# The log helpers are the harness's; kept here as names for the lab's tests.
log_events = harness.log_events
wait_event = harness.wait_event


# ---------------------------------------------------------------------------
# By hand


def main(argv=None):
    ap = argparse.ArgumentParser(description="Build, change or tear down the nudge network lab "
                                             "(see tests/netlab/README).")
    sub = ap.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="build the three namespaces and the firewall")
    up.add_argument("--timeout", type=int, default=DEFAULT_FW_TIMEOUT,
                    help=f"the firewall's idle timeout, s (default {DEFAULT_FW_TIMEOUT})")
    to = sub.add_parser("timeout", help="change the firewall's idle timeout")
    to.add_argument("seconds", type=int)
    sub.add_parser("status", help="show the namespaces, the timeout and the tracked flows")
    sub.add_parser("down", help="tear the lab down")
    for p in sub.choices.values():
        p.add_argument("--name", default="nudgelab",
                       help="namespace name prefix: NAMEc, NAMEf, NAMEs (default nudgelab)")
    args = ap.parse_args(argv)

    why = unavailable()
    if why:
        print(f"lab.py: {why}", file=sys.stderr)
        return 1
    if args.cmd == "up":
        taken = [n for n in namespaces() if n.startswith(args.name)]
        if taken:
            print(f"lab.py: namespaces {taken} exist already: 'lab.py down --name {args.name}' "
                  "first, or choose another --name", file=sys.stderr)
            return 1
        lab = Lab(fw_timeout=args.timeout, name=args.name, sockets=False)
        c, f, s = lab.ns_names()
        print(f"client   {c}: {DEV} {CLIENT_ADDR}/{PREFIX_LEN}, default via {FW_CLIENT_ADDR}\n"
              f"firewall {f}: {FW_CLIENT_DEV} {FW_CLIENT_ADDR}, {FW_SERVER_DEV} {FW_SERVER_ADDR}, "
              f"established TCP flows forgotten after {args.timeout} s idle\n"
              f"server   {s}: {DEV} {SERVER_ADDR}/{PREFIX_LEN}, default via {FW_SERVER_ADDR}\n"
              f"\n"
              f"  ip netns exec {s} bin/nudged --listen :8080 --heartbeat-min 1\n"
              f"  ip netns exec {s} bin/nudge token --user alice -c <its config>\n"
              f"  ip netns exec {c} bin/nudge probe --url http://{SERVER_ADDR}:8080 --token TOKEN\n"
              f"  tests/netlab/lab.py down --name {args.name}")
        return 0
    lab = Lab.attach(args.name)
    if args.cmd == "down":
        problems = lab.close()
        for p in problems:
            print(f"lab.py: {p}", file=sys.stderr)
        return 1 if problems else 0
    if lab.fw is None:
        print(f"lab.py: no lab named {args.name} ('lab.py up --name {args.name}' builds one)",
              file=sys.stderr)
        return 1
    if args.cmd == "timeout":
        lab.set_fw_timeout(args.seconds)
        print(f"established TCP flows forgotten after {args.seconds} s idle")
        return 0
    print(f"namespaces: {' '.join(n for n in namespaces() if n in lab.ns_names())}")
    print(f"firewall idle timeout: {lab.fw.sysctl(TIMEOUT_KEY)} s, "
          f"tcp_loose {lab.fw.sysctl(LOOSE_KEY)}")
    for line in lab.flows():
        print(f"  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
