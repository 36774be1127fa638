"""Frames per second of the web app with the landmark path on (loopback only), and one window's latency.

    python benchmarks/motion_fps.py --seconds 20 [--model models/asl_fastkan_int8.onnx] [--motion-dir models]

Starts the app in this process on a free 127.0.0.1 port (uvicorn in a thread), then streams frames over the
WebSocket like the page does (256x256 JPEG, one frame in flight) for `--seconds`, in letters mode and then
in word mode. Every frame goes through the pixel model, MediaPipe Holistic (video mode) and the motion
model. The frames show a person (matplotlib's `grace_hopper.jpg`) with a hand photo from
`../shared/datasets/asl_alphabet_subset` pasted on and moved along a `j` path, so pose and hand tracking
both run. Prints the achieved frames per second and the median server times per stage; with
`--torch-threads`/`--ort-threads` at 1 it mimics one connection on one core. No assertions: it reports.
"""

from __future__ import annotations

import argparse
import io
import json
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scene_frames(n: int = 60, side: int = 256) -> list[bytes]:
    """JPEG frames: a person with a hand moving along a j path (a hand photo pasted on a portrait)."""
    import matplotlib

    from asl_tinyml.config import default_data_root

    person = Image.open(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg").convert("RGB")
    person = person.resize((side, int(side * person.height / person.width))).crop((0, 0, side, side))
    root = default_data_root()
    hands = sorted((root / "asl_alphabet_subset" / "I").glob("*"))[:1] if root else []
    hand = Image.open(hands[0]).convert("RGB").resize((side // 3, side // 3)) if hands else None
    frames = []
    for k in range(n):
        t = (k % 30) / 29
        x = 0.55 + (0.0 if t < 0.5 else -0.15 * (1 - np.cos(np.pi * (t - 0.5))))
        y = 0.35 + 0.2 * min(t, 0.5) * 2
        im = person.copy()
        if hand is not None:
            im.paste(hand, (int(x * side), int(y * side)))
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=80)
        frames.append(buf.getvalue())
    return frames


def tiny_pixel_model(folder: Path) -> Path:
    """A random convkan exported to ONNX: the pixel path's cost without a trained model."""
    import torch

    from asl_tinyml.export import export_onnx
    from asl_tinyml.models import create_model, save_checkpoint

    torch.manual_seed(0)
    options = {"channels": [8, 16], "hidden": 16}
    model = create_model("convkan", 5, **options).eval()
    save_checkpoint(folder / "best.pt", model, {"model": "convkan", "model_options": options,
                                                "classes": list("abcde"), "image_size": 64})
    return export_onnx(folder / "best.pt", folder / "pixel.onnx")


def stream(url: str, frames: list[bytes], seconds: float, mode: str) -> dict[str, float]:
    from websockets.sync.client import connect

    times, mp_ms, motion_ms, pixel_ms, hands = [], [], [], [], []
    with connect(url, max_size=None) as ws:
        hello = json.loads(ws.recv())
        if "motion" not in hello:
            sys.exit("error: the app has no motion models (train them: asl-tinyml motion train)")
        ws.send(json.dumps({"type": "mode", "mode": mode}))
        ws.recv()
        start = time.perf_counter()
        k = 0
        while time.perf_counter() - start < seconds:
            ws.send(frames[k % len(frames)])
            reply = json.loads(ws.recv())
            k += 1
            if reply.get("type") != "prediction":
                continue
            times.append(time.perf_counter())
            m = reply["motion"]
            mp_ms.append(m.get("mediapipe_ms", np.nan))
            motion_ms.append(m.get("ms", np.nan))
            pixel_ms.append(reply["ms"])
            hands.append(m["hand"])
    span = times[-1] - times[0] if len(times) > 1 else float("nan")
    return {
        "mode": mode, "frames": len(times), "fps": round((len(times) - 1) / span, 2),
        "median_mediapipe_ms": round(float(np.nanmedian(mp_ms)), 1),
        "median_motion_model_ms": round(float(np.nanmedian(motion_ms)), 3),
        "median_pixel_ms": round(float(np.median(pixel_ms)), 2), "hand_seen": round(float(np.mean(hands)), 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="pixel model (default: a random tiny convkan)")
    parser.add_argument("--motion-dir", type=Path, default=Path("models"), help="folder of asl_motion_*_int8.onnx")
    parser.add_argument("--seconds", type=float, default=15.0, help="streaming time per mode")
    args = parser.parse_args(argv)

    import uvicorn

    from asl_tinyml.motion import KINDS, MotionModels, default_model_path, window_latency
    from asl_tinyml.serve import ServeSettings, create_app

    motion = MotionModels.load(args.motion_dir, threads=1)
    if motion is None:
        sys.exit(f"error: no motion models in {args.motion_dir} (or MediaPipe is missing)")
    result: dict[str, object] = {"latency": {k: window_latency(default_model_path(k, args.motion_dir), frames=30)
                                             for k in KINDS if default_model_path(k, args.motion_dir).exists()}}
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or tiny_pixel_model(Path(tmp))
        app = create_app(model, settings=ServeSettings(max_fps=100), motion=motion)
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        frames = scene_frames()
        result["stream"] = [stream(f"ws://127.0.0.1:{port}/ws", frames, args.seconds, mode) for mode in motion.describe()["modes"]]
        server.should_exit = True
        thread.join(timeout=10)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
