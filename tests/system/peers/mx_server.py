#!/usr/bin/env python3
"""SMTP servers standing in for a domain's MX hosts, for MX delivery tests.

Run inside a test network namespace (tests/system/netns.py), it listens on
port 25 (or any port) of several addresses at once, each with a behaviour
of its own, and logs every connection with the peer's address, so a test
can check which source address tern bound and in which order it tried the
MX hosts' addresses. tests/system/mxpeer.py wraps it.

usage: mx_server.py --config FILE.json --log LOG.jsonl --maildir DIR

THE CONFIG: a JSON list of listeners (or {"listeners": [...]}):

  [{"addr": "127.0.0.10", "port": 25, "mode": "accept"},
   {"addr": "fd00:7e57::1", "mode": "greet-554"}, ...]

  addr      an IPv4 or IPv6 address (IPv6 is bound AF_INET6, IPV6_V6ONLY)
  port      default 25
  mode      default "accept":
    accept      a small but correct ESMTP server: 220 greeting; EHLO (with
                PIPELINING, 8BITMIME, SIZE), HELO, MAIL, RCPT, DATA (dot-
                unstuffed), RSET, NOOP, QUIT; 250 for everything valid, the
                usual 5xx for what is not (503 bad sequence, 501 syntax, 502
                unknown command, 552 over SIZE). Each message is stored.
    greet-554   greets "554 5.7.1 no service here" and closes
    greet-421   greets "421 4.3.2 try later" and closes
    ehlo-550    greets 220, then 550 to EHLO and HELO (else as accept)
    rcpt-550    as accept, but "550 5.1.1 ..." to every RCPT
    hang        accepts the connection and never sends anything (reads and
                discards what comes until the client goes away)
    starttls    as accept, and offers STARTTLS with the listener's "cert" and
                "key" (PEM files); after the handshake the session starts
                over (RFC 3207) and STARTTLS is no longer offered
  hostname  the name in the greeting and EHLO reply (default mx-<addr>)
  size      the SIZE limit advertised and enforced (default 10485760)
  cert, key for mode starttls: the certificate chain and its key

Prints "ready" on stdout once every listener is bound and listening. SIGTERM
closes the listeners and every connection and exits 0.

THE LOG (--log): one JSON object a line, appended and flushed as it happens.
Every event has "conn" (1, 2, ... in accept order across all listeners),
"local", "local_port", "peer", "peer_port", "mode" and "time" (epoch
seconds):

  {"event": "connect", ...}
  {"event": "command", "line": "EHLO client.test", ...}
        each command line as received (not the message data)
  {"event": "tls", "version": "TLSv1.3", "cipher": "TLS_AES_256_GCM_SHA384", ...}
        a STARTTLS handshake that completed
  {"event": "message", "mail_from": "a@b", "rcpts": ["c@d", ...],
   "helo": "the EHLO/HELO argument", "file": "DIR/msg-1.eml",
   "data_offset": N, "size": N, "tls": true or false, ...}
  {"event": "disconnect", "by": "client", "server" or "shutdown", ...}
        who closed the connection ("shutdown": this server, on SIGTERM)

THE MAILDIR (--maildir): each message is one file, msg-<n>.eml: its
envelope as header lines (X-Envelope-Peer, X-Envelope-Helo,
X-Envelope-From, one X-Envelope-To a recipient), then the message as
received, dot-unstuffed; the message starts at byte data_offset.
"""
import argparse
import asyncio
import ipaddress
import itertools
import json
import os
import re
import signal
import socket
import ssl
import sys
import time

MODES = ("accept", "greet-554", "greet-421", "ehlo-550", "rcpt-550", "hang", "starttls")
DEFAULT_SIZE = 10 * 1024 * 1024
MAX_LINE = 1024 * 1024
PATH_RE = re.compile(r"^(FROM|TO):\s*<([^<>]*)>(.*)$", re.IGNORECASE)


class Log:
    """The JSON-lines event log, flushed after every line."""

    def __init__(self, path):
        self.f = open(path, "a", encoding="utf-8")

    def add(self, **record):
        self.f.write(json.dumps(record) + "\n")
        self.f.flush()


class Hangup(Exception):
    """The connection is over; by says who ended it."""

    def __init__(self, by):
        super().__init__(by)
        self.by = by


class Session:
    """One connection to one listener."""

    def __init__(self, server, listener, reader, writer, conn_id):
        self.server = server
        self.mode = listener["mode"]
        self.tls_context = listener.get("tls_context")
        self.tls = False
        self.host = listener.get("hostname") or "mx-" + listener["addr"]
        self.size = int(listener.get("size", DEFAULT_SIZE))
        self.reader = reader
        self.writer = writer
        local = writer.get_extra_info("sockname")
        peer = writer.get_extra_info("peername")
        self.where = {"conn": conn_id, "local": local[0], "local_port": local[1],
                      "peer": peer[0], "peer_port": peer[1], "mode": self.mode}
        self.helo = None
        self.reset()

    def reset(self):
        self.mail_from = None
        self.rcpts = []

    def log(self, event, **fields):
        self.server.log.add(event=event, **self.where, time=time.time(), **fields)

    # ---- input and output ----

    async def read_line(self):
        try:
            raw = await self.reader.readuntil(b"\n")
        except asyncio.IncompleteReadError:
            raise Hangup("client")
        except asyncio.LimitOverrunError:
            await self.send("500 5.5.2 Error: line too long")
            raise Hangup("server")
        except ConnectionError:
            raise Hangup("client")
        return raw

    async def send(self, text):
        self.writer.write("".join(l + "\r\n" for l in text.split("\n")).encode("utf-8"))
        try:
            await self.writer.drain()
        except ConnectionError:
            raise Hangup("client")

    # ---- the session ----

    async def run(self):
        self.log("connect")
        by = "server"
        try:
            await self.converse()
        except Hangup as h:
            by = h.by
        except ConnectionError:
            by = "client"
        if self.server.closing:
            by = "shutdown"
        self.log("disconnect", by=by)

    async def converse(self):
        if self.mode == "hang":
            while True:
                if not await self.reader.read(65536):
                    raise Hangup("client")
        if self.mode == "greet-554":
            await self.send("554 5.7.1 no service here")
            raise Hangup("server")
        if self.mode == "greet-421":
            await self.send("421 4.3.2 try later")
            raise Hangup("server")
        await self.send("220 %s ESMTP mx_server" % self.host)
        while True:
            line = (await self.read_line()).rstrip(b"\r\n").decode("utf-8", "replace")
            self.log("command", line=line)
            verb, _, arg = line.partition(" ")
            handler = getattr(self, "cmd_" + verb.upper(), None)
            if handler is None:
                await self.send("502 5.5.2 Error: command not recognized")
            else:
                await handler(arg.strip())

    async def cmd_EHLO(self, arg):
        if self.mode == "ehlo-550":
            await self.send("550 5.7.1 EHLO refused here")
            return
        if not arg:
            await self.send("501 5.5.4 Syntax: EHLO hostname")
            return
        self.helo = arg
        self.reset()
        lines = [self.host, "PIPELINING", "8BITMIME", "SIZE %d" % self.size]
        if self.tls_context is not None and not self.tls:
            lines.append("STARTTLS")
        await self.send("\n".join("250%s%s" % ("-" if i < len(lines) - 1 else " ", l)
                                  for i, l in enumerate(lines)))

    async def cmd_HELO(self, arg):
        if self.mode == "ehlo-550":
            await self.send("550 5.7.1 HELO refused here")
            return
        if not arg:
            await self.send("501 5.5.4 Syntax: HELO hostname")
            return
        self.helo = arg
        self.reset()
        await self.send("250 " + self.host)

    async def cmd_STARTTLS(self, arg):
        if self.tls_context is None or self.tls:
            await self.send("502 5.5.2 Error: command not recognized")
            return
        await self.send("220 2.0.0 Ready to start TLS")
        try:
            await self.writer.start_tls(self.tls_context)
        except (ssl.SSLError, ConnectionError, OSError):
            raise Hangup("client")
        self.tls = True
        self.helo = None  # RFC 3207 4.2: the session starts over
        self.reset()
        ssl_object = self.writer.get_extra_info("ssl_object")
        self.log("tls", version=ssl_object.version(), cipher=ssl_object.cipher()[0])

    async def cmd_MAIL(self, arg):
        if self.helo is None:
            await self.send("503 5.5.1 Error: send HELO/EHLO first")
            return
        if self.mail_from is not None:
            await self.send("503 5.5.1 Error: nested MAIL command")
            return
        m = PATH_RE.match(arg)
        if not m or m.group(1).upper() != "FROM":
            await self.send("501 5.5.4 Syntax: MAIL FROM:<address>")
            return
        for param in m.group(3).split():
            key, _, value = param.partition("=")
            if key.upper() == "SIZE" and value.isdigit() and int(value) > self.size:
                await self.send("552 5.3.4 Message size exceeds fixed limit")
                return
        self.mail_from = m.group(2)
        self.rcpts = []
        await self.send("250 2.1.0 Ok")

    async def cmd_RCPT(self, arg):
        if self.mail_from is None:
            await self.send("503 5.5.1 Error: need MAIL command")
            return
        m = PATH_RE.match(arg)
        if not m or m.group(1).upper() != "TO" or not m.group(2):
            await self.send("501 5.5.4 Syntax: RCPT TO:<address>")
            return
        if self.mode == "rcpt-550":
            await self.send("550 5.1.1 <%s>: Recipient address rejected: no such user here"
                            % m.group(2))
            return
        self.rcpts.append(m.group(2))
        await self.send("250 2.1.5 Ok")

    async def cmd_DATA(self, arg):
        if arg:
            await self.send("501 5.5.4 Syntax: DATA")
            return
        if self.mail_from is None:
            await self.send("503 5.5.1 Error: need MAIL command")
            return
        if not self.rcpts:
            await self.send("554 5.5.1 Error: no valid recipients")
            return
        await self.send("354 End data with <CR><LF>.<CR><LF>")
        data = bytearray()
        while True:
            raw = await self.read_line()
            if raw in (b".\r\n", b".\n"):
                break
            data += raw[1:] if raw.startswith(b".") else raw
        if len(data) > self.size:
            self.reset()
            await self.send("552 5.3.4 Message size exceeds fixed limit")
            return
        path = self.server.store(self, bytes(data))
        self.reset()
        await self.send("250 2.0.0 Ok: queued as %s" % os.path.basename(path))

    async def cmd_RSET(self, arg):
        self.reset()
        await self.send("250 2.0.0 Ok")

    async def cmd_NOOP(self, arg):
        await self.send("250 2.0.0 Ok")

    async def cmd_QUIT(self, arg):
        await self.send("221 2.0.0 Bye")
        raise Hangup("server")


class Server:
    """Every listener, the log, the maildir and the open connections."""

    def __init__(self, listeners, log, maildir):
        self.listeners = listeners
        self.log = log
        self.maildir = maildir
        self.conn_ids = itertools.count(1)
        self.msg_ids = itertools.count(1)
        self.servers = []
        self.writers = set()
        self.closing = False

    def store(self, session, data):
        """Write one message with its envelope; log it; returns the path."""
        path = os.path.join(self.maildir, "msg-%d.eml" % next(self.msg_ids))
        envelope = ["X-Envelope-Peer: %s" % session.where["peer"],
                    "X-Envelope-Helo: %s" % session.helo,
                    "X-Envelope-From: <%s>" % session.mail_from]
        envelope += ["X-Envelope-To: <%s>" % r for r in session.rcpts]
        head = "".join(l + "\r\n" for l in envelope).encode("utf-8")
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(head + data)
        os.replace(tmp, path)
        session.log("message", mail_from=session.mail_from, rcpts=list(session.rcpts),
                    helo=session.helo, file=path, data_offset=len(head), size=len(data),
                    tls=session.tls)
        return path

    async def start(self):
        for listener in self.listeners:
            addr = str(ipaddress.ip_address(listener["addr"]))
            listener["addr"] = addr
            listener.setdefault("mode", "accept")
            if listener["mode"] not in MODES:
                raise SystemExit("unknown mode %r (one of %s)" % (listener["mode"], ", ".join(MODES)))
            if listener["mode"] == "starttls":
                ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
                ctx.load_cert_chain(listener["cert"], listener["key"])
                listener["tls_context"] = ctx
            v6 = ":" in addr
            sock = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if v6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((addr, int(listener.get("port", 25))))
            server = await asyncio.start_server(
                lambda r, w, l=listener: self.serve(l, r, w), sock=sock, limit=MAX_LINE,
                backlog=128)
            self.servers.append(server)

    async def serve(self, listener, reader, writer):
        self.writers.add(writer)
        try:
            await Session(self, listener, reader, writer, next(self.conn_ids)).run()
        finally:
            self.writers.discard(writer)
            writer.close()

    def close(self):
        self.closing = True
        for server in self.servers:
            server.close()
        for writer in list(self.writers):
            writer.close()


async def main_async(args):
    with open(args.config) as f:
        config = json.load(f)
    listeners = config["listeners"] if isinstance(config, dict) else config
    os.makedirs(args.maildir, exist_ok=True)
    server = Server(listeners, Log(args.log), args.maildir)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("ready", flush=True)
    await stop.wait()
    server.close()
    # Let the sessions notice their closed connections and log it.
    await asyncio.sleep(0.05)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--maildir", required=True)
    asyncio.run(main_async(ap.parse_args()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
