"""Shared helpers of the benchmark scripts: timed child processes and a matmul peak."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def run_child(args: list[str], env: dict | None = None, cwd: str | None = None
              ) -> tuple[float, dict]:
    """Run a Python child; return (whole-process wall seconds, its last JSON line)."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=cwd or ROOT)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"child {args} failed with exit code {proc.returncode}")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    return wall, (json.loads(lines[-1]) if lines else {})


def matmul_gflops(n: int = 2048, repeats: int = 10) -> float:
    """float32 [n, n] @ [n, n] throughput of this machine under JAX (GFLOP/s)."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    start = time.perf_counter()
    for _ in range(repeats):
        out = f(a)
    out.block_until_ready()
    return 2.0 * n ** 3 * repeats / (time.perf_counter() - start) / 1e9


def table(rows: list[tuple], header: tuple) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*header), fmt.format(*("-" * w for w in widths)),
                      *(fmt.format(*map(str, r)) for r in rows)])


def run_measured(cmd: list[str], env: dict | None = None, cwd: str | None = None
                 ) -> tuple[float, int, subprocess.CompletedProcess]:
    """Run a command; (wall seconds, peak RSS in bytes of that process, its result).
    The child is reaped with ``os.wait4``, whose rusage is the child's own."""
    import tempfile

    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd or ROOT, env={**os.environ, **(env or {})},
                                stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        result = subprocess.CompletedProcess(cmd, proc.returncode, out.read(), err.read())
    return wall, usage.ru_maxrss * 1024, result
