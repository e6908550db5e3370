"""Process and machine figures read straight from ``/proc`` (no psutil).

Why: the benchmark reports peak and current RSS of the worker and the CPU each
process (broker, InfluxDB, workers) used during a timed phase, and psutil is
not a dependency. Linux only, like the local stack.

>>> rss_mb(os.getpid()) > 0
True
>>> machine()["nproc"] >= 1
True
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass

_TICK = os.sysconf("SC_CLK_TCK")


class ProcessGone(RuntimeError):
    """The process exited before its figures could be read."""


def _status(pid: int) -> dict[str, str]:
    try:
        with open(f"/proc/{pid}/status") as f:
            return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
    except (FileNotFoundError, ProcessLookupError):
        raise ProcessGone(f"process {pid} is gone") from None


def _kb(value: str) -> float:
    return float(value.split()[0])


def rss_mb(pid: int) -> float:
    """Current resident set size (VmRSS) in MiB."""
    return _kb(_status(pid).get("VmRSS", "0 kB")) / 1024.0


def peak_rss_mb(pid: int) -> float:
    """Peak resident set size over the process's life (VmHWM) in MiB."""
    return _kb(_status(pid).get("VmHWM", "0 kB")) / 1024.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far (threads included), in seconds."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            raw = f.read()
    except (FileNotFoundError, ProcessLookupError):
        raise ProcessGone(f"process {pid} is gone") from None
    # the command name may hold spaces and parentheses: split after the last ')'
    fields = raw[raw.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / _TICK


def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all cores."""
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
    total = sum(parts[:8])
    return (total - idle) / _TICK, total / _TICK


@dataclass
class CpuMeter:
    """CPU used by named processes (and the whole machine) between ``start`` and ``stop``.

    ``stop()`` returns percent per process (100 = one core fully busy, so on two
    cores the machine total can reach 200; None for a process that exited),
    ``others`` (everything else on the machine: other users, the benchmark) and
    ``machine_total``.
    """

    pids: dict[str, int]
    _t0: float = 0.0
    _c0: dict[str, float] | None = None
    _m0: tuple[float, float] = (0.0, 0.0)
    _result: dict[str, float] | None = None

    def start(self) -> CpuMeter:
        self._t0 = time.monotonic()
        self._c0 = {n: _safe_cpu(p) for n, p in self.pids.items()}
        self._m0 = machine_cpu_seconds()
        return self

    def stop(self) -> dict[str, float]:
        wall = max(time.monotonic() - self._t0, 1e-9)
        assert self._c0 is not None, "start() first"
        out = {}
        for name, pid in self.pids.items():
            c1 = _safe_cpu(pid)
            used = c1 - self._c0[name]
            out[name] = None if used != used else round(100.0 * used / wall, 1)  # NaN: process gone
        busy1, total1 = machine_cpu_seconds()
        busy0, total0 = self._m0
        ncpu = os.cpu_count() or 1
        total = round(100.0 * ncpu * (busy1 - busy0) / max(total1 - total0, 1e-9), 1)
        out["others"] = round(total - sum(v for v in out.values() if v is not None), 1)
        out["machine_total"] = total
        self._result = out
        return out


def _safe_cpu(pid: int) -> float:
    try:
        return cpu_seconds(pid)
    except ProcessGone:
        return float("nan")


def machine() -> dict[str, object]:
    """What the numbers were measured on: cores, CPU model, RAM, OS, Python, load."""
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_gb = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem_gb = round(_kb(line.split(":", 1)[1]) / 1024 / 1024, 1)
                    break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "ram_gb": mem_gb,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }
