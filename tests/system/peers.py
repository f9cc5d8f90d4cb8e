"""Real peers for tern's system tests, each started and stopped by its PID.

- TernServer: `tern serve` with a config written for the test, its log kept.
- SmtpSink: Postfix's smtp-sink, dumping every received message to a folder.
- Dovecot: Dovecot's LMTP server delivering into Maildirs under a folder.
- Scripted: tests/system/peers/scripted_smtp.py, for misbehaving servers.

Everything listens on 127.0.0.1 ports chosen free at start. Every class is
a context manager that stops its process (SIGTERM, then SIGKILL) on exit.
"""
import email
import glob
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TERN_BIN = os.environ.get("TERN_BIN", os.path.join(REPO, "build", "tern"))


def free_port(host="127.0.0.1"):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_port(port, host="127.0.0.1", timeout=15.0, proc=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("process exited with %s before listening on %d" % (proc.returncode, port))
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("nothing listens on %s:%d after %.0fs" % (host, port, timeout))


def field(line, name):
    """The value of name=... in a delivery log line (up to the next space)."""
    m = re.search(r"\b%s=(\S+)" % name, line)
    return m.group(1) if m else None


def tls_of(line):
    """The tls= value of a delivery log line: it may hold spaces, and status= follows it."""
    m = re.search(r" tls=(.*?) status=", line)
    return m.group(1) if m else None


def wait_for(predicate, timeout=20.0, interval=0.05, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("timed out after %.0fs waiting for %s" % (timeout, what))


def stop_pid(proc, timeout=10.0, sig=signal.SIGTERM):
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


class TernServer:
    """`tern serve` on a free port. extra is TOML appended to the base config.

    resolver names the one name server tern may ask: tests never let tern
    read /etc/resolv.conf, whose server is not on loopback. The default is
    a loopback port where nothing answers, for tests that need no DNS."""

    def __init__(self, workdir, extra="", port=None, relay_loopback=True, env=None,
                 resolver="udp://127.0.0.1:9", resolver_extra=""):
        self.env = dict(os.environ, **(env or {}))
        self.workdir = str(workdir)
        self.port = port or free_port()
        self.config = os.path.join(self.workdir, "tern.toml")
        self.log_path = os.path.join(self.workdir, "tern.log")
        self.spool = os.path.join(self.workdir, "spool")
        base = [
            '[server]', 'hostname = "tern.test"', '',
            '[server.listener."smtp"]', 'bind = ["127.0.0.1:%d"]' % self.port, '',
            '[queue]', 'path = "%s"' % self.spool, '',
            '[resolver]', 'type = "custom"', 'custom = ["%s"]' % resolver, resolver_extra, '',
        ]
        if relay_loopback:
            base += ['[session.rcpt]',
                     'relay = [ { if = "remote-ip", eq = "127.0.0.0/8", then = true }, '
                     '{ else = false } ]', '']
        with open(self.config, "w") as f:
            f.write("\n".join(base) + "\n" + extra + "\n")
        self.proc = None
        self.logf = None

    def start(self):
        self.logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen([TERN_BIN, "serve", "-c", self.config],
                                     stdout=self.logf, stderr=subprocess.STDOUT, env=self.env)
        wait_port(self.port, proc=self.proc)
        return self

    def stop(self, sig=signal.SIGTERM):
        stop_pid(self.proc, sig=sig)
        if self.logf:
            self.logf.close()
            self.logf = None
        return self.proc.returncode if self.proc else None

    def kill9(self):
        self.proc.kill()
        self.proc.wait(timeout=10)
        if self.logf:
            self.logf.close()
            self.logf = None

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def log_lines(self, needle):
        return [l for l in self.log().splitlines() if needle in l]

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class SmtpSink:
    """Postfix's smtp-sink; every message lands as one file in self.dumpdir."""

    def __init__(self, workdir, extra_args=(), port=None):
        self.port = port or free_port()
        # smtp-sink drops root for nobody, who cannot enter pytest's 0700
        # folders: its dumps go to a folder of their own under /tmp.
        self.dumpdir = tempfile.mkdtemp(prefix="tern-sink-%d-" % self.port)
        os.chmod(self.dumpdir, 0o777)
        self.args = list(extra_args)
        self.proc = None

    def start(self):
        argv = ["smtp-sink", "-u", "nobody", "-d", self.dumpdir + "/%H%M%S.", *self.args,
                "127.0.0.1:%d" % self.port, "1024"]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_port(self.port, proc=self.proc)
        return self

    def stop(self):
        stop_pid(self.proc)

    def messages(self):
        """Every complete dump (smtp-sink writes a dump while the transaction
        runs; one counts once the message's end has been written)."""
        out = []
        for path in sorted(glob.glob(os.path.join(self.dumpdir, "*"))):
            with open(path, "rb") as f:
                raw = f.read()
            if raw.endswith(b"\n\n"):
                out.append(raw)
        return out

    def remove(self):
        shutil.rmtree(self.dumpdir, ignore_errors=True)

    def parsed(self):
        """Each dump as an email.message: smtp-sink's X-Mail-Args / X-Rcpt-Args
        envelope headers come first, then the message's own headers."""
        return [email.message_from_bytes(raw) for raw in self.messages()]

    def message_ids(self):
        return [(m.get_all("Message-ID") or [None])[-1] for m in self.parsed()]

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        self.remove()


class Dovecot:
    """Dovecot's LMTP server; users' mail goes to maildirs under self.maildir."""

    def __init__(self, workdir, port=None):
        self.port = port or free_port()
        # Mail is written as nobody, who cannot enter pytest's 0700 folders.
        self.base = tempfile.mkdtemp(prefix="tern-dovecot-")
        os.chmod(self.base, 0o755)
        self.maildir = os.path.join(self.base, "mail")
        for d in ("run", "state", "mail"):
            os.makedirs(os.path.join(self.base, d), exist_ok=True)
        os.chmod(self.maildir, 0o777)
        self.conf = os.path.join(self.base, "dovecot.conf")
        with open(self.conf, "w") as f:
            f.write("""
base_dir = {b}/run
state_dir = {b}/state
log_path = {b}/dovecot.log
protocols = lmtp
listen = 127.0.0.1
ssl = no
auth_mechanisms = plain
mail_location = maildir:{m}/%d/%n/Maildir
lmtp_save_to_detail_mailbox = no
passdb {{
  driver = static
  args = nopassword=y
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home={m}/%d/%n allow_all_users=yes
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {p}
  }}
}}
service anvil {{
  chroot =
}}
""".format(b=self.base, m=self.maildir, p=self.port))
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(["dovecot", "-F", "-c", self.conf],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_port(self.port, proc=self.proc)
        return self

    def stop(self):
        stop_pid(self.proc)
        shutil.rmtree(self.base, ignore_errors=True)

    def mailbox(self, user, domain):
        """Messages delivered to user@domain's INBOX (bytes each)."""
        out = []
        for sub in ("new", "cur"):
            for path in sorted(glob.glob(os.path.join(self.maildir, domain, user, "Maildir", sub, "*"))):
                with open(path, "rb") as f:
                    out.append(f.read())
        return out

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class Scripted:
    """tests/system/peers/scripted_smtp.py with a JSON script."""

    def __init__(self, workdir, script_path, extra_args=()):
        self.log_path = os.path.join(str(workdir), "scripted-%d.json" % id(self))
        self.argv = ["/usr/bin/python3", os.path.join(REPO, "tests/system/peers/scripted_smtp.py"),
                     "--script", script_path, "--log", self.log_path, *extra_args]
        self.proc = None
        self.port = None

    def start(self):
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        self.port = int(line.strip().split()[-1])
        wait_port(self.port, proc=self.proc)
        return self

    def stop(self):
        stop_pid(self.proc)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
