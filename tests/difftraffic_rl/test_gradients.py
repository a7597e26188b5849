import pytest
import torch

from difftraffic_rl.gradients import row_gradients

F64 = torch.float64


def _graph() -> tuple[torch.Tensor, list[torch.Tensor]]:
    # Rows [3, 2] of a graph over x [2, 2] and w [4]; u is in no row's graph.
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 2, dtype=F64, generator=generator, requires_grad=True)
    w = torch.randn(4, dtype=F64, generator=generator, requires_grad=True)
    u = torch.randn(3, dtype=F64, generator=generator, requires_grad=True)
    hidden = torch.tanh(x.reshape(-1) * w)
    rows = torch.stack([hidden[:2] * hidden[2:], hidden[:2] ** 2, x.sum(0) * w[0]])
    return rows, [x, w, u]


@pytest.mark.parametrize("vectorize", [True, False])
def test_each_row_gradient_matches_its_own_backward_pass(vectorize):
    rows, inputs = _graph()
    grads = row_gradients(rows, inputs, vectorize)
    for k in range(rows.shape[0]):
        expected = torch.autograd.grad(rows[k].sum(), inputs, retain_graph=True, allow_unused=True)
        for got, want, x in zip(grads, expected, inputs, strict=True):
            assert got.shape == (rows.shape[0], *x.shape)
            torch.testing.assert_close(got[k], torch.zeros_like(x) if want is None else want)


def test_the_batched_pass_equals_the_loop_and_keeps_the_graph():
    rows, inputs = _graph()
    batched = row_gradients(rows, inputs, vectorize=True)
    looped = row_gradients(rows, inputs, vectorize=False)
    for a, b in zip(batched, looped, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not looped[2].any()
    rows.sum().backward()
    assert inputs[0].grad is not None
