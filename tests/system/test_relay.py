"""The relay end to end: SMTP in, spool, next-hop routing, delivery to real
peers (Postfix's smtp-sink, Dovecot's LMTP), and what happens on failures."""
import os
import re
import smtplib
import subprocess
import time

from peers import REPO, TERN_BIN, Dovecot, SmtpSink, TernServer, wait_for


def remote(name, port, protocol="smtp", extra=""):
    return ('[remote."%s"]\naddress = "127.0.0.1"\nport = %d\nprotocol = "%s"\n%s\n'
            % (name, port, protocol, extra))


def make_message(i, sender="alice@example.org", to="bob@example.net", body_lines=20):
    body = "\r\n".join("line %d of message %d" % (n, i) for n in range(body_lines))
    return ("From: %s\r\nTo: %s\r\nSubject: test %d\r\nMessage-ID: <m%d@test>\r\n\r\n%s\r\n"
            % (sender, to, i, i, body))


def send(port, sender, rcpts, data):
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        s.ehlo("client.test")
        return s.sendmail(sender, rcpts, data)


def test_relay_to_smtp_sink_one_transaction_per_message(tmp_path):
    with SmtpSink(tmp_path) as sink, \
         TernServer(tmp_path, '[queue.outbound]\nnext-hop = "sink"\n' + remote("sink", sink.port)) as tern:
        for i in range(10):
            send(tern.port, "alice@example.org",
                 ["bob@example.net", "carol@example.net", "dave@example.com"], make_message(i))
        wait_for(lambda: len(sink.messages()) == 10, what="10 messages at the sink")
        for m in sink.parsed():
            # All three recipients travel in one transaction to the one next hop.
            assert sorted(m.get_all("X-Rcpt-Args")) == ["<bob@example.net>", "<carol@example.net>",
                                                       "<dave@example.com>"]
            assert m.get("X-Mail-Args").startswith("<alice@example.org>")
            assert m["Received"] is not None and "tern.test" in m.get_all("Received")[0]
        assert sorted(sink.message_ids()) == sorted("<m%d@test>" % i for i in range(10))
        sent = tern.log_lines("status=sent")
        assert len(sent) == 30
        assert all(re.search(r"relay=sink\[127\.0\.0\.1\]:%d " % sink.port, l) for l in sent)
        assert all("code=250" in l for l in sent)


def test_next_hop_rule_routes_per_domain_to_dovecot_lmtp(tmp_path):
    """The user's example: domains in list/domains go to Dovecot over LMTP."""
    extra = """
[queue.outbound]
next-hop = [ { if = "rcpt-domain", in-list = "list/domains", then = "lmtp" },
             { else = "sink" } ]

[list]
domains = ["foobar.net", "foobar.org"]
""" + remote("lmtp", 0, "lmtp", "concurrency = 10\ntimeout = \"1m\"") + remote("sink", 0)
    with Dovecot(tmp_path) as dove, SmtpSink(tmp_path) as sink:
        extra = extra.replace('port = 0\nprotocol = "lmtp"', 'port = %d\nprotocol = "lmtp"' % dove.port)
        extra = extra.replace('port = 0\nprotocol = "smtp"', 'port = %d\nprotocol = "smtp"' % sink.port)
        with TernServer(tmp_path, extra) as tern:
            send(tern.port, "alice@example.org", ["user1@foobar.net", "user2@foobar.org",
                                                  "other@elsewhere.test"], make_message(1))
            send(tern.port, "alice@example.org", ["user1@foobar.net"], make_message(2))
            wait_for(lambda: len(dove.mailbox("user1", "foobar.net")) == 2, what="user1's mail")
            wait_for(lambda: len(dove.mailbox("user2", "foobar.org")) == 1, what="user2's mail")
            wait_for(lambda: len(sink.messages()) == 1, what="the other domain at the sink")
            assert b"Message-ID: <m1@test>" in dove.mailbox("user2", "foobar.org")[0]
            ids = sorted(re.search(rb"Message-ID: (\S+)", m).group(1)
                         for m in dove.mailbox("user1", "foobar.net"))
            assert ids == [b"<m1@test>", b"<m2@test>"]
            assert sink.parsed()[0].get_all("X-Rcpt-Args") == ["<other@elsewhere.test>"]
            # Dovecot stores the mail before it replies: wait for tern's outcome lines.
            lmtp_lines = wait_for(lambda: (lambda l: l if len(l) == 3 else None)(
                tern.log_lines("relay=lmtp[")), what="three LMTP outcome lines")
            assert all("status=sent" in l for l in lmtp_lines)


def test_permanent_rejection_is_not_retried(tmp_path):
    extra = ('[queue.outbound]\nnext-hop = "sink"\n[queue.schedule]\nretry = ["1s"]\n'
             + remote("sink", 0))
    with SmtpSink(tmp_path, ["-f", "RCPT"]) as sink:
        with TernServer(tmp_path, extra.replace("port = 0", "port = %d" % sink.port)) as tern:
            send(tern.port, "alice@example.org", ["bob@example.net"], make_message(1))
            wait_for(lambda: tern.log_lines("status=bounced"), what="a bounce")
            time.sleep(2.5)  # a retry would have happened by now
            lines = tern.log_lines("rcpt=<bob@example.net>")
            assert len(lines) == 1
            assert "code=5" in lines[0] and "stage=rcpt-to" in lines[0]
            assert sink.messages() == []


def test_temporary_failure_is_retried_then_delivered(tmp_path):
    extra = ('[queue.outbound]\nnext-hop = "sink"\n[queue.schedule]\nretry = ["1s"]\n'
             + remote("sink", 0))
    with SmtpSink(tmp_path, ["-r", "MAIL"]) as refusing:
        port = refusing.port
        with TernServer(tmp_path, extra.replace("port = 0", "port = %d" % port)) as tern:
            send(tern.port, "alice@example.org", ["bob@example.net"], make_message(7))
            wait_for(lambda: len(tern.log_lines("status=deferred")) >= 2, what="two deferrals")
            assert all("stage=mail-from" in l and "code=4" in l
                       for l in tern.log_lines("status=deferred"))
            refusing.stop()
            with SmtpSink(tmp_path, port=port) as sink:
                wait_for(lambda: sink.message_ids() == ["<m7@test>"], what="the retried message")
                wait_for(lambda: tern.log_lines("status=sent"), what="the sent log line")


def test_acknowledged_mail_survives_kill_and_restart(tmp_path):
    """Messages accepted while the relay is down are delivered after kill -9
    and a restart."""
    sink_port = SmtpSink(tmp_path).port
    extra = ('[queue.outbound]\nnext-hop = "sink"\n[queue.schedule]\nretry = ["1s"]\n'
             + remote("sink", sink_port))
    tern = TernServer(tmp_path, extra).start()
    try:
        for i in range(20):
            send(tern.port, "alice@example.org", ["bob@example.net"], make_message(i))
        tern.kill9()
        with SmtpSink(tmp_path, port=sink_port) as sink:
            tern.start()
            wait_for(lambda: len(sink.messages()) == 20, what="20 messages after restart")
            assert sorted(sink.message_ids()) == sorted("<m%d@test>" % i for i in range(20))
    finally:
        tern.stop()


def test_tern_send_queues_through_the_server(tmp_path):
    with SmtpSink(tmp_path) as sink, \
         TernServer(tmp_path, '[queue.outbound]\nnext-hop = "sink"\n' + remote("sink", sink.port)) as tern:
        msg = "Subject: from a script\nMessage-ID: <script@test>\n\n.leading dot\nbody\n"
        r = subprocess.run([TERN_BIN, "send", "-c", tern.config, "-f", "cron@example.org",
                            "ops@example.net"], input=msg, capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        assert re.fullmatch(r"[0-9a-f]{16}\n", r.stdout)
        wait_for(lambda: sink.messages(), what="the message at the sink")
        m = sink.parsed()[0]
        assert m.get("X-Mail-Args").startswith("<cron@example.org>")
        # smtp-sink ends each dump with an empty line of its own.
        assert m.get_payload().rstrip("\n") == ".leading dot\nbody"
        assert r.stdout.strip() in tern.log()


def test_tern_send_reports_refusal(tmp_path):
    with TernServer(tmp_path, relay_loopback=False) as tern:
        r = subprocess.run([TERN_BIN, "send", "-c", tern.config, "someone@example.net"],
                           input="Subject: x\n\nhi\n", capture_output=True, text=True, timeout=30)
        assert r.returncode == 1
        assert "550 5.7.1" in r.stderr


def test_sigterm_stops_gracefully(tmp_path):
    tern = TernServer(tmp_path).start()
    rc = tern.stop()
    assert rc == 0
    assert "stopped" in tern.log()


def test_serve_without_listener_fails_clearly(tmp_path):
    cfg = tmp_path / "t.toml"
    cfg.write_text('[queue]\npath = "%s"\n' % (tmp_path / "spool"))
    r = subprocess.run([TERN_BIN, "serve", "-c", str(cfg)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert "no [server.listener" in r.stderr


def test_sighup_does_not_kill_the_server(tmp_path):
    import signal
    with TernServer(tmp_path) as tern:
        tern.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: tern.log_lines("SIGHUP"), what="the SIGHUP log line")
        assert tern.proc.poll() is None


def test_bodies_read_back_from_the_spool_when_memory_budget_is_spent(tmp_path):
    """With no memory budget for bodies, every delivery reads its body from
    the spool when a connection takes it: the mail arrives byte for byte."""
    with SmtpSink(tmp_path) as sink, \
         TernServer(tmp_path, '[queue.outbound]\nnext-hop = "sink"\n' + remote("sink", sink.port),
                    env={"TERN_QUEUE_BODY_BUDGET": "0"}) as tern:
        for i in range(5):
            send(tern.port, "alice@example.org", ["bob@example.net"], make_message(i, body_lines=2000))
        wait_for(lambda: len(sink.messages()) == 5, what="5 messages at the sink")
        for m in sink.parsed():
            i = int(m["Subject"].split()[-1])
            assert m.get_payload().rstrip("\n") == "\n".join(
                "line %d of message %d" % (n, i) for n in range(2000))
