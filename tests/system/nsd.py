"""DNS servers inside a test network namespace (netns.NetNs), for MX delivery tests.

- Nsd: NLnet Labs' NSD, authoritative for the test zones, on 127.0.0.1:53
  (or another address and port) inside the namespace. tern is pointed at it with
  `resolver.type = "custom"`, `resolver.custom = ["udp://127.0.0.1:53"]`.
- SilentDns: a UDP socket that reads queries, logs them and never answers,
  for resolver timeouts.
- zone(): the text of a zone file with its SOA and NS records.

Zone names: use the reserved TLD `.example` (a.example, mx.example), NOT
`.test`. libunbound, tern's resolver, has default local zones for test.,
invalid., onion. and localhost. and answers NXDOMAIN for every name in them
itself, without asking the configured server (checked with libunbound 1.17
forwarding to this NSD: example.test MX -> NXDOMAIN, never queried).

What NSD 4.6 answers (checked with dig inside a namespace):
  - a name in a good zone: NOERROR, authoritative (aa), with the records;
    a name with no records of the type: NOERROR with no answer (NODATA);
    a name that does not exist: NXDOMAIN.
  - a name in a zone listed in `broken` (configured, but its zone file fails
    to load): SERVFAIL, not authoritative, with EDNS extended error 14 "Not
    Ready" ("Zone is configured but not loaded"), over UDP and TCP alike.
  - a name in no configured zone: REFUSED.
libunbound, forwarding to NSD, turns both SERVFAIL and REFUSED into rcode
SERVFAIL (2) for its caller, at once. Against SilentDns, with its default
settings, it gave up after 9 queries and about 17 s with SERVFAIL.

Each Nsd runs `nsd -d` (foreground) from a folder of its own under /tmp,
without dropping privileges (`username: ""`), so it can read that folder
and write its log, pid file, state and transfer files there. NSD forks into
three processes (xfrd, main, one server) and on SIGTERM its main exits
without reaping its server child, which would linger as a zombie of PID 1.
So NSD runs under a small reaper (_REAPER, the Popen's pid): a child
subreaper that forwards SIGTERM to NSD, waits for every descendant, then
exits with NSD's status. stop() sends it SIGTERM, then SIGKILLs by PID any
process still left in its session, and removes the folder.
"""
import json
import os
import re
import shutil
import subprocess
import tempfile
import time

import pytest

from netns import kill_all
from peers import stop_pid


def zone(origin, records=(), ttl=300, serial=1):
    """A zone file for origin: $ORIGIN, $TTL, SOA, NS ns.<origin>, ns.<origin>
    A 127.0.0.1, then records (lines of zone file text, a list or one string;
    relative names are relative to origin)."""
    origin = origin.rstrip(".") + "."
    if isinstance(records, str):
        records = records.splitlines()
    lines = ["$ORIGIN %s" % origin,
             "$TTL %d" % ttl,
             "@ IN SOA ns.%s hostmaster.%s %d 3600 600 86400 %d" % (origin, origin, serial, ttl),
             "@ IN NS ns.%s" % origin,
             "ns IN A 127.0.0.1"]
    lines += [r.strip() for r in records if r.strip()]
    return "\n".join(lines) + "\n"


# A zone file NSD refuses to load: no SOA, and a syntax error.
BROKEN_ZONE = "; broken on purpose by tests/system/nsd.py: NSD must fail to load it\nthis is not a record\n"


def _dig_status(output):
    m = re.search(r"status: ([A-Z]+)", output)
    return m.group(1) if m else None


# Runs argv[1:] as its child and reaps every orphan of it (PR_SET_CHILD_SUBREAPER),
# forwarding SIGTERM and SIGINT; exits when no descendant is left, with the
# child's exit status (128 + signal when a signal ended it).
_REAPER = r'''
import ctypes, os, signal, sys
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)   # PR_SET_CHILD_SUBREAPER
child = os.fork()
if child == 0:
    os.execvp(sys.argv[1], sys.argv[1:])
def forward(sig, frame):
    try:
        os.kill(child, sig)
    except ProcessLookupError:
        pass
for sig in (signal.SIGTERM, signal.SIGINT):
    signal.signal(sig, forward)
code = 1
while True:
    try:
        pid, status = os.wait()
    except ChildProcessError:
        break
    if pid == child:
        code = os.waitstatus_to_exitcode(status)
        code = 128 - code if code < 0 else code
sys.exit(code)
'''


class Nsd:
    """NSD inside netns on host:port, authoritative for zones
    ({origin: zone file text}) and failing (SERVFAIL) for broken ([origin])."""

    def __init__(self, netns, zones, broken=(), port=53, host="127.0.0.1"):
        self.netns = netns
        self.zones = {o.rstrip(".").lower(): text for o, text in zones.items()}
        self.broken = [o.rstrip(".").lower() for o in broken]
        both = set(self.zones) & set(self.broken)
        if both:
            raise ValueError("zones both good and broken: %s" % ", ".join(sorted(both)))
        self.host = host
        self.port = port
        self.base = None
        self.proc = None

    def _write(self):
        if shutil.which("nsd") is None:
            pytest.skip("nsd is not installed (Debian package nsd)")
        self.base = tempfile.mkdtemp(prefix="tern-nsd-")
        b = self.base
        self.conf = os.path.join(b, "nsd.conf")
        self.log_path = os.path.join(b, "nsd.log")
        conf = [
            "server:",
            "  ip-address: %s@%d" % (self.host, self.port),
            "  do-ip4: %s" % ("no" if ":" in self.host else "yes"),
            "  do-ip6: %s" % ("yes" if ":" in self.host else "no"),
            "  server-count: 1",
            '  username: ""',             # stay root: no chroot, no setuid
            '  chroot: ""',
            '  database: ""',             # zones in memory only, no nsd.db
            '  zonesdir: "%s"' % b,
            '  pidfile: "%s/nsd.pid"' % b,
            '  xfrdfile: "%s/xfrd.state"' % b,
            '  xfrdir: "%s"' % b,          # else NSD makes /tmp/nsd-xfr-PID
            '  zonelistfile: "%s/zone.list"' % b,
            '  logfile: "%s"' % self.log_path,
            "  verbosity: 1",
            "  zonefiles-check: yes",
            "remote-control:",
            "  control-enable: no",
        ]
        for origin, text in list(self.zones.items()) + [(o, BROKEN_ZONE) for o in self.broken]:
            fname = origin + ".zone"
            with open(os.path.join(b, fname), "w") as f:
                f.write(text)
            conf += ["zone:", '  name: "%s"' % origin, '  zonefile: "%s"' % fname]
        with open(self.conf, "w") as f:
            f.write("\n".join(conf) + "\n")

    def start(self, timeout=15.0):
        """Start NSD; returns once it answers a SOA query for every good zone
        (or, with only broken zones, answers at all). Cleans up on failure."""
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, timeout):
        self._write()
        self.out = open(os.path.join(self.base, "nsd.out"), "wb")
        # A session of its own: stop() finds what is left of NSD by it.
        self.proc = self.netns.popen(["/usr/bin/python3", "-c", _REAPER,
                                      "nsd", "-d", "-c", self.conf], stdout=self.out,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        probes = ([(o, "NOERROR") for o in self.zones]
                  or [(o, None) for o in (self.broken[:1] or ["."])])
        deadline = time.time() + timeout
        for origin, want in probes:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError("nsd exited with %s:\n%s" % (self.proc.returncode, self.log(40)))
                status = self.status(origin, "SOA")
                if status is not None and (want is None or status == want):
                    break
                if want is not None and status == "SERVFAIL":
                    # NSD serves only once it has read its zones: this one failed.
                    raise RuntimeError("nsd could not load zone %s:\n%s" % (origin, self.log(40)))
                if time.time() > deadline:
                    raise RuntimeError("nsd gives %s for %s SOA after %.0fs:\n%s"
                                       % (status, origin, timeout, self.log(40)))
                time.sleep(0.05)

    def stop(self):
        """SIGTERM by PID (to the reaper, which passes it on to NSD and
        waits for all of it), then SIGKILL any of its processes left;
        removes the folder."""
        if self.proc is not None:
            stop_pid(self.proc)
            # NSD's children share the session started at popen().
            sid = self.proc.pid
            kill_all(lambda: _session_pids(sid))
            self.proc = None
        if getattr(self, "out", None):
            self.out.close()
            self.out = None
        if self.base:
            shutil.rmtree(self.base, ignore_errors=True)
            self.base = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ---- looking ----

    def dig(self, name, rtype="A", *options, tcp=False):
        """dig's full output for one query to this server, from inside the
        namespace (no recursion, one try, 2 s)."""
        argv = ["dig", "@" + self.host, "-p", str(self.port), "+norec", "+time=2", "+tries=1"]
        if tcp:
            argv.append("+tcp")
        argv += [*options, name, rtype]
        return self.netns.run(argv, capture_output=True, text=True, timeout=10).stdout

    def status(self, name, rtype="A", tcp=False):
        """The response code ("NOERROR", "SERVFAIL", ...), None with no answer."""
        return _dig_status(self.dig(name, rtype, tcp=tcp))

    def short(self, name, rtype="A"):
        """dig +short: the answer's data, one record a line, sorted."""
        return sorted(self.dig(name, rtype, "+short").split("\n")[:-1])

    def log(self, tail=None):
        """NSD's output and log file (only their last tail lines if given)."""
        parts = []
        for fname in ("nsd.out", "nsd.log"):
            path = os.path.join(self.base or "", fname)
            if self.base and os.path.exists(path):
                with open(path, "rb") as f:
                    parts.append(f.read().decode("utf-8", "replace"))
        text = "".join(parts)
        return text if tail is None else "\n".join(text.splitlines()[-tail:])


def _session_pids(sid):
    """PIDs of the live (not zombie) processes in session sid."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                stat = f.read()
        except OSError:
            continue
        # pid (comm) state ppid pgrp session ...: comm may hold spaces.
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] != "Z" and int(fields[3]) == sid:
            out.append(int(entry))
    return out


# The silent server: binds UDP, says "ready", then logs each datagram as one
# JSON line {"peer", "qname", "qtype"} and never answers.
_SILENT = r'''
import json, socket, sys
host, port, log = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
s.bind((host, port))
out = open(log, "a")
print("ready", flush=True)
while True:
    data, peer = s.recvfrom(65535)
    labels, i = [], 12
    try:
        while data[i]:
            labels.append(data[i + 1:i + 1 + data[i]].decode("latin-1"))
            i += 1 + data[i]
        qtype = int.from_bytes(data[i + 1:i + 3], "big")
    except IndexError:
        qtype = None
    out.write(json.dumps({"peer": peer[0], "qname": ".".join(labels), "qtype": qtype}) + "\n")
    out.flush()
'''


class SilentDns:
    """A DNS server that never answers: UDP host:port inside netns."""

    def __init__(self, netns, port=53, host="127.0.0.1"):
        self.netns = netns
        self.host = host
        self.port = port
        self.base = None
        self.proc = None
        self.final = []

    def start(self):
        """Start it; returns once the socket is bound."""
        self.base = tempfile.mkdtemp(prefix="tern-silentdns-")
        self.log_path = os.path.join(self.base, "queries.jsonl")
        self.proc = self.netns.popen(["/usr/bin/python3", "-c", _SILENT, self.host, str(self.port),
                                      self.log_path], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            self.proc.wait(timeout=10)
            err = self.proc.stderr.read()
            self.stop()
            raise RuntimeError("silent DNS server failed: %s" % err)
        return self

    def stop(self):
        """SIGTERM by PID; removes its folder (query_log() is kept)."""
        if self.proc is not None:
            stop_pid(self.proc)
            self.proc.stdout.close()
            self.proc.stderr.close()
            self.proc = None
        if self.base:
            self.final = self.query_log()
            shutil.rmtree(self.base, ignore_errors=True)
            self.base = None

    def query_log(self):
        """Every query received so far: [{"peer", "qname", "qtype"}, ...]
        (qtype as a number: 1 A, 15 MX, 28 AAAA). After stop(), the
        queries it had received."""
        if self.base is None:
            return list(self.final)
        try:
            with open(self.log_path) as f:
                return [json.loads(l) for l in f if l.endswith("\n")]
        except FileNotFoundError:
            return []

    def queries(self):
        """How many queries arrived so far."""
        return len(self.query_log())

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
