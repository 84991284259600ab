"""Time `c2l --help` (and a few other no-work commands) in fresh interpreters; print JSON.

The CLI must start in under 0.5 s: command modules import only Typer at module level and torch is
imported inside command functions. Each run is a new process, as a user's shell would start it.

    python benchmarks/cli_startup.py [--runs 10] [--limit 0.5]

Exit status 1 if the best-of-N wall time of `c2l --help` exceeds the limit (the minimum is the
least noisy estimate on a shared machine; the median and the CPU time are printed too) or if
torch was imported.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

_PROBE = (
    "import sys\n"
    "from c2l_cli.cli.app import main\n"
    "try:\n"
    "    main(sys.argv[1:])\n"
    "except SystemExit:\n"
    "    pass\n"
    "sys.stderr.write('\\nTORCH=' + str('torch' in sys.modules) + '\\n')\n"
)


def _command(args: list[str]) -> list[str]:
    exe = shutil.which("c2l", path=os.path.dirname(sys.executable)) or shutil.which("c2l")
    return [exe, *args] if exe else [sys.executable, "-m", "c2l_cli", *args]


def _child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def time_runs(args: list[str], runs: int, env: dict, cpu: list[float] | None = None) -> list[float]:
    """Wall seconds per run; CPU seconds (user+sys of the child) appended to *cpu*."""
    times = []
    for _ in range(runs):
        c0 = _child_cpu()
        t0 = time.perf_counter()
        subprocess.run(_command(args), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        times.append(time.perf_counter() - t0)
        if cpu is not None:
            cpu.append(_child_cpu() - c0)
    return times


def imports_torch(args: list[str], env: dict) -> bool:
    p = subprocess.run([sys.executable, "-c", _PROBE, *args], env=env, capture_output=True, text=True)
    return "TORCH=True" in p.stderr


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--limit", type=float, default=0.5, help="seconds allowed for the best-of-N `c2l --help`")
    opts = ap.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "C2L_CACHE_DIR": cache}
        cases = {"--help": ["--help"], "--version": ["--version"], "models --help": ["models", "--help"],
                 "models list": ["models", "list"]}
        time_runs(["--version"], 1, env)  # warm the OS file cache and .pyc files
        py0 = []
        for _ in range(opts.runs):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", "pass"], env=env, check=False)
            py0.append(time.perf_counter() - t0)
        results = {}
        for label, args in cases.items():
            cpu: list[float] = []
            t = time_runs(args, opts.runs, env, cpu)
            results[label] = {
                "median_s": round(statistics.median(t), 4),
                "cpu_median_s": round(statistics.median(cpu), 4),
                "min_s": round(min(t), 4),
                "max_s": round(max(t), 4),
                "imports_torch": imports_torch(args, env),
            }
    help_ = results["--help"]
    ok = help_["min_s"] < opts.limit and not any(r["imports_torch"] for r in results.values())
    print(json.dumps({
        "benchmark": "cli_startup",
        "command": " ".join(_command(["--help"])),
        "runs": opts.runs,
        "limit_s": opts.limit,
        "python_startup_median_s": round(statistics.median(py0), 4),
        "results": results,
        "ok": ok,
        "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
                    "load_avg_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None},
    }, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
