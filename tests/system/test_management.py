"""The management API (a listener with protocol "http") and `tern queue`
against a running server: listing with every filter, showing a message with
its recipients' last errors, retry, hold, release and cancel as the queue and
the log see them, authentication, errors and /metrics.

Mail stays queued because the next hop is a relay where nothing listens
([remote."down"] on a free loopback port) with `retry = ["1h"]`: every
message is attempted once at once, deferred, and then waits; tests that need
a retry to fire shorten the schedule. A delivery stays in flight against a
socket that listens but never accepts (the kernel completes the handshake,
the greeting never comes) until the test closes it.
"""
import base64
import calendar
import http.client
import json
import os
import re
import signal
import smtplib
import socket
import subprocess
import time
from contextlib import contextmanager

from peers import TERN_BIN, SmtpSink, TernServer, free_port, wait_for

USER, SECRET = "admin", "s3cret"
TIME_RE = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"
ID_RE = r"[0-9a-f]{16}"


def config(api_port, relay_port, retry="1h", auth=True, relay="down"):
    lines = ['[server.listener."api"]', 'bind = ["127.0.0.1:%d"]' % api_port, 'protocol = "http"',
             '', '[queue.outbound]', 'next-hop = "%s"' % relay,
             '', '[queue.schedule]', 'retry = ["%s"]' % retry,
             '', '[remote."%s"]' % relay, 'address = "127.0.0.1"', 'port = %d' % relay_port,
             'protocol = "smtp"', '']
    if auth:
        lines += ['[management.auth]', 'lookup = "list/admins"', '',
                  '[list]', 'admins = ["%s:%s", "ops:other"]' % (USER, SECRET), '']
    return "\n".join(lines)


class Api:
    """HTTP requests to the management API, Basic credentials by default."""

    def __init__(self, port):
        self.port = port

    def request(self, method, path, credentials=(USER, SECRET), headers=None, body=None):
        h = dict(headers or {})
        if credentials is not None:
            token = base64.b64encode(("%s:%s" % credentials).encode()).decode()
            h["Authorization"] = "Basic " + token
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=h)
            r = conn.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            conn.close()

    def json(self, method, path, **kw):
        status, headers, body = self.request(method, path, **kw)
        assert headers.get("content-type") == "application/json", (status, body)
        return status, json.loads(body)

    def get(self, path, **kw):
        return self.json("GET", path, **kw)

    def post(self, path, **kw):
        return self.json("POST", path, **kw)

    def messages(self, query=""):
        status, body = self.get("/api/queue/messages" + query)
        assert status == 200, body
        assert body["count"] == len(body["messages"])
        return body["messages"]

    def show(self, qid):
        status, body = self.get("/api/queue/messages/" + qid)
        assert status == 200, body
        return body


@contextmanager
def running(tern):
    """tern started, then stopped (by its PID); it must exit cleanly: under
    the sanitizers a leak or a memory error makes the exit code non-zero."""
    with tern:
        yield tern
    assert tern.proc.returncode == 0, tern.log()[-3000:]


@contextmanager
def management_server(tmp_path, retry="1h", auth=True):
    """A server whose relay is down, with its API; yields (tern, api)."""
    api_port = free_port()
    with running(TernServer(tmp_path, config(api_port, free_port(), retry, auth))) as tern:
        yield tern, Api(api_port)


def epoch(rfc3339):
    return calendar.timegm(time.strptime(rfc3339, "%Y-%m-%dT%H:%M:%SZ"))


def send(tern, sender, rcpts, i=0):
    """Queue one message over SMTP; returns its queue id."""
    data = ("From: <%s>\r\nSubject: %d\r\nMessage-ID: <m%d@test>\r\n\r\nhello %d\r\n"
            % (sender, i, i, i))
    with smtplib.SMTP("127.0.0.1", tern.port, timeout=30) as s:
        s.ehlo("client.test")
        s.mail(sender)
        for r in rcpts:
            assert s.rcpt(r)[0] == 250
        code, reply = s.data(data)
    assert code == 250, reply
    return re.search(rb"queued as (" + ID_RE.encode() + rb")", reply).group(1).decode()


def outcomes(tern, qid, rcpt=None, status="deferred"):
    """The log's outcome lines of message qid (and recipient rcpt)."""
    return [l for l in tern.log_lines("queue %s rcpt=<%s" % (qid, rcpt or ""))
            if " status=%s " % status in l]


def wait_outcomes(tern, qid, n, rcpt=None, status="deferred"):
    return wait_for(lambda: (lambda l: l if len(l) >= n else None)(outcomes(tern, qid, rcpt, status)),
                    what="%d %s outcome(s) of %s" % (n, status, qid))


def attempts_logged(tern, qid, rcpt):
    return [int(re.search(r" attempt=(\d+) ", l).group(1))
            for l in tern.log_lines("queue %s rcpt=<%s>" % (qid, rcpt)) if " status=" in l]


def queue_cli(*args, env=None):
    full_env = dict(os.environ)
    full_env.pop("TERN_API_USER", None)
    full_env.pop("TERN_API_PASSWORD", None)
    full_env.update(env or {})
    return subprocess.run([TERN_BIN, "queue", *args], capture_output=True, text=True, timeout=60,
                          env=full_env)


# ---- the API ----

def test_list_with_every_filter(tmp_path):
    with management_server(tmp_path) as (tern, api):
        a = send(tern, "alice@example.org", ["bob@example.net", "carol@example.net"], 1)
        wait_outcomes(tern, a, 2)
        time.sleep(1.2)  # later arrivals fall in a later second
        b = send(tern, "", ["dave@example.com"], 2)
        c = send(tern, "Alice@Example.org", ["erin@example.org"], 3)
        wait_outcomes(tern, b, 1)
        wait_outcomes(tern, c, 1)

        everything = api.messages()
        assert [m["id"] for m in everything] == [a, b, c]  # by arrival, then id
        first = everything[0]
        assert set(first) == {"id", "sender", "arrival", "size", "status", "in_flight", "envid",
                              "pending", "recipients"}
        assert first["sender"] == "alice@example.org"
        assert first["recipients"] == ["bob@example.net", "carol@example.net"]
        assert first["pending"] == 2 and first["status"] == "deferred"
        assert first["in_flight"] is False and first["envid"] is None
        assert re.fullmatch(TIME_RE, first["arrival"]) and first["size"] > 0
        assert everything[1]["sender"] == ""

        assert [m["id"] for m in api.messages("?sender=ALICE@example.org")] == [a, c]
        assert [m["id"] for m in api.messages("?sender=")] == [b]  # the null sender
        assert [m["id"] for m in api.messages("?rcpt=Dave@Example.COM")] == [b]
        assert [m["id"] for m in api.messages("?rcpt=carol@example.net")] == [a]
        assert api.messages("?rcpt=nobody@example.net") == []
        assert [m["id"] for m in api.messages("?status=deferred")] == [a, b, c]
        for status in ("queued", "held", "in-flight"):
            assert api.messages("?status=" + status) == []

        b_second = everything[1]["arrival"]  # RFC 3339, whole seconds
        a_epoch = epoch(first["arrival"])
        assert [m["id"] for m in api.messages("?before=" + b_second)] == [a]
        assert [m["id"] for m in api.messages("?after=%d" % (a_epoch + 1))] == [b, c]
        assert [m["id"] for m in api.messages("?after=%d&before=%s&sender=alice@example.org"
                                              % (a_epoch + 1, "2999-01-01T00:00:00%2B01:00"))] == [c]
        assert [m["id"] for m in api.messages("?limit=1")] == [a]


def test_list_refuses_bad_parameters(tmp_path):
    with management_server(tmp_path) as (tern, api):
        for query, name in [("status=bogus", "status"), ("before=yesterday", "before"),
                            ("after=2026-13-01T00:00:00Z", "after"), ("limit=0", "limit"),
                            ("limit=ten", "limit"), ("colour=red", "colour"),
                            ("sender=a&sender=b", "sender")]:
            status, body = api.get("/api/queue/messages?" + query)
            assert status == 400, query
            assert body["error"].startswith(name + ":"), body


def test_show_gives_each_recipients_last_error(tmp_path):
    with management_server(tmp_path) as (tern, api):
        qid = send(tern, "alice@example.org", ["bob@example.net", "carol@example.net"])
        wait_outcomes(tern, qid, 2)
        m = api.show(qid)
        assert m["id"] == qid and m["status"] == "deferred" and m["pending"] == 2
        arrival = epoch(m["arrival"])
        for r, address in zip(m["recipients"], ["bob@example.net", "carol@example.net"]):
            assert r["address"] == address and r["domain"] == "example.net"
            assert r["state"] == "pending" and r["attempts"] == 1
            # retry = ["1h"]; queue.schedule.expire defaults to 5 days.
            assert 3598 <= epoch(r["next_attempt"]) - arrival <= 3602
            assert epoch(r["expires"]) - arrival == 5 * 86400
            e = r["last_error"]
            assert e["code"] is None and e["dsn"] == "4.4.1" and e["stage"] == "connect"
            assert e["remote"] is False
            assert re.fullmatch(r"down\[127\.0\.0\.1\]:\d+", e["relay"])
            assert e["tls"] is None   # no session, so no TLS either
            assert "Connection refused" in e["text"]
            assert re.fullmatch(TIME_RE, e["at"])


def test_show_gives_the_remote_reply(tmp_path):
    """A relay that answers 4xx to RCPT: the last error is the remote's."""
    api_port = free_port()
    with SmtpSink(tmp_path, ["-r", "RCPT"]) as sink, \
         running(TernServer(tmp_path, config(api_port, sink.port, relay="sink"))) as tern:
        api = Api(api_port)
        qid = send(tern, "alice@example.org", ["bob@example.net"])
        wait_outcomes(tern, qid, 1)
        e = api.show(qid)["recipients"][0]["last_error"]
        assert e["remote"] is True and e["stage"] == "rcpt-to"
        assert 400 <= e["code"] < 500 and e["dsn"].startswith("4.")
        assert e["relay"] == "sink[127.0.0.1]:%d" % sink.port
        assert e["tls"] == "none(not offered)"   # as tls= in the log line


def test_retry_attempts_again(tmp_path):
    with management_server(tmp_path) as (tern, api):
        qid = send(tern, "alice@example.org", ["bob@example.net", "carol@example.net"])
        wait_outcomes(tern, qid, 2)
        expires = [r["expires"] for r in api.show(qid)["recipients"]]
        status, body = api.post("/api/queue/messages/%s/retry" % qid)
        assert (status, body) == (200, {"changed": 2})
        wait_outcomes(tern, qid, 4)
        assert [r["attempts"] for r in api.show(qid)["recipients"]] == [2, 2]
        # A manual retry leaves the expiry where it was (arrival + expire).
        assert [r["expires"] for r in api.show(qid)["recipients"]] == expires
        assert attempts_logged(tern, qid, "bob@example.net") == [1, 2]
        assert tern.log_lines("admin: %s: retry %s: 2 recipients changed" % (USER, qid))

        # One recipient only, named in any case.
        status, body = api.post("/api/queue/messages/%s/retry?rcpt=CAROL@example.net" % qid)
        assert (status, body) == (200, {"changed": 1})
        wait_outcomes(tern, qid, 3, rcpt="carol@example.net")
        time.sleep(0.3)
        assert [r["attempts"] for r in api.show(qid)["recipients"]] == [2, 3]


def test_hold_and_release(tmp_path):
    """With a 2 s retry schedule, held recipients are not attempted when
    their retry falls due; released, they are attempted at once."""
    with management_server(tmp_path, retry="2s") as (tern, api):
        qid = send(tern, "alice@example.org", ["bob@example.net", "carol@example.net"])
        wait_outcomes(tern, qid, 2)
        status, body = api.post("/api/queue/messages/%s/hold?rcpt=bob@example.net" % qid)
        assert (status, body) == (200, {"changed": 1})
        m = api.show(qid)
        bob, carol = m["recipients"]
        assert bob["state"] == "held" and bob["next_attempt"] is None
        assert carol["state"] == "pending" and carol["next_attempt"] is not None
        assert m["status"] == "deferred"  # carol is not held

        assert api.post("/api/queue/messages/%s/hold" % qid) == (200, {"changed": 1})
        # Held already: nothing changes, and that is not an error.
        assert api.post("/api/queue/messages/%s/hold?rcpt=bob@example.net" % qid) == \
            (200, {"changed": 0})
        m = api.show(qid)
        assert m["status"] == "held"
        assert [r["state"] for r in m["recipients"]] == ["held", "held"]
        assert [x["id"] for x in api.messages("?status=held")] == [qid]
        assert api.messages("?status=deferred") == []
        bob_before = len(attempts_logged(tern, qid, "bob@example.net"))
        time.sleep(3)  # the 2 s retry would have fired
        assert len(attempts_logged(tern, qid, "bob@example.net")) == bob_before == 1
        assert len(attempts_logged(tern, qid, "carol@example.net")) == 1

        assert api.post("/api/queue/messages/%s/release?rcpt=bob@example.net" % qid) == \
            (200, {"changed": 1})
        wait_outcomes(tern, qid, 2, rcpt="bob@example.net")
        assert len(attempts_logged(tern, qid, "carol@example.net")) == 1
        m = api.show(qid)
        assert [r["state"] for r in m["recipients"]] == ["pending", "held"]
        assert api.post("/api/queue/messages/%s/release" % qid) == (200, {"changed": 1})
        wait_outcomes(tern, qid, 2, rcpt="carol@example.net")


def test_cancel_one_recipient_then_the_message(tmp_path):
    with management_server(tmp_path) as (tern, api):
        qid = send(tern, "alice@example.org", ["bob@example.net", "carol@example.net"])
        wait_outcomes(tern, qid, 2)
        assert api.post("/api/queue/messages/%s/cancel?rcpt=bob@example.net" % qid) == \
            (200, {"changed": 1})
        m = api.show(qid)
        bob, carol = m["recipients"]
        assert bob["state"] == "failed" and bob["next_attempt"] is None
        assert bob["last_error"]["dsn"] == "5.0.0"
        assert bob["last_error"]["text"] == "cancelled by the administrator"
        assert carol["state"] == "pending" and m["pending"] == 1
        assert outcomes(tern, qid, "bob@example.net", status="cancelled")
        # A cancelled recipient is no longer pending: naming it changes nothing.
        status, body = api.post("/api/queue/messages/%s/retry?rcpt=bob@example.net" % qid)
        assert status == 404 and "no pending recipient bob@example.net" in body["error"]

        assert api.post("/api/queue/messages/%s/cancel" % qid) == (200, {"changed": 1})
        status, body = api.get("/api/queue/messages/" + qid)
        assert status == 404 and qid in body["error"]
        assert qid not in [m["id"] for m in api.messages()]
        assert api.post("/api/queue/messages/%s/cancel" % qid)[0] == 404
        # The sender's failure notices are queued (null sender): one for each
        # cancel, reporting the recipients it made final.
        wait_for(lambda: len(api.messages("?sender=&rcpt=alice@example.org")) == 2,
                 what="the two failure notices in the queue")


def test_unknown_ids_methods_and_paths(tmp_path):
    with management_server(tmp_path) as (tern, api):
        qid = send(tern, "alice@example.org", ["bob@example.net"])
        wait_outcomes(tern, qid, 1)
        missing = "0123456789abcdef"
        status, body = api.get("/api/queue/messages/" + missing)
        assert status == 404 and missing in body["error"]
        for action in ("retry", "hold", "release", "cancel"):
            status, body = api.post("/api/queue/messages/%s/%s" % (missing, action))
            assert status == 404 and "no message %s" % missing in body["error"]
            status, body = api.post("/api/queue/messages/%s/%s?rcpt=nobody@example.net"
                                    % (qid, action))
            assert status == 404 and "no pending recipient nobody@example.net" in body["error"]
        status, body = api.get("/api/queue/messages/not-an-id")
        assert status == 400 and body["error"].startswith("id:")

        for method, path, allow in [("GET", "/api/queue/messages/%s/retry" % qid, "POST"),
                                    ("POST", "/api/queue/messages", "GET, HEAD"),
                                    ("DELETE", "/api/queue/messages/" + qid, "GET, HEAD"),
                                    ("PUT", "/metrics", "GET, HEAD")]:
            status, headers, body = api.request(method, path)
            assert status == 405, (method, path)
            assert headers["allow"] == allow
            assert "error" in json.loads(body)
        for path in ("/", "/api", "/api/queue/messages/%s/frob" % qid, "/metrics/x",
                     "/api/queue/messages/"):
            status, body = api.get(path)
            assert status == 404 and body["error"] == "no such endpoint", path
        # Requests take no body.
        status, _, _ = api.request("POST", "/api/queue/messages/%s/retry" % qid, body=b"x=1")
        assert status == 413
        assert api.show(qid)["recipients"][0]["attempts"] == 1


def test_bad_credentials_are_refused(tmp_path):
    with management_server(tmp_path) as (tern, api):
        bad = [dict(credentials=None), dict(credentials=(USER, "wrong")),
               dict(credentials=(USER, SECRET + "x")), dict(credentials=("nobody", SECRET)),
               dict(credentials=(USER, "")),
               dict(credentials=None, headers={"Authorization": "Basic !!not base64!!"}),
               dict(credentials=None, headers={"Authorization": "Bearer " + SECRET}),
               dict(credentials=None, headers={"Authorization": "Basic " + base64.b64encode(
                   (USER + SECRET).encode()).decode()})]
        for path in ("/api/queue/messages", "/metrics", "/api/queue/messages/0123456789abcdef",
                     "/no/such/path"):
            for kw in bad:
                status, headers, body = api.request("GET", path, **kw)
                assert status == 401, (path, kw)
                assert headers["www-authenticate"] == 'Basic realm="tern"'
        assert api.request("POST", "/api/queue/messages/0123456789abcdef/cancel",
                           credentials=(USER, "wrong"))[0] == 401
        assert tern.log_lines("authentication failed (user nobody)")
        # Every entry of the list is a user; the scheme's name is case-insensitive.
        assert api.request("GET", "/metrics", credentials=("ops", "other"))[0] == 200
        token = base64.b64encode(("%s:%s" % (USER, SECRET)).encode()).decode()
        assert api.request("GET", "/metrics", credentials=None,
                           headers={"Authorization": "basic " + token})[0] == 200


def test_sighup_changes_the_credentials(tmp_path):
    with management_server(tmp_path) as (tern, api):
        assert api.request("GET", "/metrics")[0] == 200
        with open(tern.config) as f:
            text = f.read()
        with open(tern.config, "w") as f:
            f.write(text.replace('"%s:%s"' % (USER, SECRET), '"%s:rotated"' % USER))
        tern.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: tern.log_lines("is the running configuration"), what="the reload")
        assert api.request("GET", "/metrics")[0] == 401
        assert api.request("GET", "/metrics", credentials=(USER, "rotated"))[0] == 200


def test_without_auth_lookup_every_request_is_refused(tmp_path):
    with management_server(tmp_path, auth=False) as (tern, api):
        assert tern.log_lines("management.auth.lookup is not set: every request is refused")
        for path in ("/api/queue/messages", "/metrics", "/api/queue/messages/0123456789abcdef"):
            for credentials in (None, (USER, SECRET)):
                status, body = api.get(path, credentials=credentials)
                assert status == 403 and "management.auth.lookup" in body["error"]
        assert api.request("POST", "/api/queue/messages/0123456789abcdef/retry")[0] == 403
        r = queue_cli("-c", tern.config, "list")
        assert r.returncode == 3 and "management.auth.lookup" in r.stderr


METRIC_LINE = re.compile(r'^([a-z_]+)(\{(?:[a-z_]+="(?:[^"\\\n]|\\.)*",?)*\})? (\d+)$')


def scrape(api):
    """/metrics as {(name, labels): value}, checking every line's syntax and
    that each sample follows its family's # HELP and # TYPE."""
    status, headers, body = api.request("GET", "/metrics")
    assert status == 200
    assert headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    samples, types = {}, {}
    for line in body.decode().splitlines():
        if line.startswith("# HELP "):
            helped = line.split()[2]
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            assert name == helped and kind in ("gauge", "counter")
            types[name] = kind
            continue
        m = METRIC_LINE.match(line)
        assert m, line
        assert m.group(1) in types, line
        samples[(m.group(1), m.group(2) or "")] = int(m.group(3))
    return samples, types


def test_metrics_match_the_queue(tmp_path):
    with management_server(tmp_path) as (tern, api):
        a = send(tern, "alice@example.org", ["bob@example.net", "carol@example.net"], 1)
        b = send(tern, "alice@example.org", ["dave@example.com"], 2)
        wait_outcomes(tern, a, 2)
        wait_outcomes(tern, b, 1)
        api.post("/api/queue/messages/%s/hold?rcpt=bob@example.net" % a)
        api.post("/api/queue/messages/%s/cancel" % b)
        wait_for(lambda: api.messages("?sender="), what="the failure notice in the queue")
        wait_for(lambda: outcomes(tern, api.messages("?sender=")[0]["id"]),
                 what="the notice deferred")
        samples, types = scrape(api)
        assert types == {
            "tern_queue_messages": "gauge", "tern_queue_in_flight_messages": "gauge",
            "tern_queue_held_recipients": "gauge", "tern_recipients_delivered_total": "counter",
            "tern_recipients_deferred_total": "counter", "tern_recipients_bounced_total": "counter",
            "tern_dsn_sent_total": "counter", "tern_connections": "gauge",
            "tern_deliveries_waiting": "gauge", "tern_spool_bytes": "gauge"}
        assert samples[("tern_queue_messages", "")] == len(api.messages()) == 2  # a, the notice
        assert samples[("tern_queue_in_flight_messages", "")] == 0
        assert samples[("tern_queue_held_recipients", "")] == 1
        assert samples[("tern_recipients_delivered_total", "")] == 0
        assert samples[("tern_recipients_deferred_total", "")] == \
            len(tern.log_lines(" status=deferred ")) == 4
        assert samples[("tern_recipients_bounced_total", "")] == 1
        assert samples[("tern_dsn_sent_total", "")] == 1
        assert samples[("tern_spool_bytes", "")] > 0


@contextmanager
def stalled_relay():
    """A port that completes TCP handshakes and never says a word; closing
    it resets the connections waiting on it."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    try:
        yield s
    finally:
        s.close()


def test_in_flight_message(tmp_path):
    api_port = free_port()
    with stalled_relay() as stall:
        with running(TernServer(tmp_path, config(api_port, stall.getsockname()[1],
                                                 relay="stall"))) as tern:
            api = Api(api_port)
            qid = send(tern, "alice@example.org", ["bob@example.net"])
            m = wait_for(lambda: (lambda m: m if m["in_flight"] else None)(api.show(qid)),
                         what="the delivery in flight")
            assert m["status"] == "in-flight" and m["recipients"][0]["attempts"] == 0
            assert m["recipients"][0]["last_error"] is None
            assert [x["id"] for x in api.messages("?status=in-flight")] == [qid]
            assert api.messages("?status=queued") == []
            for action in ("retry", "hold", "cancel"):
                status, body = api.post("/api/queue/messages/%s/%s" % (qid, action))
                assert status == 409 and "in flight" in body["error"]
            samples, _ = wait_for(lambda: (lambda s: s if s[0].get(
                ("tern_connections", '{kind="remote",destination="stall"}')) == 1 else None)(
                    scrape(api)), what="the connection in /metrics")
            assert samples[("tern_queue_in_flight_messages", "")] == 1
            # Waiting for the connection to be ready, or taken by it.
            assert samples[("tern_deliveries_waiting", '{kind="remote",destination="stall"}')] \
                in (0, 1)
            stall.close()
            wait_outcomes(tern, qid, 1)
            assert api.show(qid)["status"] == "deferred"


# ---- tern queue ----

def test_cli_list_and_show(tmp_path):
    with management_server(tmp_path) as (tern, api):
        a = send(tern, "alice@example.org", ["bob@example.net", "carol@example.net"], 1)
        b = send(tern, "", ["dave@example.com"], 2)
        wait_outcomes(tern, a, 2)
        wait_outcomes(tern, b, 1)

        r = queue_cli("-c", tern.config, "list")
        assert r.returncode == 0, r.stderr
        header, row_a, row_b = r.stdout.splitlines()
        assert header.split() == ["ID", "ARRIVAL", "SIZE", "STATUS", "SENDER", "RECIPIENTS"]
        assert row_a.split()[0] == a and row_b.split()[0] == b
        assert re.fullmatch(TIME_RE, row_a.split()[1])
        assert row_a.split()[3:] == ["deferred", "alice@example.org", "bob@example.net,",
                                     "carol@example.net"]
        assert row_b.split()[3:] == ["deferred", "<>", "dave@example.com"]
        # Aligned: every column starts where its title does.
        for title in ("STATUS", "SENDER", "RECIPIENTS"):
            col = header.index(title)
            assert row_a[col - 2:col] == "  " and row_a[col] != " "

        r = queue_cli("-c", tern.config, "--json", "list")
        assert r.returncode == 0
        assert json.loads(r.stdout) == {"messages": api.messages(), "count": 2}
        r = queue_cli("-c", tern.config, "list", "--sender", "alice@example.org", "--status",
                      "deferred")
        assert r.returncode == 0 and len(r.stdout.splitlines()) == 2
        r = queue_cli("-c", tern.config, "list", "--rcpt", "nobody@example.net")
        assert r.returncode == 1 and r.stdout == ""
        r = queue_cli("-c", tern.config, "list", "--before", "yesterday")
        assert r.returncode == 2 and "before:" in r.stderr

        r = queue_cli("-c", tern.config, "show", a)
        assert r.returncode == 0
        assert "id:          %s" % a in r.stdout and "status:      deferred" in r.stdout
        assert r.stdout.count("attempts:      1") == 2
        assert r.stdout.count("Connection refused") == 2 and "next attempt:" in r.stdout
        r = queue_cli("-c", tern.config, "--json", "show", a)
        assert r.returncode == 0 and json.loads(r.stdout) == api.show(a)
        r = queue_cli("-c", tern.config, "show", "0123456789abcdef")
        assert r.returncode == 1 and "no message 0123456789abcdef" in r.stderr


def test_cli_actions(tmp_path):
    with management_server(tmp_path) as (tern, api):
        qid = send(tern, "alice@example.org", ["bob@example.net", "carol@example.net"])
        wait_outcomes(tern, qid, 2)
        cfg = ("-c", tern.config)

        r = queue_cli(*cfg, "retry", qid)
        assert r.returncode == 0 and "2 recipients changed" in r.stdout
        wait_outcomes(tern, qid, 4)
        r = queue_cli(*cfg, "hold", qid, "bob@example.net")
        assert r.returncode == 0 and "1 recipient changed" in r.stdout
        assert api.show(qid)["recipients"][0]["state"] == "held"
        r = queue_cli(*cfg, "hold", qid, "bob@example.net")
        assert r.returncode == 1 and "nothing to change" in r.stderr
        r = queue_cli(*cfg, "--json", "release", qid)
        assert r.returncode == 0 and json.loads(r.stdout) == {"changed": 1}
        r = queue_cli(*cfg, "cancel", qid, "nobody@example.net")
        assert r.returncode == 1 and "no pending recipient nobody@example.net" in r.stderr
        r = queue_cli(*cfg, "cancel", qid, "carol@example.net")
        assert r.returncode == 0
        assert [x["state"] for x in api.show(qid)["recipients"]][1] == "failed"
        r = queue_cli(*cfg, "cancel", qid)
        assert r.returncode == 0
        r = queue_cli(*cfg, "show", qid)
        assert r.returncode == 1
        r = queue_cli(*cfg, "retry", qid)
        assert r.returncode == 1

        # --url and the environment instead of the configuration.
        env = {"TERN_API_USER": "ops", "TERN_API_PASSWORD": "other"}
        r = queue_cli("-c", "/nonexistent.toml", "--url", "http://127.0.0.1:%d" % api.port,
                      "list", env=env)
        assert r.returncode == 0, r.stderr
        r = queue_cli(*cfg, "list", env={"TERN_API_PASSWORD": "wrong"})
        assert r.returncode == 3 and "refused the credentials" in r.stderr


def test_cli_usage_errors(tmp_path):
    with management_server(tmp_path) as (tern, api):
        cfg = ("-c", tern.config)
        for args in [(), ("frob",), ("show",), ("show", "xyz"), ("retry", "0123456789abcdef",
                     "a@b", "c@d"), ("list", "extra"), ("show", "0123456789abcdef", "--sender",
                     "a@b"), ("--bogus", "list"), ("--url", "ftp://127.0.0.1:1", "list")]:
            r = queue_cli(*cfg, *args)
            assert r.returncode == 2, (args, r.stderr)
            assert r.stderr.startswith("tern queue: "), args
        r = queue_cli("--help")
        assert r.returncode == 0 and "retry ID [RCPT]" in r.stdout


def test_cli_without_a_running_server(tmp_path):
    cfg = tmp_path / "t.toml"
    cfg.write_text(config(free_port(), free_port()) + '\n[queue]\npath = "%s"\n'
                   % (tmp_path / "spool"))
    for args in (("list",), ("show", "0123456789abcdef"), ("retry", "0123456789abcdef")):
        r = queue_cli("-c", str(cfg), *args)
        assert r.returncode == 3, r.stderr
        assert "cannot reach the management API" in r.stderr
