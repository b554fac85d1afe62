"""/proc/<pid>/stat for the bench scripts (seed_replay.py, guard_process.py)."""


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
