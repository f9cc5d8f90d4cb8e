#!/usr/bin/env python3
"""Run every test suite of tern and end with one line: 'N passed, M failed'.

Suites, in order: the cmocka unit and golden tests (built under ASan+UBSan),
the official TOML suite against build/san/toml-decode, the system tests
(pytest, driving the built binary), and a short libFuzzer run of each fuzz
harness on its seeds. Each suite's own output is shown; its counts are added
to the total. A suite that cannot run at all counts as one failure.

Environment: SHARED_DIR (default ../shared beside the repository),
FUZZ_SECONDS (default 20 per harness; 0 skips the fuzz runs).
"""
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.environ.get("SHARED_DIR", os.path.join(os.path.dirname(REPO), "shared"))
FUZZ_SECONDS = int(os.environ.get("FUZZ_SECONDS", "20"))

totals = {"passed": 0, "failed": 0}


def run(name, argv, parse, env=None, timeout=900):
    print("=== %s: %s" % (name, " ".join(argv)), flush=True)
    try:
        p = subprocess.run(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           env=env, timeout=timeout)
        out = p.stdout.decode("utf-8", "replace")
    except (OSError, subprocess.TimeoutExpired) as e:
        print("%s: could not run: %s" % (name, e))
        totals["failed"] += 1
        return
    sys.stdout.write(out)
    counts = parse(out, p.returncode)
    if counts is None:
        print("%s: exit %d and no result line: counted as one failure" % (name, p.returncode))
        totals["failed"] += 1
        return
    passed, failed = counts
    if p.returncode != 0 and failed == 0:
        print("%s: exit %d although nothing failed: counted as one failure" % (name, p.returncode))
        failed = 1
    totals["passed"] += passed
    totals["failed"] += failed
    print("--- %s: %d passed, %d failed" % (name, passed, failed), flush=True)


def parse_cmocka(out, rc):
    m = re.search(r"^\[  PASSED  \] (\d+) test", out, re.M)
    if not m:
        return None
    f = re.search(r"^\[  FAILED  \] (\d+) test", out, re.M)
    return int(m.group(1)), int(f.group(1)) if f else 0


def parse_plain(out, rc):
    m = re.findall(r"^(\d+) passed, (\d+) failed", out, re.M)
    if not m:
        return None
    return int(m[-1][0]), int(m[-1][1])


def parse_pytest(out, rc):
    lines = [l for l in out.strip().splitlines() if l.strip()]
    if not lines:
        return None
    last = lines[-1]
    passed = re.search(r"(\d+) passed", last)
    failed = re.search(r"(\d+) failed", last)
    errors = re.search(r"(\d+) error", last)
    if not (passed or failed or errors):
        return None
    return (int(passed.group(1)) if passed else 0,
            (int(failed.group(1)) if failed else 0) + (int(errors.group(1)) if errors else 0))


def parse_fuzz(out, rc):
    # libFuzzer exits 0 after -max_total_time with no crash.
    return (1, 0) if rc == 0 else (0, 1)


def main():
    san_env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=1",
                   UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1")
    for binary in sorted(glob.glob(os.path.join(REPO, "build/san/unit/test_*"))):
        run(os.path.basename(binary), [binary], parse_cmocka, env=san_env)

    runner = os.path.join(SHARED, "conformance/run-toml-test.sh")
    if os.path.exists(runner):
        env = dict(san_env, TOML_TEST_JOBS="2")
        run("toml-test", ["bash", runner, os.path.join(REPO, "build/san/toml-decode")],
            parse_plain, env=env)
    else:
        print("toml-test: %s not found (set SHARED_DIR): counted as one failure" % runner)
        totals["failed"] += 1

    if glob.glob(os.path.join(REPO, "tests/system/test_*.py")):
        env = dict(san_env, TERN_BIN=os.path.join(REPO, "build/san/tern"))
        run("system", [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                       "tests/system"], parse_pytest, env=env)

    if FUZZ_SECONDS > 0:
        for binary in sorted(glob.glob(os.path.join(REPO, "build/fuzz/fuzz_*"))):
            name = os.path.basename(binary)[len("fuzz_"):]
            seeds = os.path.join(REPO, "tests/fuzz/seeds", name)
            work = tempfile.mkdtemp(prefix="tern-fuzz-")
            try:
                corpus = os.path.join(work, "corpus")
                shutil.copytree(seeds, corpus) if os.path.isdir(seeds) else os.mkdir(corpus)
                dict_path = os.path.join(REPO, "tests/fuzz", name + ".dict")
                extra = ["-dict=" + dict_path] if os.path.exists(dict_path) else []
                run("fuzz " + name, [binary, "-max_total_time=%d" % FUZZ_SECONDS, *extra,
                                     "-rss_limit_mb=2048", "-timeout=10",
                                     "-artifact_prefix=" + work + "/", corpus],
                    parse_fuzz, env=san_env)
            finally:
                shutil.rmtree(work, ignore_errors=True)

    print("%d passed, %d failed" % (totals["passed"], totals["failed"]))
    return 0 if totals["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
