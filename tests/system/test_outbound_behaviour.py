"""tern against a scripted misbehaving server: every reply class at every
stage, per-recipient outcomes, stage timeouts from the configuration,
dropped connections, pipelining, CHUNKING, connection reuse and the
concurrency limit, as an operator would see them in tern's log."""
import json
import os
import re
import smtplib
import threading
import time

import pytest

from peers import Scripted, TernServer, wait_for

TIMEOUT_KEYS = ("connect", "greeting", "tls", "ehlo", "mail-from", "rcpt-to", "data")


def scripted(tmp_path, script):
    path = tmp_path / "script.json"
    path.write_text(json.dumps(script))
    return Scripted(tmp_path, str(path))


def tern_for(tmp_path, port, extra="", timeouts=None, concurrency=10, lmtp=False):
    t = dict.fromkeys(TIMEOUT_KEYS, "10s")
    t.update(timeouts or {})
    cfg = ['[queue.outbound]', 'next-hop = "peer"',
           '[queue.schedule]', 'retry = ["1h"]',
           '[queue.outbound.timeouts]'] + ['%s = "%s"' % kv for kv in t.items()] + [
           '[remote."peer"]', 'address = "127.0.0.1"', 'port = %d' % port,
           'protocol = "%s"' % ("lmtp" if lmtp else "smtp"), 'concurrency = %d' % concurrency]
    return TernServer(tmp_path, "\n".join(cfg) + "\n" + extra)


def submit(tern, rcpts=("bob@example.net",), i=0):
    data = "From: a@example.org\r\nMessage-ID: <b%d@test>\r\nSubject: %d\r\n\r\nhello\r\n" % (i, i)
    with smtplib.SMTP("127.0.0.1", tern.port, timeout=30) as s:
        s.sendmail("alice@example.org", list(rcpts), data)


def outcome_lines(tern, n=1, timeout=30):
    return wait_for(lambda: (lambda l: l if len(l) >= n else None)(tern.log_lines(" status=")),
                    timeout=timeout, what="%d outcome lines" % n)


def peer_log(peer):
    with open(peer.log_path) as f:
        return json.load(f)


@pytest.mark.parametrize("stage,key,waiting_for", [
    ("greeting", "greeting", "greeting"),
    ("ehlo", "ehlo", "EHLO"),
    ("mail", "mail-from", "MAIL FROM"),
    ("rcpt", "rcpt-to", "RCPT TO"),
    ("data", "data", "DATA"),
    ("final", "data", "end of DATA"),
])
def test_each_stage_timeout_fires_at_its_own_value(tmp_path, stage, key, waiting_for):
    with scripted(tmp_path, {stage: {"action": "hang"}}) as peer, \
         tern_for(tmp_path, peer.port, timeouts={key: "1s"}) as tern:
        start = time.time()
        submit(tern)
        line = outcome_lines(tern)[0]
        elapsed = time.time() - start
        assert "status=deferred" in line and "dsn=4.4.2" in line, line
        assert "timed out after 1 s" in line and waiting_for in line, line
        # Every other stage has 10 s: only this stage's own timer can fire this soon.
        assert 0.9 <= elapsed < 5, elapsed


@pytest.mark.parametrize("stage,reply,status,code", [
    ("greeting", "421 4.3.2 busy", "deferred", "421"),
    ("greeting", "554 5.7.1 go away", "deferred", "554"),  # before the transaction: never a bounce
    ("mail", "451 4.3.0 try later", "deferred", "451"),
    ("mail", "553 5.7.1 sender rejected", "bounced", "553"),
    ("data", "554 5.3.0 no data today", "bounced", "554"),
    ("final", "452 4.3.1 disk full", "deferred", "452"),
    ("final", "552 5.3.4 too big", "bounced", "552"),
])
def test_reply_classes_at_each_stage(tmp_path, stage, reply, status, code):
    with scripted(tmp_path, {stage: reply}) as peer, tern_for(tmp_path, peer.port) as tern:
        submit(tern)
        line = outcome_lines(tern)[0]
        assert "status=%s" % status in line and "code=%s" % code in line, line


def test_ehlo_refused_falls_back_to_helo(tmp_path):
    with scripted(tmp_path, {"ehlo": "502 5.5.1 no EHLO here"}) as peer, \
         tern_for(tmp_path, peer.port) as tern:
        submit(tern)
        assert "status=sent" in outcome_lines(tern)[0]
        commands = [e["line"].split()[0] for e in peer_log(peer) if e["event"] == "command"]
        assert commands[:3] == ["EHLO", "HELO", "MAIL"]


def test_per_recipient_outcomes_in_one_transaction(tmp_path):
    script = {"rcpt": ["250 2.1.5 Ok", "550 5.1.1 no such user", "451 4.2.1 later", "250 2.1.5 Ok"]}
    with scripted(tmp_path, script) as peer, tern_for(tmp_path, peer.port) as tern:
        submit(tern, ["r1@example.net", "r2@example.net", "r3@example.net", "r4@example.net"])
        lines = {re.search(r"rcpt=<([^>]*)>", l).group(1): l for l in outcome_lines(tern, 4)}
        assert "status=sent" in lines["r1@example.net"]
        assert "status=bounced" in lines["r2@example.net"] and "dsn=5.1.1" in lines["r2@example.net"]
        assert "status=deferred" in lines["r3@example.net"] and "dsn=4.2.1" in lines["r3@example.net"]
        assert "status=sent" in lines["r4@example.net"]
        # the failure notice for r2 goes the same way (next-hop sends everything
        # to the peer): only the original's transaction counts here
        messages = [e for e in peer_log(peer) if e["event"] == "message" and e["mail_from"] != ""]
        assert len(messages) == 1 and messages[0]["rcpts"] == ["r1@example.net", "r4@example.net"]


def test_lmtp_one_reply_per_recipient(tmp_path):
    script = {"lmtp": True, "final": ["250 2.0.0 saved", "452 4.2.2 over quota"]}
    with scripted(tmp_path, script) as peer, tern_for(tmp_path, peer.port, lmtp=True) as tern:
        submit(tern, ["u1@example.net", "u2@example.net"])
        lines = {re.search(r"rcpt=<([^>]*)>", l).group(1): l for l in outcome_lines(tern, 2)}
        assert "status=sent" in lines["u1@example.net"]
        assert "status=deferred" in lines["u2@example.net"] and "over quota" in lines["u2@example.net"]
        assert [e["line"].split()[0] for e in peer_log(peer) if e["event"] == "command"][0] == "LHLO"


def test_connection_dropped_during_data(tmp_path):
    with scripted(tmp_path, {"body": {"action": "close"}}) as peer, tern_for(tmp_path, peer.port) as tern:
        submit(tern)
        line = outcome_lines(tern)[0]
        assert "status=deferred" in line and "connection lost" in line, line


def sessions(log):
    """Connections that got as far as EHLO/LHLO (not the harness's port probe)."""
    return {e["conn"] for e in log if e["event"] == "command" and e["line"].split()[0] in ("EHLO", "LHLO")}


def test_pipelining_and_connection_reuse(tmp_path):
    with scripted(tmp_path, {"extensions": ["PIPELINING", "8BITMIME", "SIZE 10000000"]}) as peer, \
         tern_for(tmp_path, peer.port) as tern:
        # Each message arrives while the previous one's connection is idle:
        # it must take that connection, not open another.
        for i in range(5):
            submit(tern, ["a@example.net", "b@example.net"], i)
            outcome_lines(tern, 2 * (i + 1))
        log = peer_log(peer)
        assert len(sessions(log)) == 1
        assert len([e for e in log if e["event"] == "message"]) == 5
        cmds = [e for e in log if e["event"] == "command" and e["line"].split()[0] in ("MAIL", "RCPT", "DATA")]
        first = cmds[:4]
        assert [c["line"].split()[0] for c in first] == ["MAIL", "RCPT", "RCPT", "DATA"]
        assert len({c["replies_before"] for c in first}) == 1  # sent in one batch
        assert "SIZE=" in first[0]["line"]


def test_burst_opens_parallel_connections(tmp_path):
    # A slow final reply keeps each connection busy while the others arrive.
    script = {"extensions": ["PIPELINING"], "final": {"reply": "250 2.0.0 Ok", "delay": 0.5}}
    with scripted(tmp_path, script) as peer, tern_for(tmp_path, peer.port) as tern:
        threads = [threading.Thread(target=submit, args=(tern, ["x@example.net"], i)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        outcome_lines(tern, 6)
        assert 1 < len(sessions(peer_log(peer))) <= 6


def test_chunking_uses_bdat(tmp_path):
    with scripted(tmp_path, {"extensions": ["PIPELINING", "CHUNKING"]}) as peer, \
         tern_for(tmp_path, peer.port) as tern:
        submit(tern)
        assert "status=sent" in outcome_lines(tern)[0]
        msgs = [e for e in peer_log(peer) if e["event"] == "message"]
        assert msgs[0]["via"] == "BDAT" and "Message-ID: <b0@test>" in msgs[0]["data"]


def test_concurrency_limit_is_honoured(tmp_path):
    script = {"extensions": ["PIPELINING"], "final": {"reply": "250 2.0.0 Ok", "delay": 0.3}}
    with scripted(tmp_path, script) as peer, tern_for(tmp_path, peer.port, concurrency=2) as tern:
        threads = [threading.Thread(target=submit, args=(tern, ["x@example.net"], i)) for i in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        outcome_lines(tern, 12)
        open_now = peak = 0
        for e in peer_log(peer):
            if e["event"] == "connect":
                open_now += 1
                peak = max(peak, open_now)
            elif e["event"] == "disconnect":
                open_now -= 1
        assert peak == 2
        assert len([e for e in peer_log(peer) if e["event"] == "message"]) == 12


def test_remote_timeout_caps_every_stage(tmp_path):
    # Stage timeouts are 10 s, but remote.<id>.timeout = 1s bounds them all.
    with scripted(tmp_path, {"mail": {"action": "hang"}}) as peer, \
         tern_for(tmp_path, peer.port, extra='timeout = "1s"\n') as tern:
        start = time.time()
        submit(tern)
        line = outcome_lines(tern)[0]
        assert "timed out after 1 s" in line and 0.9 <= time.time() - start < 5, line


def test_auth_to_relay(tmp_path):
    script = {"extensions": ["PIPELINING", "AUTH PLAIN LOGIN"]}
    extra = 'auth.username = "relayuser"\nauth.secret = "s3cret"\n'
    with scripted(tmp_path, script) as peer, tern_for(tmp_path, peer.port, extra=extra) as tern:
        submit(tern)
        assert "status=sent" in outcome_lines(tern)[0]
        auths = [e for e in peer_log(peer) if e["event"] == "auth"]
        assert auths and auths[0]["mechanism"] == "PLAIN"
        assert (auths[0]["user"], auths[0]["secret"]) == ("relayuser", "s3cret")


def test_auth_refused_defers(tmp_path):
    script = {"extensions": ["AUTH PLAIN"], "auth": "535 5.7.8 bad credentials"}
    extra = 'auth.username = "relayuser"\nauth.secret = "wrong"\n'
    with scripted(tmp_path, script) as peer, tern_for(tmp_path, peer.port, extra=extra) as tern:
        submit(tern)
        line = outcome_lines(tern)[0]
        # Our own relay refusing us is never a reason to bounce the mail.
        assert "status=deferred" in line and "535" in line, line


def test_ehlo_name_from_queue_outbound_hostname(tmp_path):
    with scripted(tmp_path, {}) as peer, tern_for(tmp_path, peer.port) as tern:
        submit(tern)
        outcome_lines(tern)
        # No queue.outbound.hostname: server.hostname.
        assert [e["line"] for e in peer_log(peer) if e["event"] == "command"][0] == "EHLO tern.test"


def test_ehlo_name_override(tmp_path):
    with scripted(tmp_path, {}) as peer:
        tern = tern_for(tmp_path, peer.port)
        with open(tern.config) as f:
            text = f.read().replace('next-hop = "peer"', 'next-hop = "peer"\nhostname = "out.tern.test"')
        with open(tern.config, "w") as f:
            f.write(text)
        with tern:
            submit(tern)
            outcome_lines(tern)
            assert [e["line"] for e in peer_log(peer) if e["event"] == "command"][0] == "EHLO out.tern.test"


def test_esmtp_parameters_passed_on_when_offered(tmp_path):
    script = {"extensions": ["PIPELINING", "SIZE 10000000", "8BITMIME", "SMTPUTF8", "DSN"]}
    with scripted(tmp_path, script) as peer, tern_for(tmp_path, peer.port) as tern:
        data = ("From: a@example.org\r\nMessage-ID: <p@test>\r\nSubject: caf\xc3\xa9\r\n\r\n"
                "d\xc3\xa9j\xc3\xa0 vu\r\n").encode("latin-1")
        with smtplib.SMTP("127.0.0.1", tern.port, timeout=30) as s:
            s.ehlo("client.test")
            s.sendmail("alice@example.org", ["bob@example.net"], data,
                       mail_options=["BODY=8BITMIME", "SMTPUTF8", "RET=HDRS", "ENVID=env+2B1"],
                       rcpt_options=["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;bob@example.net"])
        assert "status=sent" in outcome_lines(tern)[0]
        lines = [e["line"] for e in peer_log(peer) if e["event"] == "command"]
        mail = next(l for l in lines if l.startswith("MAIL"))
        rcpt = next(l for l in lines if l.startswith("RCPT"))
        for param in ("SIZE=", "BODY=8BITMIME", "SMTPUTF8", "RET=HDRS", "ENVID=env+2B1"):
            assert param in mail, (param, mail)
        assert "NOTIFY=SUCCESS,FAILURE" in rcpt and "ORCPT=rfc822;bob@example.net" in rcpt, rcpt


def test_parameters_not_passed_to_a_plain_server(tmp_path):
    with scripted(tmp_path, {"extensions": ["PIPELINING"]}) as peer, tern_for(tmp_path, peer.port) as tern:
        with smtplib.SMTP("127.0.0.1", tern.port, timeout=30) as s:
            s.sendmail("alice@example.org", ["bob@example.net"], b"Subject: x\r\n\r\nhi\r\n",
                       mail_options=["RET=FULL"], rcpt_options=["NOTIFY=NEVER"])
        assert "status=sent" in outcome_lines(tern)[0]
        lines = [e["line"] for e in peer_log(peer) if e["event"] == "command"]
        assert next(l for l in lines if l.startswith("MAIL")) == "MAIL FROM:<alice@example.org>"
        assert next(l for l in lines if l.startswith("RCPT")) == "RCPT TO:<bob@example.net>"
