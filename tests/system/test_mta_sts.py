"""MTA-STS (RFC 8461, SPEC §4) end to end: NSD serves the MX records, the
_mta-sts TXT records and the policy hosts' addresses; nginx (stsweb.py)
serves the policies over HTTPS with certificates from the test CA;
mx_server.py listeners stand in for the MX hosts, some with STARTTLS.
tern trusts the test CA through SSL_CERT_FILE, for SMTP and for the
policy fetch alike. Addresses that must never be connected to are counted
with nftables SYN counters.
"""
import os
import re
import time

import pytest

from mxpeer import MxServer, NsTern, send as ns_send
from netns import NetNs
from nsd import Nsd, zone
from peers import TERN_BIN, field, tls_of, wait_for
from stsweb import StsWeb, policy
from tlspeer import Pki

ZONE = "s.example"


def d(name):
    return "%s.%s" % (name, ZONE)


# domain -> (MX records as (preference, host, address)), policy host address
DOMAINS = {
    "enf": ([(10, "mx1.enf", "127.0.0.11")], "127.0.0.101"),
    "skip": ([(10, "bad.skip", "127.0.0.21"), (20, "mx.skip", "127.0.0.22")], "127.0.0.102"),
    "nomatch": ([(10, "mx.nomatch", "127.0.0.23")], "127.0.0.103"),
    "untrusted": ([(10, "mx.untrusted", "127.0.0.24")], "127.0.0.104"),
    "testing": ([(10, "mx.testing", "127.0.0.25")], "127.0.0.105"),
    "refresh": ([(10, "mx1.refresh", "127.0.0.26"), (20, "mx2.refresh", "127.0.0.27")],
                "127.0.0.106"),
    "p404": ([(10, "mx.p404", "127.0.0.28")], "127.0.0.107"),
    "ctype": ([(10, "mx.ctype", "127.0.0.29")], "127.0.0.108"),
    "redirect": ([(10, "mx.redirect", "127.0.0.30")], "127.0.0.109"),
    "cache": ([(10, "mx1.cache", "127.0.0.32"), (20, "mx2.cache", "127.0.0.33")], "127.0.0.110"),
}
COUNTED = ["127.0.0.21", "127.0.0.23", "127.0.0.32"]


def records(refresh_id="1"):
    out = []
    for name, (mxs, web) in DOMAINS.items():
        for pref, host, addr in mxs:
            out.append("%s IN MX %d %s" % (name, pref, host))
            out.append("%s IN A %s" % (host, addr))
        out.append("mta-sts.%s IN A %s" % (name, web))
        txt_id = refresh_id if name == "refresh" else "1"
        # A one-second TTL: tern's resolver sees a changed id at once.
        out.append('_mta-sts.%s 1 IN TXT "v=STSv1; id=%s;"' % (name, txt_id))
        # A TXT record of something else beside it is ignored.
        out.append('_mta-sts.%s 1 IN TXT "v=spf1 -all"' % name)
    return out


def trusting(pki):
    return {"SSL_CERT_FILE": pki.ca}


def conf(mta_sts='"optional"', starttls='"optional"'):
    return "\n".join(['[queue.outbound.tls]', 'mta-sts = %s' % mta_sts,
                      'starttls = %s' % starttls,
                      '[queue.outbound.timeouts]', 'mta-sts = "10s"',
                      '[queue.schedule]', 'retry = ["1h"]', ''])


VERIFIED_ENFORCE = r"TLSv1\.[23]:\S+ verified=yes mta-sts=enforce"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return Pki(tmp_path_factory.mktemp("stspki"))


@pytest.fixture(scope="module")
def world(tmp_path_factory, pki):
    workdir = tmp_path_factory.mktemp("stsworld")
    starttls = {"mx1.enf", "mx.skip", "mx1.refresh", "mx2.refresh", "mx2.cache"}
    listeners = []
    for name, (mxs, _) in DOMAINS.items():
        for _, host, addr in mxs:
            if addr in COUNTED:
                continue  # nothing listens: a connection would be a SYN counted
            if host in starttls:
                cert = pki.issue(d(host), ["DNS:" + d(host)])
                listeners.append({"addr": addr, "mode": "starttls", "cert": cert.cert,
                                  "key": cert.key})
            elif host == "mx.untrusted":
                cert = pki.self_signed(d(host), ["DNS:" + d(host)])
                listeners.append({"addr": addr, "mode": "starttls", "cert": cert.cert,
                                  "key": cert.key})
            else:
                listeners.append({"addr": addr, "mode": "accept"})
    # mx1.cache answers too, so that delivery without the policy would work.
    listeners.append({"addr": "127.0.0.32", "mode": "accept"})
    web = StsWeb(None, workdir, pki)
    web.site(d("enf"), DOMAINS["enf"][1], policy("enforce", [d("mx1.enf")]))
    web.site(d("skip"), DOMAINS["skip"][1], policy("enforce", [d("mx.skip")]))
    web.site(d("nomatch"), DOMAINS["nomatch"][1], policy("enforce", [d("other")]))
    web.site(d("untrusted"), DOMAINS["untrusted"][1],
             policy("enforce", ["*." + d("untrusted")], crlf=True))
    web.site(d("testing"), DOMAINS["testing"][1], policy("testing", [d("other")]))
    web.site(d("refresh"), DOMAINS["refresh"][1], policy("enforce", [d("mx2.refresh")]))
    web.site(d("p404"), DOMAINS["p404"][1], None)
    web.site(d("ctype"), DOMAINS["ctype"][1], policy("enforce", [d("other")]),
             content_type="application/octet-stream")
    web.site(d("redirect"), DOMAINS["redirect"][1], None,
             redirect="https://mta-sts.%s/.well-known/mta-sts.txt" % d("nomatch"))
    with NetNs(count=COUNTED) as ns:
        web.netns = ns
        nsd = Nsd(ns, {ZONE: zone(ZONE, records())})
        with nsd, MxServer(ns, workdir, listeners) as mx, web:
            yield ns, nsd, mx, web


def send_one(ns, rcpt):
    ns_send(ns, [rcpt])


def test_enforce_matching_mx_gets_verified_tls(world, tmp_path, pki):
    ns, _, mx, _ = world
    before = len(mx.messages("127.0.0.11"))
    with NsTern(ns, tmp_path, conf(), env=trusting(pki)) as tern:
        send_one(ns, "bob@" + d("enf"))
        line = tern.outcome("bob@" + d("enf"))
        assert field(line, "status") == "sent", line
        assert re.fullmatch(VERIFIED_ENFORCE, tls_of(line)), line
        msg = mx.wait_messages(before + 1, local="127.0.0.11")[-1]
        assert msg["tls"] is True
        assert "policy id 1 fetched: mode enforce" in tern.log()
        # The policy is on disk, in the spool.
        cached = os.path.join(tern.spool, "mta-sts", d("enf"))
        wait_for(lambda: os.path.exists(cached), what="the cache file")
    assert tern.proc.returncode == 0, tern.log()


def test_enforce_skips_a_host_the_policy_does_not_name(world, tmp_path, pki):
    ns, _, mx, _ = world
    before = len(mx.messages("127.0.0.22"))
    with NsTern(ns, tmp_path, conf(), env=trusting(pki)) as tern:
        send_one(ns, "bob@" + d("skip"))
        line = tern.outcome("bob@" + d("skip"))
        assert field(line, "status") == "sent", line
        assert re.fullmatch(VERIFIED_ENFORCE, tls_of(line)), line
        mx.wait_messages(before + 1, local="127.0.0.22")
        assert ns.syn_count("127.0.0.21") == 0  # never connected to
        assert "MX host bad.skip.s.example does not match the policy" in tern.log()
    assert tern.proc.returncode == 0, tern.log()


def test_enforce_without_a_matching_mx_defers(world, tmp_path, pki):
    ns, _, _, _ = world
    with NsTern(ns, tmp_path, conf(), env=trusting(pki)) as tern:
        send_one(ns, "bob@" + d("nomatch"))
        line = tern.outcome("bob@" + d("nomatch"))
        assert field(line, "status") == "deferred", line
        assert field(line, "dsn") == "4.7.5", line
        assert "does not match the policy" in line and "MTA-STS" in line, line
        assert ns.syn_count("127.0.0.23") == 0
    assert tern.proc.returncode == 0, tern.log()


def test_enforce_untrusted_certificate_defers_without_fallback(world, tmp_path, pki):
    ns, _, mx, _ = world
    before = len(mx.messages("127.0.0.24"))
    with NsTern(ns, tmp_path, conf(), env=trusting(pki)) as tern:
        send_one(ns, "bob@" + d("untrusted"))
        line = tern.outcome("bob@" + d("untrusted"))
        assert field(line, "status") == "deferred", line
        assert field(line, "stage") == "tls" and field(line, "dsn") == "4.7.5", line
        assert "MTA-STS (enforce): TLS certificate of mx.untrusted.s.example not accepted: " \
               "self-signed certificate" in line, line
        assert tls_of(line).endswith("verified=no(self-signed certificate) mta-sts=enforce"), line
        time.sleep(1)
        assert len(mx.messages("127.0.0.24")) == before  # nothing in clear
        assert "delivering in clear" not in tern.log()
    assert tern.proc.returncode == 0, tern.log()


def test_testing_mode_delivers_and_logs_the_violations(world, tmp_path, pki):
    ns, _, mx, _ = world
    before = len(mx.messages("127.0.0.25"))
    with NsTern(ns, tmp_path, conf(), env=trusting(pki)) as tern:
        send_one(ns, "bob@" + d("testing"))
        line = tern.outcome("bob@" + d("testing"))
        assert field(line, "status") == "sent", line
        assert tls_of(line) == "none(not offered) mta-sts=testing", line
        mx.wait_messages(before + 1, local="127.0.0.25")
        warnings = [l for l in tern.log().splitlines() if "MTA-STS testing" in l]
        assert any(" warn " in l and d("testing") in l and "does not match" in l
                   for l in warnings), tern.log()
        assert any("TLS not used" in l for l in warnings), tern.log()
    assert tern.proc.returncode == 0, tern.log()


def test_policy_is_refreshed_when_the_id_changes(world, tmp_path, pki):
    ns, nsd, mx, web = world
    rcpt = "bob@" + d("refresh")
    try:
        with NsTern(ns, tmp_path, conf(), env=trusting(pki)) as tern:
            n27 = len(mx.messages("127.0.0.27"))
            send_one(ns, rcpt)
            wait_for(lambda: len(tern.log_lines("rcpt=<%s>" % rcpt)) >= 1, what="outcome 1")
            mx.wait_messages(n27 + 1, local="127.0.0.27")  # policy A: mx2 only
            fetches = len(web.requests())

            # Same id, another file: the cached policy stays.
            web.set_policy(d("refresh"), policy("enforce", [d("mx1.refresh")]))
            time.sleep(2.5)  # the idle connection closes; the TXT's TTL runs out
            send_one(ns, rcpt)
            wait_for(lambda: len(tern.log_lines("rcpt=<%s>" % rcpt)) >= 2, what="outcome 2")
            mx.wait_messages(n27 + 2, local="127.0.0.27")
            assert len(web.requests()) == fetches  # not fetched again

            # A new id: fetched again, the new policy applies (mx1 only).
            n26 = len(mx.messages("127.0.0.26"))
            nsd.stop()
            nsd.zones[ZONE] = zone(ZONE, records(refresh_id="2"), serial=2)
            nsd.start()
            time.sleep(2.5)
            send_one(ns, rcpt)
            wait_for(lambda: len(tern.log_lines("rcpt=<%s>" % rcpt)) >= 3, what="outcome 3")
            mx.wait_messages(n26 + 1, local="127.0.0.26")
            assert "MTA-STS %s: policy id 2 fetched" % d("refresh") in tern.log()

            # Another new id, but the policy host answers 404: the fetch
            # fails and the cached policy (id 2: mx1 only) stays in force.
            web.set_policy(d("refresh"), None)
            nsd.stop()
            nsd.zones[ZONE] = zone(ZONE, records(refresh_id="3"), serial=3)
            nsd.start()
            time.sleep(2.5)
            send_one(ns, rcpt)
            wait_for(lambda: len(tern.log_lines("rcpt=<%s>" % rcpt)) >= 4, what="outcome 4")
            mx.wait_messages(n26 + 2, local="127.0.0.26")
            assert ("the cached policy (id 2, mode enforce) stays in force" in tern.log()), \
                tern.log()
            lines = tern.log_lines("rcpt=<%s>" % rcpt)
            assert all(field(l, "status") == "sent" for l in lines), lines
        assert tern.proc.returncode == 0, tern.log()
    finally:
        # The world as the other tests expect it.
        web.set_policy(d("refresh"), policy("enforce", [d("mx2.refresh")]))
        nsd.stop()
        nsd.zones[ZONE] = zone(ZONE, records(), serial=4)
        nsd.start()


@pytest.mark.parametrize("want,status", [('"optional"', "sent"), ('"require"', "deferred")])
def test_policy_not_found_404(world, tmp_path, pki, want, status):
    ns, _, _, _ = world
    with NsTern(ns, tmp_path, conf(mta_sts=want), env=trusting(pki)) as tern:
        send_one(ns, "bob@" + d("p404"))
        line = tern.outcome("bob@" + d("p404"))
        assert field(line, "status") == status, line
        if status == "sent":
            assert tls_of(line) == "none(not offered)", line  # as without MTA-STS
        else:
            assert field(line, "dsn") == "4.7.5", line
            assert "has no usable MTA-STS policy" in line and "HTTP 404" in line, line
        assert "HTTP 404" in tern.log()
    assert tern.proc.returncode == 0, tern.log()


def test_wrong_content_type_is_no_policy(world, tmp_path, pki):
    ns, _, _, _ = world
    with NsTern(ns, tmp_path, conf(), env=trusting(pki)) as tern:
        send_one(ns, "bob@" + d("ctype"))
        line = tern.outcome("bob@" + d("ctype"))
        assert field(line, "status") == "sent", line  # the enforce policy was not taken
        assert "not text/plain" in tern.log(), tern.log()
    assert tern.proc.returncode == 0, tern.log()


def test_redirect_is_not_followed(world, tmp_path, pki):
    ns, _, _, web = world
    with NsTern(ns, tmp_path, conf(), env=trusting(pki)) as tern:
        send_one(ns, "bob@" + d("redirect"))
        line = tern.outcome("bob@" + d("redirect"))
        # Followed, the target's enforce policy would name no MX of this domain.
        assert field(line, "status") == "sent", line
        assert "HTTP 301, a redirect (not followed" in tern.log(), tern.log()
    assert tern.proc.returncode == 0, tern.log()


def test_cached_policy_survives_a_restart(world, tmp_path, pki):
    ns, _, mx, _ = world
    web = StsWeb(ns, tmp_path, pki)
    web.site(d("cache"), DOMAINS["cache"][1], policy("enforce", [d("mx2.cache")]))
    rcpt = "bob@" + d("cache")
    with web:
        n33 = len(mx.messages("127.0.0.33"))
        with NsTern(ns, tmp_path, conf(), env=trusting(pki)) as tern:
            send_one(ns, rcpt)
            line = tern.outcome(rcpt)
            assert field(line, "status") == "sent", line
            mx.wait_messages(n33 + 1, local="127.0.0.33")
        assert tern.proc.returncode == 0, tern.log()
    # The policy host is gone; a new tern on the same spool still enforces.
    n32 = len(mx.messages("127.0.0.32"))
    with NsTern(ns, tmp_path, conf(), env=trusting(pki)) as tern:
        send_one(ns, rcpt)
        wait_for(lambda: len(tern.log_lines("rcpt=<%s>" % rcpt)) >= 2, what="the second outcome")
        mx.wait_messages(n33 + 2, local="127.0.0.33")
        assert len(mx.messages("127.0.0.32")) == n32
        # Same id in the TXT record, the policy read from the disk at
        # start: nothing was fetched (the policy host is down anyway).
        second_run = tern.log().split("tern serving as")[-1]
        assert "fetched" not in second_run and "mta-sts=enforce" in second_run, tern.log()
    assert tern.proc.returncode == 0, tern.log()


def test_route_shows_the_policy(world, tmp_path, pki):
    ns, _, _, _ = world
    tern = NsTern(ns, tmp_path, conf(), env=trusting(pki))
    r = ns.run([TERN_BIN, "route", "-c", tern.config, "bob@" + d("skip")], capture_output=True,
               text=True, timeout=60, env=tern.env)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "mta-sts optional, dane optional\n" in out, out
    assert re.search(r"mta-sts: policy id 1, mode enforce, mx mx\.skip\.s\.example; fetched \S+, "
                     r"expires \S+", out), out
    assert "host 1: bad.skip.s.example (preference 10) [MTA-STS: does not match; skipped]" in out
    assert ("host 2: mx.skip.s.example (preference 20) [MTA-STS: matches; STARTTLS and a "
            "verified certificate required]") in out
    # Read-only: tern route leaves no cache behind.
    assert not os.path.exists(os.path.join(tern.spool, "mta-sts", d("skip")))
