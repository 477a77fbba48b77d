"""Peak memory of the job's processes, in MB, for the run report."""

from __future__ import annotations

import os
import resource
import socket

from pyspark.accumulators import AccumulatorParam


class PeakPerProcessParam(AccumulatorParam):
    """Accumulator of ``{process name: peak MB}`` that keeps each process's largest value."""

    def zero(self, value: dict[str, float]) -> dict[str, float]:
        return {}

    def addInPlace(  # noqa: N802 (Spark's name)
        self, value1: dict[str, float], value2: dict[str, float]
    ) -> dict[str, float]:
        merged = dict(value1)
        for name, peak in value2.items():
            merged[name] = max(peak, merged.get(name, 0.0))
        return merged


def process_name() -> str:
    """Return ``HOST:PID``, which names this process among all the cluster's."""
    return f"{socket.gethostname()}:{os.getpid()}"


def own_peak_rss_mb() -> float:
    """Return this process's peak resident set size so far, in MB (Linux: ru_maxrss KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def process_peak_rss_mb(pid: int) -> float | None:
    """Return the peak resident set size of process ``pid`` in MB, or None where
    ``/proc/PID/status`` cannot be read (another host, not Linux)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def driver_jvm_pid(spark) -> int | None:
    """Return the pid of the driver's JVM, or None if it cannot be asked."""
    try:
        return int(spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid())
    except Exception:  # py4j errors vary by version
        return None
