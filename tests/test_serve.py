"""`stealbench serve` (a V2 / Open Inference Protocol endpoint) and `fit --oracle.url`, end to end and for real:
servers in subprocesses on 127.0.0.1, httpx requests, no mocked HTTP. Two servers per module (deceptive and
none, over the same cached victim); the last test kills the undefended one mid-run. JSON and binary (the V2
binary tensor data extension) requests alike; `fit --oracle.url` uses binary by default."""

from __future__ import annotations

import http.server
import json
import threading
import time

import httpx
import numpy as np
import pytest
from serve_helpers import HEADER, Proc, _binary_probs, _binary_request, _digits, _env, _infer, _probs, _request

from stealbench.errors import EndpointError
from stealbench.serve.client import EndpointRefused, V2Client

BUDGET = 1000
MAX_BATCH = 512


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    base = tmp_path_factory.mktemp("serve")
    env = _env(base)
    common = ["--data", "digits", "--victim.epochs", "2", "--victim.cache_dir", str(base / "victims"), "--port", "0",
              "--budget", str(BUDGET), "--max_batch", str(MAX_BATCH), "--progress_bar", "false"]
    procs = {}
    try:
        for defense in ("deceptive", "none"):
            procs[defense] = Proc(["serve", *common, "--defense", defense], env, base)
        urls = {}
        for defense, proc in procs.items():
            line = proc.wait_for("serving victim on http://127.0.0.1:", 180)
            urls[defense] = line.split(" on ", 1)[1].strip()
        yield {"urls": urls, "procs": procs, "base": base, "env": env}
    finally:
        for proc in procs.values():
            proc.stop()


def test_health_and_metadata(servers):
    url = servers["urls"]["deceptive"]
    assert httpx.get(f"{url}/v2/health/live", timeout=10).json() == {"live": True}
    assert httpx.get(f"{url}/v2/health/ready", timeout=10).status_code == 200
    meta = httpx.get(f"{url}/v2/models/victim", timeout=10).json()
    assert meta["name"] == "victim" and meta["platform"]
    assert meta["inputs"] == [{"name": "input-0", "datatype": "FP32", "shape": [-1, 1, 8, 8]}]
    assert meta["outputs"] == [{"name": "probs", "datatype": "FP32", "shape": [-1, 10]}]
    assert meta["parameters"]["defense"] == "deceptive" and meta["parameters"]["max_batch"] == MAX_BATCH
    missing = httpx.get(f"{url}/v2/models/other", timeout=10)
    assert missing.status_code == 404 and "unknown model 'other'" in missing.json()["error"]


def test_infer_simplex_and_defense(servers):
    x = _digits(6)
    defended = _infer(servers["urls"]["deceptive"], _request(x), "simplex")
    probs = _probs(defended)
    assert probs.shape == (6, 10)
    assert (probs >= 0).all() and np.allclose(probs.sum(1), 1, atol=1e-4)
    clean = _probs(_infer(servers["urls"]["none"], _request(x), "simplex"))
    assert np.abs(clean - probs).max() > 1e-3  # the deceptive perturbation changed the released answers
    assert np.allclose(clean.sum(1), 1, atol=1e-4)
    # UINT8 images (0..255) are the same images: the same answers
    as_bytes = np.round(x * 255).astype(np.uint8)
    again = _probs(_infer(servers["urls"]["none"], _request(as_bytes, "UINT8"), "simplex"))
    refloat = _probs(_infer(servers["urls"]["none"], _request(as_bytes.astype(np.float32) / 255), "simplex"))
    assert np.allclose(again, refloat, atol=1e-6)
    assert defended.json()["model_name"] == "victim"


def test_accounts_count_separately(servers):
    url = servers["urls"]["deceptive"]
    first = _infer(url, _request(_digits(3)), "alice").json()["parameters"]
    assert (first["account"], first["queries_used"], first["queries_left"]) == ("alice", 3, BUDGET - 3)
    second = _infer(url, _request(_digits(2)), "alice").json()["parameters"]
    assert (second["queries_used"], second["queries_left"]) == (5, BUDGET - 5)
    assert _infer(url, _request(_digits(2)), "bob").json()["parameters"]["queries_used"] == 2
    keyed = _infer(url, _request(_digits(4)), Authorization="Bearer k-123").json()["parameters"]
    assert keyed["queries_used"] == 4 and "k-123" not in keyed["account"]
    anonymous = _infer(url, _request(_digits(1))).json()["parameters"]
    assert anonymous["account"] == "anonymous"


def test_budget_exhausted_is_429_with_what_is_left(servers):
    url = servers["urls"]["deceptive"]
    x = _digits(MAX_BATCH)
    assert _infer(url, _request(x), "spender").status_code == 200
    assert _infer(url, _request(x[:BUDGET - MAX_BATCH - 10]), "spender").status_code == 200
    refused = _infer(url, _request(x[:11]), "spender")
    assert refused.status_code == 429
    body = refused.json()
    assert "budget exhausted" in body["error"] and "10 queries left" in body["error"]
    assert body["parameters"]["queries_left"] == 10 and body["parameters"]["queries_used"] == BUDGET - 10
    # the refused batch was not counted; what is left still answers
    assert _infer(url, _request(x[:10]), "spender").json()["parameters"]["queries_left"] == 0


@pytest.mark.parametrize("body, status, words", [
    (b"{not json", 400, "malformed JSON"),
    (b"[1, 2]", 400, "JSON object"),
    ({"inputs": []}, 400, "exactly one tensor"),
    ({"inputs": [{"name": "x", "shape": [1, 1, 8, 8], "datatype": "INT64", "data": [0] * 64}]}, 400,
     "wrong datatype 'INT64'"),
    ({"inputs": [{"name": "x", "shape": [1, 1, 8, 7], "datatype": "FP32", "data": [0.0] * 56}]}, 400,
     "wrong shape [1, 1, 8, 7]"),
    ({"inputs": [{"name": "x", "shape": [2, 1, 8, 8], "datatype": "FP32", "data": [0.0] * 64}]}, 400,
     "holds 64 values"),
    ({"inputs": [{"name": "x", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": [2.0] * 64}]}, 400, "[0, 1]"),
    ({"inputs": [{"name": "x", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": ["a"] * 64}]}, 400,
     "list of numbers"),
    ({"inputs": [{"name": "x", "shape": [1, 1, 8, 8], "datatype": "UINT8", "data": [300] * 64}]}, 400, "0..255"),
    ({"inputs": [{"name": "x", "shape": [MAX_BATCH + 1, 1, 8, 8], "datatype": "FP32",
                  "data": [0.0] * ((MAX_BATCH + 1) * 64)}]}, 413, "--max_batch"),
])
def test_bad_requests_are_4xx_with_a_message(servers, body, status, words):
    response = _infer(servers["urls"]["deceptive"], body, "bad-input")
    assert response.status_code == status, response.text
    assert words in response.json()["error"]


def test_bad_authorization_and_account(servers):
    url = servers["urls"]["deceptive"]
    assert _infer(url, _request(_digits(1)), Authorization="Basic abc").status_code == 401
    assert _infer(url, _request(_digits(1)), "bad name!").status_code == 400
    # nothing was charged for refused requests
    assert _infer(url, _request(_digits(1)), "bad-input").json()["parameters"]["queries_used"] == 1


def test_client(servers):
    import torch

    with V2Client(servers["urls"]["deceptive"], account="client", retries=0) as client:
        assert client.live() and client.ready()
        assert client.metadata()["name"] == "victim"
        probs, params = client.infer(torch.from_numpy(_digits(4)))
        assert probs.shape == (4, 10) and params["queries_used"] == 4
        with pytest.raises(EndpointRefused) as refused:
            client.infer(torch.ones(1, 1, 8, 9))
        assert refused.value.status == 400 and "wrong shape" in str(refused.value)


def test_remote_oracle_budget_and_count_check(servers):
    """The remote oracle's budget is exact on this side (nothing sent past it), and the server's echoed count is
    checked: another client on the same account is caught."""
    import torch

    from stealbench.config import OracleConfig
    from stealbench.errors import BudgetExceededError
    from stealbench.serve.remote_oracle import RemoteOracle

    url = servers["urls"]["deceptive"]
    assert _infer(url, _request(_digits(2)), "shared").status_code == 200  # used before this oracle starts
    oracle = RemoteOracle(OracleConfig(url=url, account="shared", retries=0), budget=5, input_shape=(1, 8, 8),
                          num_classes=10)
    try:
        x = torch.from_numpy(_digits(6))
        with pytest.raises(BudgetExceededError):
            oracle.query(x)
        probs = oracle.query(x[:3])
        assert probs.shape == (3, 10) and oracle.used == 3 and oracle.remaining == 2
        assert oracle.record()["queries_used_before"] == 2 and oracle.record()["api_key"] is None
        assert _infer(url, _request(_digits(1)), "shared").status_code == 200  # someone else, same account
        with pytest.raises(EndpointError, match="another client shares account 'shared'"):
            oracle.query(x[:1])
    finally:
        oracle.close()


class _Flaky(http.server.BaseHTTPRequestHandler):
    hits = 0
    delay = 0.0

    def do_GET(self):  # noqa: N802 - http.server's name
        type(self).hits += 1
        time.sleep(self.delay)
        body = b'{"error": "overloaded"}'
        try:
            self.send_response(503)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("delay, words", [(0.0, "answered 503: overloaded"), (0.6, "timed out")])
def test_client_retries_5xx_and_timeouts_then_fails(delay, words):
    handler = type("Handler", (_Flaky,), {"hits": 0, "delay": delay})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        client = V2Client(url, retries=2, backoff=0.01, timeout=0.3)
        with pytest.raises(EndpointError) as failed:
            client.metadata()
        assert handler.hits == 3  # one try and two retries, then one line naming the endpoint
        assert url in str(failed.value) and words in str(failed.value) and "3 tries" in str(failed.value)
    finally:
        server.shutdown()
        server.server_close()


def test_client_unreachable_url_is_one_line():
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(EndpointError) as failed:
        V2Client(f"http://127.0.0.1:{port}", retries=1, backoff=0.01, timeout=2).metadata()
    assert time.monotonic() - started < 10
    assert f"http://127.0.0.1:{port}" in str(failed.value) and "cannot be reached" in str(failed.value)
    assert "\n" not in str(failed.value)


def test_cli_errors_are_one_line(capsys):
    from stealbench.cli import main

    assert main(["serve", "--attack", "jbda"]) == 2
    assert main(["serve", "--port", "70000"]) == 2
    assert main(["fit", "--oracle.url", "ftp://somewhere"]) == 2
    assert main(["fit", "--oracle.url", "http://127.0.0.1:1", "--defense", "deceptive"]) == 2
    assert main(["fit", "--oracle.url", "http://127.0.0.1:1", "--victim.epochs", "3"]) == 2  # no local victim
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 5 and all(line.startswith("error: ") for line in err), err
    assert "attacker's option" in err[0] and "--port" in err[1] and "http://" in err[2] and "--defense" in err[3]
    assert "--victim.epochs" in err[4] and "endpoint" in err[4]


def test_proxy_applies_a_defense_to_an_upstream_endpoint(servers):
    """`serve --upstream` over the undefended server answers what the deceptive server answers (same victim)."""
    proxy = Proc(["serve", "--upstream", servers["urls"]["none"], "--defense", "deceptive", "--port", "0",
                  "--budget", "50", "--model_name", "proxied"], servers["env"], servers["base"])
    try:
        url = proxy.wait_for("serving proxied on http://127.0.0.1:", 120).split(" on ", 1)[1].strip()
        x = _digits(5, start=100)
        response = httpx.post(f"{url}/v2/models/proxied/infer", json=_request(x), headers={"X-Account": "p"},
                              timeout=30)
        proxied = _probs(response)
        assert response.json()["parameters"]["queries_left"] == 45
        direct = _probs(_infer(servers["urls"]["deceptive"], _request(x), "p"))
        assert np.allclose(proxied, direct, atol=1e-6)
        assert httpx.get(f"{url}/v2/models/proxied", timeout=10).json()["parameters"]["upstream"] == \
            servers["urls"]["none"]
    finally:
        proxy.stop()


def _raw(head, tail: bytes = b"", length: str | None = None) -> tuple[bytes, dict]:
    text = head if isinstance(head, bytes) else json.dumps(head).encode()
    return text + tail, {HEADER: str(len(text)) if length is None else length}


def _binary_head(size, datatype: str = "FP32", shape=(1, 1, 8, 8), **tensor) -> dict:
    return {"inputs": [{"name": "input-0", "shape": list(shape), "datatype": datatype,
                        "parameters": {"binary_data_size": size}, **tensor}]}


_ONE = _digits(1).astype("<f4").tobytes()  # 256 bytes: one 8x8 FP32 image


@pytest.mark.parametrize("body, words", [
    (_raw(_binary_head(256), _ONE, length="999"), "says the JSON header is 999 bytes, but the whole request body"),
    (_raw(_binary_head(256), _ONE, length="12abc"), "non-negative integer"),
    (_raw(_binary_head(100), _ONE[:100]), "binary_data_size 100 does not match shape [1, 1, 8, 8] of FP32"),
    (_raw(_binary_head(64, "UINT8"), _ONE[:256]), "add up to 64 bytes, but 256 bytes follow"),
    (_raw(_binary_head(256), _ONE + b"\0" * 8), "add up to 256 bytes, but 264 bytes follow"),
    (_raw(_binary_head(256), _ONE[:200]), "add up to 256 bytes, but 200 bytes follow"),
    (_raw(b'{"inputs": "\x80\xff"}', _ONE), "malformed JSON in the JSON header"),  # not UTF-8
    (_raw(b'{"inputs": [', _ONE), "malformed JSON in the JSON header"),
    (_raw(_request(_digits(1)), _ONE), "declares no binary_data_size"),
    (_raw(_binary_head(256, data=[0.0] * 64), _ONE), "both 'data' and parameters.binary_data_size"),
    (_raw(_binary_head(-4), _ONE), "binary_data_size must be a byte count"),
    (_raw(_binary_head(True), _ONE), "binary_data_size must be a byte count"),
    (_raw({**_binary_head(256), "parameters": {"binary_data_output": "yes"}}, _ONE), "must be true or false"),
    (_raw(_binary_head(256, datatype="INT64"), _ONE), "wrong datatype 'INT64'"),
    (_raw(_binary_head(256), np.full(64, 2.0, "<f4").tobytes()), "FP32 pixels must lie in [0, 1]"),
    (_raw(_binary_head(256), np.full(64, np.nan, "<f4").tobytes()), "NaN or infinite"),
])
def test_malformed_binary_requests_are_400_with_a_message(servers, body, words):
    content, headers = body
    response = _infer(servers["urls"]["deceptive"], content, "bad-binary", **headers)
    assert response.status_code == 400, response.text
    assert words in response.json()["error"] and "\n" not in response.json()["error"]


def test_binary_answers_are_bit_identical_to_json(servers):
    """The same images, as JSON and as raw bytes, FP32 and UINT8: the same float32 probabilities, bit for bit."""
    x = _digits(7, start=300)
    as_bytes = np.round(x * 255).astype(np.uint8)
    for defense in ("none", "deceptive"):
        url = servers["urls"][defense]
        for images, datatype in ((x, "FP32"), (as_bytes, "UINT8")):
            by_json = _probs(_infer(url, _request(images, datatype), "same"), dtype=np.float32)
            content, headers = _binary_request(images, datatype)
            binary, head = _binary_probs(_infer(url, content, "same", **headers))
            assert binary.view(np.uint32).tolist() == by_json.view(np.uint32).tolist(), (defense, datatype)
            assert head["model_name"] == "victim" and head["parameters"]["account"] == "same"
            content, headers = _binary_request(images, datatype, output_binary=False)  # binary in, JSON out
            mixed = _infer(url, content, "same", **headers)
            assert HEADER not in mixed.headers
            assert _probs(mixed, dtype=np.float32).view(np.uint32).tolist() == by_json.view(np.uint32).tolist()
    after = _infer(servers["urls"]["none"], _request(x[:1]), "same").json()["parameters"]
    assert after["queries_used"] == 2 * 3 * len(x) + 1  # on this server: 2 datatypes x 3 encodings, each counted once
    assert httpx.get(f"{servers['urls']['none']}/v2", timeout=10).json()["extensions"] == ["binary_tensor_data"]


def test_binary_requests_count_against_the_budget_like_json(servers):
    url = servers["urls"]["deceptive"]
    x = _digits(MAX_BATCH)
    content, headers = _binary_request(x)
    _, head = _binary_probs(_infer(url, content, "bin-spender", **headers))
    assert (head["parameters"]["queries_used"], head["parameters"]["queries_left"]) == (MAX_BATCH, BUDGET - MAX_BATCH)
    assert _infer(url, _request(x[:BUDGET - MAX_BATCH - 10]), "bin-spender").status_code == 200
    content, headers = _binary_request(x[:11])
    refused = _infer(url, content, "bin-spender", **headers)
    assert refused.status_code == 429 and HEADER not in refused.headers
    assert "10 queries left" in refused.json()["error"] and refused.json()["parameters"]["queries_left"] == 10
    content, headers = _binary_request(x[:10])
    assert _binary_probs(_infer(url, content, "bin-spender", **headers))[1]["parameters"]["queries_left"] == 0
    content, headers = _binary_request(_digits(MAX_BATCH + 1))
    oversize = _infer(url, content, "bin-big", **headers)
    assert oversize.status_code == 413 and "--max_batch" in oversize.json()["error"]
    # refused binary requests charged nothing
    assert _infer(url, _request(_digits(1)), "bad-binary").json()["parameters"]["queries_used"] == 1


def test_client_binary_and_json_give_the_same_answers(servers):
    import torch

    x = torch.from_numpy(_digits(5, start=400))
    with V2Client(servers["urls"]["deceptive"], account="client-bin", retries=0) as binary, \
            V2Client(servers["urls"]["deceptive"], account="client-json", retries=0, binary=False) as plain:
        by_binary, params = binary.infer(x)
        by_json, _ = plain.infer(x)
        assert binary.binary and binary.fallback is None and not plain.binary
        assert torch.equal(by_binary, by_json) and by_binary.dtype == torch.float32
        assert params["queries_used"] == 5
        with pytest.raises(EndpointRefused) as refused:  # a real refusal is not taken for a missing extension
            binary.infer(torch.ones(1, 1, 8, 9))
        assert refused.value.status == 400 and "wrong shape" in str(refused.value) and binary.binary


class _JsonOnly(http.server.BaseHTTPRequestHandler):
    """A V2 endpoint without the binary extension (a stand-in for a third party): binary bodies get a 400."""

    seen: list = []

    def do_POST(self):  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        binary = self.headers.get(HEADER) is not None
        type(self).seen.append("binary" if binary else "json")
        if binary:
            status, answer = 400, {"error": "unexpected binary data"}
        else:
            batch = json.loads(body)["inputs"][0]["shape"][0]
            status, answer = 200, {"outputs": [{"name": "probs", "shape": [batch, 10], "datatype": "FP32",
                                                "data": [0.1] * (10 * batch)}]}
        text = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(text)))
        self.end_headers()
        self.wfile.write(text)

    def log_message(self, *args):
        pass


def test_client_falls_back_to_json_where_binary_is_refused():
    import torch

    handler = type("Handler", (_JsonOnly,), {"seen": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with V2Client(f"http://127.0.0.1:{server.server_address[1]}", retries=0) as client:
            for _ in range(2):
                probs, _ = client.infer(torch.zeros(3, 1, 8, 8))
                assert probs.shape == (3, 10)
        assert handler.seen == ["binary", "json", "json"]  # one binary try, then JSON only
        assert not client.binary and "unexpected binary data" in client.fallback
    finally:
        server.shutdown()
        server.server_close()


def _fit(servers, url: str, name: str, *extra: str) -> Proc:
    return Proc(["fit", "--data", "digits", "--attack", "random", "--oracle.url", url, "--output_dir",
                 str(servers["base"] / "runs"), "--name", name, "--sandbox", "off", "--progress_bar", "false",
                 *extra], servers["env"], servers["base"])


def test_fit_against_the_endpoint(servers):
    url = servers["urls"]["deceptive"]
    run = _fit(servers, url, "remote", "--budget", "100", "--oracle.api_key", "secret-key-1")
    try:
        run.wait_for("results: ", 240)
        assert run.popen.wait(30) == 0, run.output()
    finally:
        run.stop()
    folder = servers["base"] / "runs" / "remote"
    results = json.loads((folder / "results.json").read_text())
    assert results["status"] == "complete"
    assert results["identity"]["endpoint"] == url and results["endpoint"]["url"] == url
    assert results["metrics"]["queries"] <= 100 and results["curve"][-1]["queries"] <= 100
    assert 0 <= results["metrics"]["surrogate/fidelity"] <= 1
    assert results["endpoint"]["binary"] is True and results["endpoint"]["binary_fallback"] is None  # the default
    # the attacker's compute is measured here too; the endpoint's answering time is its own, not claimed
    compute = results["attacker_compute"]
    assert compute["wall_seconds"] > 0 and compute["defender_answering_seconds"] is None
    for path in folder.iterdir():  # the key is never written
        if path.suffix in (".json", ".yaml", ".txt"):
            assert "secret-key-1" not in path.read_text(), path
    # the server counted exactly what the run counted, on the key's account
    after = _infer(url, _request(_digits(1)), Authorization="Bearer secret-key-1").json()["parameters"]
    assert after["queries_used"] == results["metrics"]["queries"] + 1


def test_server_dying_mid_run_fails_the_run(servers):
    url = servers["urls"]["none"]
    run = _fit(servers, url, "dies", "--budget", "400", "--attack.num_checkpoints", "8", "--attack.epochs", "30",
               "--oracle.retries", "1", "--oracle.timeout", "5", "--oracle.binary", "false")
    try:
        run.wait_for("round  1", 240)
        servers["procs"]["none"].stop()  # the endpoint goes away while the attack still has queries to send
        assert run.popen.wait(120) != 0
    finally:
        run.stop()
    folder = servers["base"] / "runs" / "dies"
    assert not (folder / "results.json").exists()
    error = (folder / "error.txt").read_text()
    assert url in error and "cannot be reached" in error
    assert f"error: the endpoint {url}" in run.output()


def test_stateful_defense_gets_one_copy_per_account():
    """Accounts itself (no HTTP): a stateful defense keeps one query history per account, a stateless one is shared."""
    import torch

    from stealbench.defenses.base import Defense
    from stealbench.serve.accounts import Accounts, account_of
    from stealbench.serve.command import is_loopback

    class Counting(Defense):
        stateful = True

        def __init__(self):
            super().__init__()
            self.seen = 0

        def forward(self, x, probs):
            self.seen += len(x)
            return probs

    made = []

    def make_answerer(defense):
        made.append(defense)

        def answer(x):
            out = defense(x, torch.full((len(x), 2), 0.5))
            return out, out, None
        return answer

    accounts = Accounts(10, Counting(), make_answerer)
    for name, n in (("a", 3), ("b", 2), ("a", 4)):
        accounts.answer(name, torch.zeros(n, 1, 2, 2))
    assert accounts.counts(accounts.get("a"))["queries_used"] == 7
    assert accounts.counts(accounts.get("b"))["queries_left"] == 8
    assert [d.seen for d in made] == [7, 2]  # a deep copy each, in the order the accounts appeared
    assert account_of("Bearer k", "x") != account_of("Bearer j", "x") and account_of(None, "x") == "x"
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4")
