"""`tern config check|dump|keys`, `--help` and `--version` as a user runs them."""
import glob
import os
import re

from conftest import REPO

GOLDEN = os.path.join(REPO, "tests", "golden", "config")


def write(tmp_path, text, name="tern.toml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_shipped_config_is_valid(tern):
    r = tern("config", "check", "--strict", "-c", "etc/tern.toml")
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    assert "etc/tern.toml: configuration is valid" in r.stdout


def test_check_reports_file_line_col_key(tern, tmp_path):
    path = write(tmp_path, '[queue.outbound.limits]\nmx = "seven"\n')
    r = tern("config", "check", "-c", path)
    assert r.returncode == 1
    assert r.stderr == ('%s:2:6: queue.outbound.limits.mx: expected an integer, '
                        'got the string "seven"\n' % path)


def test_check_reports_every_problem(tern, tmp_path):
    path = write(tmp_path, '[queue.outbound]\nip-strategy = "both"\n'
                           '[queue.outbound.tls]\ndane = "yes"\n')
    r = tern("config", "check", "-c", path)
    assert r.returncode == 1
    lines = r.stderr.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(path + ":2:15: queue.outbound.ip-strategy: ")
    assert lines[1].startswith(path + ":4:8: queue.outbound.tls.dane: ")


def test_unknown_key_warns_then_strict_fails(tern, tmp_path):
    path = write(tmp_path, "[queue.outbound.limits]\nmultihommed = 2\n")
    r = tern("config", "check", "-c", path)
    assert r.returncode == 0
    assert "warning: unknown key (did you mean queue.outbound.limits.multihomed?)" in r.stderr
    r = tern("config", "check", "--strict", "-c", path)
    assert r.returncode == 1
    assert "warning" not in r.stderr
    assert "2:1: queue.outbound.limits.multihommed: unknown key" in r.stderr


def test_missing_file(tern, tmp_path):
    path = str(tmp_path / "nope.toml")
    r = tern("config", "check", "-c", path)
    assert r.returncode == 1
    assert r.stderr == "%s: cannot read: No such file or directory\n" % path


def test_syntax_error_has_position(tern, tmp_path):
    path = write(tmp_path, 'a = 1\nb = [1, 2\n')
    r = tern("config", "check", "-c", path)
    assert r.returncode == 1
    assert re.match(re.escape(path) + r":[23]:\d+: ", r.stderr), r.stderr


def test_dump_is_valid_toml_and_round_trips(tern, tmp_path):
    """Every valid golden config: dump, load the dump, dump again: same text."""
    checked = 0
    for src in sorted(glob.glob(os.path.join(GOLDEN, "*.toml"))):
        text = open(src).read().replace("@DIR@", GOLDEN)
        path = write(tmp_path, text, "in.toml")
        first = tern("config", "dump", "--config", path)
        if first.returncode != 0:
            continue
        again = write(tmp_path, first.stdout, "dumped.toml")
        second = tern("config", "dump", "-c", again)
        assert second.returncode == 0, (src, second.stderr)
        assert second.stdout == first.stdout, src
        assert tern("config", "check", "--strict", "-c", again).returncode == 0, src
        checked += 1
    assert checked >= 8


def test_dump_shows_user_values_and_defaults(tern):
    r = tern("config", "dump", "-c", os.path.join(GOLDEN, "user-example.toml"))
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert ('next-hop = [{ if = "rcpt-domain", in-list = "list/domains", then = "lmtp" }, '
            '{ else = false }]') in out
    assert 'v6 = ["a::b", "a::c"]' in out
    assert "mx = 7\n" in out
    assert 'tls = "2m"' in out
    assert 'expire = "5d"' in out          # a SPEC default the file does not set
    assert 'starttls = "optional"' in out  # another


def test_keys_lists_every_key(tern):
    r = tern("config", "keys")
    assert r.returncode == 0
    for key in ("queue.outbound.next-hop", "remote.*.tls.allow-invalid-certs",
                "queue.outbound.timeouts.mta-sts", "management.auth.lookup"):
        assert key + "\n" in r.stdout
    assert "rule variables: sender sender-domain rcpt-domain priority" in r.stdout


def test_help_and_version(tern):
    r = tern("--help")
    assert r.returncode == 0
    assert "config check" in r.stdout and "config dump" in r.stdout
    r = tern("--version")
    assert r.returncode == 0
    assert re.fullmatch(r"tern \d+\.\d+\.\d+\n", r.stdout)


def test_usage_errors_exit_2(tern):
    assert tern().returncode == 2
    assert tern("frobnicate").returncode == 2
    assert tern("config").returncode == 2
    assert tern("config", "check", "--bogus").returncode == 2
    assert tern("config", "dump", "--strict").returncode == 2
