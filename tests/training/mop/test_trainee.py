"""A configuration's state survives packing (what crosses the wire), resident or spilled; bytes that would run
code are refused; the sequential reference equals a plain torch loop."""

from __future__ import annotations

import io
import pickle

import pytest
import torch

from mlsys.errors import SpecError
from mlsys.training.mop.trainee import Model, Resident, Spilled, build, pack, train_sequential, unpack


@pytest.mark.parametrize("budget_mb", [0.0, 0.25], ids=["resident", "spilled"])
def test_a_packed_state_trains_on_as_if_it_never_moved(parts, configs, max_diff, one_thread, budget_mb):
    for model in configs(budget_mb=budget_mb):
        stay = build(model, "cpu", parts[0])
        stay.train(parts[0], 0, 0)
        moved = build(model, "cpu", parts[1])  # another rank's copy, built from its own partition
        moved.load(unpack(pack(stay.state())))
        assert max_diff(moved.layers(), stay.layers()) == 0.0
        assert moved.train(parts[1], 0, 1) == stay.train(parts[1], 0, 1), "same weights, optimizer and RNG state"
        assert max_diff(moved.layers(), stay.layers()) == 0.0


def test_a_small_budget_spills_and_equals_resident(parts, configs, max_diff, one_thread):
    visits = [(0, 1), (0, 0), (1, 0), (1, 1)]
    for resident, spilled in zip(configs(), configs(budget_mb=0.25)):
        a, _ = train_sequential(resident, parts, visits)
        b, _ = train_sequential(spilled, parts, visits)
        assert isinstance(a, Resident) and isinstance(b, Spilled)
        assert len(b.shards) > 1, "the budget cuts the model into shards"
        assert max_diff(a.layers(), b.layers()) <= 1e-5


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_sequential_reference_is_plain_torch(parts, configs, plain, max_diff, one_thread, optimizer):
    model = next(m for m in configs() if m.config["optimizer"] == optimizer)
    visits = [(0, 0), (0, 1), (1, 1), (1, 0)]
    trainee, losses = train_sequential(model, parts, visits)
    assert max_diff(trainee.layers(), plain(model, parts, visits)) <= 1e-6
    assert len(losses) == 4 and all(loss > 0 for loss in losses)


class _Payload:
    def __reduce__(self):
        return (print, ("this ran",))


def test_bytes_that_would_run_code_are_refused():
    buf = io.BytesIO()
    torch.save({"kind": "resident", "evil": _Payload()}, buf)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        unpack(torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8))


def test_a_state_of_the_other_kind_is_refused(parts, configs):
    resident, spilled = build(configs()[0], "cpu", parts[0]), build(configs(budget_mb=0.25)[0], "cpu", parts[0])
    with pytest.raises(ValueError, match=r"received a 'spilled' state, expected 'resident'"):
        resident.load(unpack(pack(spilled.state())))


@pytest.mark.parametrize("change, message", [
    ({"name": "a b"}, r"Model\.name='a b' is invalid: use letters, digits"),
    ({"builder": "nocolon"}, r"Model\.builder='nocolon' is invalid: give 'package.module:function'"),
    ({"epochs": 0}, r"Model\.epochs=0 is invalid: use at least 1"),
    ({"batch_size": 0}, r"Model\.batch_size=0 is invalid"),
])
def test_bad_models_name_the_field(change, message):
    with pytest.raises(SpecError, match=message):
        Model(**{"name": "a", "builder": "m:f", **change})
