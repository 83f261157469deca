"""Helpers of tests/test_serve.py: a `stealbench` subprocess with bounded waits on its output, and V2 requests
(JSON and binary) with httpx on 127.0.0.1."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
HEADER = "Inference-Header-Content-Length"


def _env(base: Path) -> dict[str, str]:
    env = {**os.environ, "WANDB_MODE": "disabled", "WANDB_SILENT": "true", "WANDB_ERROR_REPORTING": "false",
           "STEALBENCH_CACHE_DIR": str(base / "cache"), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    for var in ("WANDB_DIR", "WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR"):
        env[var] = str(base / "wandb")
    env.pop("WANDB_API_KEY", None)
    return env


class Proc:
    """A subprocess whose stdout lines are read by a thread into a queue (bounded waits, never a blocking read)."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path) -> None:
        self.lines: list[str] = []
        self._queue: queue.Queue[str] = queue.Queue()
        self.popen = subprocess.Popen([sys.executable, "-m", "stealbench", *args], cwd=cwd, env=env, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.popen.stdout:
            self._queue.put(line)

    def wait_for(self, text: str, seconds: float) -> str:
        ends = time.monotonic() + seconds
        while time.monotonic() < ends:
            try:
                line = self._queue.get(timeout=0.2)
            except queue.Empty:
                if self.popen.poll() is not None and self._queue.empty():
                    break
                continue
            self.lines.append(line)
            if text in line:
                return line
        raise AssertionError(f"no {text!r} line within {seconds}s; output:\n{''.join(self.lines)}")

    def output(self) -> str:
        while not self._queue.empty():
            self.lines.append(self._queue.get())
        return "".join(self.lines)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)


def _digits(n: int, start: int = 0) -> np.ndarray:
    from sklearn.datasets import load_digits

    return (load_digits().images[start:start + n] / 16.0).astype(np.float32)[:, None]


def _request(x: np.ndarray, datatype: str = "FP32") -> dict:
    return {"inputs": [{"name": "input-0", "shape": list(x.shape), "datatype": datatype,
                        "data": x.flatten().tolist()}]}


def _infer(url: str, body, account: str | None = None, **headers) -> httpx.Response:
    if account:
        headers["X-Account"] = account
    kwargs = {"content": body} if isinstance(body, (bytes, str)) else {"json": body}
    return httpx.post(f"{url}/v2/models/victim/infer", headers=headers, timeout=30, **kwargs)


def _probs(response: httpx.Response, dtype=np.float64) -> np.ndarray:
    assert response.status_code == 200, response.text
    out = response.json()["outputs"][0]
    assert out["datatype"] == "FP32" and out["name"] == "probs"
    return np.asarray(out["data"], dtype=dtype).reshape(out["shape"])



def _binary_request(x: np.ndarray, datatype: str = "FP32", output_binary: bool = True) -> tuple[bytes, dict]:
    """A binary-extension infer body for images x and its headers (the length of its JSON header)."""
    raw = np.ascontiguousarray(x, dtype="<f4" if datatype == "FP32" else "u1").tobytes()
    head = {"inputs": [{"name": "input-0", "shape": list(x.shape), "datatype": datatype,
                        "parameters": {"binary_data_size": len(raw)}}],
            "outputs": [{"name": "probs", "parameters": {"binary_data": output_binary}}]}
    text = json.dumps(head).encode()
    return text + raw, {HEADER: str(len(text)), "Content-Type": "application/octet-stream"}


def _binary_probs(response: httpx.Response) -> tuple[np.ndarray, dict]:
    """The probabilities (float32, as sent) and the JSON header of a binary infer response."""
    assert response.status_code == 200, response.text
    length = int(response.headers[HEADER])
    head = json.loads(response.content[:length])
    out = head["outputs"][0]
    assert out["datatype"] == "FP32" and "data" not in out
    raw = response.content[length:]
    assert len(raw) == out["parameters"]["binary_data_size"] == 4 * int(np.prod(out["shape"]))
    return np.frombuffer(raw, dtype="<f4").reshape(out["shape"]), head
