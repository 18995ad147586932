"""A closed-loop HTTP load generator: ``concurrency`` clients, each sending its next request when the last answers.

Raw HTTP/1.1 on keep-alive connections over asyncio streams (uvloop when
present), so the generator costs little next to the servers it measures.
Bounded by time and by request count, whichever comes first. A refused or
dropped connection counts as an error, and the client reconnects.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence


@dataclass
class LoadResult:
    concurrency: int
    requests: int = 0
    errors: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)

    def summary(self) -> dict:
        import numpy as np

        lat = np.array(self.latencies_ms) if self.latencies_ms else np.array([float("nan")])
        return {"concurrency": self.concurrency, "requests": self.requests, "errors": self.errors,
                "seconds": round(self.seconds, 3),
                "rps": round(len(self.latencies_ms) / self.seconds, 1) if self.seconds else 0.0,
                "p50_ms": round(float(np.percentile(lat, 50)), 2), "p99_ms": round(float(np.percentile(lat, 99)), 2),
                "statuses": {str(k): v for k, v in sorted(self.statuses.items())}}


def request_bytes(host: str, port: int, path: str, body: bytes) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, dict[bytes, bytes], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])  # "HTTP/1.1 200 ..."
    lower = head.lower()
    at = lower.find(b"\r\ncontent-length:")
    if at >= 0:
        end = lower.index(b"\r\n", at + 2)
        headers = {b"retry-after": _header(lower, b"retry-after")} if status == 503 else {}
        return status, headers, await reader.readexactly(int(lower[at + 17:end]))
    headers = {b"retry-after": _header(lower, b"retry-after")} if status == 503 else {}
    if b"transfer-encoding: chunked" not in lower:
        return status, headers, b""
    body = b""
    while True:
        size = int((await reader.readuntil(b"\r\n")).strip(), 16)
        chunk = await reader.readexactly(size + 2)
        if size == 0:
            return status, headers, body
        body += chunk[:-2]


def _header(lower_head: bytes, name: bytes) -> bytes:
    at = lower_head.find(b"\r\n" + name + b":")
    if at < 0:
        return b"1"
    start = at + len(name) + 3
    return lower_head[start:lower_head.index(b"\r\n", start)].strip()


async def run_load(host: str, port: int, path: str, bodies: Sequence[bytes] | Callable[[int], bytes], concurrency: int,
                   duration_s: float, max_requests: int = 0, timeout_s: float = 10.0) -> LoadResult:
    """``bodies``: a list (request i sends ``bodies[i % len]``) or ``body(i)``; ``max_requests`` 0: no cap."""
    result = LoadResult(concurrency=concurrency)
    if callable(bodies):
        def payload(i: int) -> bytes:
            return request_bytes(host, port, path, bodies(i))
    else:
        payloads = [request_bytes(host, port, path, b) for b in bodies]

        def payload(i: int) -> bytes:
            return payloads[i % len(payloads)]
    deadline = time.perf_counter() + duration_s
    counter = iter(range(max_requests)) if max_requests else itertools.count()

    async def client(k: int) -> None:
        reader = writer = None
        while time.perf_counter() < deadline:
            i = next(counter, None)
            if i is None:
                break
            started = time.perf_counter()
            try:
                if writer is None:
                    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
                writer.write(payload(i))
                status, headers, _ = await asyncio.wait_for(_read_response(reader), timeout_s)
            except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError, IndexError):
                result.errors += 1
                result.statuses[0] = result.statuses.get(0, 0) + 1
                if writer is not None:
                    writer.close()
                reader = writer = None
                await asyncio.sleep(0.01)
                continue
            result.requests += 1
            result.statuses[status] = result.statuses.get(status, 0) + 1
            if status == 200:
                result.latencies_ms.append((time.perf_counter() - started) * 1000)
            else:
                result.errors += 1
                if status == 503:  # a well-behaved client backs off
                    await asyncio.sleep(min(float(headers[b"retry-after"]), max(0.0, deadline - time.perf_counter())))
        if writer is not None:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(client(k) for k in range(concurrency)))
    result.seconds = time.perf_counter() - started
    return result


def load(host: str, port: int, path: str, bodies: Sequence[bytes] | Callable[[int], bytes], concurrency: int,
         duration_s: float, max_requests: int = 0) -> LoadResult:
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    return runner(run_load(host, port, path, bodies, concurrency, duration_s, max_requests))


# --- wrk: the independent client (C, event loop per thread), when installed (Debian: apt-get install wrk) ---

WRK_LUA = """-- written by mlsys bench serve: every request carries a text no request before it carried (no cache hit)
local texts = {%(texts)s}
local prefix, suffix = [==[%(prefix)s]==], [==[%(suffix)s]==]
local counter = 0
function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
end
local n = 0
function request()
  n = n + 1
  local body = prefix .. texts[(n %% #texts) + 1] .. " wrk" .. tostring(tid or 0) .. "-" .. n .. suffix
  return wrk.format("POST", "%(path)s", {["Content-Type"] = "application/json"}, body)
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRK {"requests":%%d,"seconds":%%.3f,"p50_ms":%%.3f,"p99_ms":%%.3f,"max_ms":%%.3f,' ..
    '"non2xx":%%d,"connect":%%d,"read":%%d,"write":%%d,"timeout":%%d}\\n', summary.requests, summary.duration / 1e6,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000,
    e.status, e.connect, e.read, e.write, e.timeout))
end
"""


def wrk_script(path: str, texts: Sequence[str], prefix: str, suffix: str) -> str:
    """A wrk Lua script POSTing ``prefix + json-escaped text + " wrk<thread>-<n>" + suffix`` to ``path``."""
    import json

    escaped = [json.dumps(t)[1:-1] for t in texts]
    escaped = [e for e in escaped if "]==]" not in e][:500] or ["check out my channel"]
    return WRK_LUA % {"texts": ", ".join(f"[==[{e}]==]" for e in escaped), "prefix": prefix, "suffix": suffix,
                      "path": path}


def wrk_path() -> str | None:
    import shutil

    return shutil.which("wrk")


def run_wrk(url: str, script: str, concurrency: int, duration_s: float, threads: int = 1) -> dict:
    """Run wrk (``-t threads -c concurrency -d duration``) with ``script``; its figures, errors summed."""
    import json
    import subprocess
    import tempfile

    exe = wrk_path()
    if exe is None:
        raise FileNotFoundError("wrk is not installed (Debian: apt-get install -y wrk)")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", prefix="mlsys-wrk-") as fh:
        fh.write(script)
        fh.flush()
        cmd = [exe, f"-t{threads}", f"-c{concurrency}", f"-d{max(1, round(duration_s))}s", "--timeout", "10s",
               "-s", fh.name, url]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=duration_s + 60, check=False)
    line = next((x for x in done.stdout.splitlines() if x.startswith("WRK ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {(done.stderr or done.stdout)[-2000:]}")
    out = json.loads(line[4:])
    out["errors"] = sum(out[k] for k in ("non2xx", "connect", "read", "write", "timeout"))
    out["rps"] = round(out["requests"] / out["seconds"], 1) if out["seconds"] else 0.0
    return {"concurrency": concurrency, "wrk_threads": threads, **out}
