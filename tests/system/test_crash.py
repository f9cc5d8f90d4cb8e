"""Accepted means durable: 2000 messages from parallel clients, kill -9 in
the middle, restart; every message that got a 250 arrives at the relay."""
import collections
import smtplib
import threading
import time

from peers import SmtpSink, TernServer, wait_for

TOTAL = 2000
CLIENTS = 8


def test_kill9_during_injection_loses_nothing(tmp_path):
    with SmtpSink(tmp_path) as sink:
        extra = ('[session.data.limits]\nmessages = 10000\n'
                 '[queue.outbound]\nnext-hop = "sink"\n[queue.schedule]\nretry = ["1s"]\n'
                 '[remote."sink"]\naddress = "127.0.0.1"\nport = %d\nprotocol = "smtp"\n' % sink.port)
        tern = TernServer(tmp_path, extra).start()
        acked = []
        lock = threading.Lock()
        next_index = iter(range(TOTAL))

        def client():
            try:
                with smtplib.SMTP("127.0.0.1", tern.port, timeout=30) as s:
                    s.ehlo("crash.test")
                    for i in next_index:
                        mid = "<crash%d@test>" % i
                        data = ("From: a@example.org\r\nTo: b@example.net\r\nMessage-ID: %s\r\n"
                                "Subject: crash %d\r\n\r\n%s\r\n" % (mid, i, "x" * 1500))
                        s.sendmail("a@example.org", ["b@example.net"], data)
                        with lock:
                            acked.append(mid)
            except (smtplib.SMTPException, OSError):
                pass  # the server died under us: that is the test

        threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
        for t in threads:
            t.start()
        wait_for(lambda: len(acked) >= TOTAL // 2, timeout=120, what="half the messages acknowledged")
        tern.kill9()
        for t in threads:
            t.join(timeout=60)
        killed_at = len(acked)
        assert 0 < killed_at < TOTAL, "the kill must fall in the middle of the injection"

        tern.start()
        try:
            wait_for(lambda: set(acked) <= set(sink.message_ids()), timeout=120,
                     what="every acknowledged message at the sink")
            time.sleep(1)  # let stragglers (duplicates) arrive before counting
            counts = collections.Counter(sink.message_ids())
            missing = [m for m in acked if m not in counts]
            assert missing == []
            # Only a message whose delivery was acknowledged by the sink but not
            # yet recorded by tern may arrive twice: at most one per connection.
            dups = [m for m, n in counts.items() if n > 1]
            print("acknowledged before the kill: %d of %d; at the sink: %d distinct, %d twice"
                  % (killed_at, TOTAL, len(counts), len(dups)))
            assert len(dups) <= 10, dups
        finally:
            tern.stop()
