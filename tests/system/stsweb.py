"""MTA-STS policy hosts for tern's system tests: nginx serving
https://mta-sts.<domain>/.well-known/mta-sts.txt inside a test network
namespace (netns.NetNs), started and stopped by PID.

    web = StsWeb(ns, workdir, pki)
    web.site("a.example", "127.0.0.50", policy("enforce", ["mx.a.example"]))
    web.site("b.example", "127.0.0.51", None)                     # 404
    web.site("c.example", "127.0.0.52", text, content_type="application/json")
    web.site("d.example", "127.0.0.53", redirect="https://elsewhere/")
    with web:
        ...
        web.set_policy("a.example", policy("testing", [...]))   # served at once

Each site listens on its own address, port 443, with a certificate from
the test's CA for mta-sts.<domain>; the zone must give mta-sts.<domain> an
A record with that address. nginx runs in the foreground (`daemon off`),
as root (so its worker can read pytest's folders), with every file it
writes in its own folder; stop() sends SIGTERM to the master by PID and
waits, and close() of the namespace kills whatever is left.
"""
import os
import shutil
import subprocess
import tempfile
import time

import pytest

from peers import stop_pid


def policy(mode, mx, max_age=86400, crlf=False):
    """The text of a policy file."""
    lines = ["version: STSv1", "mode: %s" % mode] + ["mx: %s" % m for m in mx] + \
            ["max_age: %d" % max_age]
    eol = "\r\n" if crlf else "\n"
    return eol.join(lines) + eol


class StsWeb:
    def __init__(self, netns, workdir, pki):
        self.netns = netns
        self.pki = pki
        self.sites = {}
        self.base = tempfile.mkdtemp(prefix="tern-stsweb-", dir=str(workdir))
        self.proc = None

    def site(self, domain, addr, text, content_type="text/plain; charset=utf-8", redirect=None):
        """Serve text (None: 404) for domain on addr:443; redirect: a 301 there instead."""
        host = "mta-sts." + domain
        cert = self.pki.issue(host, ["DNS:" + host])
        self.sites[domain] = {"addr": addr, "cert": cert, "ctype": content_type,
                              "redirect": redirect}
        os.makedirs(os.path.join(self.base, "www", domain, ".well-known"), exist_ok=True)
        self.set_policy(domain, text)

    def set_policy(self, domain, text):
        """Replace what is served for domain (None: 404 from now on)."""
        path = os.path.join(self.base, "www", domain, ".well-known", "mta-sts.txt")
        if text is None:
            if os.path.exists(path):
                os.unlink(path)
            return
        tmp = path + ".tmp"
        with open(tmp, "w", newline="") as f:
            f.write(text)
        os.rename(tmp, path)

    def _conf(self):
        b = self.base
        out = ["daemon off;", "master_process on;", "worker_processes 1;", "user root;",
               "pid %s/nginx.pid;" % b, "error_log %s/error.log info;" % b,
               "events { worker_connections 64; }", "http {",
               "  access_log %s/access.log;" % b,
               "  client_body_temp_path %s/tmp-body;" % b,
               "  proxy_temp_path %s/tmp-proxy;" % b,
               "  fastcgi_temp_path %s/tmp-fastcgi;" % b,
               "  uwsgi_temp_path %s/tmp-uwsgi;" % b,
               "  scgi_temp_path %s/tmp-scgi;" % b]
        for domain, s in self.sites.items():
            out += ["  server {",
                    "    listen %s:443 ssl;" % s["addr"],
                    "    server_name mta-sts.%s;" % domain,
                    "    ssl_certificate %s;" % s["cert"].cert,
                    "    ssl_certificate_key %s;" % s["cert"].key,
                    "    root %s/www/%s;" % (b, domain),
                    "    location = /.well-known/mta-sts.txt {"]
            if s["redirect"]:
                out.append("      return 301 %s;" % s["redirect"])
            else:
                out += ["      types { }", '      default_type "%s";' % s["ctype"]]
            out += ["    }", "  }"]
        out.append("}")
        return "\n".join(out) + "\n"

    def start(self, timeout=15.0):
        if shutil.which("nginx") is None:
            pytest.skip("nginx is not installed (Debian package nginx-light)")
        conf = os.path.join(self.base, "nginx.conf")
        with open(conf, "w") as f:
            f.write(self._conf())
        self.out = open(os.path.join(self.base, "nginx.out"), "wb")
        self.proc = self.netns.popen(["nginx", "-e", os.path.join(self.base, "error.log"),
                                      "-p", self.base, "-c", conf],
                                     stdout=self.out, stderr=subprocess.STDOUT)
        try:
            for s in self.sites.values():
                self.netns.wait_port(s["addr"], 443, timeout=timeout, proc=self.proc)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self):
        """SIGTERM to the master by PID (it stops its worker), then wait."""
        if self.proc is not None:
            stop_pid(self.proc)
            self.proc = None
            self.out.close()

    def requests(self):
        """The access log's lines so far."""
        try:
            with open(os.path.join(self.base, "access.log")) as f:
                return f.read().splitlines()
        except FileNotFoundError:
            return []

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
