#!/usr/bin/env python3
"""An SMTP server with TLS for tests of tern's outbound TLS: aiosmtpd
(Debian's python3-aiosmtpd) with STARTTLS or implicit TLS, and the broken
servers real ones cannot be made into.

It listens on 127.0.0.1 (port 0 = any free port), prints the port on stdout
as one line when ready, takes mail in every mode that gets that far, and
logs what it sees, so a test can check whether a client said STARTTLS and
what the TLS session was. Stop it with SIGTERM.

usage: tls_smtp.py --mode MODE --log LOG.jsonl [--cert PEM --key PEM]
                   [--host H] [--port N] [--hostname NAME]

MODES (every mode but plain needs --cert and --key: the chain and its key)

  plain      ESMTP without STARTTLS
  starttls   offers STARTTLS; takes mail with or without it
  require    offers STARTTLS and refuses MAIL before it (530, aiosmtpd's
             require_starttls)
  implicit   TLS from the first byte (port 465 style), then ESMTP inside
  broken     offers STARTTLS, answers it 220, reads the first bytes of the
             handshake, answers them with bytes that are not TLS, and closes
  stall      offers STARTTLS, answers it 220, then never answers the handshake
  refuse     offers STARTTLS and answers it "454 4.7.0 TLS not available now"

THE LOG (--log): one JSON object a line, appended and flushed as it happens.
Every event has "conn" (1, 2, ... in accept order) and "event":

  {"event": "connect", "peer": "127.0.0.1"}
  {"event": "command", "line": "EHLO tern.test"}   every command line (not data)
  {"event": "tls", "version": "TLSv1.3", "cipher": "TLS_AES_256_GCM_SHA384",
   "sni": "localhost" or null}                      a handshake that completed
  {"event": "message", "mail_from": "a@b", "rcpts": ["c@d"], "tls": true,
   "data": "the message as latin-1 text"}
  {"event": "disconnect"}
"""
import argparse
import asyncio
import functools
import itertools
import json
import signal
import ssl
import sys

from aiosmtpd.smtp import SMTP

MODES = ("plain", "starttls", "require", "implicit", "broken", "stall", "refuse")
LOGGED_VERBS = ("EHLO", "HELO", "STARTTLS", "MAIL", "RCPT", "DATA", "RSET", "NOOP", "QUIT")


class Log:
    """The JSON-lines event log, flushed after every line."""

    def __init__(self, path):
        self.f = open(path, "a", encoding="utf-8")

    def add(self, conn, event, **fields):
        self.f.write(json.dumps(dict(conn=conn, event=event, **fields)) + "\n")
        self.f.flush()


class Handler:
    """aiosmtpd's handler: logs completed handshakes and messages."""

    def __init__(self, log):
        self.log = log

    async def handle_DATA(self, server, session, envelope):
        self.log.add(server.conn_id, "message", mail_from=envelope.mail_from,
                     rcpts=list(envelope.rcpt_tos), tls=server.tls_seen,
                     data=envelope.original_content.decode("latin-1"))
        return "250 2.0.0 Ok: queued"

    def handle_STARTTLS(self, server, session, envelope):
        server.log_tls(session.ssl.get("ssl_object"))
        return True


def logged(verb):
    """smtp_<verb> of aiosmtpd's SMTP, logging the command line first."""
    original = getattr(SMTP, "smtp_" + verb)

    @functools.wraps(original)
    async def wrapper(self, arg):
        self.log.add(self.conn_id, "command", line=verb + (" " + arg if arg else ""))
        return await original(self, arg)
    return wrapper


class Session(SMTP):
    """One connection: aiosmtpd's session, logged, with the mode's twist."""

    conn_ids = itertools.count(1)

    def __init__(self, handler, log, mode, implicit_tls, **kwargs):
        super().__init__(handler, **kwargs)
        self.log = log
        self.mode = mode
        self.implicit_tls = implicit_tls
        self.conn_id = None
        self.tls_seen = False

    def connection_made(self, transport):
        first = self.conn_id is None
        if first:
            self.conn_id = next(self.conn_ids)
            self.log.add(self.conn_id, "connect", peer=transport.get_extra_info("peername")[0])
        super().connection_made(transport)
        if first and self.implicit_tls:
            self.log_tls(transport.get_extra_info("ssl_object"))

    def connection_lost(self, error):
        self.log.add(self.conn_id, "disconnect")
        super().connection_lost(error)

    def log_tls(self, ssl_object):
        self.tls_seen = True
        cipher = ssl_object.cipher() if ssl_object is not None else None
        self.log.add(self.conn_id, "tls",
                     version=ssl_object.version() if ssl_object is not None else None,
                     cipher=cipher[0] if cipher else None,
                     sni=getattr(ssl_object, "server_name_seen", None))

    async def smtp_STARTTLS(self, arg):
        if self.mode == "refuse":
            self.log.add(self.conn_id, "command", line="STARTTLS")
            await self.push("454 4.7.0 TLS not available now")
        elif self.mode in ("broken", "stall"):
            self.log.add(self.conn_id, "command", line="STARTTLS")
            await self.push("220 2.0.0 Ready to start TLS")
            await self._reader.read(1)  # the client's first handshake bytes
            if self.mode == "stall":
                await asyncio.sleep(3600)
            self.transport.write(b"this is not TLS at all\r\n" * 8)
            self.transport.close()
        else:
            await logged("STARTTLS")(self, arg)


for _verb in LOGGED_VERBS:
    if _verb != "STARTTLS":
        setattr(Session, "smtp_" + _verb, logged(_verb))


def tls_context(cert, key):
    """The server side: any client, SNI remembered for the log."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)

    def remember_sni(ssl_object, name, _ctx):
        ssl_object.server_name_seen = name
    ctx.sni_callback = remember_sni
    return ctx


async def serve(args):
    log = Log(args.log)
    handler = Handler(log)
    ctx = tls_context(args.cert, args.key) if args.mode != "plain" else None
    implicit = args.mode == "implicit"

    def factory():
        return Session(handler, log, args.mode, implicit, hostname=args.hostname,
                       tls_context=None if implicit else ctx,
                       require_starttls=args.mode == "require")
    server = await asyncio.get_running_loop().create_server(
        factory, args.host, args.port, ssl=ctx if implicit else None)
    print(server.sockets[0].getsockname()[1], flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mode", required=True, choices=MODES)
    ap.add_argument("--log", required=True)
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--hostname", default="tls-peer.test")
    args = ap.parse_args()
    if args.mode != "plain" and not (args.cert and args.key):
        ap.error("mode %s needs --cert and --key" % args.mode)
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
