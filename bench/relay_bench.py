#!/usr/bin/python3
"""Relay benchmark: smtp-source -> {nothing | tern | Postfix} -> smtp-sink.

For each body size, in one run:
  direct   smtp-source straight to smtp-sink (the ceiling for this machine);
  tern     smtp-source -> `tern serve` -> smtp-sink;
  postfix  smtp-source -> a private Postfix instance -> smtp-sink.
Both relays fsync every message before their 250 (see bench/README.md).

Rates are messages per second from the first message sent until smtp-sink
has counted N messages. Also: peak RSS and CPU time per message of each
relay. Standard library only; loopback only; every process started here is
stopped by its PID, also on errors and Ctrl-C.

    /usr/bin/python3 bench/relay_bench.py [--messages N] [--sessions S]
        [--sizes 2k,64k] [--only tern|postfix|direct[,...]] [--keep] [--tern BIN]
"""
import argparse
import datetime
import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLK_TCK = os.sysconf("SC_CLK_TCK")
SENDER = "sender@example.org"
RCPT = "rcpt@example.net"
PHASES = ("direct", "tern", "postfix")


class BenchError(Exception):
    pass


class PhaseFailed(Exception):
    def __init__(self, msg, reached=None):
        super().__init__(msg)
        self.reached = reached


def log(msg):
    print("# " + msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- helpers

def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_banner(port, timeout, alive=None, what="server"):
    """Wait until 127.0.0.1:port answers with a 220 greeting."""
    deadline = time.monotonic() + timeout
    last = "nothing listening"
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise BenchError("%s exited before listening on port %d" % (what, port))
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                s.settimeout(5)
                data = s.recv(512)
                if data.startswith(b"220"):
                    try:
                        s.sendall(b"QUIT\r\n")
                        s.recv(512)
                    except OSError:
                        pass
                    return
                last = "greeting %r" % data[:80]
        except OSError as e:
            last = str(e)
        time.sleep(0.1)
    raise BenchError("%s on port %d not ready after %.0fs (%s)" % (what, port, timeout, last))


def stop_proc(proc, grace=10.0):
    """SIGTERM, then SIGKILL after `grace` seconds; a Popen, by its PID."""
    if proc is None or proc.poll() is not None:
        return
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        log("pid %d ignored SIGTERM for %.0fs: SIGKILL" % (proc.pid, grace))
        proc.kill()
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass


def pid_alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return fields[0] != "Z"
    except (OSError, IndexError):
        return False


def proc_stat(pid):
    """(ppid, utime+stime ticks, cutime+cstime ticks) or None."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            data = f.read()
    except OSError:
        return None
    rest = data.rsplit(")", 1)[1].split()
    # rest[0] = state (field 3); utime is field 14 -> rest[11]
    return int(rest[1]), int(rest[11]) + int(rest[12]), int(rest[13]) + int(rest[14])


def proc_status_kb(pid, key):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def proc_rss_kb(pid):
    """VmRSS, from /proc/PID/statm (cheaper to read than status)."""
    try:
        with open("/proc/%d/statm" % pid) as f:
            return int(f.read().split()[1]) * PAGE_KB
    except (OSError, ValueError, IndexError):
        return 0


def proc_pss_kb(pid):
    try:
        with open("/proc/%d/smaps_rollup" % pid) as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def children_of(ppid):
    """PIDs whose parent is ppid: the kernel's list when it keeps one, else a /proc scan."""
    try:
        out = []
        for tid in os.listdir("/proc/%d/task" % ppid):
            with open("/proc/%d/task/%s/children" % (ppid, tid)) as f:
                out += [int(x) for x in f.read().split()]
        return out
    except FileNotFoundError:
        if not os.path.exists("/proc/%d" % ppid):
            return []
    except (OSError, ValueError):
        pass
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = proc_stat(int(name))
            if st is not None and st[0] == ppid:
                out.append(int(name))
    return out


def tree_cpu_ticks(root):
    """CPU ticks of root (itself and its reaped children) plus its live children."""
    total = 0
    st = proc_stat(root)
    if st is not None:
        total += st[1] + st[2]
    for pid in children_of(root):
        st = proc_stat(pid)
        if st is not None:
            total += st[1] + st[2]
    return total


def children_cpu_seconds():
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def self_cpu_seconds():
    t = os.times()
    return t.user + t.system


def system_cpu():
    """The 'cpu' line of /proc/stat: user nice system idle iowait irq softirq steal."""
    with open("/proc/stat") as f:
        return [int(x) for x in f.readline().split()[1:9]]


def fmt_size(n):
    if n % 1024 == 0:
        return "%dKiB" % (n // 1024)
    return "%dB" % n


def parse_size(text):
    t = text.strip().lower()
    m = re.fullmatch(r"(\d+)\s*(k|kb|kib|m|mb|mib|b)?", t)
    if not m:
        raise argparse.ArgumentTypeError("bad size %r" % text)
    mult = {None: 1, "b": 1, "k": 1024, "kb": 1024, "kib": 1024,
            "m": 1 << 20, "mb": 1 << 20, "mib": 1 << 20}[m.group(2)]
    return int(m.group(1)) * mult


# ---------------------------------------------------------------- smtp-sink

class Sink:
    """smtp-sink -c: its counter line "sess=N quit=N mesg=N\\r" is read on stdout."""

    def __init__(self, workdir):
        self.port = free_port()
        self.log_path = os.path.join(workdir, "sink-%d.log" % self.port)
        self.proc = None
        self.count = 0
        self.changed = time.monotonic()
        self.reached_at = {}          # target -> monotonic time the count reached it
        self.targets = set()
        self.cond = threading.Condition()
        self.thread = None
        self.logf = None

    def start(self):
        self.logf = open(self.log_path, "wb")
        argv = ["smtp-sink", "-u", "nobody", "-c", "127.0.0.1:%d" % self.port, "1024"]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self.logf,
                                     stdin=subprocess.DEVNULL)
        self.thread = threading.Thread(target=self._reader, daemon=True)
        self.thread.start()
        wait_banner(self.port, 15, alive=lambda: self.proc.poll() is None, what="smtp-sink")
        return self

    def _reader(self):
        fd = self.proc.stdout.fileno()
        pat = re.compile(rb"mesg=(\d+)")
        tail = b""
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                with self.cond:
                    self.cond.notify_all()
                break
            now = time.monotonic()
            buf = tail + chunk
            # smtp-sink writes a line per message: let a few accumulate in the pipe
            # instead of waking up for each (this thread would take a third of a core).
            time.sleep(0.002)
            cut = max(buf.rfind(b"\r"), buf.rfind(b"\n"))
            if cut < 0:
                tail = buf[-256:]
                continue
            done, tail = buf[:cut], buf[cut + 1:][-256:]
            found = pat.findall(done)
            if not found:
                continue
            n = int(found[-1])
            with self.cond:
                if n != self.count:
                    self.count = n
                    self.changed = now
                    for t in self.targets:
                        if n >= t and t not in self.reached_at:
                            self.reached_at[t] = now
                            self.cond.notify_all()

    def cpu_ticks(self):
        st = proc_stat(self.proc.pid)
        return st[1] if st else 0

    def current(self):
        with self.cond:
            return self.count

    def wait_for(self, target, t0, stall, source=None):
        """Block until the counter reaches target. Returns the monotonic time it did.
        Fails when the counter has not moved for `stall` seconds (counting from t0)."""
        with self.cond:
            self.targets.add(target)
            if self.count >= target and target not in self.reached_at:
                self.reached_at[target] = time.monotonic()
            while target not in self.reached_at:
                if self.proc.poll() is not None:
                    raise PhaseFailed("smtp-sink exited (%s)" % self.proc.returncode, self.count)
                idle = time.monotonic() - max(self.changed, t0)
                limit = stall
                if source is not None and source.failed():
                    limit = min(stall, 10.0)   # the client gave up: nothing more is coming
                if idle > limit:
                    raise PhaseFailed("smtp-sink counter stalled for %.0fs" % idle, self.count)
                self.cond.wait(timeout=0.2)
            return self.reached_at[target]

    def stop(self):
        stop_proc(self.proc)
        if self.proc is not None and self.proc.stdout:
            self.proc.stdout.close()
        if self.logf:
            self.logf.close()
            self.logf = None


# ---------------------------------------------------------------- smtp-source

class Source:
    def __init__(self, port, n, size, sessions, log_path):
        self.argv = ["smtp-source", "-d", "-s", str(sessions), "-m", str(n), "-l", str(size),
                     "-f", SENDER, "-t", RCPT, "127.0.0.1:%d" % port]
        self.log_path = log_path
        self.proc = None
        self.t0 = None
        self.t_exit = None
        self.done = threading.Event()

    def start(self):
        self.logf = open(self.log_path, "ab")
        self.logf.write(("$ " + " ".join(self.argv) + "\n").encode())
        self.logf.flush()
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(self.argv, stdout=self.logf, stderr=self.logf,
                                     stdin=subprocess.DEVNULL)
        threading.Thread(target=self._waiter, daemon=True).start()
        return self

    def _waiter(self):
        self.proc.wait()
        self.t_exit = time.monotonic()
        self.done.set()

    def failed(self):
        return self.done.is_set() and self.proc.returncode != 0

    def wait(self, timeout):
        return self.done.wait(timeout)

    def error_text(self):
        try:
            with open(self.log_path, "rb") as f:
                lines = f.read().decode("utf-8", "replace").strip().splitlines()
            return lines[-1] if lines else ""
        except OSError:
            return ""

    def stop(self):
        stop_proc(self.proc, grace=5)
        self.logf.close()


def run_through(sink, port, n, size, args, log_path, cpu_probe=None):
    """smtp-source to port; wait until the sink has counted n more messages.
    Returns the timings, the relay's CPU ticks (cpu_probe) and where the machine's CPU went."""
    base = sink.current()
    target = base + n
    cpu0 = cpu_probe() if cpu_probe else None
    sink0 = sink.cpu_ticks()
    kids0 = children_cpu_seconds()
    sys0 = system_cpu()
    self0 = self_cpu_seconds()
    w0 = time.monotonic()
    src = Source(port, n, size, args.sessions, log_path).start()
    try:
        try:
            t_end = sink.wait_for(target, src.t0, args.stall, source=src)
        except PhaseFailed as e:
            e.reached = (e.reached or 0) - base
            if src.failed():
                e.args = ("%s; smtp-source exit %d: %s" % (e.args[0], src.proc.returncode,
                                                           src.error_text()),)
            raise
        cpu1 = cpu_probe() if cpu_probe else None
        sink1 = sink.cpu_ticks()
        sys1 = system_cpu()
        self1 = self_cpu_seconds()
        w1 = time.monotonic()
        # The sink has everything; the client should be done (or about to).
        if not src.wait(30):
            raise PhaseFailed("smtp-source still running 30s after the sink got all messages", n)
        if src.proc.returncode != 0:
            raise PhaseFailed("smtp-source exit %d: %s" % (src.proc.returncode, src.error_text()), n)
        d = [b - a for a, b in zip(sys0, sys1)]
        return {
            "seconds": t_end - src.t0,
            "accept_seconds": src.t_exit - src.t0,
            "client_seconds": src.t_exit - src.t0,
            "cpu_ticks": (cpu1 - cpu0) if cpu_probe else None,
            # smtp-source was reaped by Source's waiter thread: the only child reaped meanwhile
            "source_cpu": children_cpu_seconds() - kids0,
            "sink_cpu": (sink1 - sink0) / CLK_TCK,
            "self_cpu": self1 - self0,
            # machine-wide, while the messages went through, in CPU seconds
            "window": w1 - w0,
            "sys_busy": (sum(d) - d[3] - d[4]) / CLK_TCK,
            "sys_idle": d[3] / CLK_TCK,
            "sys_iowait": d[4] / CLK_TCK,
        }
    finally:
        src.stop()


# ---------------------------------------------------------------- phases

def phase_direct(sink, n, size, args, workdir):
    r = run_through(sink, sink.port, n, size, args,
                    os.path.join(workdir, "source-direct-%s.log" % fmt_size(size)))
    # The direct rate is smtp-source's own wall time (its last QUIT included).
    r["seconds"] = max(r["seconds"], r["client_seconds"])
    return r


def start_profiler(kind, pid, prefix, what="tern"):
    """Attach perf or strace to a relay for the run (slows it: not for the table)."""
    if kind == "perf":
        out = prefix + ".perf.data"
        argv = ["perf", "record", "-q", "-e", "cpu-clock", "-F", "1999",
                "--call-graph", "dwarf,16384", "-p", str(pid), "-o", out]
    else:
        out = prefix + ".strace.txt"
        argv = ["strace", "-q", "-c", "-f", "-S", "calls", "-p", str(pid), "-o", out]
    logf = open(prefix + ".log", "wb")
    p = subprocess.Popen(argv, stdout=logf, stderr=logf, stdin=subprocess.DEVNULL)
    logf.close()
    time.sleep(1.0)   # let it attach before the first message
    log("  %s attached to %s (pid %d): %s" % (kind, what, pid, out))
    return p


def stop_profiler(p):
    """SIGINT makes perf and strace write their data and detach."""
    if p is None or p.poll() is not None:
        return
    p.send_signal(signal.SIGINT)
    try:
        p.wait(timeout=120)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(timeout=10)


TERN_CONFIG = """\
[server]
hostname = "tern.bench"
[server.listener."smtp"]
bind = ["127.0.0.1:{port}"]
[session.rcpt]
relay = [ {{ if = "remote-ip", eq = "127.0.0.0/8", then = true }}, {{ else = false }} ]
[session.data.limits]
messages = 1000000
[queue]
path = "{spool}"
[queue.outbound]
next-hop = "sink"
[remote."sink"]
address = "127.0.0.1"
port = {sinkport}
protocol = "smtp"
concurrency = 20
"""


def phase_tern(sink, n, size, args, workdir):
    d = os.path.join(workdir, "tern-%s" % fmt_size(size))
    os.makedirs(d)
    port = free_port()
    spool = os.path.join(d, "spool")
    cfg = os.path.join(d, "tern.toml")
    with open(cfg, "w") as f:
        f.write(TERN_CONFIG.format(port=port, spool=spool, sinkport=sink.port))
    logf = open(os.path.join(d, "tern.log"), "wb")
    argv = [args.tern, "serve", "-c", cfg]
    proc = None
    prof = None
    try:
        proc = subprocess.Popen(argv, stdout=logf, stderr=logf, stdin=subprocess.DEVNULL)
        wait_banner(port, 30, alive=lambda: proc.poll() is None, what="tern")
        pid = proc.pid
        if args.profile:
            prof = start_profiler(args.profile, pid, os.path.join(d, "profile"))

        def cpu():
            st = proc_stat(pid)
            return st[1] if st else 0
        r = run_through(sink, port, n, size, args, os.path.join(d, "source.log"), cpu)
        r["rss_kb"] = proc_status_kb(pid, "VmHWM")
        r["pss_kb"] = proc_pss_kb(pid)
        r["pss_what"] = "PSS at the end"
        r["procs"] = 1
        if proc.poll() is not None:
            raise PhaseFailed("tern exited with %s during the run" % proc.returncode, n)
        return r
    finally:
        stop_profiler(prof)
        stop_proc(proc, grace=10)
        logf.close()
        shutil.rmtree(spool, ignore_errors=True)
        if proc is not None and proc.returncode not in (0, None, -signal.SIGTERM):
            log("tern exited with status %s (log: %s)" % (proc.returncode,
                                                        os.path.join(d, "tern.log")))


POSTFIX_MAIN = """\
# Private Postfix instance for bench/relay_bench.py; stock durability (each
# queue file is fsync'd by cleanup before smtpd answers 250).
compatibility_level = 3.6
queue_directory = {d}/queue
data_directory = {d}/data
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = postfix.bench
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
relayhost = [127.0.0.1]:{sinkport}
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks reject
maillog_file = {d}/maillog
maillog_file_prefixes = {d}
syslog_name = postfix-bench
biff = no
"""

# Debian's stock master.cf services, chroot off, no content filters, and the
# SMTP listener on 127.0.0.1:PORT.
POSTFIX_MASTER = """\
127.0.0.1:{port} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


class MemSampler:
    """Every `interval` s: sum of VmRSS over master and its children; keeps the max.
    Pss (smaps_rollup) is summed too, every 10th sample (it costs more to read)."""

    def __init__(self, root, interval=0.1):
        self.root = root
        self.interval = interval
        self.max_rss = 0
        self.max_pss = 0
        self.max_procs = 0
        self.stop_ev = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def sample(self, with_pss):
        pids = [self.root] + children_of(self.root)
        rss = sum(proc_rss_kb(p) for p in pids)
        self.max_rss = max(self.max_rss, rss)
        self.max_procs = max(self.max_procs, len(pids))
        if with_pss:
            self.max_pss = max(self.max_pss, sum(proc_pss_kb(p) for p in pids))

    def _run(self):
        i = 0
        while not self.stop_ev.is_set():
            self.sample(i % 10 == 0)
            i += 1
            self.stop_ev.wait(self.interval)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.stop_ev.set()
        self.thread.join(timeout=5)
        self.sample(True)


def postfix_master_pid(d):
    try:
        with open(os.path.join(d, "queue", "pid", "master.pid")) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def stop_postfix(d, master):
    etc = os.path.join(d, "etc")
    kids = set(children_of(master)) if master else set()
    try:
        subprocess.run(["postfix", "-c", etc, "stop"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=30)
    except subprocess.TimeoutExpired:
        pass
    if master is None:
        return
    deadline = time.monotonic() + 10
    while pid_alive(master) and time.monotonic() < deadline:
        time.sleep(0.1)
    if pid_alive(master):
        log("postfix master %d still alive after 'postfix stop': SIGKILL" % master)
        kids |= set(children_of(master))
        try:
            os.kill(master, signal.SIGKILL)
        except ProcessLookupError:
            pass
    # master SIGTERMs its children on the way out; make sure of it, by PID.
    deadline = time.monotonic() + 5
    while any(pid_alive(p) for p in kids) and time.monotonic() < deadline:
        time.sleep(0.1)
    for p in kids:
        if pid_alive(p):
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass


def phase_postfix(sink, n, size, args, workdir):
    d = os.path.join(workdir, "postfix-%s" % fmt_size(size))
    os.makedirs(os.path.join(d, "etc"))
    os.makedirs(os.path.join(d, "queue"))   # post-install creates the rest, owned by postfix
    os.chmod(d, 0o755)
    port = free_port()
    with open(os.path.join(d, "etc", "main.cf"), "w") as f:
        f.write(POSTFIX_MAIN.format(d=d, sinkport=sink.port))
    with open(os.path.join(d, "etc", "master.cf"), "w") as f:
        f.write(POSTFIX_MASTER.format(port=port))
    master = None
    sampler = None
    prof = None
    try:
        # As root, `postfix -c DIR` needs no alternate_config_directories entry in
        # /etc/postfix/main.cf: that check only applies to unprivileged callers.
        r = subprocess.run(["postfix", "-c", os.path.join(d, "etc"), "start"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
        master = postfix_master_pid(d)
        if r.returncode != 0:
            raise BenchError("postfix start failed (%d): %s" % (
                r.returncode, r.stdout.decode("utf-8", "replace").strip()[-500:]))
        deadline = time.monotonic() + 10
        while (master is None or not pid_alive(master)) and time.monotonic() < deadline:
            time.sleep(0.1)
            master = postfix_master_pid(d)
        if master is None:
            raise BenchError("postfix master did not start (see %s/maillog)" % d)
        wait_banner(port, 30, alive=lambda: pid_alive(master), what="postfix")
        if args.profile == "strace":   # -f follows the children master forks from now on
            prof = start_profiler("strace", master, os.path.join(d, "profile"), "postfix master")
        sampler = MemSampler(master).start()
        res = run_through(sink, port, n, size, args, os.path.join(d, "source.log"),
                          lambda: tree_cpu_ticks(master))
        sampler.stop()
        res["rss_kb"] = sampler.max_rss
        res["pss_kb"] = sampler.max_pss
        res["pss_what"] = "peak PSS (sum)"
        res["procs"] = sampler.max_procs
        sampler = None
        return res
    finally:
        if sampler is not None:
            sampler.stop()
        stop_profiler(prof)
        stop_postfix(d, master)
        shutil.rmtree(os.path.join(d, "queue"), ignore_errors=True)
        shutil.rmtree(os.path.join(d, "data"), ignore_errors=True)


# ---------------------------------------------------------------- report

def rate(r, n):
    return n / r["seconds"] if r and r.get("seconds") else None


def fnum(v, fmt="%.0f"):
    return "-" if v is None else fmt % v


def print_table(rows):
    head = ["size", "N", "direct/s", "tern/s", "postfix/s", "tern/pf", "tern/direct",
            "tern RSS", "pf RSS(sum)", "tern cpu/msg", "pf cpu/msg"]
    lines = []
    for row in rows:
        n = row["n"]
        cells = [fmt_size(row["size"]), str(n)]
        rates = {}
        for ph in PHASES:
            r = row.get(ph)
            if r is None:
                cells.append("-")
            elif "error" in r:
                cells.append("FAIL %d/%d" % (r.get("reached") or 0, n))
            else:
                rates[ph] = rate(r, n)
                cells.append(fnum(rates[ph]))
        row["rates"] = rates
        tp = rates["tern"] / rates["postfix"] if "tern" in rates and "postfix" in rates else None
        td = rates["tern"] / rates["direct"] if "tern" in rates and "direct" in rates else None
        row["tp"], row["td"] = tp, td
        cells += [fnum(tp, "%.2fx"), fnum(td, "%.2f")]
        for ph in ("tern", "postfix"):
            r = row.get(ph)
            cells.append(fnum(r["rss_kb"] / 1024.0, "%.1f MiB") if r and "rss_kb" in r else "-")
        for ph in ("tern", "postfix"):
            r = row.get(ph)
            if r and r.get("cpu_ticks") is not None:
                cells.append("%.3f ms" % (r["cpu_ticks"] * 1000.0 / CLK_TCK / n))
            else:
                cells.append("-")
        lines.append(cells)
    widths = [max([len(h)] + [len(c[i]) for c in lines]) for i, h in enumerate(head)]
    print("  ".join(h.rjust(w) for h, w in zip(head, widths)))
    for cells in lines:
        print("  ".join(c.rjust(w) for c, w in zip(cells, widths)))
    print()
    for row in rows:
        n = row["n"]
        for ph in PHASES:
            r = row.get(ph)
            if r is None:
                continue
            if "error" in r:
                print("  %-6s %-7s FAILED: %s" % (fmt_size(row["size"]), ph, r["error"]))
                continue
            line = "  %-6s %-7s %d msgs in %.2fs" % (fmt_size(row["size"]), ph, n, r["seconds"])
            if ph != "direct":
                line += "; smtp-source done after %.2fs (%.0f msg/s accepted); %d process(es), " \
                        "%s %.1f MiB" % (r["accept_seconds"], n / r["accept_seconds"],
                                         r["procs"], r["pss_what"], r["pss_kb"] / 1024.0)
            print(line)
            # Where the machine's CPUs went meanwhile, in cores (CPU seconds per second).
            w = r["window"] or 1e-9
            relay = (r["cpu_ticks"] or 0) / CLK_TCK
            rest = r["sys_busy"] - relay - r["source_cpu"] - r["sink_cpu"] - r["self_cpu"]
            print("  %-14s cores: %s%s %.2f, smtp-sink %.2f, this script %.2f, rest %.2f "
                  "(softirq, kernel threads, other processes); idle %.2f, iowait %.2f" % (
                      "", "%s %.2f, " % (ph, relay / w) if ph != "direct" else "",
                      "smtp-source", r["source_cpu"] / w, r["sink_cpu"] / w, r["self_cpu"] / w,
                      max(rest, 0) / w, r["sys_idle"] / w, r["sys_iowait"] / w))
    print()
    parts = []
    for row in rows:
        parts.append("%s: tern/postfix %s, tern/direct %s" % (
            fmt_size(row["size"]), fnum(row["tp"], "%.2fx"), fnum(row["td"], "%.2f")))
    print("ratios: " + "; ".join(parts))


# ---------------------------------------------------------------- main

def git_rev():
    """The checkout's commit, '+dirty' when src/ has changes not committed."""
    try:
        rev = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--", "src"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def postfix_version():
    try:
        return subprocess.run(["postconf", "-d", "-h", "mail_version"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, help="messages per run (default 5000 below "
                    "32 KiB, else 2000)")
    ap.add_argument("--sessions", type=int, default=20, help="smtp-source sessions (20)")
    ap.add_argument("--sizes", default="2k,64k", help="body sizes, comma-separated (2k,64k)")
    ap.add_argument("--only", default="direct,tern,postfix",
                    help="phases to run: direct, tern, postfix (comma-separated)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (logs, configs)")
    ap.add_argument("--tern", default=os.path.join(REPO, "build", "tern"),
                    help="tern binary (default: build/tern, the optimised build)")
    ap.add_argument("--workdir", default=None,
                    help="where the temporary folder goes (default: $TMPDIR or /tmp); "
                         "both spools live there, so keep it one file system")
    ap.add_argument("--stall", type=float, default=60.0,
                    help="fail a row when the sink counter has not moved for this long (60)")
    ap.add_argument("--profile", choices=("perf", "strace"),
                    help="attach perf record (cpu-clock, DWARF call graphs) or strace -c -f "
                         "to tern during its runs (strace: to Postfix's master too); implies --keep. Profiled rates are slower: "
                         "not for comparison")
    args = ap.parse_args()
    if args.profile:
        args.keep = True

    sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
    only = [p.strip() for p in args.only.split(",") if p.strip()]
    for p in only:
        if p not in PHASES:
            ap.error("--only: unknown phase %r (direct, tern, postfix)" % p)
    if "tern" in only:
        args.tern = os.path.abspath(args.tern)
        if not os.access(args.tern, os.X_OK):
            ap.error("tern binary %s not found (make build/tern, or --tern BIN)" % args.tern)
        if "/san/" in args.tern:
            log("warning: %s looks like the sanitizer build" % args.tern)
    if "postfix" in only and os.geteuid() != 0:
        ap.error("the postfix phase needs root (postfix start)")
    for tool in ("smtp-sink", "smtp-source") + (("postfix",) if "postfix" in only else ()):
        if shutil.which(tool) is None:
            ap.error("%s not found (Debian package postfix)" % tool)

    # SIGINT (even when inherited as ignored), SIGTERM and SIGHUP: like Ctrl-C, so that every finally block runs.
    # A second signal is ignored: the clean-up is bounded (10 s per process).
    def on_signal(signum, frame):
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        raise KeyboardInterrupt("signal %d" % signum)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    workdir = tempfile.mkdtemp(prefix="tern-bench-", dir=args.workdir)
    os.chmod(workdir, 0o755)   # Postfix's daemons (user postfix) live below it
    # How idle is the machine? (The load average would still count our own last run.)
    a = system_cpu()
    time.sleep(1.0)
    b = system_cpu()
    d = [y - x for x, y in zip(a, b)]
    idle = (d[3] + d[4]) / float(sum(d) or 1)
    print("tern relay benchmark  %s  %s  %d cores  idle %.0f%%  repo %s  postfix %s  "
          "sessions %d" % (datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
                           platform.node() or "?", os.cpu_count() or 0, idle * 100, git_rev(),
                           postfix_version(), args.sessions), flush=True)
    if "tern" in only:
        print("tern binary %s" % args.tern, flush=True)
    if idle < 0.9:
        log("warning: the machine was only %.0f%% idle before the run: something else is "
            "running, the figures will be noisy (see 'rest' in the detail lines)" % (idle * 100))
    rows = []
    failed = False
    try:
        for size in sizes:
            n = args.messages or (5000 if size < 32 * 1024 else 2000)
            row = {"size": size, "n": n}
            rows.append(row)
            sink = Sink(workdir)
            try:
                sink.start()
                for ph in PHASES:
                    if ph not in only:
                        continue
                    log("%s %s: %d messages, %d sessions" % (fmt_size(size), ph, n,
                                                             args.sessions))
                    fn = {"direct": phase_direct, "tern": phase_tern,
                          "postfix": phase_postfix}[ph]
                    try:
                        row[ph] = fn(sink, n, size, args, workdir)
                        log("  %.0f msg/s" % (n / row[ph]["seconds"]))
                    except (PhaseFailed, BenchError) as e:
                        failed = True
                        row[ph] = {"error": str(e), "reached": getattr(e, "reached", None)}
                        log("  FAILED: %s" % e)
            finally:
                sink.stop()
        print_table(rows)
    except KeyboardInterrupt:
        log("interrupted; everything started was stopped")
        done = [r for r in rows if any(p in r for p in PHASES)]
        if done:
            print_table(done)
        return 130
    finally:
        if args.keep:
            log("logs and configs kept in %s" % workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
