"""TLS for tern's system tests: a test PKI made with the `openssl` command,
and tests/system/peers/tls_smtp.py (aiosmtpd with TLS) started and stopped
by its PID.

    pki = Pki(tmp_path)
    good = pki.issue("localhost", ["DNS:localhost", "IP:127.0.0.1"])
    with TlsSmtp(tmp_path, "starttls", good) as peer:
        ...   # tern with env={"SSL_CERT_FILE": pki.ca} trusts good
        assert peer.commands(1)[:2] == ["EHLO tern.test", "STARTTLS"]

Certificates are P-256 keys, valid for two days from now. A Pki has two
CAs: `ca`, which issues, and `other_ca`, which issues nothing (point
SSL_CERT_FILE at it for a trust store that knows none of the test's
certificates).
"""
import json
import os
import subprocess

from peers import REPO, stop_pid

TLS_SMTP = os.path.join(REPO, "tests/system/peers/tls_smtp.py")

# Without a configuration file of its own, `openssl req` would add the
# system's v3_ca extensions (CA:TRUE) to every certificate it makes.
OPENSSL_CNF = "[req]\ndistinguished_name = dn\n[dn]\n"


class Cert:
    """A certificate file and its key file."""

    def __init__(self, cert, key):
        self.cert = cert
        self.key = key


class Pki:
    """The test's CAs and the certificates they issue, in workdir/pki."""

    def __init__(self, workdir):
        self.dir = os.path.join(str(workdir), "pki")
        os.makedirs(self.dir, exist_ok=True)
        self.cnf = os.path.join(self.dir, "openssl.cnf")
        with open(self.cnf, "w") as f:
            f.write(OPENSSL_CNF)
        self.ca = self._make_ca("ca").cert
        self._ca_key = os.path.join(self.dir, "ca.key")
        self.other_ca = self._make_ca("other-ca").cert

    def _req(self, name, subject, extensions, signer=None):
        cert = os.path.join(self.dir, name + ".pem")
        key = os.path.join(self.dir, name + ".key")
        argv = ["openssl", "req", "-config", self.cnf, "-x509", "-newkey", "ec",
                "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
                "-keyout", key, "-out", cert, "-subj", subject]
        if signer is not None:
            argv += ["-CA", signer[0], "-CAkey", signer[1]]
        for ext in extensions:
            argv += ["-addext", ext]
        subprocess.run(argv, check=True, capture_output=True)
        return Cert(cert, key)

    def _make_ca(self, name):
        return self._req(name, "/CN=tern test %s" % name,
                         ["basicConstraints=critical,CA:TRUE",
                          "keyUsage=critical,keyCertSign,cRLSign"])

    def issue(self, cn, san, name=None):
        """A certificate for cn with the subjectAltName entries san
        ("DNS:localhost", "IP:127.0.0.1"), signed by the test CA."""
        return self._req(name or cn, "/CN=" + cn, self._leaf_ext(san),
                         signer=(self.ca, self._ca_key))

    def self_signed(self, cn, san, name=None):
        """A certificate for cn signed by its own key."""
        return self._req(name or cn + "-self", "/CN=" + cn, self._leaf_ext(san))

    @staticmethod
    def _leaf_ext(san):
        return ["basicConstraints=critical,CA:FALSE", "subjectAltName=" + ",".join(san)]


class TlsSmtp:
    """tls_smtp.py in one of its modes, with its log in workdir."""

    def __init__(self, workdir, mode, cert=None):
        self.log_path = os.path.join(str(workdir), "tls-smtp-%s-%d.jsonl" % (mode, id(self)))
        self.argv = ["/usr/bin/python3", TLS_SMTP, "--mode", mode, "--log", self.log_path]
        if cert is not None:
            self.argv += ["--cert", cert.cert, "--key", cert.key]
        self.proc = None
        self.port = None

    def start(self):
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        line = self.proc.stdout.readline()
        if not line.strip().isdigit():
            stop_pid(self.proc)
            raise RuntimeError("tls_smtp.py did not start: " + self.proc.stderr.read())
        self.port = int(line)
        return self

    def stop(self):
        stop_pid(self.proc)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def events(self, event=None, conn=None):
        """Logged events, of one type and one connection if asked."""
        try:
            with open(self.log_path, encoding="utf-8") as f:
                records = [json.loads(l) for l in f if l.endswith("\n")]
        except FileNotFoundError:
            return []
        return [r for r in records
                if (event is None or r["event"] == event) and (conn is None or r["conn"] == conn)]

    def commands(self, conn):
        """The command lines of connection conn, in order."""
        return [e["line"] for e in self.events("command", conn)]

    def connections(self):
        """The connection numbers seen so far."""
        return [e["conn"] for e in self.events("connect")]
