"""Inbound TLS and AUTH as real clients see them: `tern serve` with a
certificate from the test's own CA, talked to with `openssl s_client`,
swaks, smtplib and raw sockets.

Covers STARTTLS (advertisement, the certificate chain served, a message
relayed to Postfix's smtp-sink with ESMTPS in its Received field, the
command-injection defence), implicit TLS listeners, AUTH PLAIN and LOGIN
(refused in clear with 538 unless allowed, 535, 530 for auth.require,
relaying by the authenticated-as rule), certificates that do not load, and
REQUIRETLS being offered only under TLS.

Every server is started and stopped by its PID, on 127.0.0.1 only; tern
must exit 0 when stopped (a sanitizer report makes that fail).
"""
import base64
import os
import re
import shutil
import smtplib
import socket
import ssl
import subprocess
import time

import pytest

from peers import TERN_BIN, SmtpSink, TernServer, free_port, wait_for
from tlspeer import Pki

pytestmark = pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks is not installed")

USERS = '[list]\nusers = ["alice:s3cret", "bob:hunter2"]\n'


@pytest.fixture
def pki(tmp_path):
    p = Pki(tmp_path)
    p.leaf = p.issue("tern.test", ["DNS:tern.test", "IP:127.0.0.1"])
    # The configured chain: the server's certificate, then the CA's.
    p.chain = os.path.join(p.dir, "chain.pem")
    with open(p.chain, "w") as out:
        for path in (p.leaf.cert, p.ca):
            with open(path) as f:
                out.write(f.read())
    return p


def cert_toml(pki, name="main"):
    return ('[certificate."%s"]\ncert = "file://%s"\nprivate-key = "file://%s"\n'
            % (name, pki.chain, pki.leaf.key))


def nowhere():
    """Routing to a closed port: accepted mail waits, and tern stops at once
    (no MX lookup in flight at SIGTERM)."""
    return ('[queue.outbound]\nnext-hop = "nowhere"\n'
            '[remote."nowhere"]\naddress = "127.0.0.1"\nport = %d\nprotocol = "smtp"\n'
            % free_port())


def tls_server(tmp_path, pki, extra="", route=None, **kw):
    """tern with the certificate on its listener (server.tls.certificate)."""
    return TernServer(tmp_path, '[server.tls]\ncertificate = "main"\n' + cert_toml(pki) +
                      (route or nowhere()) + extra, **kw)


def stop_ok(tern):
    assert tern.stop() == 0, tern.log()


def client_ctx(pki):
    return ssl.create_default_context(cafile=pki.ca)


def run(argv, stdin=b"", timeout=30):
    return subprocess.run(argv, input=stdin, capture_output=True, timeout=timeout)


def pem_blocks(text):
    return re.findall(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", text, re.S)


def swaks(port, *args):
    r = run(["swaks", "--server", "127.0.0.1:%d" % port, "--helo", "client.test",
             "--from", "alice@example.org", "--to", "bob@example.net", *args])
    return r.returncode, r.stdout.decode("utf-8", "replace")


def message_text(n):
    return ("From: alice@example.org\r\nTo: bob@example.net\r\nSubject: tls %d\r\n"
            "Message-ID: <tls%d@test>\r\n\r\nbody %d\r\n" % (n, n, n))


# ---- STARTTLS ----

def test_starttls_s_client_chain_protocol_and_delivery(tmp_path, pki):
    with SmtpSink(tmp_path) as sink:
        tern = tls_server(tmp_path, pki, route='[queue.outbound]\nnext-hop = "sink"\n'
                          '[remote."sink"]\naddress = "127.0.0.1"\nport = %d\nprotocol = "smtp"\n'
                          % sink.port).start()
        try:
            # The handshake: protocol, verification against our CA, the chain.
            r = run(["openssl", "s_client", "-starttls", "smtp", "-connect",
                     "127.0.0.1:%d" % tern.port, "-CAfile", pki.ca, "-verify_return_error",
                     "-verify_hostname", "tern.test", "-showcerts", "-ign_eof", "-crlf"],
                    b"QUIT\n")
            out = r.stdout.decode()
            assert r.returncode == 0, out + r.stderr.decode()
            assert re.search(r"Protocol\s*: TLSv1\.[23]", out), out
            assert "Verify return code: 0 (ok)" in out
            with open(pki.chain) as f:
                assert [b.strip() for b in pem_blocks(out)] == [b.strip() for b in pem_blocks(f.read())]
            assert "221 2.0.0" in out
            # A message after STARTTLS (-quiet: lines are not s_client commands).
            script = ("EHLO client.test\nMAIL FROM:<alice@example.org>\nRCPT TO:<bob@example.net>\n"
                      "DATA\n" + message_text(1).replace("\r\n", "\n") + ".\nQUIT\n")
            r = run(["openssl", "s_client", "-starttls", "smtp", "-connect",
                     "127.0.0.1:%d" % tern.port, "-CAfile", pki.ca, "-quiet", "-crlf"],
                    script.encode())
            out = r.stdout.decode()
            assert re.search(r"250 2\.0\.0 Ok: queued as [0-9a-f]{16}", out), out
            wait_for(lambda: len(sink.messages()) == 1, what="the message at the sink")
            received = sink.parsed()[0].get_all("Received")
            ours = [h for h in received if "by tern.test (tern)" in h][0]
            assert "with ESMTPS id" in ours, ours
            assert re.search(r"\(using TLSv1\.[23] with cipher \S+\)", ours), ours
            assert tern.log_lines("TLS TLSv1.")
        finally:
            stop_ok(tern)


def test_starttls_swaks(tmp_path, pki):
    tern = tls_server(tmp_path, pki).start()
    try:
        rc, out = swaks(tern.port, "--tls")
        assert rc == 0, out
        assert "<~  250 2.0.0 Ok: queued as" in out
        assert "STARTTLS" in out and "220 2.0.0 Ready to start TLS" in out
    finally:
        stop_ok(tern)


def test_no_certificate_no_starttls(tmp_path):
    tern = TernServer(tmp_path, nowhere()).start()
    try:
        with smtplib.SMTP("127.0.0.1", tern.port, timeout=10) as s:
            s.ehlo("client.test")
            assert not s.has_extn("starttls")
            assert not s.has_extn("requiretls")
            assert s.docmd("STARTTLS")[0] == 502
        rc, out = swaks(tern.port, "--tls")
        assert rc != 0 and "250 DSN" in out and "STARTTLS" not in out
    finally:
        stop_ok(tern)


def test_starttls_rules(tmp_path, pki):
    tern = tls_server(tmp_path, pki).start()
    try:
        with smtplib.SMTP("127.0.0.1", tern.port, timeout=10) as s:
            assert s.docmd("STARTTLS")[0] == 503          # before EHLO
            s.ehlo("client.test")
            assert s.has_extn("starttls")
            assert s.docmd("STARTTLS", "now")[0] == 501   # arguments
            s.starttls(context=client_ctx(pki))
            s.ehlo("client.test")
            assert not s.has_extn("starttls")             # not twice
            assert s.docmd("STARTTLS")[0] == 503
    finally:
        stop_ok(tern)


def recv_reply(sock):
    data = b""
    while not re.search(rb"(^|\r\n)\d{3} [^\r\n]*\r\n$", data):
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.decode()


def test_starttls_discards_pipelined_input(tmp_path, pki):
    """CVE-2011-0411: "STARTTLS\\r\\nRSET\\r\\n" in one packet; the RSET sent in
    clear must not be answered once under TLS."""
    tern = tls_server(tmp_path, pki).start()
    try:
        raw = socket.create_connection(("127.0.0.1", tern.port), timeout=10)
        assert recv_reply(raw).startswith("220 ")
        raw.sendall(b"EHLO client.test\r\n")
        assert "STARTTLS" in recv_reply(raw)
        raw.sendall(b"STARTTLS\r\nRSET\r\n")
        assert recv_reply(raw).startswith("220 2.0.0")
        tls = client_ctx(pki).wrap_socket(raw, server_hostname="tern.test")
        tls.settimeout(1.0)
        with pytest.raises(socket.timeout):
            tls.recv(4096)
        tls.settimeout(10)
        tls.sendall(b"EHLO client.test\r\n")
        ehlo = recv_reply(tls)
        assert ehlo.startswith("250-tern.test\r\n"), ehlo
        tls.sendall(b"QUIT\r\n")
        assert recv_reply(tls).startswith("221 ")
        tls.close()
    finally:
        stop_ok(tern)


def starttls_in_clear(tern):
    """A raw connection that has said EHLO and STARTTLS and got the 220, for
    a test to go on with instead of a handshake."""
    raw = socket.create_connection(("127.0.0.1", tern.port), timeout=10)
    recv_reply(raw)
    raw.sendall(b"EHLO client.test\r\n")
    recv_reply(raw)
    raw.sendall(b"STARTTLS\r\n")
    assert recv_reply(raw).startswith("220 ")
    return raw


def test_starttls_then_garbage_fails_handshake_and_logs(tmp_path, pki):
    tern = tls_server(tmp_path, pki).start()
    try:
        with starttls_in_clear(tern) as raw:
            raw.sendall(b"this is not a client hello\r\n" * 4)
            raw.settimeout(10)
            try:
                while raw.recv(4096):
                    pass
            except ConnectionResetError:
                pass  # closed with our garbage unread
        wait_for(lambda: tern.log_lines("TLS handshake"), what="the failed handshake logged")
    finally:
        stop_ok(tern)


def test_stalled_handshake_times_out_within_session_timeout(tmp_path, pki):
    """A client that says STARTTLS and then nothing: the handshake has
    session.timeout in all, then the connection closes and a line says why."""
    tern = tls_server(tmp_path, pki, '[session]\ntimeout = "1s"\n').start()
    try:
        with starttls_in_clear(tern) as raw:
            started = time.monotonic()
            raw.settimeout(10)
            try:
                assert raw.recv(4096) == b""   # closed, nothing said in clear
            except ConnectionResetError:
                pass
            waited = time.monotonic() - started
            assert 0.8 <= waited <= 4.0, waited
        wait_for(lambda: tern.log_lines("TLS handshake timed out"), what="the time-out logged")
    finally:
        stop_ok(tern)


# ---- implicit TLS ----

def implicit_server(tmp_path, pki, extra=""):
    port = free_port()
    return TernServer(tmp_path, '[server.listener."smtps"]\nbind = ["127.0.0.1:%d"]\n'
                      'tls.implicit = true\ntls.certificate = "main"\n' % port
                      + cert_toml(pki) + nowhere() + extra), port


def test_implicit_tls_s_client_and_swaks(tmp_path, pki):
    tern, port = implicit_server(tmp_path, pki, USERS + '[session.auth]\nmechanisms = ["plain", "login"]\n'
                                 'lookup = "list/users"\n')
    tern.start()
    try:
        r = run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % port, "-CAfile", pki.ca,
                 "-verify_return_error", "-quiet", "-crlf"], b"EHLO client.test\nQUIT\n")
        out = r.stdout.decode()
        assert out.startswith("220 tern.test "), out
        assert "250-STARTTLS" not in out and "AUTH PLAIN LOGIN" in out
        rc, out = swaks(port, "--tlsc", "--auth", "PLAIN", "--auth-user", "alice",
                        "--auth-password", "s3cret")
        assert rc == 0, out
        assert "235 2.7.0" in out and "queued as" in out
        # The clear listener of the same server offers no STARTTLS: no certificate.
        with smtplib.SMTP("127.0.0.1", tern.port, timeout=10) as s:
            s.ehlo("client.test")
            assert not s.has_extn("starttls")
    finally:
        stop_ok(tern)


def test_implicit_tls_without_certificate_refuses_to_start(tmp_path):
    port = free_port()
    tern = TernServer(tmp_path, '[server.listener."smtps"]\nbind = ["127.0.0.1:%d"]\n'
                      'tls.implicit = true\n' % port)
    r = run([TERN_BIN, "serve", "-c", tern.config], timeout=30)
    assert r.returncode != 0
    assert b'listener "smtps"' in r.stderr + r.stdout
    r = run([TERN_BIN, "config", "check", "-c", tern.config])
    assert r.returncode == 1 and b'listener "smtps"' in r.stderr


# ---- certificates that do not load ----

def test_missing_certificate_file_refuses_to_start(tmp_path, pki):
    missing = os.path.join(str(tmp_path), "nope.pem")
    tern = TernServer(tmp_path, '[server.tls]\ncertificate = "main"\n[certificate."main"]\n'
                      'cert = "file://%s"\nprivate-key = "file://%s"\n' % (missing, pki.leaf.key))
    r = run([TERN_BIN, "serve", "-c", tern.config], timeout=30)
    out = (r.stdout + r.stderr).decode()
    assert r.returncode != 0
    assert missing in out and "certificate.main.cert" in out, out
    r = run([TERN_BIN, "config", "check", "-c", tern.config])
    assert r.returncode == 1 and missing in r.stderr.decode()


def test_key_not_matching_refuses_to_start(tmp_path, pki):
    other = pki.issue("other.test", ["DNS:other.test"])
    tern = TernServer(tmp_path, '[server.tls]\ncertificate = "main"\n[certificate."main"]\n'
                      'cert = "file://%s"\nprivate-key = "file://%s"\n' % (pki.leaf.cert, other.key))
    r = run([TERN_BIN, "serve", "-c", tern.config], timeout=30)
    out = (r.stdout + r.stderr).decode()
    assert r.returncode != 0
    assert 'certificate "main"' in out and "does not match" in out, out
    r = run([TERN_BIN, "config", "check", "-c", tern.config])
    assert r.returncode == 1 and 'certificate "main"' in r.stderr.decode()


# ---- AUTH ----

AUTH = USERS + '[session.auth]\nmechanisms = ["plain", "login"]\nlookup = "list/users"\n'


def test_auth_plain_and_login_over_tls(tmp_path, pki):
    tern = tls_server(tmp_path, pki, AUTH).start()
    try:
        for mech, user, password in (("PLAIN", "alice", "s3cret"), ("LOGIN", "bob", "hunter2")):
            rc, out = swaks(tern.port, "--tls", "--auth", mech, "--auth-user", user,
                            "--auth-password", password)
            assert rc == 0, out
            assert "235 2.7.0 Authentication successful" in out and "queued as" in out
        rc, out = swaks(tern.port, "--tls", "--auth", "PLAIN", "--auth-user", "alice",
                        "--auth-password", "wrong")
        assert rc != 0 and "535 5.7.8" in out, out
        log = tern.log()
        assert "AUTH PLAIN user=alice" in log and "AUTH LOGIN user=bob" in log
        assert "AUTH PLAIN failed: bad credentials user=alice" in log
        assert "s3cret" not in log and "hunter2" not in log and "wrong" not in log
    finally:
        stop_ok(tern)


def test_auth_in_clear_refused_with_538(tmp_path, pki):
    tern = tls_server(tmp_path, pki, AUTH).start()
    try:
        with smtplib.SMTP("127.0.0.1", tern.port, timeout=10) as s:
            s.ehlo("client.test")
            assert not s.has_extn("auth")
            code, text = s.docmd("AUTH", "PLAIN " + base64.b64encode(b"\0alice\0s3cret").decode())
            assert code == 538 and text.startswith(b"5.7.11"), (code, text)
    finally:
        stop_ok(tern)


def test_auth_in_clear_when_allowed(tmp_path):
    tern = TernServer(tmp_path, nowhere() + AUTH + "allow-plain-text = true\n").start()
    try:
        rc, out = swaks(tern.port, "--auth", "PLAIN", "--auth-user", "alice",
                        "--auth-password", "s3cret")
        assert rc == 0, out
        assert "AUTH PLAIN LOGIN" in out and "235 2.7.0" in out
        with smtplib.SMTP("127.0.0.1", tern.port, timeout=10) as s:
            s.ehlo("client.test")
            code, _ = s.docmd("AUTH", "PLAIN " + base64.b64encode(b"\0alice\0nope").decode())
            assert code == 535
            assert s.docmd("AUTH", "PLAIN not-base64!")[0] == 501
            assert s.docmd("AUTH", "LOGIN")[0] == 334
            assert s.docmd("*")[0] == 501
    finally:
        stop_ok(tern)


def test_auth_require_and_relay_by_identity(tmp_path, pki):
    extra = AUTH + ('require = true\n'
                    '[session.rcpt]\nrelay = [ { if = "authenticated-as", eq = "alice", then = true }, '
                    '{ else = false } ]\n')
    tern = tls_server(tmp_path, pki, extra, relay_loopback=False).start()
    try:
        with smtplib.SMTP("127.0.0.1", tern.port, timeout=10) as s:
            s.ehlo("client.test")
            s.starttls(context=client_ctx(pki))
            s.ehlo("client.test")
            code, text = s.docmd("MAIL", "FROM:<alice@example.org>")
            assert (code, text) == (530, b"5.7.0 Authentication required")
            s.login("bob", "hunter2")
            assert s.docmd("MAIL", "FROM:<bob@example.org>")[0] == 250
            assert s.docmd("RCPT", "TO:<x@example.net>")[0] == 550   # bob may not relay
        with smtplib.SMTP("127.0.0.1", tern.port, timeout=10) as s:
            s.ehlo("client.test")
            s.starttls(context=client_ctx(pki))
            s.ehlo("client.test")
            s.login("alice", "s3cret")
            assert s.docmd("MAIL", "FROM:<alice@example.org>")[0] == 250
            assert s.docmd("RCPT", "TO:<x@example.net>")[0] == 250
    finally:
        stop_ok(tern)


# ---- REQUIRETLS ----

def test_requiretls_only_under_tls(tmp_path, pki):
    tern = tls_server(tmp_path, pki, "[session.extensions]\nrequiretls = true\n").start()
    try:
        with smtplib.SMTP("127.0.0.1", tern.port, timeout=10) as s:
            s.ehlo("client.test")
            assert not s.has_extn("requiretls")
            assert s.docmd("MAIL", "FROM:<alice@example.org> REQUIRETLS")[0] == 555
            s.starttls(context=client_ctx(pki))
            s.ehlo("client.test")
            assert s.has_extn("requiretls")
            assert s.docmd("MAIL", "FROM:<alice@example.org> REQUIRETLS")[0] == 250
            assert s.docmd("RCPT", "TO:<bob@example.net>")[0] == 250
            code, _ = s.data(message_text(2))
            assert code == 250
    finally:
        stop_ok(tern)
