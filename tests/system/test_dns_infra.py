"""The infrastructure of the MX delivery tests, tested on its own (no tern):
a network namespace, NSD serving test zones in it, mx_server.py taking mail
on port 25 of addresses inside it, and the nftables SYN counters."""
import smtplib
import socket

import pytest

from mxpeer import MxServer
from netns import NetNs
from nsd import Nsd, SilentDns, zone

V6 = "fd00:7e57::1"
V6_REFUSING = "fd00:7e57::9"


def test_nsd_answers_mx_and_servfail_for_a_broken_zone():
    records = ["@ IN MX 10 mx1", "@ IN MX 20 mx2.a.example.",
               "mx1 IN A 127.0.0.10", "mx2 IN AAAA %s" % V6]
    with NetNs() as ns, Nsd(ns, {"a.example": zone("a.example", records)},
                            broken=["broken.example"]) as dns:
        out = dns.dig("a.example", "MX")
        assert "status: NOERROR" in out and "flags: qr aa;" in out  # authoritative
        assert dns.short("a.example", "MX") == ["10 mx1.a.example.", "20 mx2.a.example."]
        assert dns.short("mx1.a.example") == ["127.0.0.10"]
        assert dns.short("mx2.a.example", "AAAA") == [V6]
        assert dns.status("nothing.a.example", "MX") == "NXDOMAIN"
        # A zone that fails to load: SERVFAIL for every name in it, UDP and TCP.
        assert dns.status("broken.example", "MX") == "SERVFAIL"
        assert dns.status("mx.broken.example", "A", tcp=True) == "SERVFAIL"
        # Outside every zone: REFUSED.
        assert dns.status("example.org", "MX") == "REFUSED"


def test_silent_dns_reads_queries_and_never_answers():
    with NetNs() as ns, SilentDns(ns, port=5353) as silent:
        out = ns.run(["dig", "@127.0.0.1", "-p", "5353", "+time=1", "+tries=1",
                      "a.example", "MX"], capture_output=True, text=True, timeout=10).stdout
        assert "status:" not in out and "timed out" in out
        assert silent.queries() == 1
        assert silent.query_log()[0]["qname"] == "a.example"
        assert silent.query_log()[0]["qtype"] == 15
    assert silent.queries() == 1  # still known after stop()


def test_mx_server_accepts_a_message_and_logs_the_peer(tmp_path):
    listeners = [{"addr": "127.0.0.10", "mode": "accept"},
                 {"addr": V6, "mode": "greet-554"}]
    with NetNs(ipv6=[V6]) as ns, MxServer(ns, tmp_path, listeners) as mx:
        with ns.enter():
            smtp = smtplib.SMTP("127.0.0.10", 25, timeout=10, source_address=("127.0.0.3", 0))
        with smtp:
            smtp.ehlo("client.test")
            assert smtp.has_extn("pipelining") and smtp.has_extn("8bitmime")
            assert smtp.has_extn("size")
            smtp.sendmail("alice@example.org", ["bob@a.example", "carol@a.example"],
                          "Subject: hi\r\n\r\n.leading dot\r\nbody\r\n")
        [msg] = mx.wait_messages(1)
        assert msg["peer"] == "127.0.0.3" and msg["local"] == "127.0.0.10"
        assert msg["mail_from"] == "alice@example.org"
        assert msg["rcpts"] == ["bob@a.example", "carol@a.example"]
        assert msg["helo"] == "client.test"
        assert mx.message_data(msg) == b"Subject: hi\r\n\r\n.leading dot\r\nbody\r\n"
        [conn] = mx.connects("127.0.0.10")
        assert conn["peer"] == "127.0.0.3" and conn["local_port"] == 25

        # The IPv6 listener greets 554 and closes.
        with ns.enter():
            with pytest.raises(smtplib.SMTPConnectError) as err:
                smtplib.SMTP(V6, 25, timeout=10)
        assert err.value.smtp_code == 554
        [conn6] = mx.wait_connects(1, local=V6)
        assert conn6["peer"] == V6 and conn6["mode"] == "greet-554"


@pytest.mark.parametrize("addr", ["127.0.0.20", V6_REFUSING])
def test_syn_counter_counts_one_refused_connect(addr):
    with NetNs(ipv6=[V6_REFUSING], count=[addr]) as ns:
        assert ns.syn_count(addr) == 0
        with ns.enter():
            s = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET)
        with s, pytest.raises(ConnectionRefusedError):
            s.connect((addr, 25))
        assert ns.syn_count(addr) == 1
