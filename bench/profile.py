"""Profile the whole flow: ``bench.flow`` (ours only) with py-spy attached to every service.

Every service process the benchmark starts is sampled by ``py-spy record`` (raw collapsed
stacks, only while a thread is busy) from ``--delay`` seconds after all four are up, for
``--seconds``. Per service, the busy samples are summarised as the functions with the most
samples of their own and the most samples under them (cumulative), and written with the
benchmark's own figures to ``bench/results/flow_profile.md``; the raw stacks go next to it
(``bench/results/profiles/<service>.txt``, for flamegraph tools; not committed).

Run from the repository root: ``python -m bench.profile [--delay S] [--seconds S] --
<bench.flow options>``.
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil

RESULTS = Path(__file__).parent / "results"
SERVICE = re.compile(r"-m services\.(ingestion|inventory|status|notifier)$")
#: frames that only say "the event loop runs a task": left out of the cumulative list
PLUMBING = ("<module>", "run_forever", "_run_once", "_run (asyncio", "run (asyncio",
            "run_until_complete", "_run_code", "_wrapped (faust", "execute_from_commandline",
            "site-packages/mode/")


def services_of(parent: psutil.Process) -> dict[str, int]:
    found: dict[str, int] = {}
    for child in parent.children(recursive=True):
        try:
            match = SERVICE.search(" ".join(child.cmdline()))
        except psutil.Error:
            continue
        if match and match.group(1) not in found:
            found[match.group(1)] = child.pid
    return found


def summary(raw: Path, top: int = 15) -> list[str]:
    own: collections.Counter[str] = collections.Counter()
    cum: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        total += n
        own[frames[-1] or "(native)"] += n
        for frame in set(frames):
            cum[frame] += n
    if not total:
        return ["no samples"]
    lines = [f"{total} busy samples", "", "| own | function |", "|---:|---|"]
    lines += [f"| {100 * n / total:.1f}% | `{f[:110]}` |" for f, n in own.most_common(top)]
    lines += ["", "| cumulative | function |", "|---:|---|"]
    kept = [(f, n) for f, n in cum.most_common(top * 4)
            if f and not any(p in f for p in PLUMBING)][:top * 2]
    lines += [f"| {100 * n / total:.1f}% | `{f[:110]}` |" for f, n in kept]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--delay", type=float, default=3.0,
                        help="seconds after the services are up before sampling starts")
    parser.add_argument("--seconds", type=float, default=60.0, help="seconds to sample")
    parser.add_argument("--rate", type=int, default=47, help="samples per second")
    parser.add_argument("flow", nargs=argparse.REMAINDER, help="options for bench.flow")
    args = parser.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    out_dir = RESULTS / "profiles"
    out_dir.mkdir(parents=True, exist_ok=True)
    flow_args = [a for a in args.flow if a != "--"]
    bench = subprocess.Popen([sys.executable, "-m", "bench.flow", "--only", "ours",
                              "--out", str(RESULTS / "flow_profiled.json"), *flow_args],
                             stdout=subprocess.PIPE, text=True)
    spies: list[tuple[str, subprocess.Popen[bytes]]] = []
    try:
        parent = psutil.Process(bench.pid)
        deadline = time.monotonic() + 300
        pids: dict[str, int] = {}
        while len(pids) < 4 and bench.poll() is None and time.monotonic() < deadline:
            pids = services_of(parent)
            time.sleep(0.5)
        time.sleep(args.delay)
        for name, pid in sorted(pids.items()):
            spies.append((name, subprocess.Popen(
                [spy, "record", "--pid", str(pid), "--duration", str(int(args.seconds)),
                 "--rate", str(args.rate), "--format", "raw", "--nonblocking",
                 "--output", str(out_dir / f"{name}.txt")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)))
        output, _ = bench.communicate()
    finally:
        if bench.poll() is None:
            bench.terminate()
            bench.wait()
        for _, proc in spies:
            proc.wait()
    print(output)
    figures = output[output.find("order flow:"):output.rfind("\nwrote")].rstrip()
    doc = ["# The whole flow, profiled", "",
           "`python -m bench.profile " + " ".join(args.flow) + "`: py-spy on every service "
           f"for {args.seconds:.0f} s from {args.delay:.0f} s after start-up (stocking, "
           "warm-up, the burst and the paced run), busy samples only.", "",
           "```", figures, "```"]
    for name, _ in spies:
        raw = out_dir / f"{name}.txt"
        doc += ["", f"## {name}", "", *(summary(raw) if raw.exists() else ["no profile"])]
    (RESULTS / "flow_profile.md").write_text("\n".join(doc) + "\n")
    print(f"wrote {RESULTS / 'flow_profile.md'}")
    return bench.returncode or 0


if __name__ == "__main__":
    sys.exit(main())
