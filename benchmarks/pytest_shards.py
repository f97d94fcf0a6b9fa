"""Run the selected tests as N pytest processes side by side (conftest's `--shard I/N`), for a GPU machine whose
16 cores sit idle while one process compiles: the GPU tests are bound by compilation and process start-up.

    python benchmarks/pytest_shards.py N LOG_PREFIX [PYTEST ARGS...]

Each shard's output goes to LOG_PREFIX.I.txt; prints each shard's last line, and exits 0 only if every shard
passed (pytest's exit 5, nothing selected, counts as passed).
"""

from __future__ import annotations

import subprocess
import sys
import time


def main() -> int:
    if len(sys.argv) < 3 or not sys.argv[1].isdigit() or int(sys.argv[1]) < 1:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    n, prefix, args = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
    t0 = time.perf_counter()
    procs = []
    for i in range(n):
        log = open(f"{prefix}.{i}.txt", "w")
        procs.append((i, log, subprocess.Popen([sys.executable, "-m", "pytest", *args, "--shard", f"{i}/{n}"],
                                               stdout=log, stderr=subprocess.STDOUT)))
    failed = []
    for i, log, proc in procs:
        code = proc.wait()
        log.close()
        lines = [ln.strip() for ln in open(f"{prefix}.{i}.txt", errors="replace") if ln.strip()]
        print(f"shard {i}/{n}: exit {code}: {lines[-1] if lines else '(no output)'}")
        if code not in (0, 5):
            failed.append(i)
    print(f"{n} shards in {time.perf_counter() - t0:.0f} s; failed: {failed or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
