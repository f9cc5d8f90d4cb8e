"""The inbound side as a client sees it: `tern serve` with SMTP and LMTP
listeners, talked to with smtplib and raw sockets.

Each test writes its own configuration (listeners on a free port of a
random 127.0.0.x address, the spool in the test's tmp folder, every
recipient routed to a closed port so nothing leaves the machine), starts
the server and stops it by its PID at the end. Messages count as accepted
when the client got its 250 and the server logged "queued <id>".
"""
import os
import random
import re
import shutil
import signal
import smtplib
import socket
import subprocess
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TERN_BIN = os.environ.get("TERN_BIN", os.path.join(REPO, "build", "tern"))


def _has_serve():
    try:
        r = subprocess.run([TERN_BIN, "--help"], capture_output=True, text=True, timeout=10)
    except OSError:
        return False
    return "serve" in r.stdout


pytestmark = pytest.mark.skipif(not _has_serve(),
                                reason="%s has no `serve` command yet" % TERN_BIN)

QUEUED = re.compile(r"^250 2\.0\.0 Ok: queued as [0-9a-f]{16}$")


def wait_for(predicate, what, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("timed out waiting for " + what)


def free_port(host):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class Server:
    """`tern serve` on a free port of 127.0.0.x; extra is TOML appended."""

    def __init__(self, tmp_path, extra="", server_keys="", listeners=None):
        self.host = "127.0.0.%d" % random.randint(2, 250)
        self.port = free_port(self.host)
        self.dir = str(tmp_path)
        self.log_path = os.path.join(self.dir, "tern.log")
        closed = free_port("127.0.0.1")  # nothing listens there: deliveries wait
        if listeners is None:
            listeners = '[server.listener."smtp"]\nbind = ["%s:%d"]\n' % (self.host, self.port)
        config = (
            '[server]\nhostname = "inbound.test"\ngreeting = "tern test"\n%s\n'
            '%s\n'
            '[queue]\npath = "%s"\n'
            '[queue.outbound]\nnext-hop = "nowhere"\n'
            '[remote."nowhere"]\naddress = "127.0.0.1"\nport = %d\nprotocol = "smtp"\n'
            '[session.rcpt]\n'
            'relay = [ { if = "rcpt-domain", eq = "relay.example", then = true }, '
            '{ else = false } ]\n'
            '%s\n' % (server_keys, listeners, os.path.join(self.dir, "spool"), closed, extra))
        self.config = os.path.join(self.dir, "tern.toml")
        with open(self.config, "w") as f:
            f.write(config)
        self.proc = None

    def start(self):
        self.logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen([TERN_BIN, "serve", "-c", self.config],
                                     stdout=self.logf, stderr=subprocess.STDOUT)
        deadline = time.time() + 15
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("tern serve exited with %s:\n%s" % (self.proc.returncode, self.log()))
            try:
                probe = socket.create_connection((self.host, self.port), timeout=5)
            except OSError:
                time.sleep(0.05)
                continue
            # Finish the probe's session, so it counts against no limit.
            with probe:
                probe.sendall(b"QUIT\r\n")
                while probe.recv(4096):
                    pass
            return self
        raise RuntimeError("tern serve does not listen on %s:%d" % (self.host, self.port))

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.logf.close()
        return self.proc.returncode

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def queued_lines(self):
        return [l for l in self.log().splitlines() if re.search(r"inbound \S+: queued ", l)]

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class Client:
    """A raw SMTP client: send bytes as they are, read whole replies."""

    def __init__(self, host, port, family=socket.AF_INET):
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect((host, port))
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data if isinstance(data, bytes) else data.encode())

    def reply(self):
        """One whole reply (every line), as text without the CRLFs."""
        lines = []
        while True:
            while b"\r\n" not in self.buf:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise EOFError("connection closed; have %r" % self.buf)
                self.buf += chunk
            line, self.buf = self.buf.split(b"\r\n", 1)
            lines.append(line.decode("utf-8", "replace"))
            if len(line) < 4 or line[3:4] != b"-":
                return "\n".join(lines)

    def replies(self, n):
        return [self.reply() for _ in range(n)]

    def closed(self):
        """True when the server closes the connection (after any data)."""
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except (ConnectionResetError, socket.timeout):
            return False

    def close(self):
        self.sock.close()


def test_banner_ehlo_and_one_message(tmp_path):
    with Server(tmp_path) as srv:
        with smtplib.SMTP(srv.host, srv.port, timeout=10) as s:
            code, banner = s.ehlo("client.test")
            assert code == 250
            assert s.esmtp_features.keys() >= {"pipelining", "size", "8bitmime", "smtputf8",
                                               "enhancedstatuscodes", "chunking", "dsn"}
            assert "requiretls" not in s.esmtp_features
            assert s.esmtp_features["size"] == "26214400"
            assert s.mail("Alice@Example.ORG", ["BODY=8BITMIME", "RET=HDRS", "ENVID=x+2By"]) == \
                (250, b"2.1.0 Ok")
            assert s.rcpt("bob@relay.example", ["NOTIFY=SUCCESS,FAILURE"]) == (250, b"2.1.5 Ok")
            code, text = s.data(b"Subject: hi\r\n\r\nhello\r\n")
            assert code == 250 and QUEUED.match("250 " + text.decode()), text
            qid = text.decode().split()[-1]
        lines = srv.queued_lines()
        assert len(lines) == 1
        assert "queued %s from=<Alice@Example.ORG> nrcpt=1 " % qid in lines[0]
        assert lines[0].endswith(" client=127.0.0.1")
        # The 221 may reach us before the server has logged the close.
        wait_for(lambda: re.search(r"inbound \S+: disconnect from 127\.0\.0\.1 messages=1",
                                   srv.log()), "the disconnect line")
        assert len(re.findall(r"inbound \S+: connect from 127\.0\.0\.1 listener=smtp",
                              srv.log())) == 2


def test_banner_text(tmp_path):
    with Server(tmp_path) as srv:
        c = Client(srv.host, srv.port)
        assert c.reply() == "220 inbound.test tern test"
        c.send("QUIT\r\n")
        assert c.reply() == "221 2.0.0 inbound.test Bye"
        assert c.closed()


def test_relay_denied_and_address_syntax(tmp_path):
    with Server(tmp_path) as srv:
        with smtplib.SMTP(srv.host, srv.port, timeout=10) as s:
            s.ehlo("client.test")
            assert s.mail("a@example.org")[0] == 250
            assert s.rcpt("x@elsewhere.example") == (550, b"5.7.1 Relaying denied")
            assert s.rcpt("x@sub.relay.example") == (550, b"5.7.1 Relaying denied")
            assert s.docmd("RCPT TO:<no-domain>") == (501, b"5.1.3 Bad recipient address syntax")
            assert s.docmd("RCPT TO:<a@relay.example") == \
                (501, b"5.5.4 Syntax: RCPT TO:<address> [parameters]")
            assert s.docmd("RCPT TO:<a@relay.example> FOO=BAR") == \
                (555, b"5.5.4 Unsupported parameter")
            assert s.docmd("VRFY bob") == \
                (252, b"2.5.0 Cannot VRFY user, but will accept message and attempt delivery")
            assert s.docmd("EXPN list")[0] == 502
            assert s.docmd("FROB")[0] == 500
            assert s.docmd("DATA") == (554, b"5.5.1 Error: no valid recipients")


def test_pipelined_replies_in_order(tmp_path):
    with Server(tmp_path) as srv:
        c = Client(srv.host, srv.port)
        c.reply()
        c.send("EHLO client.test\r\nMAIL FROM:<a@example.org>\r\n"
               "RCPT TO:<one@relay.example>\r\nRCPT TO:<two@elsewhere.example>\r\n"
               "RCPT TO:<three@relay.example>\r\nDATA\r\n")
        r = c.replies(6)
        assert r[0].startswith("250-inbound.test\n250-PIPELINING")
        assert r[1:] == ["250 2.1.0 Ok", "250 2.1.5 Ok", "550 5.7.1 Relaying denied",
                         "250 2.1.5 Ok", "354 End data with <CR><LF>.<CR><LF>"]
        c.send("Subject: x\r\n\r\n..dot\r\n.\r\nNOOP\r\nQUIT\r\n")
        r = c.replies(3)
        assert QUEUED.match(r[0]), r
        assert r[1:] == ["250 2.0.0 Ok", "221 2.0.0 inbound.test Bye"]
        assert "nrcpt=2" in srv.queued_lines()[0]


def test_smuggled_message_is_not_queued(tmp_path):
    with Server(tmp_path) as srv:
        c = Client(srv.host, srv.port)
        c.reply()
        for marker in ["\n.\n", "\r.\r", "\n.\r\n"]:
            c.send("EHLO client.test\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<v@relay.example>\r\n"
                   "DATA\r\n")
            c.replies(4)
            c.send("Subject: innocent\r\n\r\nhi" + marker +
                   "MAIL FROM:<evil@attacker.example>\r\nRCPT TO:<v@relay.example>\r\nDATA\r\n"
                   "Subject: smuggled\r\n\r\nsmuggled\r\n.\r\nNOOP\r\n")
            assert c.replies(2) == ["550 5.6.0 Message contains bare CR or LF", "250 2.0.0 Ok"]
        c.send("QUIT\r\n")
        c.reply()
        assert srv.queued_lines() == []


def test_size_limit(tmp_path):
    with Server(tmp_path, extra="[session.data.limits]\nsize = 1000\n") as srv:
        c = Client(srv.host, srv.port)
        c.reply()
        c.send("EHLO c\r\nMAIL FROM:<a@example.org> SIZE=1001\r\n")
        r = c.replies(2)
        assert "250-SIZE 1000" in r[0]
        assert r[1] == "552 5.3.4 Message size exceeds fixed maximum message size"
        c.send("MAIL FROM:<a@example.org>\r\nRCPT TO:<b@relay.example>\r\nDATA\r\n")
        c.replies(3)
        c.send(("x" * 98 + "\r\n") * 30 + ".\r\nNOOP\r\n")
        assert c.replies(2) == ["552 5.3.4 Message size exceeds fixed maximum message size",
                                "250 2.0.0 Ok"]
        assert srv.queued_lines() == []


def test_bdat_chunks(tmp_path):
    with Server(tmp_path) as srv:
        c = Client(srv.host, srv.port)
        c.reply()
        c.send(b"EHLO c\r\nMAIL FROM:<a@example.org> BODY=BINARYMIME\r\nRCPT TO:<b@relay.example>\r\n"
               b"BDAT 10\r\nSubject: x"
               b"BDAT 9 LAST\r\n\r\n\r\n\x00\xff\n\r\n")
        r = c.replies(5)
        assert r[1:4] == ["250 2.1.0 Ok", "250 2.1.5 Ok", "250 2.0.0 Ok: 10 octets received"]
        assert QUEUED.match(r[4]), r


def test_lmtp_listener_replies_per_recipient(tmp_path):
    host = "127.0.0.%d" % random.randint(2, 250)
    port = free_port(host)
    srv = Server(tmp_path, listeners='[server.listener."lmtp"]\nbind = "%s:%d"\nprotocol = "lmtp"\n'
                                     'greeting = "LMTP here"\n' % (host, port))
    srv.host, srv.port = host, port
    with srv:
        c = Client(host, port)
        assert c.reply() == "220 inbound.test LMTP here"
        c.send("EHLO c\r\nLHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<1@relay.example>\r\n"
               "RCPT TO:<2@relay.example>\r\nDATA\r\n")
        r = c.replies(6)
        assert r[0] == "500 5.5.1 Error: this is LMTP, use LHLO"
        assert r[1].startswith("250-inbound.test")
        c.send("Subject: x\r\n\r\nbody\r\n.\r\n")
        r = c.replies(2)
        assert QUEUED.match(r[0]) and r[0] == r[1], r


def test_ipv4_and_ipv6_on_one_port(tmp_path):
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback")
    host = "127.0.0.1"
    for _ in range(20):
        port = free_port(host)
        with socket.socket(socket.AF_INET6) as s:
            try:
                s.bind(("::1", port))
                break
            except OSError:
                continue
    srv = Server(tmp_path, listeners='[server.listener."smtp"]\nbind = ["%s:%d", "[::1]:%d"]\n'
                                     % (host, port, port))
    srv.host, srv.port = host, port
    with srv:
        c6 = Client("::1", port, socket.AF_INET6)
        assert c6.reply() == "220 inbound.test tern test"
        c6.send("EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@relay.example>\r\nDATA\r\n")
        c6.replies(4)
        c6.send("Subject: v6\r\n\r\n.\r\n")
        assert QUEUED.match(c6.reply())
        assert "client=::1" in srv.queued_lines()[0]
        c4 = Client(host, port)
        assert c4.reply() == "220 inbound.test tern test"


def test_listen_backlog_is_long(tmp_path):
    if shutil.which("ss") is None:
        pytest.skip("no ss(8)")
    with Server(tmp_path) as srv:
        out = subprocess.run(["ss", "-ltnH", "sport = :%d" % srv.port], capture_output=True,
                             text=True).stdout
        # State Recv-Q Send-Q ...: for a listener, Send-Q is the backlog.
        fields = out.split()
        assert int(fields[2]) >= 1024, out


def test_max_connections(tmp_path):
    with Server(tmp_path, server_keys="max-connections = 2") as srv:
        a, b = Client(srv.host, srv.port), Client(srv.host, srv.port)
        assert a.reply().startswith("220 ") and b.reply().startswith("220 ")
        c = Client(srv.host, srv.port)
        assert c.reply() == "421 4.3.2 Too many connections"
        assert c.closed()
        a.send("QUIT\r\n")
        a.reply()
        assert a.closed()
        time.sleep(0.2)
        d = Client(srv.host, srv.port)
        assert d.reply().startswith("220 ")


def test_idle_timeout(tmp_path):
    with Server(tmp_path, extra='[session]\ntimeout = "1s"\n') as srv:
        c = Client(srv.host, srv.port)
        c.reply()
        c.send("EHLO c\r\n")
        c.reply()
        t0 = time.time()
        assert c.reply() == "421 4.4.2 inbound.test Timeout"
        assert 0.8 <= time.time() - t0 < 5
        assert c.closed()


def test_line_too_long(tmp_path):
    with Server(tmp_path) as srv:
        c = Client(srv.host, srv.port)
        c.reply()
        c.send("NOOP " + "x" * 5000 + "\r\nNOOP\r\n")
        assert c.replies(2) == ["500 5.5.2 Line too long", "250 2.0.0 Ok"]


def test_messages_per_session(tmp_path):
    with Server(tmp_path, extra="[session.data.limits]\nmessages = 2\n") as srv:
        c = Client(srv.host, srv.port)
        c.reply()
        c.send("EHLO c\r\n")
        c.reply()
        for _ in range(2):
            c.send("MAIL FROM:<a@example.org>\r\nRCPT TO:<b@relay.example>\r\nDATA\r\n")
            c.replies(3)
            c.send("Subject: x\r\n\r\n.\r\n")
            assert QUEUED.match(c.reply())
        c.send("MAIL FROM:<a@example.org>\r\n")
        assert c.reply() == "421 4.7.0 inbound.test Too many messages in this session"
        assert c.closed()


def test_sigterm_closes_idle_sessions(tmp_path):
    srv = Server(tmp_path).start()
    try:
        c = Client(srv.host, srv.port)
        c.reply()
        c.send("EHLO c\r\n")
        c.reply()
        os.kill(srv.proc.pid, signal.SIGTERM)
        assert c.reply() == "421 4.3.2 inbound.test Service shutting down"
        assert c.closed()
        assert srv.proc.wait(timeout=20) == 0
    finally:
        srv.stop()


@pytest.mark.skipif(shutil.which("smtp-source") is None, reason="no Postfix smtp-source")
def test_smtp_source_burst(tmp_path):
    """Postfix's smtp-source, 20 sessions at once, several messages each."""
    with Server(tmp_path, extra="[session.data.limits]\nmessages = 100\n") as srv:
        t0 = time.time()
        r = subprocess.run(["smtp-source", "-d", "-s", "20", "-m", "1000", "-l", "2000",
                            "-f", "sender@example.org", "-t", "rcpt@relay.example",
                            "%s:%d" % (srv.host, srv.port)],
                           capture_output=True, text=True, timeout=120)
        elapsed = time.time() - t0
        assert r.returncode == 0, r.stderr
        assert len(srv.queued_lines()) == 1000
        print("smtp-source: 1000 messages in %.2f s (%.0f/s)" % (elapsed, 1000 / elapsed))
