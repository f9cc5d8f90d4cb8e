#!/usr/bin/env python3
"""A scripted SMTP/LMTP server for tests: the behaviour real servers cannot show.

It listens on 127.0.0.1 (port 0 = any free port), prints the port on stdout
as one line when ready, and answers every connection from a JSON script:
which extensions to advertise, and for each stage of the session a canned
reply, a delay, a reply that never comes, or the connection dropped. It
logs everything it receives to a JSON file, so a test can check what a
client sent and when. Stop it with SIGTERM.

usage: scripted_smtp.py --script FILE_OR_JSON --log FILE [--host H] [--port N]

THE SCRIPT (every key optional; {} is a plain, well-behaved server)

  {
    "lmtp": false,              LMTP: LHLO instead of EHLO/HELO, and after the
                                message one reply per accepted recipient
    "hostname": "scripted.test",
    "extensions": ["PIPELINING", "SIZE 1000000", "AUTH PLAIN LOGIN"],
                                EHLO/LHLO keywords, in order (default: none)
    "greeting": REPLY, "ehlo": REPLY, "helo": REPLY, "lhlo": REPLY,
    "auth": REPLY, "mail": REPLY, "rcpt": REPLY, "data": REPLY,
    "body": REPLY, "final": REPLY, "bdat": REPLY, "rset": REPLY,
    "noop": REPLY, "quit": REPLY, "starttls": REPLY,
    "connections": [ {same keys}, ... ]
  }

  Stages: "greeting" on connect; "ehlo"/"helo"/"lhlo"/"auth"/"mail"/"rcpt"/
  "data" (the reply to DATA itself, normally 354)/"rset"/"noop"/"quit"/
  "starttls" for their commands (this server speaks no TLS: a scripted 220
  to STARTTLS is followed by whatever the script says, the client's
  handshake bytes being read as a command line); "final" is the verdict on a message, after the final dot or
  BDAT LAST (LMTP: used once per accepted recipient); "bdat" answers BDAT
  chunks that are not LAST; "body" is what happens when message data starts
  arriving (only actions make sense there: see below).

  "connections": the N-th connection uses the N-th entry's keys over the top
  level's; connections past the list use the top level alone.

  A stage's value is one REPLY or a list of them: the k-th time the stage
  comes up on a connection uses the k-th entry (so "rcpt": [a, b] answers the
  first RCPT with a and every later one with b); the last entry repeats.

  A REPLY is one of:
    "250 2.1.0 Ok"                    a reply; "250-a\\n250 b" for several lines
    {"reply": "...", "delay": 1.5, "close": true}
                                      the reply after a delay, then close the
                                      connection; any key may be left out
                                      (no "reply" = the default reply)
    {"action": "hang"}                never reply; keep reading and logging
                                      until the client goes away
    {"action": "stall"}               never reply and stop reading (the
                                      client's writes back up)
    {"action": "close"}               close the connection, no reply
    null                              the default reply

  A scripted "ehlo"/"lhlo" reply replaces the whole reply, extensions too.

  Defaults: greeting "220 <hostname> ESMTP scripted" (LMTP: "LMTP"), EHLO
  "250-<hostname>" and one line per extension, MAIL "250 2.1.0 Ok", RCPT
  "250 2.1.5 Ok", DATA "354 ...", final "250 2.0.0 Ok: queued", BDAT
  "250 2.0.0 Ok", AUTH "235 2.7.0 Authentication successful", RSET/NOOP
  "250 2.0.0 Ok", QUIT "221 2.0.0 Bye" (then close), STARTTLS "454 4.7.0 TLS
  not available". The server keeps real
  SMTP state, answered without using the script: RCPT or DATA without MAIL
  get "503 5.5.1 Error: need MAIL command", a second MAIL without RSET gets
  "503 5.5.1 Error: nested MAIL command", DATA or BDAT with no accepted
  recipient gets "554 5.5.1 Error: no valid recipients" (BDAT data is read
  first), unknown commands "502 5.5.2 Error: command not recognized".

THE LOG (--log FILE): a JSON array of events, one per line, rewritten whole
after every event and before any reply that follows from it, so it can be
read at any time. Every event has "conn" (1, 2, ... in accept order) and
"event":

  {"event": "connect", "peer": "127.0.0.1", "port": 40000}
  {"event": "command", "line": "MAIL FROM:<a@b> SIZE=10", "replies_before": 2}
      replies_before: replies this server had sent on the connection when
      the bytes of this line arrived. Pipelined commands (RFC 2920) that came
      in one write share one value; in lockstep each is one more.
  {"event": "auth", "mechanism": "PLAIN", "user": "u", "secret": "s"}
  {"event": "message", "via": "DATA" or "BDAT", "mail_from": "a@b",
   "rcpts": ["accepted@x", ...], "data": "the message, dot-unstuffed"}
      data is the bytes as latin-1 characters (so any byte survives JSON).
  {"event": "disconnect", "by": "client" or "server"}
"""
import argparse
import base64
import json
import os
import signal
import socket
import sys
import threading
import time

STAGES = ("greeting", "ehlo", "helo", "lhlo", "auth", "mail", "rcpt", "data", "body", "final",
          "bdat", "rset", "noop", "quit", "starttls")
KEYS = set(STAGES) | {"lmtp", "hostname", "extensions"}


class Log:
    """The JSON event log, kept whole in memory and rewritten atomically."""

    def __init__(self, path):
        self.path = path
        self.lock = threading.Lock()
        self.lines = []
        self.flush()

    def add(self, conn, event, **fields):
        record = {"conn": conn, "event": event}
        record.update(fields)
        with self.lock:
            self.lines.append(json.dumps(record))
            self.flush()

    def flush(self):
        tmp = self.path + ".tmp"
        with open(tmp, "w", encoding="ascii") as f:
            f.write("[\n" + ",\n".join(self.lines) + ("\n" if self.lines else "") + "]\n")
        os.replace(tmp, self.path)


class Hangup(Exception):
    """The connection is over (closed by either side, or stalled)."""


class Session:
    """One connection: reads commands, answers from the script."""

    def __init__(self, sock, conn_id, script, log):
        self.sock = sock
        self.id = conn_id
        self.cfg = script
        self.log = log
        self.lmtp = bool(script.get("lmtp", False))
        self.host = script.get("hostname", "scripted.test")
        self.buf = bytearray()
        # (bytes still in buf from one recv, replies sent when it arrived)
        self.segments = []
        self.replies = 0
        self.uses = {}
        self.hanging = False
        self.reset_txn()

    def reset_txn(self):
        self.mail_from = None
        self.rcpts = []
        self.bdat_data = b""

    # ---- input ----

    def recv_more(self):
        if self.hanging == "stall":
            raise Hangup("stall")
        data = self.sock.recv(65536)
        if not data:
            raise Hangup("client")
        self.buf += data
        self.segments.append([len(data), self.replies])

    def take(self, n):
        """Remove n bytes from the front of buf; returns them and the
        replies_before of the recv that brought the last of them."""
        out = bytes(self.buf[:n])
        del self.buf[:n]
        tag = self.replies
        while n > 0 and self.segments:
            seg = self.segments[0]
            tag = seg[1]
            used = min(n, seg[0])
            seg[0] -= used
            n -= used
            if seg[0] == 0:
                self.segments.pop(0)
        return out, tag

    def read_line(self):
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                return self.take(i + 1)
            self.recv_more()

    def read_exact(self, n):
        while len(self.buf) < n:
            self.recv_more()
        return self.take(n)[0]

    def command(self):
        raw, tag = self.read_line()
        line = raw.rstrip(b"\r\n").decode("latin-1")
        self.log.add(self.id, "command", line=line, replies_before=tag)
        return line

    # ---- output ----

    def step(self, stage):
        """The script's entry for the next use of stage, or None."""
        spec = self.cfg.get(stage)
        k = self.uses.get(stage, 0)
        self.uses[stage] = k + 1
        if isinstance(spec, list):
            return spec[min(k, len(spec) - 1)] if spec else None
        return spec

    def send(self, text):
        data = "".join(line + "\r\n" for line in text.split("\n")).encode("utf-8")
        self.replies += 1
        self.sock.sendall(data)

    def answer(self, stage, default):
        """Answer from the script (or with default). Returns the reply text
        sent, or None when the script said not to reply."""
        spec = self.step(stage)
        if spec is None:
            spec = {}
        if isinstance(spec, str):
            spec = {"reply": spec}
        action = spec.get("action")
        if action == "close":
            raise Hangup("server")
        if action in ("hang", "stall"):
            self.hanging = action
            return None
        if spec.get("delay"):
            time.sleep(float(spec["delay"]))
        text = spec.get("reply", default)
        if text is None:
            text = default
        self.send(text)
        if spec.get("close"):
            raise Hangup("server")
        return text

    def body_arrives(self):
        """Message data is about to be read: the "body" stage's action."""
        spec = self.step("body")
        if isinstance(spec, dict):
            if spec.get("action") == "close":
                raise Hangup("server")
            if spec.get("action") == "stall":
                self.hanging = "stall"
                raise Hangup("stall")
            if spec.get("delay"):
                time.sleep(float(spec["delay"]))

    # ---- the session ----

    def run(self):
        greeting = "220 %s %s scripted" % (self.host, "LMTP" if self.lmtp else "ESMTP")
        self.answer("greeting", greeting)
        while True:
            line = self.command()
            if self.hanging:
                continue
            verb, _, arg = line.partition(" ")
            handler = getattr(self, "cmd_" + verb.upper(), None)
            if handler is None:
                self.send("502 5.5.2 Error: command not recognized")
            elif handler(arg) == "quit":
                return

    def ehlo_reply(self):
        lines = [self.host] + list(self.cfg.get("extensions", []))
        return "\n".join("250%s%s" % ("-" if i < len(lines) - 1 else " ", l)
                         for i, l in enumerate(lines))

    def cmd_EHLO(self, arg):
        if self.lmtp:
            self.send("500 5.5.1 Error: this is LMTP, use LHLO")
            return
        self.reset_txn()
        self.answer("ehlo", self.ehlo_reply())

    def cmd_HELO(self, arg):
        if self.lmtp:
            self.send("500 5.5.1 Error: this is LMTP, use LHLO")
            return
        self.reset_txn()
        self.answer("helo", "250 " + self.host)

    def cmd_LHLO(self, arg):
        if not self.lmtp:
            self.send("502 5.5.2 Error: command not recognized")
            return
        self.reset_txn()
        self.answer("lhlo", self.ehlo_reply())

    def auth_response(self, challenge):
        self.send(challenge)
        raw, _ = self.read_line()
        text = raw.rstrip(b"\r\n")
        return None if text == b"*" else b64decode(text)

    def cmd_AUTH(self, arg):
        parts = arg.split()
        mech = parts[0].upper() if parts else ""
        if mech == "PLAIN":
            resp = b64decode(parts[1]) if len(parts) > 1 else self.auth_response("334 ")
            if resp is None:
                self.send("501 5.7.0 Authentication cancelled")
                return
            fields = resp.split(b"\0")
            user = fields[1] if len(fields) == 3 else b""
            secret = fields[2] if len(fields) == 3 else b""
        elif mech == "LOGIN":
            user = b64decode(parts[1]) if len(parts) > 1 else self.auth_response("334 VXNlcm5hbWU6")
            secret = self.auth_response("334 UGFzc3dvcmQ6") if user is not None else None
            if user is None or secret is None:
                self.send("501 5.7.0 Authentication cancelled")
                return
        else:
            self.send("504 5.5.4 Unrecognized authentication type")
            return
        self.log.add(self.id, "auth", mechanism=mech, user=user.decode("latin-1"),
                     secret=secret.decode("latin-1"))
        self.answer("auth", "235 2.7.0 Authentication successful")

    def cmd_MAIL(self, arg):
        if self.mail_from is not None:
            self.send("503 5.5.1 Error: nested MAIL command")
            return
        reply = self.answer("mail", "250 2.1.0 Ok")
        if reply is not None and reply.startswith("2"):
            self.mail_from = angle_addr(arg)
            self.rcpts = []

    def cmd_RCPT(self, arg):
        if self.mail_from is None:
            self.send("503 5.5.1 Error: need MAIL command")
            return
        reply = self.answer("rcpt", "250 2.1.5 Ok")
        if reply is not None and reply.startswith("2"):
            self.rcpts.append(angle_addr(arg))

    def no_transaction(self):
        if self.mail_from is None:
            return "503 5.5.1 Error: need MAIL command"
        if not self.rcpts:
            return "554 5.5.1 Error: no valid recipients"
        return None

    def finish_message(self, via, data):
        self.log.add(self.id, "message", via=via, mail_from=self.mail_from, rcpts=self.rcpts,
                     data=data.decode("latin-1"))
        for _ in (self.rcpts if self.lmtp else [None]):
            if self.answer("final", "250 2.0.0 Ok: queued") is None:
                break
        self.reset_txn()

    def cmd_DATA(self, arg):
        refusal = self.no_transaction()
        if refusal:
            self.send(refusal)
            return
        reply = self.answer("data", "354 End data with <CR><LF>.<CR><LF>")
        if reply is None or not reply.startswith("354"):
            return
        self.body_arrives()
        data = bytearray()
        while True:
            raw, _ = self.read_line()
            if raw == b".\r\n":
                break
            data += raw[1:] if raw.startswith(b".") else raw
        self.finish_message("DATA", bytes(data))

    def cmd_BDAT(self, arg):
        parts = arg.split()
        try:
            size = int(parts[0])
            last = len(parts) > 1 and parts[1].upper() == "LAST"
        except (IndexError, ValueError):
            self.send("501 5.5.4 Syntax: BDAT size [LAST]")
            return
        refusal = self.no_transaction()
        if not refusal:
            self.body_arrives()
        chunk = self.read_exact(size)
        if refusal:
            self.send(refusal)
            return
        self.bdat_data += chunk
        if not last:
            self.answer("bdat", "250 2.0.0 Ok: %d octets received" % size)
            return
        self.finish_message("BDAT", self.bdat_data)

    def cmd_RSET(self, arg):
        self.reset_txn()
        self.answer("rset", "250 2.0.0 Ok")

    def cmd_NOOP(self, arg):
        self.answer("noop", "250 2.0.0 Ok")

    def cmd_STARTTLS(self, arg):
        self.answer("starttls", "454 4.7.0 TLS not available")

    def cmd_QUIT(self, arg):
        self.answer("quit", "221 2.0.0 Bye")
        raise Hangup("server")


def b64decode(text):
    """Base64 as AUTH sends it; undecodable text counts as empty."""
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        return b""


def angle_addr(arg):
    """The address inside <...> of "FROM:<a@b> SIZE=1" / "TO:<c@d>"."""
    start, end = arg.find("<"), arg.find(">")
    return arg[start + 1:end] if 0 <= start < end else arg


def serve_connection(sock, conn_id, script, log):
    peer = sock.getpeername()
    log.add(conn_id, "connect", peer=peer[0], port=peer[1])
    session = Session(sock, conn_id, script, log)
    by = "client"
    try:
        session.run()
    except Hangup as e:
        by = str(e)
    except OSError:
        by = "client"
    if by == "stall":
        # Keep the socket open and unread until the process ends.
        threading.Event().wait()
    try:
        sock.close()
    finally:
        log.add(conn_id, "disconnect", by=by)


def load_script(text):
    source = text if text.lstrip().startswith("{") else open(text, encoding="utf-8").read()
    script = json.loads(source)
    if not isinstance(script, dict):
        raise ValueError("the script must be a JSON object")
    for level in [script] + list(script.get("connections", [])):
        unknown = set(level) - KEYS - ({"connections"} if level is script else set())
        if unknown:
            raise ValueError("unknown script keys: %s" % ", ".join(sorted(unknown)))
    return script


def for_connection(script, n):
    merged = {k: v for k, v in script.items() if k != "connections"}
    conns = script.get("connections", [])
    if n <= len(conns):
        merged.update(conns[n - 1])
    return merged


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--script", required=True, help="the script: a file, or JSON text starting with '{'")
    ap.add_argument("--log", required=True, help="where to write the JSON event log")
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    ap.add_argument("--port", type=int, default=0, help="port to listen on (default 0: any free)")
    args = ap.parse_args()
    try:
        script = load_script(args.script)
    except (OSError, ValueError) as e:
        print("scripted_smtp: %s" % e, file=sys.stderr)
        return 2
    log = Log(args.log)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    listener = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((args.host, args.port))
    listener.listen(64)
    print(listener.getsockname()[1], flush=True)
    n = 0
    while True:
        sock, _ = listener.accept()
        n += 1
        threading.Thread(target=serve_connection, args=(sock, n, for_connection(script, n), log),
                         daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
