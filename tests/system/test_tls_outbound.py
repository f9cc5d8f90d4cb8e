"""Outbound TLS (SPEC §4) against real peers: aiosmtpd with STARTTLS or
implicit TLS (tests/system/peers/tls_smtp.py) as relays, and, for the
queue.outbound.tls.starttls policies of delivery by MX, mx_server.py's
STARTTLS listeners in a network namespace with NSD. Certificates come from
a test CA made with the openssl command; tern trusts it only when its
environment's SSL_CERT_FILE names it.

What the log line says about TLS is checked on every path: the protocol
and whether the certificate verified, or why the session stayed in clear.
"""
import re
import smtplib
import time

import pytest

from mxpeer import MxServer, NsTern, send as ns_send
from netns import NetNs
from nsd import Nsd, zone
from peers import TERN_BIN, TernServer, field, tls_of, wait_for
from tlspeer import Pki, TlsSmtp


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """The CA and the certificates the relay tests use."""
    p = Pki(tmp_path_factory.mktemp("pki"))
    p.localhost = p.issue("localhost", ["DNS:localhost", "IP:127.0.0.1"])
    p.localhost_self = p.self_signed("localhost", ["DNS:localhost", "IP:127.0.0.1"])
    p.wrong_name = p.issue("wrong.example", ["DNS:wrong.example"])
    return p


def relay(port, address="127.0.0.1", tls="", tls_timeout="10s"):
    return "\n".join([
        '[queue.outbound]', 'next-hop = "peer"',
        '[queue.schedule]', 'retry = ["1h"]',
        '[queue.outbound.timeouts]', 'tls = "%s"' % tls_timeout,
        '[remote."peer"]', 'address = "%s"' % address, 'port = %d' % port,
        'protocol = "smtp"', tls, ''])


def trusting(ca):
    """tern's environment with ca as its whole trust store."""
    return {"SSL_CERT_FILE": ca}


def submit(tern, i=0, rcpt="bob@example.net"):
    data = "From: a@example.org\r\nMessage-ID: <t%d@test>\r\nSubject: %d\r\n\r\nhello\r\n" % (i, i)
    with smtplib.SMTP("127.0.0.1", tern.port, timeout=30) as s:
        s.sendmail("alice@example.org", [rcpt], data)


def outcomes(tern, n=1, timeout=30):
    return wait_for(lambda: (lambda l: l if len(l) >= n else None)(tern.log_lines(" status=")),
                    timeout=timeout, what="%d outcome line(s)" % n)


UNTRUSTED = r"TLSv1\.[23]:\S+ verified=no\(%s\)"
VERIFIED = r"TLSv1\.[23]:\S+ verified=yes"


# ---- STARTTLS to a relay: opportunistic ----

@pytest.mark.parametrize("trusted", [False, True], ids=["unknown-ca", "test-ca"])
def test_starttls_is_used_when_offered(tmp_path, pki, trusted):
    env = trusting(pki.ca if trusted else pki.other_ca)
    with TlsSmtp(tmp_path, "starttls", pki.localhost) as peer, \
         TernServer(tmp_path, relay(peer.port, address="localhost"), env=env) as tern:
        submit(tern)
        [line] = outcomes(tern)
        assert field(line, "status") == "sent", line
        expected = VERIFIED if trusted else UNTRUSTED % "unable to get local issuer certificate"
        assert re.fullmatch(expected, tls_of(line)), line
        # STARTTLS after the first EHLO, the handshake with SNI, EHLO again
        # (RFC 3207: the first reply is forgotten), the message over TLS.
        [conn] = peer.connections()
        assert peer.commands(conn)[:3] == ["EHLO tern.test", "STARTTLS", "EHLO tern.test"]
        [handshake] = peer.events("tls")
        assert handshake["sni"] == "localhost"
        [msg] = peer.events("message")
        assert msg["tls"] is True and msg["rcpts"] == ["bob@example.net"]


@pytest.mark.parametrize("mode,summary", [
    ("plain", "none(not offered)"),
    ("refuse", "none(STARTTLS refused: 454)"),
])
def test_without_starttls_mail_goes_in_clear(tmp_path, pki, mode, summary):
    with TlsSmtp(tmp_path, mode, pki.localhost) as peer, \
         TernServer(tmp_path, relay(peer.port)) as tern:
        submit(tern)
        [line] = outcomes(tern)
        assert field(line, "status") == "sent" and tls_of(line) == summary, line
        # A refused STARTTLS leaves the session as it was: one connection.
        assert peer.connections() == [1]
        assert peer.events("message")[0]["tls"] is False


@pytest.mark.parametrize("mode,reason", [
    ("broken", "TLS handshake failed"),
    ("stall", "timed out after 1 s in STARTTLS and the TLS handshake"),
])
def test_failed_handshake_falls_back_to_clear_and_is_remembered(tmp_path, pki, mode, reason):
    with TlsSmtp(tmp_path, mode, pki.localhost) as peer, \
         TernServer(tmp_path, relay(peer.port, tls_timeout="1s")) as tern:
        submit(tern, 1)
        [line] = outcomes(tern)
        assert field(line, "status") == "sent", line
        assert tls_of(line) == "none(after a failed handshake)", line
        # The handshake failed on the first connection; the same address
        # at once again, in clear, carried the message.
        assert peer.connections() == [1, 2]
        assert "STARTTLS" in peer.commands(1)
        assert "STARTTLS" not in peer.commands(2)
        [msg] = peer.events("message")
        assert msg["conn"] == 2 and msg["tls"] is False
        warning = [l for l in tern.log().splitlines() if "delivering in clear" in l]
        assert len(warning) == 1 and reason in warning[0], tern.log()
        # That connection closes after 2 s idle; the next message takes a
        # new one, which remembers and does not try STARTTLS.
        wait_for(lambda: peer.events("disconnect", conn=2), what="the idle connection's end")
        submit(tern, 2)
        second = outcomes(tern, 2)[1]
        assert field(second, "status") == "sent", second
        assert tls_of(second) == "none(after a failed handshake)", second
        assert peer.connections() == [1, 2, 3]
        assert "STARTTLS" not in peer.commands(3)
        assert peer.events("message")[1]["conn"] == 3


# ---- implicit TLS to a relay ----

def test_implicit_tls_with_invalid_certs_allowed(tmp_path, pki):
    tls = "tls.implicit = true\ntls.allow-invalid-certs = true"
    with TlsSmtp(tmp_path, "implicit", pki.localhost_self) as peer, \
         TernServer(tmp_path, relay(peer.port, address="localhost", tls=tls),
                    env=trusting(pki.ca)) as tern:
        submit(tern)
        [line] = outcomes(tern)
        assert field(line, "status") == "sent", line
        assert re.fullmatch(UNTRUSTED % "self-signed certificate", tls_of(line)), line
        [conn] = peer.connections()
        assert peer.commands(conn)[0] == "EHLO tern.test"  # no STARTTLS: TLS from the start
        assert "STARTTLS" not in peer.commands(conn)
        assert peer.events("message")[0]["tls"] is True


@pytest.mark.parametrize("cert,address,why", [
    ("localhost_self", "localhost", "self-signed certificate"),
    ("wrong_name", "localhost", "hostname mismatch"),
    ("localhost", "127.0.0.1", None),
], ids=["self-signed", "wrong-name", "ip-literal-verified"])
def test_implicit_tls_verifies_the_relay_address(tmp_path, pki, cert, address, why):
    tls = "tls.implicit = true"
    with TlsSmtp(tmp_path, "implicit", getattr(pki, cert)) as peer, \
         TernServer(tmp_path, relay(peer.port, address=address, tls=tls),
                    env=trusting(pki.ca)) as tern:
        submit(tern)
        [line] = outcomes(tern)
        if why is None:
            assert field(line, "status") == "sent", line
            assert re.fullmatch(VERIFIED, tls_of(line)), line
            # An IP literal gets no SNI; the certificate's IP address matched.
            assert peer.events("tls")[0]["sni"] is None
            return
        assert field(line, "status") == "deferred", line
        assert field(line, "stage") == "tls" and field(line, "dsn") == "4.7.5", line
        assert "TLS certificate of %s not accepted: %s" % (address, why) in line
        assert re.fullmatch(UNTRUSTED % why, tls_of(line)), line
        assert peer.events("message") == []


def test_route_shows_the_relay_tls_policy(tmp_path, tern):
    tern_srv = TernServer(tmp_path, relay(2465, tls="tls.implicit = true"))
    r = tern("route", "-c", tern_srv.config, "bob@example.net")
    assert r.returncode == 0, r.stderr
    assert ("tls: implicit true, allow-invalid-certs false (TLS on connect, certificate "
            "verified for the host name)") in r.stdout
    assert "not applied" not in r.stdout


# ---- delivery by MX: queue.outbound.tls.starttls ----

ZONE = "t.example"
RECORDS = """
good IN MX 10 mx.good
mx.good IN A 127.0.0.11
selfsigned IN MX 10 mx.selfsigned
mx.selfsigned IN A 127.0.0.12
wrongname IN MX 10 mx.wrongname
mx.wrongname IN A 127.0.0.13
plain IN MX 10 mx.plain
mx.plain IN A 127.0.0.14
"""


def d(name):
    return "%s.%s" % (name, ZONE)


@pytest.fixture(scope="module")
def world(tmp_path_factory, pki):
    """NSD and MX hosts with STARTTLS: a certificate from the test CA for
    its name (good), a self-signed one (selfsigned), one from the test CA
    for another name (wrongname), and one without STARTTLS (plain)."""
    workdir = tmp_path_factory.mktemp("tlsworld")
    good = pki.issue(d("mx.good"), ["DNS:" + d("mx.good")])
    self_signed = pki.self_signed(d("mx.selfsigned"), ["DNS:" + d("mx.selfsigned")])
    other = pki.issue(d("other"), ["DNS:" + d("other")])
    listeners = [
        {"addr": "127.0.0.11", "mode": "starttls", "cert": good.cert, "key": good.key},
        {"addr": "127.0.0.12", "mode": "starttls", "cert": self_signed.cert,
         "key": self_signed.key},
        {"addr": "127.0.0.13", "mode": "starttls", "cert": other.cert, "key": other.key},
        {"addr": "127.0.0.14", "mode": "accept"},
    ]
    with NetNs() as ns:
        with Nsd(ns, {ZONE: zone(ZONE, RECORDS)}):
            with MxServer(ns, workdir, listeners) as mx:
                yield ns, mx


def starttls(policy):
    return '[queue.outbound.tls]\nstarttls = %s\n[queue.schedule]\nretry = ["1h"]\n' % policy


def test_mx_require_with_a_valid_certificate(world, tmp_path, pki):
    ns, mx = world
    before = len(mx.messages("127.0.0.11"))
    with NsTern(ns, tmp_path, starttls('"require"'), env=trusting(pki.ca)) as tern:
        ns_send(ns, ["bob@" + d("good")])
        line = tern.outcome("bob@" + d("good"))
        assert field(line, "status") == "sent", line
        assert re.fullmatch(VERIFIED, tls_of(line)), line
        msg = mx.wait_messages(before + 1, local="127.0.0.11")[-1]
        assert msg["tls"] is True


@pytest.mark.parametrize("domain,addr,dsn,why", [
    ("selfsigned", "127.0.0.12", "4.7.5", "TLS certificate of mx.selfsigned.t.example not "
                                          "accepted: self-signed certificate"),
    ("wrongname", "127.0.0.13", "4.7.5", "TLS certificate of mx.wrongname.t.example not "
                                         "accepted: hostname mismatch"),
    ("plain", "127.0.0.14", "4.7.4", "TLS is required, but mx.plain.t.example does not offer "
                                     "STARTTLS"),
])
def test_mx_require_defers_a_host_that_fails_it(world, tmp_path, pki, domain, addr, dsn, why):
    ns, mx = world
    before = len(mx.messages(addr))
    with NsTern(ns, tmp_path, starttls('"require"'), env=trusting(pki.ca)) as tern:
        ns_send(ns, ["bob@" + d(domain)])
        line = tern.outcome("bob@" + d(domain))
        assert field(line, "status") == "deferred", line
        assert field(line, "stage") == "tls" and field(line, "dsn") == dsn, line
        assert why in line, line
        time.sleep(0.5)
        assert len(mx.messages(addr)) == before  # nothing went in clear


def test_mx_disable_never_says_starttls(world, tmp_path, pki):
    ns, mx = world
    before = len(mx.connects("127.0.0.11"))
    with NsTern(ns, tmp_path, starttls('"disable"'), env=trusting(pki.ca)) as tern:
        ns_send(ns, ["bob@" + d("good")])
        line = tern.outcome("bob@" + d("good"))
        assert field(line, "status") == "sent" and tls_of(line) == "none(disabled)", line
        conn = mx.wait_connects(before + 1, local="127.0.0.11")[-1]["conn"]
        assert mx.commands(conn)[0].startswith("EHLO ")
        assert "STARTTLS" not in mx.commands(conn)


def test_mx_policy_is_a_rule_on_the_mx_host(world, tmp_path, pki):
    """starttls is evaluated per connection with mx = the host: required
    (and verified) for one host, opportunistic for the other."""
    ns, _ = world
    rule = ('[ { if = "mx", eq = "%s", then = "require" }, { else = "optional" } ]'
            % d("mx.good"))
    with NsTern(ns, tmp_path, starttls(rule), env=trusting(pki.ca)) as tern:
        ns_send(ns, ["bob@" + d("good"), "carol@" + d("selfsigned")])
        good = tern.outcome("bob@" + d("good"))
        opportunistic = tern.outcome("carol@" + d("selfsigned"))
        assert field(good, "status") == "sent" and re.fullmatch(VERIFIED, tls_of(good)), good
        assert field(opportunistic, "status") == "sent", opportunistic
        assert re.fullmatch(UNTRUSTED % "self-signed certificate", tls_of(opportunistic))


def test_route_shows_the_starttls_policy(world, tmp_path):
    ns, _ = world
    tern = NsTern(ns, tmp_path, starttls('"require"'))
    r = ns.run([TERN_BIN, "route", "-c", tern.config, "bob@" + d("good")], capture_output=True,
               text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert ("tls: starttls require (STARTTLS required, certificate verified for the host "
            "name), mta-sts optional, dane optional"
            ) in r.stdout
