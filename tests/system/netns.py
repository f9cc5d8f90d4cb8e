"""A network namespace of its own for system tests that need port 25 and DNS.

tern delivers to MX hosts on port 25 only, and finds them through DNS. Tests
of that run tern, an authoritative DNS server (nsd.py) and SMTP servers
(mxpeer.py) inside a fresh network namespace, where every address is on the
namespace's own `lo`: 127.0.0.0/8 addresses all work as they are, IPv6 test
addresses (fd00:7e57::N) are added as /128 with `nodad` so they are usable at
once. Nothing inside can reach, or be reached from, any other network.

- NetNs: creates and deletes the namespace; runs commands in it (`ip netns
  exec`); switches the calling thread into it (enter(), for client sockets
  such as smtplib's); counts the TCP SYNs sent to chosen addresses with
  nftables, so a test can tell how often tern tried an address where nothing
  listens (connection refused leaves no other trace).

The counters sit on the `output` hook (table `inet terntest`): every packet
on `lo` leaves through output before it comes back in through input, and
tern's connects originate in the namespace. A rule counts packets with SYN
set and ACK clear, so the SYN-ACK of a listening peer and the RST-ACK of a
refusing address are not counted: one connect() is one count, plus one per
SYN retransmission (none on lo, where a refusal is immediate). Anything else
that connects to a counted address, wait_port() included, counts too. An
AF_INET6 socket connecting to ::ffff:127.0.0.20 sends IPv4 packets, counted
under 127.0.0.20.

Needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN), iproute2 and nftables; without
them the test is skipped with the reason.
"""
import contextlib
import ctypes
import ipaddress
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import time

import pytest

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/run/netns"

_libc = ctypes.CDLL(None, use_errno=True)
_libc.setns.argtypes = (ctypes.c_int, ctypes.c_int)
_libc.setns.restype = ctypes.c_int

_serial = itertools.count(1)


def _setns(fd):
    """setns(2) for a network namespace: Python 3.11 has no os.setns."""
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, "setns: " + os.strerror(err))


def kill_all(list_pids, rounds=50):
    """SIGKILL, by PID, every process list_pids() names, until it names none
    (children may appear while their parents die)."""
    for _ in range(rounds):
        left = list_pids()
        if not left:
            return
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)


def normalize(addr):
    """The canonical text of an IP address ("fd00:7e57:0::9" -> "fd00:7e57::9")."""
    return str(ipaddress.ip_address(addr))


class NetNs:
    """A network namespace named tern-<pid>-<n>, deleted on exit.

    ipv6: addresses added to lo as /128 nodad. count: addresses (v4 or v6)
    whose outgoing TCP SYNs are counted, any port; syn_count() reads them.
    """

    def __init__(self, ipv6=(), count=()):
        self.ipv6 = [normalize(a) for a in ipv6]
        self.count = [normalize(a) for a in count]
        self.name = None
        self.counters = {}  # address -> nft counter name
        self.procs = []     # every popen(), killed at exit if still running

    # ---- life cycle ----

    def create(self):
        if os.geteuid() != 0:
            pytest.skip("network namespace tests need root")
        for tool in ("ip",) + (("nft",) if self.count else ()):
            if shutil.which(tool) is None:
                pytest.skip("network namespace tests need %s (iproute2, nftables)" % tool)
        # A name left behind by a crashed run with the same PID is skipped over.
        for _ in range(20):
            name = "tern-%d-%d" % (os.getpid(), next(_serial))
            r = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
            if r.returncode == 0:
                self.name = name
                break
            if "File exists" not in r.stderr:
                pytest.skip("cannot create a network namespace (ip netns add %s): %s"
                            % (name, r.stderr.strip()))
        else:
            pytest.skip("cannot create a network namespace: every name tried exists")
        try:
            self._check(["ip", "link", "set", "lo", "up"])
            for addr in self.ipv6:
                self._check(["ip", "-6", "addr", "add", addr + "/128", "dev", "lo", "nodad"])
            if self.count:
                self._install_counters()
        except BaseException:
            self.close()
            raise
        return self

    def _pids(self):
        r = subprocess.run(["ip", "netns", "pids", self.name], capture_output=True, text=True)
        return [int(p) for p in r.stdout.split() if int(p) != os.getpid()]

    def close(self):
        """Kill what popen() started and is still running, then any other
        process left in the namespace (their children), by PID; delete the
        namespace."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
        self.procs = []
        if self.name is not None:
            kill_all(self._pids)
            subprocess.run(["ip", "netns", "del", self.name], capture_output=True)
            self.name = None

    def __enter__(self):
        return self.create()

    def __exit__(self, *exc):
        self.close()

    # ---- running things inside ----

    def argv(self, cmd):
        """cmd run inside the namespace. `ip netns exec` execs cmd in the
        same process, so a Popen's pid is cmd's own."""
        return ["ip", "netns", "exec", self.name, *cmd]

    def popen(self, cmd, **kw):
        """subprocess.Popen(cmd) inside the namespace. Stopping it is the
        caller's job; close() SIGKILLs it if it is still running."""
        proc = subprocess.Popen(self.argv(cmd), **kw)
        self.procs.append(proc)
        return proc

    def run(self, cmd, **kw):
        """subprocess.run(cmd) inside the namespace."""
        return subprocess.run(self.argv(cmd), **kw)

    def _check(self, cmd, input=None):
        r = self.run(cmd, input=input, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError("%s failed (%d): %s" % (" ".join(cmd), r.returncode, r.stderr.strip()))
        return r.stdout

    @contextlib.contextmanager
    def enter(self):
        """Switch the calling thread into the namespace for the block, then
        back. Sockets created in the block live in the namespace for good,
        so `with ns.enter(): smtplib.SMTP(...)` talks to the servers inside.
        The thread's own namespace is saved first (/proc/thread-self), which
        makes nesting and use from other threads safe."""
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            target = os.open(os.path.join(NETNS_RUN_DIR, self.name), os.O_RDONLY | os.O_CLOEXEC)
            try:
                _setns(target)
            finally:
                os.close(target)
            try:
                yield self
            finally:
                _setns(home)
        finally:
            os.close(home)

    def wait_port(self, host, port, timeout=15.0, proc=None):
        """Wait until a TCP connect to host:port inside the namespace works.
        proc: give up as soon as this process has exited."""
        deadline = time.time() + timeout
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        while time.time() < deadline:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError("process exited with %s before listening on %s port %d"
                                   % (proc.returncode, host, port))
            try:
                with self.enter():
                    s = socket.socket(family, socket.SOCK_STREAM)
                with s:
                    s.settimeout(0.5)
                    s.connect((host, port))
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("nothing listens on %s port %d in %s after %gs"
                           % (host, port, self.name, timeout))

    # ---- SYN counters ----

    def _install_counters(self):
        lines = ["table inet terntest {"]
        for i, addr in enumerate(self.count):
            self.counters[addr] = "syn_%d" % i
            lines.append('  counter syn_%d { }' % i)
        # Priority filter (0) on output: all traffic to lo passes here first.
        lines += ["  chain out {",
                  "    type filter hook output priority filter; policy accept;"]
        for addr, counter in self.counters.items():
            ip = "ip6" if ipaddress.ip_address(addr).version == 6 else "ip"
            lines.append('    %s daddr %s tcp flags & (syn | ack) == syn counter name "%s"'
                         % (ip, addr, counter))
        lines += ["  }", "}", ""]
        self._check(["nft", "-f", "-"], input="\n".join(lines))

    def syn_count(self, addr):
        """TCP SYNs (without ACK) sent to addr so far, any port."""
        counter = self.counters.get(normalize(addr))
        if counter is None:
            raise KeyError("%s is not a counted address (NetNs(count=[...]))" % addr)
        out = self._check(["nft", "-j", "list", "counter", "inet", "terntest", counter])
        for item in json.loads(out)["nftables"]:
            if "counter" in item:
                return int(item["counter"]["packets"])
        raise RuntimeError("nft listed no counter %s: %s" % (counter, out))

    def syn_counts(self):
        """{address: SYN count} for every counted address, in one nft call."""
        out = self._check(["nft", "-j", "list", "counters", "table", "inet", "terntest"])
        by_name = {item["counter"]["name"]: int(item["counter"]["packets"])
                   for item in json.loads(out)["nftables"] if "counter" in item}
        return {addr: by_name[name] for addr, name in self.counters.items()}
