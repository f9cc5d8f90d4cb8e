"""The queue's schedule and delivery status notifications (SPEC §2
queue.schedule.*, §3.5, §3.6), with real peers: Postfix's smtp-sink takes the
notices (and mail that is delivered), tests/system/peers/scripted_smtp.py
refuses recipients permanently or temporarily. Each notice is read with
Python's email package, as a mail client would.

Routing in every test: rcpt-domain "sender.example" and "ok.example" go to the
sink, "fail.example" to a server that answers 550 to RCPT, "later.example" to
one that answers 450. Schedules are seconds long, so nothing sleeps for
minutes.
"""
import email
import email.policy
import json
import re
import smtplib
import time

from peers import Scripted, SmtpSink, TernServer, wait_for


def remote(name, port):
    return '[remote."%s"]\naddress = "127.0.0.1"\nport = %d\nprotocol = "smtp"\n' % (name, port)


def config(sink, fail, later, schedule=""):
    return ('[queue.outbound]\nnext-hop = [\n'
            '  { if = "rcpt-domain", eq = "fail.example", then = "fail" },\n'
            '  { if = "rcpt-domain", eq = "later.example", then = "later" },\n'
            '  { else = "sink" } ]\n'
            '[report.dsn]\nfrom-address = "MAILER-DAEMON@tern.test"\n'
            + schedule + remote("sink", sink.port) + remote("fail", fail.port)
            + remote("later", later.port))


class World:
    def __init__(self, tmp_path, schedule=""):
        self.sink = SmtpSink(tmp_path).start()
        script_fail = tmp_path / "fail.json"
        script_fail.write_text(json.dumps({"rcpt": "550 5.1.1 no such user here"}))
        script_later = tmp_path / "later.json"
        script_later.write_text(json.dumps({"rcpt": "450 4.2.0 mailbox busy, try later"}))
        self.fail = Scripted(tmp_path, str(script_fail)).start()
        self.later = Scripted(tmp_path, str(script_later)).start()
        self.tern = TernServer(tmp_path, config(self.sink, self.fail, self.later, schedule)).start()

    def close(self):
        self.tern.stop()
        self.fail.stop()
        self.later.stop()
        self.sink.stop()
        self.sink.remove()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, sender, rcpts, subject="test", mail_options=(), rcpt_options=(), body="hello\r\n"):
        data = ("From: %s\r\nTo: %s\r\nSubject: %s\r\nMessage-ID: <%s@test>\r\n\r\n%s"
                % (sender or "<>", ", ".join(rcpts), subject, subject.replace(" ", "-"), body))
        with smtplib.SMTP("127.0.0.1", self.tern.port, timeout=30) as s:
            s.ehlo("client.test")
            s.sendmail(sender, rcpts, data, mail_options=list(mail_options),
                       rcpt_options=list(rcpt_options))

    def notices(self):
        """Messages at the sink that are delivery status notifications."""
        out = []
        for raw in self.sink.messages():
            msg = email.message_from_bytes(raw, policy=email.policy.compat32)
            if msg.get_content_type() == "multipart/report":
                out.append(msg)
        return out

    def wait_notices(self, n, timeout=20):
        return wait_for(lambda: len(self.notices()) >= n and self.notices(), timeout=timeout,
                        what="%d notice(s) at the sink" % n)


def report(notice):
    """(per-message fields, [per-recipient fields]) of the delivery-status part."""
    assert notice.get_param("report-type") == "delivery-status"
    parts = notice.get_payload()
    assert parts[0].get_content_type() == "text/plain"
    assert parts[1].get_content_type() == "message/delivery-status"
    blocks = parts[1].get_payload()  # email parses the blocks as header sets
    return blocks[0], blocks[1:]


def envelope_sender(notice):
    # smtp-sink writes the envelope first: "X-Mail-Args: <sender> PARAMS"
    args = notice.get("X-Mail-Args", "")
    m = re.match(r"<([^>]*)>", args)
    return m.group(1) if m else None


def test_failure_notice_for_a_bounced_recipient(tmp_path):
    with World(tmp_path) as w:
        w.send("alice@sender.example", ["bob@fail.example", "carol@fail.example"],
               subject="about the plan", mail_options=["ENVID=env-42"],
               rcpt_options=[])
        [notice] = w.wait_notices(1)
        assert envelope_sender(notice) == ""          # null return path
        assert notice["To"] == "<alice@sender.example>"
        assert "MAILER-DAEMON@tern.test" in notice["From"]
        assert notice["Auto-Submitted"] == "auto-replied"
        per_msg, per_rcpt = report(notice)
        assert per_msg["Reporting-MTA"] == "dns; tern.test"
        assert per_msg["Original-Envelope-Id"] == "env-42"
        assert per_msg["Arrival-Date"]
        # one notice for both recipients that failed in the attempt
        assert sorted(b["Final-Recipient"] for b in per_rcpt) == [
            "rfc822; bob@fail.example", "rfc822; carol@fail.example"]
        for b in per_rcpt:
            assert b["Action"] == "failed"
            assert b["Status"] == "5.1.1"
            assert b["Diagnostic-Code"].startswith("smtp; 550")
            assert "no such user here" in b["Diagnostic-Code"]
            assert b["Remote-MTA"] == "dns; 127.0.0.1"
        returned = notice.get_payload()[2]
        assert returned.get_content_type() == "text/rfc822-headers"
        assert "Subject: about the plan" in returned.get_payload()
        assert "hello" not in returned.get_payload()  # RET=HDRS by default


def test_ret_full_returns_the_whole_message(tmp_path):
    with World(tmp_path) as w:
        w.send("alice@sender.example", ["bob@fail.example"], mail_options=["RET=FULL"],
               body="the whole body\r\n")
        [notice] = w.wait_notices(1)
        returned = notice.get_payload()[2]
        assert returned.get_content_type() == "message/rfc822"
        inner = returned.get_payload()[0]
        assert inner.get_payload() == "the whole body\n" or "the whole body" in inner.get_payload()


def test_no_notice_for_the_null_sender_or_notify_never(tmp_path):
    with World(tmp_path) as w:
        w.send("", ["bob@fail.example"])
        w.send("alice@sender.example", ["bob@fail.example"], rcpt_options=["NOTIFY=NEVER"])
        wait_for(lambda: len(w.tern.log_lines("status=bounced")) == 2, what="two bounces")
        w.send("alice@sender.example", ["marker@ok.example"])  # a later message, delivered
        wait_for(lambda: len(w.sink.messages()) == 1, what="the marker at the sink")
        time.sleep(0.5)
        assert w.notices() == []
        assert w.tern.log_lines("notice for") == []


def test_success_notice_when_asked(tmp_path):
    with World(tmp_path) as w:
        w.send("alice@sender.example", ["bob@ok.example"], rcpt_options=["NOTIFY=SUCCESS,FAILURE"])
        [notice] = w.wait_notices(1)
        _, [b] = report(notice)
        assert b["Action"] == "delivered" and b["Status"].startswith("2.")
        assert b["Final-Recipient"] == "rfc822; bob@ok.example"
        assert notice["Subject"].startswith("Successful")
        # delivered without NOTIFY=SUCCESS: no notice
        w.send("alice@sender.example", ["carol@ok.example"])
        wait_for(lambda: len(w.sink.messages()) == 3, what="the second message")
        time.sleep(0.5)
        assert len(w.notices()) == 1


def test_retry_sequence_with_the_last_interval_repeating(tmp_path):
    schedule = '[queue.schedule]\nretry = ["1s", "2s"]\nexpire = "1h"\nnotify = []\n'
    with World(tmp_path, schedule) as w:
        w.send("alice@sender.example", ["bob@later.example"])
        lines = wait_for(lambda: len(w.tern.log_lines("status=deferred")) >= 4 and
                         w.tern.log_lines("status=deferred"), timeout=15, what="4 attempts")
    stamps = [time.mktime(time.strptime(l[:19], "%Y-%m-%dT%H:%M:%S")) + float("0" + l[19:23])
              for l in lines[:4]]
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    # 1 s, then 2 s, then 2 s again (the last interval repeats)
    for got, want in zip(gaps, [1, 2, 2]):
        assert abs(got - want) < 0.5, gaps
    assert [int(re.search(r"attempt=(\d+)", l).group(1)) for l in lines[:4]] == [1, 2, 3, 4]


def test_delay_notice_at_the_notify_time(tmp_path):
    schedule = '[queue.schedule]\nretry = ["1s"]\nnotify = ["2s"]\nexpire = "1h"\n'
    with World(tmp_path, schedule) as w:
        t0 = time.time()
        w.send("alice@sender.example", ["bob@later.example"], subject="delayed one")
        [notice] = w.wait_notices(1, timeout=15)
        elapsed = time.time() - t0
        assert 1.5 < elapsed < 6, elapsed
        per_msg, [b] = report(notice)
        assert b["Action"] == "delayed"
        assert b["Status"] == "4.2.0"
        assert "Will-Retry-Until" in b
        assert notice["Subject"].startswith("Delayed")
        time.sleep(2.5)  # one delay time only: no second notice
        assert len(w.notices()) == 1


def test_expiry_fails_the_recipient_with_a_notice(tmp_path):
    schedule = '[queue.schedule]\nretry = ["1s"]\nnotify = []\nexpire = "3s"\n'
    with World(tmp_path, schedule) as w:
        t0 = time.time()
        w.send("alice@sender.example", ["bob@later.example"])
        line = wait_for(lambda: w.tern.log_lines("status=expired"), timeout=15,
                        what="expiry")[0]
        assert time.time() - t0 < 6
        assert "dsn=4.4.7" in line
        [notice] = w.wait_notices(1)
        _, [b] = report(notice)
        assert b["Action"] == "failed" and b["Status"] == "4.4.7"
        assert "mailbox busy" in b["Diagnostic-Code"]


def test_a_queued_notice_survives_kill_and_restart(tmp_path):
    """The bounce is recorded and its notice queued while the sink is down;
    tern is killed with -9; after the restart the notice reaches the sink."""
    with World(tmp_path, '[queue.schedule]\nretry = ["1s"]\n') as w:
        w.sink.stop()
        w.send("alice@sender.example", ["bob@fail.example"])
        wait_for(lambda: w.tern.log_lines("failure notice"), what="the notice queued")
        w.tern.kill9()
        w.sink.start()
        w.tern.start()
        [notice] = w.wait_notices(1)
        _, [b] = report(notice)
        assert b["Final-Recipient"] == "rfc822; bob@fail.example"
