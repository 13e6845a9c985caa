"""The benchmark's process measurement: a child's own wall time and peak RSS, not its parent's."""
import sys

from bench.measure import run_process


def test_peak_rss_is_the_childs_own_not_the_parents():
    held = bytearray(300 * 1024 * 1024)  # the benchmark's own memory, touched
    for offset in range(0, len(held), 4096):
        held[offset] = 1

    small = run_process([sys.executable, "-c", "pass"])
    big = run_process([sys.executable, "-c", "block = bytearray(200 * 1024 * 1024); block[::4096] = b'x' * len(block[::4096])"])

    assert small.returncode == 0 and small.peak_rss_mb < 100
    assert big.returncode == 0 and 200 <= big.peak_rss_mb < 300
    assert small.seconds > 0 and big.seconds > 0
    del held


def test_exit_status_and_stderr_of_the_child_are_reported():
    failed = run_process([sys.executable, "-c", "import sys; print('went wrong', file=sys.stderr); sys.exit(3)"])
    missing = run_process(["/nonexistent/program"])

    assert failed.returncode == 3 and failed.stderr_tail == "went wrong"
    assert missing.returncode == 127 and "cannot run /nonexistent/program" in missing.stderr_tail
