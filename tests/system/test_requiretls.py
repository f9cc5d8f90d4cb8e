"""REQUIRETLS (RFC 8689) across two tern servers: a client submits to tern A
over STARTTLS with `MAIL FROM:<…> REQUIRETLS`; A relays to tern B, which
offers STARTTLS and REQUIRETLS with a certificate from the test CA; B
relays on to Postfix's smtp-sink, which has no TLS at all.

A may pass the message on only over TLS whose certificate verified, to a
server that offers REQUIRETLS; B, which cannot reach its next hop over
TLS, must refuse to send it in clear and fail it with 5.7.30.
"""
import smtplib
import ssl

from peers import SmtpSink, TernServer, field, free_port, tls_of, wait_for
from tlspeer import Pki


def cert_toml(pki):
    if not hasattr(pki, "leaf"):
        pki.leaf = pki.issue("tern.test", ["DNS:tern.test", "IP:127.0.0.1"], name="leaf")
    leaf = pki.leaf
    return ('[server.tls]\ncertificate = "main"\n'
            '[certificate."main"]\ncert = "file://%s"\nprivate-key = "file://%s"\n'
            '[session.extensions]\nrequiretls = true\n' % (leaf.cert, leaf.key))


def relay_to(port):
    return ('[queue.outbound]\nnext-hop = "next"\n[queue.schedule]\nretry = ["1h"]\n'
            '[remote."next"]\naddress = "127.0.0.1"\nport = %d\nprotocol = "smtp"\n' % port)


def submit(tern, pki):
    with smtplib.SMTP("127.0.0.1", tern.port, timeout=30) as s:
        s.starttls(context=ssl.create_default_context(cafile=pki.ca))
        s.ehlo("client.test")
        assert s.has_extn("requiretls")
        s.sendmail("alice@example.org", ["bob@example.net"],
                   "From: alice@example.org\r\nSubject: secret\r\n\r\nhush\r\n",
                   mail_options=["REQUIRETLS"])


def outcome(tern):
    return wait_for(lambda: tern.log_lines("rcpt=<bob@example.net>"), timeout=30,
                    what="an outcome")[0]


def test_requiretls_goes_over_verified_tls_only(tmp_path):
    pki = Pki(tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with SmtpSink(tmp_path) as sink:
        b = TernServer(tmp_path / "b", cert_toml(pki) + relay_to(sink.port)).start()
        a = TernServer(tmp_path / "a", cert_toml(pki) + relay_to(b.port),
                       env={"SSL_CERT_FILE": pki.ca}).start()
        try:
            submit(a, pki)
            line = outcome(a)
            assert field(line, "status") == "sent", line
            assert "verified=yes" in tls_of(line), line
            line = outcome(b)
            assert field(line, "status") == "bounced" and field(line, "dsn") == "5.7.30", line
            assert "message needs REQUIRETLS, and the session is not encrypted" in line, line
        finally:
            assert a.stop() == 0, a.log()
            assert b.stop() == 0, b.log()


def test_requiretls_is_refused_over_unverified_tls(tmp_path):
    """A does not trust B's CA: the session is encrypted, but not verified."""
    pki = Pki(tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    b = TernServer(tmp_path / "b", cert_toml(pki) + relay_to(free_port())).start()
    a = TernServer(tmp_path / "a", cert_toml(pki) + relay_to(b.port),
                   env={"SSL_CERT_FILE": pki.other_ca}).start()
    try:
        submit(a, pki)
        line = outcome(a)
        assert field(line, "status") == "bounced" and field(line, "dsn") == "5.7.30", line
        assert "verified=no" in tls_of(line), line
        assert "message needs REQUIRETLS, and the server's certificate is not verified" in line
        assert not b.log_lines("rcpt=<bob@example.net>")
    finally:
        assert a.stop() == 0, a.log()
        assert b.stop() == 0, b.log()
