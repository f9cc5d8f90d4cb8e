"""DNSSEC-signed test zones and trust anchors, for the DANE tests.

    signed = SignedZone(workdir, "d.example", records)
    with Nsd(ns, {"d.example": signed.text}):
        ...   # tern with resolver.dnssec.trust-anchor = file://<anchor file>
    write_anchors(path, [signed.anchor])

A SignedZone is made with ldns (Debian package ldnsutils): a KSK and a ZSK
(ECDSA P-256, algorithm 13) from `ldns-keygen`, the zone text of nsd.zone()
signed by `ldns-signzone` with NSEC, signatures valid from a day ago for
four weeks. Its `anchor` is the KSK's DNSKEY record, which libunbound takes
as a trust anchor (ub_ctx_add_ta_file), so the zone's apex is where the
chain of trust starts: no parent zone is needed.

`wrong_anchor` is the DNSKEY of a key that signed nothing: an anchor file
naming it for a zone makes every answer from that zone bogus.

tlsa_*(): the association data of TLSA records for a certificate file, by
the `openssl` command.
"""
import datetime
import hashlib
import os
import shutil
import subprocess

import pytest

from nsd import zone


def _ldns(*argv, cwd):
    if shutil.which(argv[0]) is None:
        pytest.skip("%s is not installed (Debian package ldnsutils)" % argv[0])
    r = subprocess.run(list(argv), cwd=cwd, capture_output=True, text=True, check=True)
    return r.stdout.strip()


def _dnskey_line(keydir, base):
    with open(os.path.join(keydir, base + ".key")) as f:
        # "d.example.\tIN\tDNSKEY\t257 3 13 ... ;{id = ...}": the comment goes.
        return f.read().split(";")[0].strip()


class SignedZone:
    """origin's zone (records as for nsd.zone), signed; .text is the
    signed zone file, .anchor the DNSKEY line of its KSK."""

    def __init__(self, workdir, origin, records=(), ttl=300):
        origin = origin.rstrip(".")
        self.dir = os.path.join(str(workdir), "dnssec-" + origin)
        os.makedirs(self.dir, exist_ok=True)
        ksk = _ldns("ldns-keygen", "-a", "ECDSAP256SHA256", "-k", origin, cwd=self.dir)
        zsk = _ldns("ldns-keygen", "-a", "ECDSAP256SHA256", origin, cwd=self.dir)
        spare = _ldns("ldns-keygen", "-a", "ECDSAP256SHA256", "-k", origin, cwd=self.dir)
        unsigned = os.path.join(self.dir, origin + ".zone")
        with open(unsigned, "w") as f:
            f.write(zone(origin, records, ttl=ttl))
        now = datetime.datetime.now(datetime.timezone.utc)
        fmt = "%Y%m%d%H%M%S"
        _ldns("ldns-signzone", "-i", (now - datetime.timedelta(days=1)).strftime(fmt),
              "-e", (now + datetime.timedelta(days=28)).strftime(fmt),
              "-f", unsigned + ".signed", unsigned, ksk, zsk, cwd=self.dir)
        with open(unsigned + ".signed") as f:
            self.text = f.read()
        self.anchor = _dnskey_line(self.dir, ksk)
        self.wrong_anchor = _dnskey_line(self.dir, spare)


def write_anchors(path, anchors):
    """A trust anchor file (one DNSKEY or DS record per line)."""
    with open(path, "w") as f:
        f.write("\n".join(anchors) + "\n")
    return path


def _der(args):
    return subprocess.run(args, capture_output=True, check=True).stdout


def cert_der(cert_file):
    return _der(["openssl", "x509", "-in", cert_file, "-outform", "DER"])


def spki_der(cert_file):
    pem = subprocess.run(["openssl", "x509", "-in", cert_file, "-noout", "-pubkey"],
                         capture_output=True, check=True).stdout
    return subprocess.run(["openssl", "pkey", "-pubin", "-outform", "DER"], input=pem,
                          capture_output=True, check=True).stdout


def tlsa(usage, selector, mtype, cert_file):
    """The rdata text of a TLSA record for cert_file: "3 1 1 <hex>"."""
    data = spki_der(cert_file) if selector == 1 else cert_der(cert_file)
    if mtype == 1:
        data = hashlib.sha256(data).digest()
    elif mtype == 2:
        data = hashlib.sha512(data).digest()
    return "%d %d %d %s" % (usage, selector, mtype, data.hex())
