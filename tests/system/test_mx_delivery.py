"""Delivery by MX (SPEC §3.2-§3.5) against real peers: NSD serving the test
zone, mx_server.py taking mail on port 25 of addresses inside a network
namespace of this module's own, and tern itself running inside it.

One world (namespace, NSD, SMTP servers) serves every test; each test runs
its own tern. Counters and logs of the world are cumulative, so tests
compare before and after, or use addresses no other test uses.

Addresses: 127.0.0.x and fd00:7e57::x on the namespace's lo. "refusing"
addresses have nothing listening; nftables counts the SYNs sent to them.
"""
import os
import re
import time

import pytest

from mxpeer import NO_ANCHOR, MxServer, NsTern, send
from netns import NetNs
from nsd import Nsd, SilentDns, zone
from peers import TERN_BIN, field, wait_for

ZONE = "t.example"
V6 = "fd00:7e57::"

ACCEPT = ["127.0.0.11", "127.0.0.12", "127.0.0.22", "127.0.0.31", "127.0.0.32", "127.0.0.33",
          "127.0.0.41", V6 + "41", "127.0.0.51", V6 + "51", V6 + "52", "127.0.0.53",
          "127.0.0.82", "127.0.0.91"]
REFUSING = ["127.0.0.21", "127.0.0.52", V6 + "53", "127.0.0.61", "127.0.0.62", "127.0.0.63",
            "127.0.0.64", "127.0.0.65", "127.0.0.71", "127.0.0.72", "127.0.0.73", "127.0.0.86"]
SPECIAL = [("127.0.0.81", "greet-554"), ("127.0.0.83", "greet-554"), ("127.0.0.84", "ehlo-550"),
           ("127.0.0.85", "greet-554"), ("127.0.0.87", "rcpt-550")]

RECORDS = """
multi IN MX 10 mx1.multi
multi IN MX 20 mx2.multi
mx1.multi IN A 127.0.0.11
mx2.multi IN A 127.0.0.12
fallback IN MX 10 down.fallback
fallback IN MX 20 up.fallback
down.fallback IN A 127.0.0.21
up.fallback IN A 127.0.0.22
*.equal IN MX 10 e1.hosts
*.equal IN MX 10 e2.hosts
*.equal IN MX 10 e3.hosts
e1.hosts IN A 127.0.0.31
e2.hosts IN A 127.0.0.32
e3.hosts IN A 127.0.0.33
*.spread IN MX 10 mx.spread
mx.spread IN A 127.0.0.91
implicit IN A 127.0.0.41
implicit6 IN AAAA fd00:7e57::41
nullmx IN MX 0 .
dual IN MX 10 mx.dual
mx.dual IN A 127.0.0.51
mx.dual IN AAAA fd00:7e57::51
half4 IN MX 10 mx.half4
mx.half4 IN A 127.0.0.52
mx.half4 IN AAAA fd00:7e57::52
half6 IN MX 10 mx.half6
mx.half6 IN A 127.0.0.53
mx.half6 IN AAAA fd00:7e57::53
many IN MX 10 m1.many
many IN MX 20 m2.many
many IN MX 30 m3.many
many IN MX 40 m4.many
many IN MX 50 m5.many
m1.many IN A 127.0.0.61
m2.many IN A 127.0.0.62
m3.many IN A 127.0.0.63
m4.many IN A 127.0.0.64
m5.many IN A 127.0.0.65
multiaddr IN MX 10 mx.multiaddr
mx.multiaddr IN A 127.0.0.71
mx.multiaddr IN A 127.0.0.72
mx.multiaddr IN A 127.0.0.73
greet IN MX 10 g1.greet
greet IN MX 20 g2.greet
g1.greet IN A 127.0.0.81
g2.greet IN A 127.0.0.82
allperm IN MX 10 p1.allperm
allperm IN MX 20 p2.allperm
p1.allperm IN A 127.0.0.83
p2.allperm IN A 127.0.0.84
mixed IN MX 10 x1.mixed
mixed IN MX 20 x2.mixed
x1.mixed IN A 127.0.0.85
x2.mixed IN A 127.0.0.86
rcptfail IN MX 10 r.rcptfail
r.rcptfail IN A 127.0.0.87
nohost IN MX 10 gone.nohost
"""


def d(name):
    return "%s.%s" % (name, ZONE)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("mxworld")
    v6 = sorted({a for a in ACCEPT + REFUSING if ":" in a})
    listeners = [{"addr": a, "mode": "accept", "hostname": "peer-" + a} for a in ACCEPT]
    listeners += [{"addr": a, "mode": m} for a, m in SPECIAL]
    with NetNs(ipv6=v6, count=REFUSING) as ns:
        with Nsd(ns, {ZONE: zone(ZONE, RECORDS)}, broken=["broken.example"]) as dns:
            with MxServer(ns, workdir, listeners) as mx:
                yield ns, dns, mx


def tern_route(ns, config, *args):
    return ns.run([TERN_BIN, "route", "-c", config, *args], capture_output=True, text=True,
                  timeout=60)


# ---- MX order and fallback ----

def test_lowest_preference_gets_the_mail_with_the_ehlo_name(world, tmp_path):
    ns, _, mx = world
    extra = '[queue.outbound]\nhostname = "out.sender.example"\n'
    with NsTern(ns, tmp_path, extra) as tern:
        send(ns, ["bob@" + d("multi"), "carol@" + d("multi")])
        line = tern.outcome("bob@" + d("multi"))
        assert field(line, "status") == "sent"
        assert field(line, "relay") == "mx1.multi.t.example[127.0.0.11]:25"
        [msg] = mx.wait_messages(1, local="127.0.0.11")
        # one transaction carries both recipients of the domain
        assert msg["rcpts"] == ["bob@" + d("multi"), "carol@" + d("multi")]
        assert msg["helo"] == "out.sender.example"
        assert mx.connects("127.0.0.12") == []


def test_refused_connect_moves_to_the_next_host(world, tmp_path):
    ns, _, mx = world
    before = ns.syn_count("127.0.0.21")
    with NsTern(ns, tmp_path) as tern:
        send(ns, ["bob@" + d("fallback")])
        line = tern.outcome("bob@" + d("fallback"))
        assert field(line, "status") == "sent"
        assert "[127.0.0.22]" in field(line, "relay")
        assert ns.syn_count("127.0.0.21") == before + 1
        assert "down.fallback.t.example" in tern.log()  # the refused host is in the log


def test_failure_before_the_transaction_moves_to_the_next_host(world, tmp_path):
    ns, _, mx = world
    with NsTern(ns, tmp_path) as tern:
        send(ns, ["bob@" + d("greet")])
        line = tern.outcome("bob@" + d("greet"))
        assert field(line, "status") == "sent"
        assert "[127.0.0.82]" in field(line, "relay")
        assert len(mx.connects("127.0.0.81")) >= 1


def test_bounce_only_when_every_host_failed_permanently(world, tmp_path):
    ns, _, _ = world
    with NsTern(ns, tmp_path) as tern:
        send(ns, ["bob@" + d("allperm"), "carol@" + d("mixed")])
        perm = tern.outcome("bob@" + d("allperm"))
        assert field(perm, "status") == "bounced", perm
        # greet 554 then EHLO 550: the last host's reply is reported
        assert field(perm, "code") == "550" and field(perm, "stage") == "ehlo"
        # 554 at one host, connection refused at the other: retried, not bounced
        mixed = tern.outcome("carol@" + d("mixed"))
        assert field(mixed, "status") == "deferred", mixed


def test_recipient_refused_by_the_mx_bounces(world, tmp_path):
    ns, _, _ = world
    with NsTern(ns, tmp_path) as tern:
        send(ns, ["bob@" + d("rcptfail")])
        line = tern.outcome("bob@" + d("rcptfail"))
        assert field(line, "status") == "bounced" and field(line, "code") == "550"
        assert field(line, "dsn") == "5.1.1"


def test_equal_preferences_are_shuffled_per_attempt(world, tmp_path):
    """30 domains share three MX hosts of equal preference: one message to
    all of them opens 30 connections (a pool per domain), and each picks
    its first host at random."""
    ns, _, mx = world
    before = {a: len(mx.connects(a)) for a in ("127.0.0.31", "127.0.0.32", "127.0.0.33")}
    rcpts = ["u@r%d.equal.t.example" % i for i in range(30)]
    with NsTern(ns, tmp_path) as tern:
        send(ns, rcpts)
        wait_for(lambda: len(tern.log_lines("status=sent")) == 30, what="30 deliveries")
    got = {a: len(mx.connects(a)) - before[a] for a in before}
    assert sum(got.values()) == 30
    assert all(n >= 3 for n in got.values()), got  # ~10 each; all 30 on one host is 3e-14


def test_tern_route_shows_a_new_draw_of_equal_hosts(world, tmp_path):
    ns, _, _ = world
    tern = NsTern(ns, tmp_path)
    firsts = set()
    for _ in range(15):
        out = tern_route(ns, tern.config, "u@x.equal.t.example").stdout
        firsts.add(re.search(r"host 1: (\S+)", out).group(1))
    assert len(firsts) >= 2, firsts


# ---- implicit MX, null MX, DNS failures ----

@pytest.mark.parametrize("domain,addr", [("implicit", "127.0.0.41"), ("implicit6", V6 + "41")])
def test_implicit_mx(world, tmp_path, domain, addr):
    ns, _, mx = world
    with NsTern(ns, tmp_path) as tern:
        send(ns, ["bob@" + d(domain)])
        line = tern.outcome("bob@" + d(domain))
        assert field(line, "status") == "sent", line
        assert "[%s]" % addr in field(line, "relay")
        mx.wait_messages(1, local=addr)


def test_null_mx_bounces_without_a_connection(world, tmp_path):
    ns, _, mx = world
    before = len(mx.connects())
    with NsTern(ns, tmp_path) as tern:
        send(ns, ["bob@" + d("nullmx")])
        line = tern.outcome("bob@" + d("nullmx"))
    assert field(line, "status") == "bounced"
    assert field(line, "dsn") == "5.1.10" and field(line, "stage") == "dns"
    assert field(line, "relay") == "none"
    assert len(mx.connects()) == before


def test_nxdomain_bounces_and_servfail_defers(world, tmp_path):
    ns, _, _ = world
    with NsTern(ns, tmp_path) as tern:
        send(ns, ["bob@" + d("nosuch"), "carol@broken.example"])
        nx = tern.outcome("bob@" + d("nosuch"))
        assert field(nx, "status") == "bounced" and field(nx, "dsn") == "5.1.2", nx
        sf = tern.outcome("carol@broken.example")
        assert field(sf, "status") == "deferred" and field(sf, "dsn") == "4.4.3", sf
        assert "SERVFAIL" in sf


def test_mx_host_without_address_bounces(world, tmp_path):
    ns, _, _ = world
    with NsTern(ns, tmp_path) as tern:
        send(ns, ["bob@" + d("nohost")])
        line = tern.outcome("bob@" + d("nohost"))
        assert field(line, "status") == "bounced" and field(line, "dsn") == "5.4.4", line
        assert "gone.nohost.t.example has no A or AAAA record" in line


def test_a_silent_name_server_defers_after_timeout_times_attempts(world, tmp_path):
    ns, _, _ = world
    with SilentDns(ns, port=5300) as silent:
        tern = NsTern(ns, tmp_path, resolver="udp://127.0.0.1:5300",
                      resolver_extra='timeout = "600ms"\nattempts = 2')
        with tern:
            t0 = time.time()
            send(ns, ["bob@" + d("multi")])
            line = tern.outcome("bob@" + d("multi"))
            elapsed = time.time() - t0
        assert silent.queries() >= 1
    assert field(line, "status") == "deferred" and field(line, "dsn") == "4.4.3", line
    assert "no answer from the name servers (2 tries of 600 ms)" in line
    assert elapsed < 10, elapsed


@pytest.mark.parametrize("ttl,second", [(300, "sent"), (1, "deferred")])
def test_answers_are_cached_for_their_ttl(world, tmp_path, ttl, second):
    """A name server of this test's own, stopped after the first delivery:
    the second delivery (on a new connection: the first one's has closed
    after its 2 s idle time) still finds the hosts while the answers' TTL
    lasts, and fails to once it is over."""
    ns, _, _ = world
    records = ["cached IN MX 10 mx.cached", "mx.cached IN A 127.0.0.11"]
    dns = Nsd(ns, {"c.example": zone("c.example", records, ttl=ttl)}, port=5301).start()
    try:
        tern = NsTern(ns, tmp_path, resolver="udp://127.0.0.1:5301",
                      resolver_extra='timeout = "500ms"\nattempts = 1')
        with tern:
            send(ns, ["first@cached.c.example"])
            assert field(tern.outcome("first@cached.c.example"), "status") == "sent"
            dns.stop()
            time.sleep(2.5)
            send(ns, ["second@cached.c.example"])
            line = tern.outcome("second@cached.c.example")
    finally:
        dns.stop()
    assert field(line, "status") == second, line


# ---- ip-strategy and limits ----

@pytest.mark.parametrize("strategy,addr", [("ipv4-only", "127.0.0.51"), ("ipv6-only", V6 + "51"),
                                           ("ipv4-then-ipv6", "127.0.0.51"),
                                           ("ipv6-then-ipv4", V6 + "51")])
def test_ip_strategy_picks_the_family(world, tmp_path, strategy, addr):
    ns, _, _ = world
    extra = '[queue.outbound]\nip-strategy = "%s"\n' % strategy
    with NsTern(ns, tmp_path, extra) as tern:
        send(ns, ["bob@" + d("dual")])
        line = tern.outcome("bob@" + d("dual"))
        assert field(line, "status") == "sent"
        assert "[%s]" % addr in field(line, "relay"), line


@pytest.mark.parametrize("domain,strategy,refused,status,via", [
    ("half4", "ipv4-then-ipv6", "127.0.0.52", "sent", V6 + "52"),
    ("half4", "ipv4-only", "127.0.0.52", "deferred", None),
    ("half6", "ipv6-then-ipv4", V6 + "53", "sent", "127.0.0.53"),
    ("half6", "ipv6-only", V6 + "53", "deferred", None),
])
def test_then_modes_fall_through_to_the_other_family(world, tmp_path, domain, strategy, refused,
                                                     status, via):
    ns, _, _ = world
    before = ns.syn_count(refused)
    extra = '[queue.outbound]\nip-strategy = "%s"\n' % strategy
    with NsTern(ns, tmp_path, extra) as tern:
        send(ns, ["bob@" + d(domain)])
        line = tern.outcome("bob@" + d(domain))
    assert field(line, "status") == status, line
    if via:
        assert "[%s]" % via in field(line, "relay")
    assert ns.syn_count(refused) == before + 1


def test_limits_mx_caps_the_hosts_tried(world, tmp_path):
    ns, _, _ = world
    hosts = ["127.0.0.6%d" % i for i in range(1, 6)]
    before = {a: ns.syn_count(a) for a in hosts}
    extra = '[queue.outbound.limits]\nmx = 3\n'
    with NsTern(ns, tmp_path, extra) as tern:
        send(ns, ["bob@" + d("many")])
        line = tern.outcome("bob@" + d("many"))
    assert field(line, "status") == "deferred"
    got = [ns.syn_count(a) - before[a] for a in hosts]
    assert got == [1, 1, 1, 0, 0], got


def test_limits_multihomed_caps_the_addresses_tried(world, tmp_path):
    ns, _, _ = world
    addrs = ["127.0.0.71", "127.0.0.72", "127.0.0.73"]
    before = {a: ns.syn_count(a) for a in addrs}
    extra = '[queue.outbound.limits]\nmultihomed = 2\n'
    with NsTern(ns, tmp_path, extra) as tern:
        send(ns, ["bob@" + d("multiaddr")])
        line = tern.outcome("bob@" + d("multiaddr"))
    assert field(line, "status") == "deferred"
    got = [ns.syn_count(a) - before[a] for a in addrs]
    assert sum(got) == 2 and max(got) == 1, got


# ---- source addresses ----

def test_source_address_is_drawn_for_every_connection(world, tmp_path):
    ns, _, mx = world
    sources = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
    before = len(mx.connects("127.0.0.91"))
    extra = '[queue.outbound.source-ip]\nv4 = %s\n' % str(sources).replace("'", '"')
    rcpts = ["u@s%d.spread.t.example" % i for i in range(30)]
    with NsTern(ns, tmp_path, extra) as tern:
        send(ns, rcpts)
        wait_for(lambda: len(tern.log_lines("status=sent")) == 30, what="30 deliveries")
    peers = [c["peer"] for c in mx.connects("127.0.0.91")[before:]]
    assert len(peers) == 30
    counts = {s: peers.count(s) for s in sources}
    assert set(peers) == set(sources) and min(counts.values()) >= 3, counts


def test_source_address_rule_sees_the_mx(world, tmp_path):
    ns, _, mx = world
    extra = ('[queue.outbound.source-ip]\n'
             'v4 = [ { if = "mx", eq = "mx1.multi.t.example", then = "127.0.0.5" },\n'
             '       { else = "127.0.0.6" } ]\n')
    before11, before41 = len(mx.messages("127.0.0.11")), len(mx.messages("127.0.0.41"))
    with NsTern(ns, tmp_path, extra) as tern:
        send(ns, ["bob@" + d("multi"), "carol@" + d("implicit")])
        tern.outcome("bob@" + d("multi"))
        tern.outcome("carol@" + d("implicit"))
    assert mx.wait_messages(before11 + 1, local="127.0.0.11")[-1]["peer"] == "127.0.0.5"
    assert mx.wait_messages(before41 + 1, local="127.0.0.41")[-1]["peer"] == "127.0.0.6"


def test_a_source_address_that_cannot_be_bound_fails_loudly(world, tmp_path):
    ns, _, mx = world
    before = len(mx.connects("127.0.0.11"))
    extra = '[queue.outbound.source-ip]\nv4 = ["192.0.2.99"]\n'
    with NsTern(ns, tmp_path, extra) as tern:
        send(ns, ["bob@" + d("multi")])
        line = tern.outcome("bob@" + d("multi"))
        errors = [l for l in tern.log().splitlines()
                  if " error " in l and "cannot bind source address 192.0.2.99" in l]
    assert field(line, "status") == "deferred", line
    assert errors, tern.log()
    # never a silent fallback: no connection reached either host
    assert len(mx.connects("127.0.0.11")) == before


# ---- tern route ----

def test_tern_route_prints_the_plan(world, tmp_path):
    ns, _, _ = world
    extra = ('[queue.outbound]\nhostname = "out.sender.example"\nip-strategy = "ipv6-then-ipv4"\n'
             '[queue.outbound.source-ip]\nv4 = ["127.0.0.2", "127.0.0.3"]\n'
             '[queue.outbound.limits]\nmultihomed = 1\n')
    tern = NsTern(ns, tmp_path, extra)
    r = tern_route(ns, tern.config, "--from", "alice@sender.example",
                   "bob@" + d("multi"), "x@" + d("dual"), "y@" + d("nullmx"))
    assert r.returncode == 1  # the null MX recipient has no route
    blocks = r.stdout.split("\n\n")
    multi, dual, null = blocks
    assert "next-hop: the MX hosts of multi.t.example" in multi
    assert "ehlo-name: out.sender.example" in multi
    assert "ip-strategy: ipv6-then-ipv4" in multi
    assert re.search(r"host 1: mx1\.multi\.t\.example \(preference 10\)\n"
                     r"    address 1: 127\.0\.0\.11:25 from 127\.0\.0\.2 \| 127\.0\.0\.3", multi)
    assert "host 2: mx2.multi.t.example (preference 20)" in multi
    assert "address 1: [fd00:7e57::51]:25 from the system's choice" in dual
    assert "(1 more not tried: limits.multihomed)" in dual
    assert "result: bounce 5.1.10" in null
    ok = tern_route(ns, tern.config, "bob@" + d("multi"))
    assert ok.returncode == 0 and ok.stderr == ""


def test_tern_route_with_the_users_example_config(world, tmp_path):
    """The user's example configuration (tests/golden/config/user-example.toml),
    with a [resolver] that points at the test's NSD."""
    ns, _, _ = world
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with open(os.path.join(repo, "tests/golden/config/user-example.toml")) as f:
        config = f.read()
    path = os.path.join(str(tmp_path), "user-example.toml")
    anchor = os.path.join(str(tmp_path), "no-anchor.key")
    with open(anchor, "w") as f:
        f.write(NO_ANCHOR + "\n")   # the namespace's DNS has no signed root
    with open(path, "w") as f:
        f.write(config + '\n[resolver]\ntype = "custom"\ncustom = ["udp://127.0.0.1:53"]\n'
                'dnssec.trust-anchor = "file://%s"\n' % anchor)
    r = tern_route(ns, path, "-f", "sender@mydomain.net", "user@foobar.net",
                   "someone@" + d("dual"))
    print(r.stdout)
    assert r.returncode == 0, r.stderr
    relay, mxd = r.stdout.split("\n\n")
    assert 'next-hop: remote "lmtp" (lmtp, localhost port 24)' in relay
    assert "ehlo-name: mx.mydomain.net" in relay
    assert "address 1: 127.0.0.1:24 from 10.0.0.10 | 10.0.0.11" in relay
    assert "tls: implicit false, allow-invalid-certs true" in relay
    assert "limits: mx 7, multihomed 2" in mxd
    assert "host 1: mx.dual.t.example (preference 10)" in mxd
    assert "address 1: 127.0.0.51:25 from 10.0.0.10 | 10.0.0.11" in mxd
    assert "address 2: [fd00:7e57::51]:25 from a::b | a::c" in mxd
