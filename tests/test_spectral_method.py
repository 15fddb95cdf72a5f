"""Spectral parameter coordination: closed-form updates, training, configuration errors."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

import graphopt
from graphopt.optim import GraphOptimizer
from graphopt.solvers.graphs import knn_cosine
from graphopt.solvers.laplacian import laplacian
from graphopt.solvers.spectral import dirichlet_energy, heat, spectral_filter
from graphopt.testing import no_host_sync

K, NEIGHBOURS, T, HIGH_GAIN, LR = 6, 5, 0.3, 0.25, 0.1


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(12, 30), nn.Tanh(), nn.Linear(30, 8)).double()


def _batch(step: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(step)
    return (
        torch.randn(40, 12, generator=gen, dtype=torch.float64),
        torch.randn(40, 8, generator=gen, dtype=torch.float64),
    )


def _apply(model: nn.Module, **config) -> None:
    options = {
        "k": K,
        "graph_options": {"k": NEIGHBOURS},
        "response_options": {"t": T},
        "high_gain": HIGH_GAIN,
    }
    graphopt.apply(model, "spectral", target_modules=["0"], **(options | config))


def _backward(model: nn.Module, step: int = 0) -> None:
    x, y = _batch(step)
    nn.functional.mse_loss(model(x), y).backward()


def _reference_laplacian(weight: torch.Tensor) -> torch.Tensor:
    """Dense L = D - W of the 5-NN cosine graph of the rows."""
    adjacency = knn_cosine(weight.detach(), k=NEIGHBOURS).to_dense()
    return torch.diag(adjacency.sum(dim=1)) - adjacency


def test_filter_changes_the_sgd_update_exactly_as_the_closed_form() -> None:
    model = _model()
    weight = model[0].weight
    theta0 = weight.detach().clone()
    _apply(model)
    opt = GraphOptimizer.for_model(model, base=torch.optim.SGD, lr=LR)
    _backward(model)
    grad = weight.grad.clone()
    opt.step()

    values, vectors = scipy.linalg.eigh(_reference_laplacian(theta0).numpy())
    u, lam = torch.from_numpy(vectors[:, :K]), torch.from_numpy(values[:K])
    filtered = spectral_filter(grad, u, lam, heat(T), high_gain=HIGH_GAIN)
    torch.testing.assert_close(weight.detach(), theta0 - LR * filtered, rtol=1e-9, atol=1e-10)


def test_regularizer_adds_the_exact_dirichlet_gradient_of_the_update() -> None:
    model = _model()
    weight = model[0].weight
    theta0 = weight.detach().clone()
    lam = 0.7
    _apply(model, transform=None, dirichlet_weight=lam)
    opt = GraphOptimizer.for_model(model, base=torch.optim.SGD, lr=LR)
    with torch.no_grad():  # move away from Theta0 so the penalty is active
        weight.add_(0.05 * torch.randn(weight.shape, dtype=weight.dtype))
    start = weight.detach().clone()
    _backward(model)
    grad = weight.grad.clone()
    opt.step()

    update = (start - theta0).requires_grad_(True)
    penalty = lam * dirichlet_energy(update, _reference_laplacian(theta0))
    (penalty_grad,) = torch.autograd.grad(penalty, update)
    torch.testing.assert_close(weight.detach(), start - LR * (grad + penalty_grad))
    value = opt.regularizers[0].value(weight, opt.transform_state(opt.regularizers[0])[weight])
    update_now = weight.detach() - theta0
    expected = lam * dirichlet_energy(update_now, _reference_laplacian(theta0))
    torch.testing.assert_close(value, expected)


def test_method_adds_no_parameters_and_trains_the_target_weights() -> None:
    model = _model()
    before = sum(p.numel() for p in model.parameters())
    _apply(model)
    method = graphopt.methods_of(model)[0]
    assert sum(p.numel() for p in model.parameters()) == before
    assert list(method.trainable_parameters(model)) == ["0.weight"]
    assert method.num_trainable_parameters(model) == 30 * 12
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["0.weight"]


def test_training_with_filter_and_regularizer_lowers_the_loss() -> None:
    model = _model()
    graphopt.apply(
        model,
        "spectral",
        target_modules=["0", "2"],
        k=4,
        graph_options={"k": NEIGHBOURS},
        dirichlet_weight=0.01,
    )
    opt = GraphOptimizer.for_model(model, lr=3e-2)
    x, y = _batch()
    losses = []
    for _ in range(25):
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.7 * losses[0]


def test_optimizer_state_holds_the_basis_and_resumes_bit_identically(tmp_path) -> None:
    def build() -> tuple[nn.Module, GraphOptimizer]:
        model = _model()
        _apply(model, dirichlet_weight=0.1)
        return model, GraphOptimizer.for_model(model, lr=1e-2)

    model, opt = build()
    for step in range(3):
        opt.zero_grad()
        _backward(model, step)
        opt.step()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, tmp_path / "ckpt.pt")
    saved = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    assert set(saved["opt"]["graphopt"]["transforms"][0]["state"][0]) == {"vectors", "values"}
    assert "theta0" in saved["opt"]["graphopt"]["regularizers"][0]["state"][0]

    resumed, resumed_opt = build()
    resumed.load_state_dict(saved["model"])
    resumed_opt.load_state_dict(saved["opt"])
    for step in range(3, 6):
        for m, o in ((model, opt), (resumed, resumed_opt)):
            o.zero_grad()
            _backward(m, step)
            o.step()
    for p, q in zip(model.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(p, q)


def test_gradient_graph_basis_is_rebuilt_from_the_summed_gradients() -> None:
    model = _model()
    weight = model[0].weight
    _apply(model, features="gradients", refresh_every=3)
    opt = GraphOptimizer.for_model(model, base=torch.optim.SGD, lr=LR)
    total = torch.zeros_like(weight)
    for step in range(3):
        opt.zero_grad()
        _backward(model, step)
        total += weight.grad
        opt.step()
    state = opt.transform_state(opt.transforms[0])[weight]
    values = np.linalg.eigvalsh(_reference_laplacian(total).numpy())[:K]
    np.testing.assert_allclose(state["values"].numpy(), values, rtol=1e-6, atol=1e-8)
    assert torch.count_nonzero(state["gradient_sum"]) == 0


def test_zero_initialised_factor_takes_the_graph_of_its_base_rows() -> None:
    torch.manual_seed(0)
    model = nn.Module()
    model.base_layer = nn.Linear(8, 20)
    model.adapter = nn.Linear(4, 20, bias=False)
    nn.init.zeros_(model.adapter.weight)
    graphopt.apply(model, "spectral", target_modules=["adapter"], k=3, graph_options={"k": 4})
    basis = graphopt.methods_of(model)[0]._bases["adapter.weight"]
    expected = np.linalg.eigvalsh(
        laplacian(knn_cosine(model.base_layer.weight.detach().double(), k=4)).to_dense().numpy()
    )[:3]
    np.testing.assert_allclose(basis.values.numpy(), expected, rtol=1e-4, atol=1e-5)


# -- configuration errors --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "listed"),
    [
        ({"graph": "nope"}, "knn_cosine"),
        ({"response": "nope"}, "heat"),
        ({"transform": "nope"}, "spectral_filter"),
        ({"eigensolver": "nope"}, "registered eigensolvers"),
    ],
)
def test_unknown_names_raise_listing_the_registered_choices(option, listed) -> None:
    with pytest.raises(graphopt.UnknownNameError, match=listed):
        _apply(_model(), **option)


def test_k_not_below_the_number_of_rows_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"k must be < the number of nodes.*\(30, 12\)"):
        _apply(_model(), k=30)


def test_target_pattern_matching_nothing_lists_the_linear_modules() -> None:
    with pytest.raises(ValueError, match=r"matches no module.*include: 0, 2"):
        graphopt.apply(_model(), "spectral", target_modules=["missing"])


def test_unknown_parameter_name_lists_the_module_parameters() -> None:
    with pytest.raises(ValueError, match=r"no parameter 'lora_B'.*\['bias', 'weight'\]"):
        _apply(_model(), parameters=["lora_B"])


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ({"high_gain": 1.5}, "high_gain"),
        ({"laplacian": "nope"}, "laplacian must be one of"),
        ({"features": "nope"}, "features must be one of"),
        ({"transform": None}, "does nothing"),
        ({"dirichlet_weight": -1.0}, "dirichlet_weight"),
        ({"refresh_every": 0}, "refresh_every"),
    ],
)
def test_bad_settings_are_rejected_before_the_model_is_touched(option, message) -> None:
    model = _model()
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match=message):
        _apply(model, **option)
    assert not graphopt.methods_of(model)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True))


# -- composition and conformance -------------------------------------------------------------


def test_filter_on_lora_factors_uses_the_base_rows_and_the_closed_form() -> None:
    model = _model()
    graphopt.apply(model, "lora", target_modules=["0"], r=4, dropout=0.0)
    graphopt.apply(
        model,
        "spectral",
        target_modules=[r"0.lora_B"],
        k=K,
        graph_options={"k": NEIGHBOURS},
        response_options={"t": T},
        high_gain=HIGH_GAIN,
    )
    lora_a, lora_b = model[0].lora_A.weight, model[0].lora_B.weight
    opt = GraphOptimizer.for_model(model, base=torch.optim.SGD, lr=LR)
    assert {id(p) for g in opt.param_groups for p in g["params"]} == {id(lora_a), id(lora_b)}
    with torch.no_grad():  # B = 0 gives A no gradient; start from a non-zero B
        lora_b.normal_()
    _backward(model)
    grad_a, grad_b = lora_a.grad.clone(), lora_b.grad.clone()
    start_a, start_b = lora_a.detach().clone(), lora_b.detach().clone()
    opt.step()

    base_rows = model[0].base_layer.weight.detach()
    values, vectors = scipy.linalg.eigh(_reference_laplacian(base_rows).numpy())
    u, lam = torch.from_numpy(vectors[:, :K]), torch.from_numpy(values[:K])
    filtered = spectral_filter(grad_b, u, lam, heat(T), high_gain=HIGH_GAIN)
    torch.testing.assert_close(lora_b.detach(), start_b - LR * filtered)
    torch.testing.assert_close(lora_a.detach(), start_a - LR * grad_a)


@pytest.mark.parametrize("where", ["gradient", "update"])
def test_spectral_passes_the_method_conformance_matrix(tiny_bert_dir, where) -> None:
    from transformers import AutoModelForSequenceClassification

    from graphopt.testing import check_method

    report = check_method(
        "spectral",
        lambda: AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir),
        target_modules=["query", "value"],
        config={"k": 4, "graph_options": {"k": 5}, "dirichlet_weight": 0.01, "where": where},
    )
    assert "save_load_round_trip" in report.passed


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA to detect host syncs")
@pytest.mark.parametrize("where", ["gradient", "update"])
def test_filter_and_dirichlet_step_does_not_synchronise_with_the_host(where) -> None:
    model = _model().float().cuda()
    _apply(model, dirichlet_weight=0.1, where=where)
    opt = GraphOptimizer.for_model(model, lr=1e-3)
    x, y = (t.float().cuda() for t in _batch())
    for _ in range(2):  # the second step runs with the base state already built
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        with no_host_sync():
            opt.step()
