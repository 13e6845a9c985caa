"""Finding the processes a test's subprocess left behind, by a marker in their environment
(children inherit it, so it names every descendant)."""
import os


def processes_with(marker):
    """PIDs of live processes whose environment holds ``marker``."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open("/proc/%s/environ" % pid, "rb") as f:
                if marker.encode() in f.read():
                    found.append(int(pid))
        except OSError:
            continue  # gone, or not ours
    return found
