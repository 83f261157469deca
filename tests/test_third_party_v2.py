"""`fit --oracle.url` against a third-party V2 server: MLServer (Seldon) serving a small PyTorch digits classifier,
end to end on 127.0.0.1 through bench/third_party_v2.py (skipped only where no Python has mlserver); and, without
MLServer, the client's JSON fallback where a server fails on binary requests with a 500, as MLServer 1.7 does."""

from __future__ import annotations

import http.server
import importlib.util
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from stealbench.errors import EndpointError
from stealbench.serve.client import V2Client

REPO = Path(__file__).resolve().parents[1]
SETUP = "export STEALBENCH_MLSERVER_PYTHON=$(bash .ci/mlserver.sh) (builds .venv-mlserver, as .ci/run does)"


def _mlserver_python() -> tuple[str | None, str]:
    """A Python with mlserver and torch ($STEALBENCH_MLSERVER_PYTHON, else this one), or None and why not."""
    env = os.environ.get("STEALBENCH_MLSERVER_PYTHON")
    if env:
        try:
            done = subprocess.run([env, "-c", "import mlserver, torch"], capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return None, f"STEALBENCH_MLSERVER_PYTHON={env} does not run ({exc})"
        if done.returncode:
            return None, f"STEALBENCH_MLSERVER_PYTHON={env} cannot import mlserver and torch: " + \
                (done.stderr.strip().splitlines() or ["?"])[-1]
        return env, ""
    if importlib.util.find_spec("mlserver") is None:
        return None, f"no Python with mlserver (not importable here, STEALBENCH_MLSERVER_PYTHON unset); {SETUP}"
    return sys.executable, ""


class _FailsOnBinary(http.server.BaseHTTPRequestHandler):
    """MLServer 1.7's answers: a binary body (not JSON) is a 500 with a plain-text body; JSON is answered.
    `always_500`: every infer request fails (a broken server, not a missing extension)."""

    seen: list[str] = []
    always_500 = False

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        binary = "Inference-Header-Content-Length" in self.headers
        type(self).seen.append("binary" if binary else "json")
        if binary or self.always_500:
            status, text, kind = 500, b"Internal Server Error", "text/plain; charset=utf-8"
        else:
            batch = json.loads(body)["inputs"][0]["shape"][0]
            answer = {"model_name": "victim", "outputs": [
                {"name": "probs", "shape": [batch, 10], "datatype": "FP32", "parameters": {"content_type": "np"},
                 "data": [0.1] * (10 * batch)}]}
            status, text, kind = 200, json.dumps(answer).encode(), "application/json"
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(text)))
        self.end_headers()
        self.wfile.write(text)

    def log_message(self, *args):
        pass


def _serve(**attrs):
    handler = type("Handler", (_FailsOnBinary,), {"seen": [], **attrs})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, handler


def test_client_falls_back_to_json_where_the_first_binary_request_is_a_500():
    import torch

    server, handler = _serve()
    try:
        with V2Client(f"http://127.0.0.1:{server.server_address[1]}", retries=3, backoff=0.01) as client:
            for _ in range(2):
                probs, _ = client.infer(torch.zeros(3, 1, 8, 8))
                assert probs.shape == (3, 10)
        assert handler.seen == ["binary", "json", "json"]  # the binary 500 is not retried; JSON from then on
        assert not client.binary and "500" in client.fallback
    finally:
        server.shutdown()
        server.server_close()


def test_a_server_failing_in_json_too_is_still_an_error_after_the_retries():
    import torch

    server, handler = _serve(always_500=True)
    try:
        with V2Client(f"http://127.0.0.1:{server.server_address[1]}", retries=2, backoff=0.01) as client:
            with pytest.raises(EndpointError, match=r"answered 500.*3 tries"):
                client.infer(torch.zeros(2, 1, 8, 8))
        assert handler.seen == ["binary", "json", "json", "json"]
    finally:
        server.shutdown()
        server.server_close()


def test_a_500_after_binary_answers_is_retried_not_a_fallback():
    import torch

    from stealbench.serve.protocol import encode_binary_response

    class Flaky(http.server.BaseHTTPRequestHandler):
        calls: list[int] = []

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            type(self).calls.append(1)
            if len(self.calls) == 2:  # the second request fails once
                self.send_response(503)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body, length = encode_binary_response("victim", torch.full((2, 10), 0.1))
            self.send_response(200)
            self.send_header("Inference-Header-Content-Length", str(length))
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with V2Client(f"http://127.0.0.1:{server.server_address[1]}", retries=2, backoff=0.01) as client:
            for _ in range(2):
                client.infer(torch.zeros(2, 1, 8, 8))
            assert client.binary and client.fallback is None and client.last_attempts == 2
        assert len(Flaky.calls) == 3
    finally:
        server.shutdown()
        server.server_close()


MLSERVER_PYTHON, WHY_NOT = _mlserver_python()


@pytest.mark.skipif(MLSERVER_PYTHON is None, reason=WHY_NOT)
def test_jbda_steals_a_digits_victim_served_by_mlserver(tmp_path):
    """bench/third_party_v2.py: stealbench's digits victim as TorchScript in MLServer (its own Python, a free
    port on 127.0.0.1), `fit --attack jbda --oracle.url` against it with a tiny budget, the server stopped."""
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1", "STEALBENCH_CACHE_DIR": str(tmp_path),
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "third_party_v2.py"), "--mlserver-python", MLSERVER_PYTHON,
         "--workdir", str(tmp_path), "--budget", "200", "--victim-epochs", "3", "--ready-seconds", "120",
         "--fit-seconds", "300", "--sandbox", "off", "--attack.rounds", "2", "--attack.epochs_per_round", "2"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "MLServer stopped (exit status 0)" in output
    results = json.loads((tmp_path / "runs" / "steal" / "results.json").read_text())
    assert results["status"] == "complete" and results["identity"]["attack"] == "jbda"
    endpoint = results["endpoint"]
    assert endpoint["url"].startswith("http://127.0.0.1:") and endpoint["model_name"] == "digits-victim"
    assert endpoint["binary"] is False and "500" in endpoint["binary_fallback"]  # MLServer: JSON only
    metrics = results["metrics"]
    assert metrics["queries"] == 200 and results["curve"][-1]["queries"] == 200
    assert metrics["victim/acc"] > 0.5  # MLServer's answers are the victim's: a real classifier, not noise
    assert 0 <= metrics["surrogate/fidelity"] <= 1
    clean = float(output.split("clean acc ", 1)[1].split(",", 1)[0])
    assert abs(metrics["victim/acc"] - clean) < 1e-3  # the served TorchScript answers as the victim does
