"""A full disk answers 452 4.3.1 to the sender and loses nothing: every
message acknowledged before the disk filled is delivered."""
import os
import smtplib
import subprocess
import tempfile

import pytest

from peers import SmtpSink, TernServer, free_port, wait_for


@pytest.fixture
def small_disk():
    path = tempfile.mkdtemp(prefix="tern-small-disk-")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", path],
                       capture_output=True, text=True)
    if r.returncode != 0:
        os.rmdir(path)
        pytest.skip("cannot mount a small tmpfs here (needs root): %s" % r.stderr.strip())
    yield path
    subprocess.run(["umount", path], check=False)
    os.rmdir(path)


def test_full_disk_gives_452_and_loses_nothing(tmp_path, small_disk):
    sink_port = free_port()  # nothing listens yet: deliveries defer and mail stays queued
    extra = ('[queue.outbound]\nnext-hop = "sink"\n[queue.schedule]\nretry = ["1s"]\n'
             '[remote."sink"]\naddress = "127.0.0.1"\nport = %d\nprotocol = "smtp"\n' % sink_port)
    tern = TernServer(tmp_path, extra)
    # The spool goes on the small disk.
    with open(tern.config) as f:
        text = f.read().replace('path = "%s"' % tern.spool, 'path = "%s/spool"' % small_disk)
    with open(tern.config, "w") as f:
        f.write(text)
    tern.start()
    try:
        acked, refused = [], None
        body = "x" * 100 + "\r\n"
        for i in range(100):  # 100 x 64 KiB does not fit in 2 MiB
            data = "Message-ID: <full%d@test>\r\nSubject: %d\r\n\r\n%s" % (i, i, body * 640)
            try:
                with smtplib.SMTP("127.0.0.1", tern.port, timeout=30) as s:
                    s.sendmail("a@example.org", ["b@example.net"], data)
                acked.append("<full%d@test>" % i)
            except smtplib.SMTPDataError as e:
                refused = e
                break
        assert refused is not None, "the disk never filled"
        assert refused.smtp_code == 452 and b"4.3.1" in refused.smtp_error
        assert len(acked) > 5
        with SmtpSink(tmp_path, port=sink_port) as sink:
            wait_for(lambda: set(acked) <= set(sink.message_ids()), timeout=60,
                     what="every acknowledged message delivered")
        assert tern.proc.poll() is None, "tern must survive a full disk"
    finally:
        tern.stop()
