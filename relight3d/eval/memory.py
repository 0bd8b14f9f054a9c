"""Peak resident memory of this process, for the benchmarks' memory figures."""

from __future__ import annotations

import resource
from pathlib import Path


def peak_rss_mib() -> float:
    """Peak resident memory of this process's own address space so far (VmHWM), in MiB.

    Not ``ru_maxrss`` where /proc is readable: after fork + exec that also counts the parent's peak, which would
    credit a benchmark's own size to every child it starts.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return float(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux
