"""Noise-aware loss: weighted cross-entropy against soft labels."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mlsys.model.loss import noise_aware_loss


def test_equals_the_hand_computed_value():
    logits = torch.tensor([[0.0, 0.0], [2.0, 0.0]])
    target = torch.tensor([[0.25, 0.75], [1.0, 0.0]])
    weight = torch.tensor([0.5, 1.0])
    # row 0: softmax = [1/2, 1/2] -> CE = -(0.25 ln 0.5 + 0.75 ln 0.5) = ln 2
    # row 1: softmax[0] = e^2 / (e^2 + 1) -> CE = ln(1 + e^-2)
    row0, row1 = math.log(2), math.log(1 + math.exp(-2))
    expected = (0.5 * row0 + 1.0 * row1) / 1.5
    assert noise_aware_loss(logits, target, weight).item() == pytest.approx(expected, rel=1e-6)


def test_one_hot_targets_and_unit_weights_equal_cross_entropy():
    logits = torch.randn(16, 3)
    labels = torch.randint(0, 3, (16,))
    loss = noise_aware_loss(logits, F.one_hot(labels, 3).float(), torch.ones(16))
    assert torch.allclose(loss, F.cross_entropy(logits, labels), atol=1e-6)


def test_uniform_weights_do_not_change_the_loss():
    logits, target = torch.randn(8, 2), torch.softmax(torch.randn(8, 2), dim=-1)
    a = noise_aware_loss(logits, target, torch.ones(8))
    b = noise_aware_loss(logits, target, torch.full((8,), 0.3))
    assert torch.allclose(a, b, atol=1e-6)


def test_zero_weight_rows_do_not_contribute_to_gradients():
    logits = torch.randn(6, 2, requires_grad=True)
    target = torch.softmax(torch.randn(6, 2), dim=-1)
    weight = torch.tensor([1.0, 0.0, 0.5, 0.0, 1.0, 0.2])
    noise_aware_loss(logits, target, weight).backward()
    assert torch.all(logits.grad[weight == 0] == 0)
    assert torch.all(logits.grad[weight > 0].abs().sum(dim=1) > 0)

    # and the loss equals the loss over the weighted rows alone
    keep = weight > 0
    assert torch.allclose(
        noise_aware_loss(logits, target, weight), noise_aware_loss(logits[keep], target[keep], weight[keep])
    )


def test_all_zero_weights_give_zero_not_nan():
    loss = noise_aware_loss(torch.randn(3, 2), torch.full((3, 2), 0.5), torch.zeros(3))
    assert loss.item() == 0.0
