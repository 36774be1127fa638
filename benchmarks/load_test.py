"""Load test of `asl-tinyml serve` on this machine (loopback only): start-up time, POST /predict under N
concurrent clients, and one WebSocket client streaming frames at a fixed rate.

    python benchmarks/load_test.py --model models/asl_fastkan_int8.onnx --clients 8 --seconds 10 --ws-fps 15

Without --url it starts the server itself (`python -m asl_tinyml.cli serve`) on a free 127.0.0.1 port
and reports how long it took to answer /health. Every loop is bounded by --seconds; the script exits 1 if
any request failed or the WebSocket fell behind.
"""

from __future__ import annotations

import argparse
import http.client
import io
import ipaddress
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
from PIL import Image


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def jpeg(size: tuple[int, int], seed: int = 0, quality: int = 85) -> bytes:
    """A photo-like test JPEG: smooth gradients plus noise (compresses like a camera frame)."""
    w, h = size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 / w, yy * 255 / h, (xx + yy) * 127 / (w + h)], axis=-1)
    arr = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def check_loopback(url: str) -> tuple[str, int]:
    """(host, port) of `url`; refuses anything but a loopback address."""
    parsed = urlparse(url)
    host = parsed.hostname or ""
    try:
        ok = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        ok = False
    if not ok:
        sys.exit(f"error: {url} is not a loopback address; this load test only targets 127.0.0.1/localhost/::1")
    return host, parsed.port or 80


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: Path, port: int, threads: int, timeout: float = 60) -> tuple[subprocess.Popen, float]:
    """Launch `asl-tinyml serve` and wait for /health: (process, seconds until it answered)."""
    cmd = [sys.executable, "-m", "asl_tinyml.cli", "serve", "--model", str(model), "--port", str(port),
           "--threads", str(threads), "--log-level", "warning", "--max-fps", "1000"]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    while time.perf_counter() - start < timeout:
        if proc.poll() is not None:
            sys.exit(f"error: the server exited with {proc.returncode}: {proc.stderr.read().strip()}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return proc, time.perf_counter() - start
        except OSError:
            time.sleep(0.02)
    proc.kill()
    sys.exit(f"error: the server did not answer /health within {timeout:.0f} s")


def multipart(data: bytes, filename: str = "frame.jpg") -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n"
        f"Content-Type: image/jpeg\r\n\r\n"
    ).encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def http_load(host: str, port: int, image: bytes, clients: int, seconds: float, rate: float = 0.0) -> dict[str, float]:
    """`clients` threads POST /predict (keep-alive) for `seconds` seconds: back to back (`rate` 0, a closed
    loop that finds the throughput), or each at `rate` requests/s on a fixed schedule (an open loop; latency
    counts from the scheduled time, so a server falling behind shows up)."""
    body, content_type = multipart(image)
    latencies: list[float] = []
    server_ms: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def worker(k: int) -> None:
        conn = http.client.HTTPConnection(host, port, timeout=10)
        mine, mine_ms, errs = [], [], []
        i = 0
        first = time.perf_counter() + (k / (clients * rate) if rate else 0.0)  # stagger the open-loop clients
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            if rate:
                t0 = first + i / rate
                i += 1
                if t0 >= deadline:
                    break
                time.sleep(max(0.0, t0 - time.perf_counter()))
            try:
                conn.request("POST", "/predict?topk=3", body=body, headers={"Content-Type": content_type})
                resp = conn.getresponse()
                payload = resp.read()
                if resp.status != 200:
                    errs.append(f"HTTP {resp.status}: {payload[:200]!r}")
                    continue
                mine.append((time.perf_counter() - t0) * 1000)
                mine_ms.append(json.loads(payload)["ms"])
            except (OSError, http.client.HTTPException, ValueError) as exc:
                errs.append(f"{type(exc).__name__}: {exc}")
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=10)
        conn.close()
        with lock:
            latencies.extend(mine)
            server_ms.extend(mine_ms)
            failures.extend(errs)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    for f in failures[:5]:
        print(f"  failure: {f}")
    return {
        "requests": len(latencies), "failures": len(failures), "rps": len(latencies) / elapsed,
        "p50_ms": percentile(latencies, 50), "p95_ms": percentile(latencies, 95), "p99_ms": percentile(latencies, 99),
        "server_p50_ms": percentile(server_ms, 50), "server_p95_ms": percentile(server_ms, 95),
    }


def ws_stream(url: str, frame: bytes, fps: float, seconds: float) -> dict[str, float]:
    """One WebSocket client sending a frame every 1/fps s for `seconds` s; replies read concurrently."""
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    sent: list[float] = []
    latencies: list[float] = []
    errors: list[str] = []
    with connect(url, max_size=2**22) as ws:
        json.loads(ws.recv(timeout=10))  # hello
        n = round(fps * seconds)

        def reader() -> None:
            for i in range(n):
                try:
                    reply = json.loads(ws.recv(timeout=10))
                except (TimeoutError, ConnectionClosed) as exc:  # report, stop reading
                    errors.append(f"reply {i}: {type(exc).__name__}")
                    return
                if reply.get("type") != "prediction":
                    errors.append(f"reply {i}: {reply.get('code')}: {reply.get('error')}")
                else:
                    latencies.append((time.perf_counter() - sent[i]) * 1000)

        t = threading.Thread(target=reader)
        t.start()
        start = time.perf_counter()
        for i in range(n):
            due = start + i / fps
            time.sleep(max(0.0, due - time.perf_counter()))
            sent.append(time.perf_counter())
            ws.send(frame)
        t.join(timeout=seconds + 15)
        elapsed = time.perf_counter() - start
    for e in errors[:5]:
        print(f"  ws error: {e}")
    return {
        "frames": n, "replies": len(latencies), "errors": len(errors), "reply_fps": len(latencies) / elapsed,
        "p50_ms": percentile(latencies, 50), "p95_ms": percentile(latencies, 95), "max_ms": max(latencies, default=float("nan")),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=Path("models/asl_fastkan_int8.onnx"))
    p.add_argument("--url", default=None, help="a running server on this machine (default: start one)")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--seconds", type=float, default=10.0, help="duration of each phase (bounded)")
    p.add_argument("--rate", type=float, default=0.0, help="requests/s per client (default 0: back to back)")
    p.add_argument("--ws-fps", type=float, default=15.0)
    p.add_argument("--threads", type=int, default=1, help="inference threads per request (started server)")
    p.add_argument("--image-size", type=int, nargs=2, default=(640, 480), metavar=("W", "H"), help="POST /predict photo size")
    p.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    if not 1 <= args.clients <= 64 or not 0 < args.seconds <= 120 or not 0 < args.ws_fps <= 60 or not 0 <= args.rate <= 1000:
        sys.exit("error: keep --clients in 1..64, --seconds in (0, 120], --ws-fps in (0, 60] and --rate in [0, 1000]")

    proc = None
    results: dict[str, object] = {"cpu_count": os.cpu_count()}
    if args.url:
        host, port = check_loopback(args.url)
    else:
        if not args.model.exists():
            sys.exit(f"error: model file {args.model} not found; make it with `asl-tinyml pipeline` or `asl-tinyml export`")
        host, port = "127.0.0.1", free_port()
        proc, startup = start_server(args.model, port, args.threads)
        results["startup_s"] = startup
        print(f"server answered /health {startup:.2f} s after launch ({args.model})")
    try:
        photo = jpeg(tuple(args.image_size))
        http_res = http_load(host, port, photo, 1, min(2.0, args.seconds))  # warm-up, single client
        print(f"warm-up: 1 client {http_res['rps']:.0f} req/s, p95 {http_res['p95_ms']:.1f} ms")
        http_res = http_load(host, port, photo, args.clients, args.seconds, args.rate)
        results["predict"] = {**http_res, "clients": args.clients, "rate_per_client": args.rate}
        pace = f"{args.rate:g} req/s each" if args.rate else "back to back"
        print(
            f"POST /predict ({len(photo) // 1024} KiB {args.image_size[0]}x{args.image_size[1]} JPEG), {args.clients} clients {pace} x "
            f"{args.seconds:g} s: {http_res['requests']} requests, {http_res['rps']:.0f} req/s, latency p50 "
            f"{http_res['p50_ms']:.1f} ms, p95 {http_res['p95_ms']:.1f} ms, p99 {http_res['p99_ms']:.1f} ms "
            f"(server decode+model p50 {http_res['server_p50_ms']:.1f} ms), failures {http_res['failures']}"
        )
        ws_res = ws_stream(f"ws://{host}:{port}/ws", jpeg((128, 128), quality=80), args.ws_fps, args.seconds)
        results["websocket"] = ws_res
        print(
            f"WS /ws at {args.ws_fps:g} frames/s x {args.seconds:g} s: {ws_res['replies']}/{ws_res['frames']} predictions, "
            f"{ws_res['reply_fps']:.1f} replies/s, latency p50 {ws_res['p50_ms']:.1f} ms, p95 {ws_res['p95_ms']:.1f} ms, "
            f"errors {ws_res['errors']}"
        )
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=10)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    ok = http_res["failures"] == 0 and ws_res["errors"] == 0 and ws_res["replies"] == ws_res["frames"]
    assert ok, "some requests failed or the WebSocket fell behind: see above"
    print("ok: no failed request and the WebSocket kept up")
    return 0


if __name__ == "__main__":
    sys.exit(main())
