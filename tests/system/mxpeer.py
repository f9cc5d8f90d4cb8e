"""MX hosts for tern's system tests: tests/system/peers/mx_server.py run
inside a test network namespace (netns.NetNs), started and stopped by PID.

    with NetNs(ipv6=["fd00:7e57::1"]) as ns, \\
         MxServer(ns, tmp_path, [{"addr": "127.0.0.10", "mode": "accept"},
                                 {"addr": "fd00:7e57::1", "mode": "greet-554"}]) as mx:
        ...
        assert [c["local"] for c in mx.connects()] == ["fd00:7e57::1", "127.0.0.10"]
        assert mx.connects("127.0.0.10")[0]["peer"] == "127.0.0.3"

NsTern runs `tern serve` inside the namespace (asking the test's NSD on
127.0.0.1:53 there), and send() submits a message to it from inside.

A listener is {"addr", "port" (default 25), "mode" (default "accept"),
"hostname", "size"}; mx_server.py's docstring lists the modes and the
events. Addresses that should refuse connections are simply not listed
(count their SYNs with NetNs(count=[...]) instead).
"""
import json
import os
import select
import smtplib
import subprocess

from netns import normalize
from peers import REPO, TERN_BIN, TernServer, stop_pid, wait_for

MX_SERVER = os.path.join(REPO, "tests/system/peers/mx_server.py")


class MxServer:
    """mx_server.py in netns, with its config, log and maildir in workdir."""

    def __init__(self, netns, workdir, listeners):
        self.netns = netns
        self.workdir = str(workdir)
        self.listeners = [dict(l) for l in listeners]
        tag = "mx-%d" % id(self)
        self.config = os.path.join(self.workdir, tag + ".json")
        self.log_path = os.path.join(self.workdir, tag + ".jsonl")
        self.err_path = os.path.join(self.workdir, tag + ".err")
        self.maildir = os.path.join(self.workdir, tag + "-mail")
        self.proc = None
        self.errf = None

    def start(self, timeout=15.0):
        """Start it; returns once every listener listens ("ready")."""
        with open(self.config, "w") as f:
            json.dump(self.listeners, f, indent=1)
        self.errf = open(self.err_path, "wb")
        self.proc = self.netns.popen(["/usr/bin/python3", MX_SERVER, "--config", self.config,
                                      "--log", self.log_path, "--maildir", self.maildir],
                                     stdout=subprocess.PIPE, stderr=self.errf)
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else b""
        if line.strip() != b"ready":
            self.stop()
            raise RuntimeError("mx_server.py did not start:\n" + self.stderr())
        return self

    def stop(self):
        """SIGTERM by PID (SIGKILL after 10 s)."""
        if self.proc is not None:
            stop_pid(self.proc)
            self.proc.stdout.close()
            self.proc = None
        if self.errf is not None:
            self.errf.close()
            self.errf = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ---- what happened ----

    def events(self, event=None):
        """Every logged event so far (one type only with event=...)."""
        try:
            with open(self.log_path, encoding="utf-8") as f:
                lines = [l for l in f if l.endswith("\n")]
        except FileNotFoundError:
            return []
        records = [json.loads(l) for l in lines]
        return [r for r in records if event is None or r["event"] == event]

    def connects(self, local=None):
        """Connect events in accept order, only those to address local if given."""
        local = normalize(local) if local is not None else None
        return [e for e in self.events("connect") if local is None or e["local"] == local]

    def messages(self, local=None):
        """Message events (envelope, helo, file), only those received on local if given."""
        local = normalize(local) if local is not None else None
        return [e for e in self.events("message") if local is None or e["local"] == local]

    def commands(self, conn):
        """The command lines received on connection number conn."""
        return [e["line"] for e in self.events("command") if e["conn"] == conn]

    def message_data(self, event):
        """The message of a message event, as received (dot-unstuffed), bytes."""
        with open(event["file"], "rb") as f:
            return f.read()[event["data_offset"]:]

    def wait_connects(self, n, local=None, timeout=20.0):
        """Wait for at least n connects (to local if given); returns them."""
        wait_for(lambda: len(self.connects(local)) >= n, timeout=timeout,
                 what="%d connection(s) to %s" % (n, local or "the MX servers"))
        return self.connects(local)

    def wait_messages(self, n, local=None, timeout=20.0):
        """Wait for at least n messages (received on local if given); returns them."""
        wait_for(lambda: len(self.messages(local)) >= n, timeout=timeout,
                 what="%d message(s) at %s" % (n, local or "the MX servers"))
        return self.messages(local)

    def stderr(self):
        try:
            with open(self.err_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""


# The namespace's DNS has no root: with Debian's root key as its trust
# anchor, tern's validating lookups would all be bogus. Unless a test names
# its own anchors, tern gets one for a zone no test serves, so that every
# test zone is simply unsigned (insecure) to it.
NO_ANCHOR = "no-dnssec.example. IN DS 1 13 2 " + "00" * 32


class NsTern(TernServer):
    """tern serve inside the namespace, asking only the test's NSD.
    trust_anchor: a trust anchor file for resolver.dnssec.trust-anchor."""

    def __init__(self, ns, workdir, extra="", resolver="udp://127.0.0.1:53", resolver_extra="",
                 env=None, trust_anchor=None):
        if trust_anchor is None:
            trust_anchor = os.path.join(str(workdir), "no-anchor.key")
            with open(trust_anchor, "w") as f:
                f.write(NO_ANCHOR + "\n")
        resolver_extra += '\ndnssec.trust-anchor = "file://%s"' % trust_anchor
        super().__init__(workdir, extra, port=2525, resolver=resolver,
                         resolver_extra=resolver_extra, env=env)
        self.ns = ns

    def start(self):
        self.logf = open(self.log_path, "ab")
        self.proc = self.ns.popen([TERN_BIN, "serve", "-c", self.config], stdout=self.logf,
                                  stderr=subprocess.STDOUT, env=self.env)
        self.ns.wait_port("127.0.0.1", self.port, proc=self.proc)
        return self

    def outcome(self, rcpt, timeout=20.0):
        """The first delivery log line for rcpt."""
        return wait_for(lambda: self.log_lines("rcpt=<%s>" % rcpt), timeout=timeout,
                        what="an outcome for %s" % rcpt)[0]


def send(ns, rcpts, sender="alice@sender.example", port=2525):
    """Submit a small message to NsTern's listener, from inside ns."""
    body = "From: alice@sender.example\r\nSubject: mx test\r\n\r\nhello\r\n"
    with ns.enter():
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
            s.sendmail(sender, rcpts, body)
