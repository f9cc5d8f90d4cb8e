"""DANE (RFC 7672, SPEC §4) against real peers, in a network namespace: NSD
serves a DNSSEC-signed zone (signed by ldns in the test, tests/system/
dnssec.py) whose MX hosts publish TLSA records, an unsigned zone, and a
zone whose signatures do not chain to tern's trust anchor (bogus). tern
validates with resolver.dnssec.trust-anchor pointing at the test's keys.
The MX hosts are mx_server.py's STARTTLS listeners.

tern's trust store (SSL_CERT_FILE) is the test PKI's `other_ca`, which
issued none of the certificates: whatever verifies here, DANE verified.
"""
import re
import time

import pytest

from dnssec import SignedZone, tlsa, write_anchors
from mxpeer import MxServer, NsTern, send as ns_send
from netns import NetNs
from nsd import Nsd, zone
from peers import TERN_BIN, field, tls_of
from stsweb import StsWeb, policy
from tlspeer import Pki

SIGNED = "d.example"
UNSIGNED = "u.example"
BOGUS = "b.example"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The zones, their MX hosts and the trust anchor file.

    d.example (signed):
      ee       -> mx-ee     127.0.0.21  self-signed for another name; TLSA 3 1 1 of its key
      eecert   -> mx-eecert 127.0.0.22  the same server; TLSA 3 0 1 of its certificate
      eebad    -> mx-eebad  127.0.0.23  TLSA 3 1 1 of some other key
      ta       -> mx-ta     127.0.0.24  issued by the test CA, chain sent; TLSA 2 0 1 of the CA
      taname   -> mx-taname 127.0.0.25  issued by the test CA for another name; TLSA 2 0 1
      notls    -> mx-notls  127.0.0.26  no STARTTLS; TLSA 3 1 1
      pkix     -> mx-pkix   127.0.0.27  self-signed; only a PKIX-EE (usage 1) record
      none     -> mx-none   127.0.0.28  self-signed; no TLSA records (proven absent)
      two      -> mx-eebad (10), mx-ee (20)
      stsdane  -> mx-ee, and an MTA-STS policy (nginx, stsweb.py) in enforce mode
                  that names another host: DANE takes precedence
    u.example (unsigned): plain -> mx.plain 127.0.0.29 (self-signed), with a TLSA
      record that must not count
    b.example (signed, but the anchor names another key): mx 127.0.0.30
    """
    workdir = tmp_path_factory.mktemp("daneworld")
    pki = Pki(workdir)
    ee = pki.self_signed("unrelated.example", ["DNS:unrelated.example"], name="ee")
    other = pki.self_signed("other.example", ["DNS:other.example"], name="other")
    ta_leaf = pki.issue("mx-ta.%s" % SIGNED, ["DNS:mx-ta.%s" % SIGNED], name="ta")
    ta_wrong = pki.issue("elsewhere.example", ["DNS:elsewhere.example"], name="taname")
    for leaf in (ta_leaf, ta_wrong):   # the chain the server sends: leaf, then the CA
        with open(leaf.cert, "a") as out, open(pki.ca) as ca:
            out.write(ca.read())
    ee_key = tlsa(3, 1, 1, ee.cert)
    records = """
ee IN MX 10 mx-ee
mx-ee IN A 127.0.0.21
_25._tcp.mx-ee IN TLSA {ee_key}
eecert IN MX 10 mx-eecert
mx-eecert IN A 127.0.0.22
_25._tcp.mx-eecert IN TLSA {ee_cert}
eebad IN MX 10 mx-eebad
mx-eebad IN A 127.0.0.23
_25._tcp.mx-eebad IN TLSA {other_key}
ta IN MX 10 mx-ta
mx-ta IN A 127.0.0.24
_25._tcp.mx-ta IN TLSA {ca}
taname IN MX 10 mx-taname
mx-taname IN A 127.0.0.25
_25._tcp.mx-taname IN TLSA {ca}
notls IN MX 10 mx-notls
mx-notls IN A 127.0.0.26
_25._tcp.mx-notls IN TLSA {ee_key}
pkix IN MX 10 mx-pkix
mx-pkix IN A 127.0.0.27
_25._tcp.mx-pkix IN TLSA {pkix}
none IN MX 10 mx-none
mx-none IN A 127.0.0.28
two IN MX 10 mx-eebad
two IN MX 20 mx-ee
stsdane IN MX 10 mx-ee
mta-sts.stsdane IN A 127.0.0.31
_mta-sts.stsdane IN TXT "v=STSv1; id=1;"
""".format(ee_key=ee_key, ee_cert=tlsa(3, 0, 1, ee.cert), other_key=tlsa(3, 1, 1, other.cert),
           ca=tlsa(2, 0, 1, pki.ca), pkix=tlsa(1, 1, 1, ee.cert))
    signed = SignedZone(workdir, SIGNED, records)
    bogus = SignedZone(workdir, BOGUS, "@ IN MX 10 mx\nmx IN A 127.0.0.30\n")
    unsigned = zone(UNSIGNED, "plain IN MX 10 mx.plain\nmx.plain IN A 127.0.0.29\n"
                              "_25._tcp.mx.plain IN TLSA %s\n" % ee_key)
    anchors = write_anchors(str(workdir / "anchors.key"), [signed.anchor, bogus.wrong_anchor])

    def tls(addr, cert):
        return {"addr": addr, "mode": "starttls", "cert": cert.cert, "key": cert.key}

    listeners = [
        tls("127.0.0.21", ee), tls("127.0.0.22", ee), tls("127.0.0.23", ee),
        tls("127.0.0.24", ta_leaf), tls("127.0.0.25", ta_wrong),
        {"addr": "127.0.0.26", "mode": "accept"},
        tls("127.0.0.27", ee), tls("127.0.0.28", ee), tls("127.0.0.29", ee),
        tls("127.0.0.30", ee),
    ]
    web = StsWeb(None, workdir, pki)
    web.site("stsdane." + SIGNED, "127.0.0.31", policy("enforce", ["mx.elsewhere.example"]))
    with NetNs() as ns:
        web.netns = ns
        with Nsd(ns, {SIGNED: signed.text, UNSIGNED: unsigned, BOGUS: bogus.text}):
            with MxServer(ns, workdir, listeners) as mx, web:
                yield ns, mx, pki, anchors


def dane(policy, starttls="optional"):
    return ('[queue.outbound.tls]\ndane = "%s"\nstarttls = "%s"\n'
            '[queue.schedule]\nretry = ["1h"]\n' % (policy, starttls))


def run(world, tmp_path, rcpt, policy="optional", starttls="optional", trust=None):
    """Deliver one message to rcpt; its outcome line and tern's log.
    trust: tern's SSL_CERT_FILE (default: the CA that issued nothing)."""
    ns, mx, pki, anchors = world
    with NsTern(ns, tmp_path, dane(policy, starttls), env={"SSL_CERT_FILE": trust or pki.other_ca},
                trust_anchor=anchors) as tern:
        ns_send(ns, [rcpt])
        line = tern.outcome(rcpt)
        time.sleep(0.3)
        return line, tern.log_lines("")


@pytest.mark.parametrize("domain,addr,usage", [
    ("ee", "127.0.0.21", "ee"),        # DANE-EE by key: no name, no chain needed
    ("eecert", "127.0.0.22", "ee"),    # DANE-EE by the whole certificate
    ("ta", "127.0.0.24", "ta"),        # DANE-TA: the chain ends at the TLSA's CA
])
def test_a_matching_tlsa_record_verifies_the_server(world, tmp_path, domain, addr, usage):
    _, mx, _, _ = world
    before = len(mx.messages(addr))
    line, _ = run(world, tmp_path, "bob@%s.%s" % (domain, SIGNED))
    assert field(line, "status") == "sent", line
    assert re.fullmatch(r"TLSv1\.[23]:\S+ verified=yes\(dane-%s\)" % usage, tls_of(line)), line
    msg = mx.wait_messages(before + 1, local=addr)[-1]
    assert msg["tls"] is True


@pytest.mark.parametrize("domain,addr,dsn,why", [
    ("eebad", "127.0.0.23", "4.7.5", "not accepted: DANE: no matching DANE TLSA records"),
    # DANE-TA checks the name against the MX host name.
    ("taname", "127.0.0.25", "4.7.5", "not accepted: DANE: hostname mismatch"),
    ("notls", "127.0.0.26", "4.7.4", "TLS is required, but mx-notls.d.example does not offer "
                                     "STARTTLS"),
])
def test_a_dane_host_that_fails_is_deferred_never_sent_in_clear(world, tmp_path, domain, addr,
                                                                 dsn, why):
    """Under the default `dane = optional`, a host with usable TLSA records
    must match them: a mismatch or a missing STARTTLS defers, and tern does
    not fall back to clear as it does for opportunistic TLS."""
    _, mx, _, _ = world
    before = len(mx.messages(addr))
    line, log = run(world, tmp_path, "bob@%s.%s" % (domain, SIGNED))
    assert field(line, "status") == "deferred", line
    assert field(line, "stage") == "tls" and field(line, "dsn") == dsn, line
    assert why in line, line
    assert len(mx.messages(addr)) == before
    assert not any("delivering in clear" in l for l in log), log


def test_the_next_mx_host_is_tried_after_a_dane_mismatch(world, tmp_path):
    _, mx, _, _ = world
    before = len(mx.messages("127.0.0.21"))
    line, log = run(world, tmp_path, "bob@two.%s" % SIGNED)
    assert field(line, "status") == "sent", line
    assert "mx-ee.d.example" in field(line, "relay"), line
    assert len(mx.messages("127.0.0.21")) == before + 1
    assert any("no matching DANE TLSA records" in l for l in log), log


def test_unusable_tlsa_records_mean_tls_without_authentication(world, tmp_path):
    """Only a PKIX-EE record (usage 1, not for SMTP): TLS is required, but
    the certificate is not checked (RFC 7672 §2.2)."""
    line, _ = run(world, tmp_path, "bob@pkix.%s" % SIGNED, starttls="disable")
    assert field(line, "status") == "sent", line
    assert tls_of(line).startswith("TLSv1.") and "verified=no" in tls_of(line), line


def test_proven_absence_of_tlsa_is_opportunistic_tls(world, tmp_path):
    line, _ = run(world, tmp_path, "bob@none.%s" % SIGNED)
    assert field(line, "status") == "sent", line
    assert "verified=no(self-signed certificate)" in tls_of(line), line


def test_unsigned_zone_under_optional_ignores_its_tlsa(world, tmp_path):
    line, _ = run(world, tmp_path, "bob@plain.%s" % UNSIGNED)
    assert field(line, "status") == "sent", line
    assert "verified=no(self-signed certificate)" in tls_of(line), line


@pytest.mark.parametrize("rcpt,why", [
    ("bob@plain.%s" % UNSIGNED, "DANE is required, but mx.plain.u.example has no usable "
                                "DNSSEC-validated TLSA records (no TLSA lookup (the MX records "
                                "are not DNSSEC-signed))"),
    ("bob@none.%s" % SIGNED, "DANE is required, but mx-none.d.example has no usable "
                             "DNSSEC-validated TLSA records (_25._tcp.mx-none.d.example: no "
                             "TLSA records (proven))"),
])
def test_dane_require_defers_hosts_without_tlsa(world, tmp_path, rcpt, why):
    _, mx, _, _ = world
    before = len(mx.connects())
    line, _ = run(world, tmp_path, rcpt, policy="require")
    assert field(line, "status") == "deferred" and field(line, "dsn") == "4.7.5", line
    assert why in line, line
    assert len(mx.connects()) == before  # refused before any connection


def test_dane_require_delivers_to_a_matching_host(world, tmp_path):
    line, _ = run(world, tmp_path, "bob@ee.%s" % SIGNED, policy="require")
    assert field(line, "status") == "sent" and "verified=yes(dane-ee)" in tls_of(line), line


def test_a_bogus_zone_is_deferred_unless_dane_is_disabled(world, tmp_path):
    """Signatures that do not chain to the anchor: the validated MX lookup
    fails, so the domain waits; with dane = "disable" nothing is validated
    and the mail goes (opportunistic TLS)."""
    line, _ = run(world, tmp_path, "bob@%s" % BOGUS)
    assert field(line, "status") == "deferred" and field(line, "dsn") == "4.4.3", line
    assert "DNSSEC validation failed" in line, line
    (tmp_path / "again").mkdir()
    line, _ = run(world, tmp_path / "again", "bob@%s" % BOGUS, policy="disable")
    assert field(line, "status") == "sent", line


def test_dane_takes_precedence_over_mta_sts(world, tmp_path):
    """An enforce policy that does not name the MX host would skip it; DANE
    governs the host, so it is used and matched against its TLSA record
    (RFC 8461 §2). With dane = "disable" the policy skips it. tern trusts
    the test CA here, so that the policy fetch over HTTPS succeeds."""
    _, _, pki, _ = world
    rcpt = "bob@stsdane.%s" % SIGNED
    line, log = run(world, tmp_path, rcpt, trust=pki.ca)
    assert any("policy id 1 fetched: mode enforce" in l for l in log), log
    assert field(line, "status") == "sent", line
    assert tls_of(line).startswith("TLSv1.") and "verified=yes(dane-ee)" in tls_of(line), line
    (tmp_path / "no-dane").mkdir()
    line, log = run(world, tmp_path / "no-dane", rcpt, policy="disable", trust=pki.ca)
    assert field(line, "status") == "deferred" and field(line, "dsn") == "4.7.5", line
    assert "MTA-STS: MX host mx-ee.d.example does not match the policy" in line, line


def test_route_shows_the_dane_facts(world, tmp_path):
    ns, _, _, anchors = world
    tern = NsTern(ns, tmp_path, dane("optional"), trust_anchor=anchors)
    r = ns.run([TERN_BIN, "route", "-c", tern.config, "bob@ee.%s" % SIGNED,
                "bob@plain.%s" % UNSIGNED], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "mx: 1 record, DNSSEC-validated" in r.stdout, r.stdout
    assert ("dane: _25._tcp.mx-ee.d.example: 1 usable TLSA record -> STARTTLS required, "
            "certificate matched against the TLSA records (DANE)") in r.stdout, r.stdout
    assert "dane: no TLSA lookup (the MX records are not DNSSEC-signed)" in r.stdout, r.stdout
