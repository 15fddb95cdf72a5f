"""pca_ggm: SVD nodes, sensitivity scores, GGM allocation, freezing, merge and export."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import tiny_bert
from torch import nn

import graphopt
from graphopt.optim import GraphOptimizer
from graphopt.plugins.pca_ggm import PcaGgmLinear, export_delta
from graphopt.plugins.pca_ggm_allocation import allocate, log_score_covariance, plot_allocation

pytestmark = pytest.mark.filterwarnings("ignore::graphopt.solvers.ggm.GGMConvergenceWarning")

TARGETS = ["query", "key", "value"]
SETTINGS = {"r": 4, "warmup_steps": 3, "top_k": 12, "n_important": 6}
"""6 modules x (4 components + 1 bias) = 30 nodes."""


IDS = torch.randint(0, 64, (4, 8), generator=torch.Generator().manual_seed(0))


def train(model: nn.Module, steps: int, optimizer=None):
    optimizer = optimizer or GraphOptimizer.for_model(model, lr=1e-2)
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        loss = model(input_ids=IDS).last_hidden_state.pow(2).mean()
        loss.backward()
        optimizer.step()
    return optimizer


def adapted_model(**settings):
    model = tiny_bert()
    graphopt.apply(model, "pca_ggm", target_modules=TARGETS, **{**SETTINGS, **settings})
    return model, graphopt.methods_of(model)[0]


def test_svd_split_keeps_the_layer_function():
    torch.manual_seed(0)
    base = nn.Linear(12, 10)
    original = base.weight.detach().clone()
    layer = PcaGgmLinear(base, r=3, dtype=torch.float32)
    u, s, vh = torch.linalg.svd(original)
    torch.testing.assert_close(layer.A @ layer.B, u[:, :3] @ torch.diag(s[:3]) @ vh[:3])
    torch.testing.assert_close(layer.base_layer.weight + layer.A @ layer.B, original)


def test_node_score_is_the_mean_of_ibar_times_ubar_over_a_and_b():
    model, method = adapted_model(warmup_steps=5)
    layer = model.encoder.layer[0].attention.self.query
    train(model, 1)
    beta = 0.85
    ia = (layer.A * layer.A.grad).abs()
    ib = (layer.B * layer.B.grad).abs()
    # one step from zero EMAs: Ibar = (1 - b1) I, Ubar = (1 - b2) |I - Ibar|
    score_a = ((1 - beta) * ia) * ((1 - beta) * (ia - (1 - beta) * ia).abs())
    score_b = ((1 - beta) * ib) * ((1 - beta) * (ib - (1 - beta) * ib).abs())
    expected = 0.5 * (score_a.mean(dim=0) + score_b.mean(dim=1))
    torch.testing.assert_close(method.samples[0, :4], expected)


def test_allocation_selects_exactly_k_nodes_and_masks_the_rest():
    model, method = adapted_model()
    optimizer = train(model, 3)
    assert method.selected(model)
    kept = method.allocation["kept_nodes"]
    assert len(kept) == 12
    assert len({tuple(n) for n in kept}) == 12
    kept_by_module: dict[str, set] = {}
    for module, slot in kept:
        kept_by_module.setdefault(module, set()).add(slot)
    for name, layer in method.layers(model).items():
        chosen = kept_by_module.get(name, set())
        components = sorted(c for c in chosen if c != "bias")
        assert layer.components == components
        assert layer.component_mask.tolist() == [float(c in components) for c in range(4)]
        assert layer.bias_trains == ("bias" in chosen)
        assert layer.A.shape == (32, 4) and layer.B.shape == (4, 32)  # never reshaped
        assert not layer.base_layer.weight.requires_grad
    expected = sum(
        (64 if isinstance(slot, int) else 32) for _, slot in kept
    )  # d_in + d_out = 64 per component, d_out = 32 per bias node
    assert method.num_trainable_parameters(model) == expected
    assert method.count_trained_entries(model) == expected
    in_optimizer = [p for g in optimizer.param_groups for p in g["params"]]
    assert {id(p) for p in in_optimizer} == {id(p) for p in model.parameters() if p.requires_grad}


def test_parameters_keep_identity_and_shape_through_the_allocation():
    """Nothing a DDP wrapper or an optimizer holds is replaced or reshaped."""
    model, method = adapted_model()
    before = {n: (id(p), tuple(p.shape), p.requires_grad) for n, p in model.named_parameters()}
    optimizer = GraphOptimizer.for_model(model, lr=1e-2)
    held = [id(p) for g in optimizer.param_groups for p in g["params"]]
    train(model, 5, optimizer)  # the allocation runs after step 3
    assert method.selected(model)
    after = {n: (id(p), tuple(p.shape), p.requires_grad) for n, p in model.named_parameters()}
    assert after == before
    assert [id(p) for g in optimizer.param_groups for p in g["params"]] == held


def test_frozen_nodes_get_no_gradient_no_update_and_no_weight_decay():
    model, method = adapted_model()
    optimizer = GraphOptimizer.for_model(model, lr=1e-2, weight_decay=0.5)
    train(model, 3, optimizer)
    layers = method.layers(model)
    frozen = {
        name: (layer.A.detach().clone(), layer.B.detach().clone(), layer.component_mask.clone())
        for name, layer in layers.items()
    }
    biases = {n: layer.base_layer.bias.detach().clone() for n, layer in layers.items()}
    train(model, 3, optimizer)
    changed_kept = False
    for name, layer in layers.items():
        a, b, mask = frozen[name]
        off = mask == 0
        assert torch.equal(layer.A[:, off], a[:, off]) and torch.equal(layer.B[off], b[off])
        assert not layer.A.grad[:, off].any() and not layer.B.grad[off].any()
        changed_kept |= not torch.equal(layer.A[:, ~off], a[:, ~off])
        if not layer.bias_trains:
            assert torch.equal(layer.base_layer.bias, biases[name])
    assert changed_kept


def test_never_selects_a_node_whose_group_norm_is_zero():
    generator = torch.Generator().manual_seed(0)
    n = 60
    z = torch.randn(n, 1, generator=generator)
    important = 10 + z + 0.1 * torch.randn(n, 3, generator=generator)
    tied = 3 + z + 0.3 * torch.randn(n, 3, generator=generator)
    free = 3 + torch.randn(n, 6, generator=generator)
    samples = torch.exp(torch.cat([important, tied, free], dim=1))
    with pytest.warns(UserWarning, match="non-zero group norm"):
        allocation = allocate(
            samples, [1] * 12, n_important=3, top_k=10, solver="admm", penalty="l1", lam=3e-4
        )
    norms = allocation.group_norm
    assert sorted(allocation.important) == [0, 1, 2]
    assert any(norms[j] == 0 for j in range(3, 12))  # the penalty cut some nodes
    assert all(norms[j] > 0 for j in allocation.kept if j not in allocation.important)


def test_budget_keeps_the_trainable_count_within_the_budget():
    model, method = adapted_model(budget=700)
    train(model, 3)
    assert method.num_trainable_parameters(model) <= 700
    assert len(method.allocation["kept_nodes"]) >= 6


def test_log_score_covariance_matches_numpy():
    import numpy as np

    samples = torch.rand(7, 5, generator=torch.Generator().manual_seed(1)) + 0.1
    covariance, mean = log_score_covariance(samples, ridge=0.0)
    x = np.log(samples.double().numpy())
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    np.testing.assert_allclose(covariance.numpy(), np.cov(x, rowvar=False))
    np.testing.assert_allclose(mean.numpy(), x.mean(axis=0))


def test_zero_scores_are_clamped_not_nan():
    samples = torch.rand(6, 4, generator=torch.Generator().manual_seed(2))
    samples[:, 3] = 0.0
    covariance, _ = log_score_covariance(samples)
    assert torch.isfinite(covariance).all()
    assert (covariance.diagonal() > 0).all()


def test_merge_equals_base_plus_trained_delta():
    model, _ = adapted_model()
    train(model, 4)
    layer = model.encoder.layer[1].attention.self.value
    expected = layer.base_layer.weight + layer.A @ layer.B
    graphopt.merge(model)
    torch.testing.assert_close(layer.base_layer.weight, expected)


def test_dense_delta_export_is_merged_minus_original(tmp_path):
    from safetensors.torch import load_file

    original = tiny_bert().state_dict()
    model, _ = adapted_model()
    train(model, 4)
    export_delta(model, tmp_path, form="dense")
    delta = load_file(str(tmp_path / "delta_model.safetensors"))
    graphopt.merge(model)
    name = "encoder.layer.0.attention.self.key"
    merged = model.get_submodule(name).base_layer
    torch.testing.assert_close(
        original[f"{name}.weight"] + delta[f"{name}.weight"], merged.weight, rtol=1e-5, atol=1e-6
    )
    torch.testing.assert_close(original[f"{name}.bias"] + delta[f"{name}.bias"], merged.bias)


def test_lowrank_export_loads_in_peft_with_the_same_outputs(tmp_path):
    from peft import PeftModel

    model, _ = adapted_model()
    base = copy.deepcopy(tiny_bert()).eval()
    train(model, 4)
    model.eval()
    with torch.no_grad():
        adapted = model(input_ids=IDS).last_hidden_state
    export_delta(model, tmp_path, form="lowrank")
    served = PeftModel.from_pretrained(base, tmp_path).eval()
    with torch.no_grad():
        out = served(input_ids=IDS).last_hidden_state
    torch.testing.assert_close(out, adapted, rtol=1e-4, atol=1e-5)


def test_allocation_is_saved_with_the_adapter_and_plots(tmp_path):
    from graphopt.adapters import read_adapter_config

    model, method = adapted_model()
    train(model, 3)
    graphopt.save_adapter(model, tmp_path / "adapter")
    extra = read_adapter_config(tmp_path / "adapter")["methods"][0]["extra_state"]
    assert extra["allocation"]["kept_nodes"] == method.allocation["kept_nodes"]
    assert extra["allocation"]["solver"]["solver"] == "bcd"
    png = plot_allocation(extra["allocation"], tmp_path / "allocation.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_adapter_saved_during_warmup_resumes_collection(tmp_path):
    model, _ = adapted_model(warmup_steps=4)
    train(model, 2)
    graphopt.save_adapter(model, tmp_path)
    fresh = tiny_bert()
    graphopt.load_adapter(fresh, tmp_path)
    loaded = graphopt.methods_of(fresh)[0]
    assert not loaded.selected(fresh) and loaded.step == 2
    assert all(layer.rank == 4 for layer in loaded.layers(fresh).values())


def test_model_and_optimizer_state_dicts_resume_bit_identically_after_the_allocation(tmp_path):
    """The docs' recipe -- torch.save(model.state_dict(), optimizer.state_dict()) --
    resumes a run after pca_ggm's allocation exactly where it was."""
    model, _ = adapted_model()
    optimizer = train(model, 4)
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict()}
    torch.save({**state, "rng": torch.get_rng_state()}, tmp_path / "ckpt.pt")  # dropout draws
    train(model, 3, optimizer)
    fresh, method = adapted_model()
    checkpoint = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    fresh.load_state_dict(checkpoint["model"])
    resumed = GraphOptimizer.for_model(fresh, lr=1e-2)
    resumed.load_state_dict(checkpoint["optimizer"])
    torch.set_rng_state(checkpoint["rng"])
    assert method.selected(fresh)
    train(fresh, 3, resumed)
    for (name, want), got in zip(
        model.state_dict().items(), fresh.state_dict().values(), strict=True
    ):
        assert torch.equal(want, got), name


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"r": 40}, r"r = 40 .* exceeds"),
        ({"top_k": 3}, r"top_k \(3\) must be >= n_important"),
        ({"n_important": 30, "top_k": 30}, "n_important = 30 must be below"),
        ({"warmup_steps": 1}, "warmup_steps must be an integer >= 2"),
        ({"solver": "nosuch"}, "solver must be one of"),
    ],
)
def test_bad_settings_are_clear_errors_and_model_unchanged(settings, message):
    model = tiny_bert()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=message):
        graphopt.apply(model, "pca_ggm", target_modules=TARGETS, **{**SETTINGS, **settings})
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert graphopt.methods_of(model) == []


def assert_same_state(model: nn.Module, other: nn.Module) -> None:
    for (name, want), got in zip(
        model.state_dict().items(), other.state_dict().values(), strict=True
    ):
        assert torch.equal(want, got), name


@pytest.mark.parametrize("checkpoint_step", [2, 4], ids=["during-warmup", "after-allocation"])
def test_resume_from_an_accelerate_save_state_is_bit_identical(tmp_path, checkpoint_step):
    from accelerate import Accelerator

    def prepared() -> tuple:
        model, method = adapted_model()
        accelerator = Accelerator(cpu=True)
        model, optimizer = accelerator.prepare(model, GraphOptimizer.for_model(model, lr=1e-2))
        return accelerator, model, optimizer, method

    accelerator, model, optimizer, method = prepared()
    train(model, checkpoint_step, optimizer)
    accelerator.save_state(tmp_path / "state")
    train(model, 4, optimizer)
    assert method.selected(model)
    accelerator, resumed, resumed_optimizer, resumed_method = prepared()
    accelerator.load_state(tmp_path / "state")
    assert resumed_method.selected(resumed) == (checkpoint_step >= 3)
    train(resumed, 4, resumed_optimizer)
    assert resumed_method.allocation["kept_nodes"] == method.allocation["kept_nodes"]
    assert_same_state(model, resumed)


@pytest.mark.parametrize("checkpoint_step", [2, 4], ids=["during-warmup", "after-allocation"])
def test_resume_from_save_adapter_and_the_optimizer_state_is_bit_identical(
    tmp_path, checkpoint_step
):
    model, method = adapted_model()
    optimizer = train(model, checkpoint_step)
    graphopt.save_adapter(model, tmp_path / "adapter")
    torch.save(
        {"optimizer": optimizer.state_dict(), "rng": torch.get_rng_state()}, tmp_path / "state.pt"
    )
    train(model, 4, optimizer)
    fresh = graphopt.load_adapter(tiny_bert(), tmp_path / "adapter")
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    resumed = GraphOptimizer.for_model(fresh, lr=1e-2)
    resumed.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng"])
    train(fresh, 4, resumed)
    loaded = graphopt.methods_of(fresh)[0]
    assert loaded.allocation["kept_nodes"] == method.allocation["kept_nodes"]
    assert_same_state(model, fresh)
