"""Where a machine's cores go, from Linux's /proc: the benchmarks that must say whether a target
asks more CPU than the machine has (bench/gateway.py, bench/ingest_http.py)."""

import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path


def machine_busy_seconds() -> float:
    """CPU time all processes of the machine used so far, in seconds (/proc/stat: every mode but
    idle and iowait), PostgreSQL's, Redis's and other sessions' included."""
    ticks = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def process_times() -> dict[int, tuple[str, str, float]]:
    """Every process's command, command line and CPU seconds so far: its own user + system time
    and its reaped children's (a PostgreSQL backend that exits is added to the postmaster's, a
    joined writer to the bench's), so that two snapshots count what processes that ended in
    between spent."""
    tick = os.sysconf("SC_CLK_TCK")
    found = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
            cmdline = Path(entry.path, "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone meanwhile
            continue
        command, fields = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
        # After the command, state is field 3; utime, stime, cutime and cstime are 14–17 (proc(5)).
        found[int(entry.name)] = (command, cmdline, sum(int(value) for value in fields[11:15]) / tick)
    return found


def cpu_by_role(before: dict[int, tuple[str, str, float]], after: dict[int, tuple[str, str, float]],
                role_of: Callable[[str, str], str]) -> Counter:
    """CPU seconds spent between two snapshots of process_times, by role (role_of(command,
    command line)). A process that ended in between counts down to zero from its first snapshot;
    its whole time is counted again in the parent that reaped it, so the sum is what was spent."""
    spent: Counter = Counter()
    for pid in before.keys() | after.keys():
        command, cmdline, _ = after.get(pid) or before[pid]
        spent[role_of(command, cmdline)] += after.get(pid, ("", "", 0.0))[2] - before.get(pid, ("", "", 0.0))[2]
    return spent
