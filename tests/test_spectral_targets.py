"""What spectral coordinates: GPT-2 ``Conv1D`` weights (nodes are columns), PEFT's
``lora_B.default``, pca_ggm's masked output factor, LoRA under AdamW with the
defaults, and the spectrum plot."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import scipy.linalg
import torch
from conftest import tiny_bert
from torch import nn

import graphopt
from graphopt.adapters import attach
from graphopt.methods import Method, MethodConfig
from graphopt.optim import GraphOptimizer
from graphopt.plugins.spectral import SpectralConfig, SpectralMethod, layer_groups, spectrum_figure
from graphopt.solvers.graphs import knn_cosine
from graphopt.solvers.laplacian import laplacian
from graphopt.solvers.spectral import heat, spectral_filter

K, NEIGHBOURS, T, HIGH_GAIN, LR = 4, 5, 0.3, 0.25, 0.1
OPTIONS = {"k": K, "graph_options": {"k": NEIGHBOURS}, "response_options": {"t": T}}
IDS = torch.randint(0, 50, (3, 8), generator=torch.Generator().manual_seed(0))


def _spectral(model: nn.Module, targets: dict[str, nn.Module], **config) -> SpectralMethod:
    """Spectral on modules that ``graphopt.apply``'s target resolution does not accept
    yet (it takes nn.Linear only): the method's own validate + apply, through the
    same ``attach`` that ``graphopt.apply`` and ``load_adapter`` use."""
    method = SpectralMethod(SpectralConfig(target_modules=list(targets), **(OPTIONS | config)))
    method.validate(targets)
    attach(model, method, targets, [])
    return method


def _reference_filter(x: torch.Tensor, node_rows: torch.Tensor) -> torch.Tensor:
    """The filter along the rows of ``x`` on the 5-NN graph of ``node_rows`` (dense eigh)."""
    adjacency = knn_cosine(node_rows.detach().double(), k=NEIGHBOURS).to_dense()
    values, vectors = scipy.linalg.eigh((torch.diag(adjacency.sum(1)) - adjacency).numpy())
    u, lam = torch.from_numpy(vectors[:, :K]), torch.from_numpy(values[:K])
    return spectral_filter(x.double(), u, lam, heat(T), high_gain=HIGH_GAIN).to(x.dtype)


def _gpt2() -> nn.Module:
    from transformers import GPT2Config, GPT2Model

    torch.manual_seed(0)
    config = GPT2Config(n_embd=48, n_layer=1, n_head=2, vocab_size=50, n_positions=16)
    config.bos_token_id = config.eos_token_id = 0
    return GPT2Model(config).double()


# -- GPT-2 Conv1D ----------------------------------------------------------------------------


def test_conv1d_weight_nodes_are_its_columns() -> None:
    """Conv1D stores (in, out) and computes x W + b: the output units are the columns,
    so the graph is over W^T's rows and the filter runs along the columns."""
    model = _gpt2()
    conv = model.h[0].attn.c_attn
    theta0 = conv.weight.detach().clone()
    _spectral(model, {"h.0.attn.c_attn": conv}, high_gain=HIGH_GAIN)
    method = graphopt.methods_of(model)[0]
    assert method._bases["h.0.attn.c_attn.weight"].vectors.shape == (144, K)  # 144 out units
    opt = GraphOptimizer.for_model(model, base=torch.optim.SGD, lr=LR)
    model(input_ids=IDS).last_hidden_state.pow(2).mean().backward()
    grad = conv.weight.grad.clone()
    opt.step()
    expected = theta0 - LR * _reference_filter(grad.T, theta0.T).T
    torch.testing.assert_close(conv.weight.detach(), expected, rtol=1e-9, atol=1e-12)


def test_conv1d_k_is_checked_against_the_output_units() -> None:
    model = _gpt2()
    conv = model.h[0].mlp.c_proj  # (192 in, 48 out)
    with pytest.raises(ValueError, match=r"48 nodes along axis 1, and k = 48"):
        _spectral(model, {"h.0.mlp.c_proj": conv}, k=48)


def test_basis_eigenvalues_match_an_independent_laplacian() -> None:
    """The plotted values are the graph's k lowest Laplacian eigenvalues (numpy eigh)."""
    model = _gpt2()
    conv = model.h[0].mlp.c_fc
    method = _spectral(model, {"h.0.mlp.c_fc": conv})
    rows = conv.weight.detach().T
    expected = np.linalg.eigvalsh(laplacian(knn_cosine(rows, k=NEIGHBOURS)).to_dense().numpy())
    np.testing.assert_allclose(
        method._bases["h.0.mlp.c_fc.weight"].values.numpy(), expected[:K], rtol=1e-6, atol=1e-8
    )


# -- PEFT ------------------------------------------------------------------------------------


@pytest.mark.parametrize("architecture", ["bert", "gpt2"])
def test_peft_lora_b_takes_the_graph_of_the_base_layer_rows(architecture) -> None:
    """PEFT keeps the frozen layer two levels up (``q.base_layer``, the factor in
    ``q.lora_B.default``); on GPT-2 that layer is a Conv1D whose output units are
    its columns."""
    from peft import LoraConfig, get_peft_model

    if architecture == "bert":
        base, target, fan_in_fan_out = tiny_bert().double(), "query", False
    else:
        base, target, fan_in_fan_out = _gpt2(), "c_attn", True
    peft_model = get_peft_model(
        base, LoraConfig(r=4, target_modules=[target], fan_in_fan_out=fan_in_fan_out)
    )
    factor = r".*\." + target + r"\.lora_B\.default"
    graphopt.apply(peft_model, "spectral", target_modules=factor, high_gain=HIGH_GAIN, **OPTIONS)
    method = graphopt.methods_of(peft_model)[0]
    name = next(iter(method._bases))
    layer = peft_model.get_submodule(name.removesuffix(".lora_B.default.weight"))
    base_weight = layer.base_layer.weight.detach()
    node_rows = base_weight.T if fan_in_fan_out else base_weight
    lora_b = peft_model.get_parameter(name)
    assert method._bases[name].vectors.shape[0] == lora_b.shape[0] == node_rows.shape[0]

    opt = GraphOptimizer.for_model(peft_model, base=torch.optim.SGD, lr=LR)
    ids = IDS % 50 if architecture == "gpt2" else IDS
    out = peft_model(input_ids=ids).last_hidden_state
    out.pow(2).mean().backward()
    grad = lora_b.grad.clone()
    start = lora_b.detach().clone()
    opt.step()
    torch.testing.assert_close(lora_b.detach(), start - LR * _reference_filter(grad, node_rows))


def test_all_zero_parameter_without_a_base_layer_is_a_clear_error() -> None:
    model = nn.Sequential(nn.Linear(4, 20), nn.Linear(20, 20))
    nn.init.zeros_(model[1].weight)
    with pytest.raises(ValueError, match=r"'1.weight'.*all zero and no enclosing module"):
        graphopt.apply(model, "spectral", target_modules=["1"], **OPTIONS)


# -- pca_ggm: the masked output factor ---------------------------------------------------------

PCA_GGM = {"r": 4, "warmup_steps": 3, "top_k": 12, "n_important": 6}


def _pca_ggm_with_spectral(**config) -> tuple[nn.Module, Method, Method]:
    model = tiny_bert().double()
    graphopt.apply(model, "pca_ggm", target_modules=["query", "key", "value"], **PCA_GGM)
    pca_ggm = graphopt.methods_of(model)[0]
    layers = pca_ggm.layers(model)
    return model, pca_ggm, _spectral(model, dict(layers), high_gain=HIGH_GAIN, **config)


def _train(model: nn.Module, optimizer: GraphOptimizer, steps: int) -> None:
    for _ in range(steps):
        optimizer.zero_grad()
        model(input_ids=IDS % 64).last_hidden_state.pow(2).mean().backward()
        optimizer.step()


@pytest.mark.filterwarnings("ignore::graphopt.solvers.ggm.GGMConvergenceWarning")
@pytest.mark.parametrize(
    "config",
    [
        {},
        {"where": "update"},
        {"dirichlet_weight": 0.5},
        {"where": "update", "dirichlet_weight": 0.5},
    ],
    ids=["gradient", "update", "gradient+dirichlet", "update+dirichlet"],
)
def test_stacked_on_pca_ggm_frozen_components_stay_bitwise_frozen(config) -> None:
    model, pca_ggm, spectral = _pca_ggm_with_spectral(**config)
    layers = pca_ggm.layers(model)
    assert sorted(spectral.adapter_parameters(model)) == sorted(f"{n}.A" for n in layers)
    opt = GraphOptimizer.for_model(model, lr=1e-2, weight_decay=0.1)
    _train(model, opt, 3)  # the allocation runs after step 3
    assert pca_ggm.selected(model)
    frozen = {name: layer.A.detach().clone() for name, layer in layers.items()}
    _train(model, opt, 4)
    trained_moved = False
    for name, layer in layers.items():
        off = layer.component_mask == 0
        assert torch.equal(layer.A[:, off], frozen[name][:, off])
        trained_moved |= not torch.equal(layer.A[:, ~off], frozen[name][:, ~off])
    assert trained_moved


@pytest.mark.filterwarnings("ignore::graphopt.solvers.ggm.GGMConvergenceWarning")
@pytest.mark.parametrize("where", ["gradient", "update"])
def test_stacked_on_pca_ggm_the_kept_columns_get_the_closed_form(where) -> None:
    """Mask and filter commute (whole columns are masked, the filter mixes rows within a
    column): with SGD the step of A is -lr F(m g) = -lr m F(g), in either place."""
    model, pca_ggm, _ = _pca_ggm_with_spectral(where=where)
    opt = GraphOptimizer.for_model(model, base=torch.optim.SGD, lr=LR)
    _train(model, opt, 3)
    layer = next(iter(pca_ggm.layers(model).values()))
    a0 = layer.A0.detach().clone()  # the graph was built on A at apply, which was A0
    start = layer.A.detach().clone()
    opt.zero_grad()
    model(input_ids=IDS % 64).last_hidden_state.pow(2).mean().backward()
    grad = layer.A.grad.clone()  # the raw gradient, before any transform
    opt.step()
    mask = layer.component_mask[None, :]
    expected = start - LR * mask * _reference_filter(grad, a0)
    torch.testing.assert_close(layer.A.detach(), expected)


class RowMask(Method):
    """A test method that trains a weight with a mask varying along its rows."""

    name = "row_mask"
    adds_parameters = False

    def apply(self, model, targets):
        self.names = [f"{n}.weight" for n in targets]

    def adapter_parameters(self, model):
        return {n: model.get_parameter(n) for n in self.names}

    def num_trainable_parameters(self, model):
        return 0

    def parameter_masks(self, model):
        rows = model.get_parameter(self.names[0]).shape[0]
        return {self.names[0]: (torch.arange(rows) % 2).double()[:, None]}


@pytest.mark.parametrize("order", ["mask first", "spectral first"])
def test_a_mask_that_varies_along_the_nodes_is_refused(order) -> None:
    model = nn.Sequential(nn.Linear(6, 20)).double()
    mask_method = RowMask(MethodConfig(target_modules=["0"]))
    if order == "mask first":
        graphopt.apply(model, mask_method)
        with pytest.raises(ValueError, match=r"'row_mask' masks '0.weight'.*varies along"):
            graphopt.apply(model, "spectral", target_modules=["0"], **OPTIONS)
    else:
        graphopt.apply(model, "spectral", target_modules=["0"], **OPTIONS)
        graphopt.apply(model, mask_method)
        with pytest.raises(ValueError, match=r"'row_mask' masks '0.weight'.*varies along"):
            GraphOptimizer.for_model(model, lr=1e-2)


# -- LoRA with the defaults, under AdamW --------------------------------------------------------


def _bert_64() -> nn.Module:
    """A BERT whose matrices have >= 64 output units, so the default k = 32 fits."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=64,
        hidden_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        intermediate_size=96,
        max_position_embeddings=16,
        num_labels=3,
    )
    return BertForSequenceClassification(config)


def _step_with_and_without_filter(model: nn.Module, opt: GraphOptimizer, step: int) -> float:
    """||u(filter) - u(no filter)|| / ||u(no filter)|| over every lora_B, from one state and
    one gradient: the same step taken twice, the second time with the filter switched
    off for every param group (GraphOptimizer's per-group setting)."""
    factors = [p for n, p in model.named_parameters() if n.endswith("lora_B.weight")]
    params = [p for g in opt.param_groups for p in g["params"]]
    saved_params = [p.detach().clone() for p in params]
    saved_state = copy.deepcopy(opt.state_dict())
    opt.zero_grad()
    labels = torch.tensor([0, 1, 2])
    model(input_ids=IDS % 64, labels=labels).loss.backward()
    grads = [p.grad.clone() for p in params]
    updates = []
    for switch in (True, False):
        with torch.no_grad():
            for p, saved, grad in zip(params, saved_params, grads, strict=True):
                p.copy_(saved)
                p.grad = grad.clone()
        opt.load_state_dict(copy.deepcopy(saved_state))
        for group in opt.param_groups:
            group["transforms"] = group["update_transforms"] = {"spectral_filter": switch}
        opt.step()
        updates.append(
            torch.cat(
                [(p.detach() - s).flatten() for p, s in _pairs(factors, params, saved_params)]
            )
        )
    for group in opt.param_groups:
        del group["transforms"], group["update_transforms"]
    return float((updates[0] - updates[1]).norm() / updates[1].norm())


def _pairs(factors, params, saved):
    by_id = {id(p): s for p, s in zip(params, saved, strict=True)}
    return [(p, by_id[id(p)]) for p in factors]


@pytest.mark.parametrize("where", ["gradient", "update"])
def test_stacked_filter_changes_the_lora_b_update_under_adamw(where) -> None:
    """Issue 20: with the default settings (k = 32, heat t = 0.1, high_gain 0.5) the filter
    must change AdamW's update of lora_B (same state, same gradient) by > 1e-3."""
    model = _bert_64()
    targets = ["query", "key", "value", "attention.output.dense", "intermediate.dense"]
    graphopt.apply(model, "lora", target_modules=targets, trainable_extra=r"classifier(\..*)?")
    factors = [n.removesuffix(".weight") for n, _ in model.named_parameters() if "lora_B" in n]
    graphopt.apply(model, "spectral", target_modules=factors, where=where)
    opt = GraphOptimizer.for_model(model, lr=1e-3)
    changes = []
    for step in range(4):
        changes.append(_step_with_and_without_filter(model, opt, step))
    assert min(changes) > 1e-3, changes


# -- the spectrum plot -----------------------------------------------------------------------


def test_layer_groups_split_names_by_layer_type_and_index() -> None:
    names = [
        "encoder.layer.0.attention.self.query.lora_B.weight",
        "encoder.layer.1.attention.self.query.lora_B.weight",
        "encoder.layer.0.intermediate.dense.weight",
        "0.weight",
    ]
    assert layer_groups(names) == {
        "attention.self.query.lora_B": [
            ("layer 0", names[0]),
            ("layer 1", names[1]),
        ],
        "intermediate.dense": [("layer 0", names[2])],
        "0": [("0.weight", names[3])],
    }


def test_spectrum_plot_has_a_labelled_panel_per_layer_type(tmp_path) -> None:
    model = _bert_64()
    graphopt.apply(model, "lora", target_modules=["query", "value"])
    factors = [n.removesuffix(".weight") for n, _ in model.named_parameters() if "lora_B" in n]
    graphopt.apply(model, "spectral", target_modules=factors, k=8)
    method = graphopt.methods_of(model)[-1]
    figure = spectrum_figure({n: b.values for n, b in method._bases.items()})
    panels = [axis for axis in figure.axes if axis.get_visible()]
    assert sorted(axis.get_title() for axis in panels) == [
        "attention.self.query.lora_B",
        "attention.self.value.lora_B",
    ]
    for axis in panels:
        assert [t.get_text() for t in axis.get_legend().get_texts()] == ["layer 0"]
        np.testing.assert_allclose(
            axis.lines[0].get_ydata(),
            method._bases[next(n for n in method._bases if axis.get_title() in n)].values.numpy(),
        )
    (path,) = method.plot(model, tmp_path)
    assert path.name == "spectral_spectrum.png" and path.stat().st_size > 0
