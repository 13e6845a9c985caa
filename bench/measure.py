"""Run a command as a whole process and measure its wall time and peak RSS.

Why a launcher: Linux carries the memory high-water mark of the image a process replaces into
its ``ru_maxrss`` at exec time, and Python's subprocess spawns with vfork, whose "old image" is
the parent itself. A child started straight from the benchmark (which holds DuckDB and the
results) would report at least the benchmark's own peak. So a small launcher process is started
first; it forks the measured command from its own few-MB image, times it, and reports the exact
``wait4`` rusage of that one grandchild on a pipe.
"""
import json
import os
import subprocess
import sys
import threading
from dataclasses import dataclass


@dataclass
class Sample:
    seconds: float
    peak_rss_mb: float
    returncode: int
    stderr_tail: str
    cpu_seconds: float = 0.0  # user + system, all threads


# Runs argv[1:] as a forked child; writes {"seconds", "maxrss_kb", "returncode"} as JSON to the
# file descriptor given by argv[0]. -S -E keep the launcher's own image at a few MB.
_LAUNCHER = r"""
import json, os, sys, time
report_fd = int(sys.argv[1])
argv = sys.argv[2:]
started = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.close(report_fd)
    try:
        os.execvp(argv[0], argv)
    except OSError as error:
        os.write(2, ("cannot run %s: %s\n" % (argv[0], error)).encode())
    os._exit(127)
_pid, status, usage = os.wait4(pid, 0)
elapsed = time.perf_counter() - started
os.write(report_fd, json.dumps({"seconds": elapsed, "maxrss_kb": usage.ru_maxrss,
                                "cpu_seconds": usage.ru_utime + usage.ru_stime,
                                "returncode": os.waitstatus_to_exitcode(status)}).encode())
"""


def run_process(argv, env=None, cwd=None, stdout=subprocess.DEVNULL):
    """Runs ``argv`` to completion (as a grandchild, see the module docstring); returns a Sample
    with its wall time (fork to exit), peak RSS in MB and CPU time (its own, from ``wait4``),
    exit status and the last three lines of its stderr. Raises RuntimeError when the launcher
    itself fails."""
    read_fd, write_fd = os.pipe()
    try:
        proc = subprocess.Popen([sys.executable, "-S", "-E", "-c", _LAUNCHER, str(write_fd)] + list(argv),
                                env=env, cwd=cwd, stdout=stdout, stderr=subprocess.PIPE,
                                pass_fds=(write_fd,))
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)
    chunks = []
    # Drain stderr on the side so a chatty child cannot block on a full pipe.
    reader = threading.Thread(target=lambda: chunks.append(proc.stderr.read()), daemon=True)
    reader.start()
    with os.fdopen(read_fd, "rb") as report_pipe:
        report = report_pipe.read()
    proc.wait()
    reader.join()
    tail = "\n".join(b"".join(chunks).decode("utf-8", "replace").strip().splitlines()[-3:])
    if proc.returncode != 0 or not report:
        raise RuntimeError("the measuring launcher failed (exit %s): %s" % (proc.returncode, tail))
    result = json.loads(report)
    return Sample(result["seconds"], result["maxrss_kb"] / 1024.0, result["returncode"], tail,
                  result["cpu_seconds"])
