"""/proc/<pid>/stat and schedstat for the bench scripts (seed_replay.py, guard_process.py,
cpu_per_request.py)."""

import os


def read_stat(pid):
    """(ppid, starttime, comm, state) of a process, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode("ascii", "replace")
    except OSError:
        return None
    # comm may contain spaces and parentheses: it ends at the last ')'.
    lp, rp = data.find("("), data.rfind(")")
    if lp < 0 or rp < 0:
        return None
    rest = data[rp + 2:].split()
    # rest[0]=state rest[1]=ppid ... rest[19]=starttime (field 22)
    try:
        return int(rest[1]), int(rest[19]), data[lp + 1:rp], rest[0]
    except (IndexError, ValueError):
        return None


def cpu_ticks(pid):
    """utime + stime + cutime + cstime of a process (its reaped children included), in clock
    ticks, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode("ascii", "replace")
    except OSError:
        return None
    rest = data[data.rfind(")") + 2:].split()
    # rest[11..14] = fields 14..17: utime stime cutime cstime
    try:
        return sum(int(x) for x in rest[11:15])
    except ValueError:
        return None


def cpu_ns(pid):
    """ns on CPU of all of a process's threads (/proc/<pid>/task/*/schedstat): the exact sum
    that utime + stime are rounded down from, so 32 children do not add 32 ticks of error."""
    total = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return total
