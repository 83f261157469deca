"""The channel between the two sides carries plain data only: decoding never runs the sender's code."""

import pickle

import pytest
import torch

from stealbench.transport import RemoteError, decode, encode, error_payload, rebuild_error
from stealbench.errors import BudgetExceededError


def test_tensors_and_plain_values_round_trip():
    message = {"x": torch.rand(4, 1, 8, 8), "ids": torch.arange(5), "mask": torch.tensor([True, False]),
               "half": torch.ones(3, dtype=torch.bfloat16), "empty": torch.empty(0, 10),
               "meta": [1, 2.5, None, "text", True], "nested": {"state": {"w": torch.eye(2, dtype=torch.float64)}}}
    back = decode(encode(message))
    for key in ("x", "ids", "mask", "half", "empty"):
        assert back[key].dtype == message[key].dtype and torch.equal(back[key], message[key])
    assert back["meta"] == message["meta"] and torch.equal(back["nested"]["state"]["w"], torch.eye(2).double())
    back["x"].add_(1)  # decoded tensors own writable memory


@pytest.mark.parametrize("obj", [object(), torch.nn.Linear(2, 2), {1: "int key"}, lambda: 0])
def test_only_plain_data_can_be_sent(obj):
    with pytest.raises(TypeError):
        encode({"payload": obj})


def test_a_pickle_is_not_a_message():
    """An attacker writing its own bytes to the pipe gets an error, not code execution on the defender's side."""
    with pytest.raises(RemoteError, match="malformed"):
        decode(pickle.dumps({"x": 1}))
    with pytest.raises(RemoteError, match="malformed"):
        decode(encode({"x": torch.zeros(2)}) + b"\xff" * 40)


def test_errors_cross_as_their_stealbench_type():
    rebuilt = rebuild_error(error_payload(BudgetExceededError("3 of 10 left")))
    assert isinstance(rebuilt, BudgetExceededError) and "3 of 10" in str(rebuilt)
    other = rebuild_error(error_payload(ValueError("boom")))
    assert isinstance(other, RemoteError) and str(other) == "boom"


def test_a_buffer_that_does_not_fit_its_tensor_is_refused():
    data = bytearray(encode({"x": torch.zeros(2)}))
    data[data.index(b"[2]")+1:data.index(b"[2]")+2] = b"3"  # announce 3 elements for 2 elements' bytes
    with pytest.raises(RemoteError, match="do not hold"):
        decode(bytes(data))
