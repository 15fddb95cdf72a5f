"""graphopt.testing's contract checks: every built-in passes its kind's check, and each
check catches a plugin that breaks the contract (the checks can fail)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import graphopt
from graphopt import Registry
from graphopt.plugin_templates.butterworth import butterworth
from graphopt.plugin_templates.inverse_subspace import inverse_subspace
from graphopt.plugin_templates.mcp import MCPPenalty
from graphopt.plugin_templates.norm_preserving import NormPreservingFilter
from graphopt.plugin_templates.proximal_gradient import proximal_gradient
from graphopt.solvers.graphs import knn_cosine
from graphopt.solvers.spectral import heat
from graphopt.testing import (
    Check,
    CheckReport,
    check_eigensolver,
    check_ggm_solver,
    check_graph,
    check_penalty,
    check_response,
    check_transform,
)

pytestmark = pytest.mark.filterwarnings("ignore::graphopt.solvers.ggm.GGMConvergenceWarning")


def failed(report: CheckReport) -> list[str]:
    return [c.name for c in report.failures]


# -- the report ----------------------------------------------------------------------------------


def test_report_is_true_only_without_failures():
    ok = CheckReport("graph 'x'", [Check("a", "passed"), Check("b", "skipped", "needs CUDA")])
    bad = CheckReport("graph 'x'", [Check("a", "passed"), Check("b", "failed", "asymmetric")])
    assert ok and not bad
    assert ok.failures == [] and bad.failures == [Check("b", "failed", "asymmetric")]
    assert ok.raise_if_failed() is ok
    with pytest.raises(AssertionError, match=r"1 passed, 1 failed, 0 skipped[\s\S]*b: asymmetric"):
        bad.raise_if_failed()
    assert str(bad).splitlines() == [
        "graph 'x': 1 passed, 1 failed, 0 skipped",
        "  passed  a",
        "  failed  b: asymmetric",
    ]


# -- every built-in passes -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["knn_cosine", "gaussian", "correlation_threshold"])
def test_builtin_row_graphs_pass(name):
    report = check_graph(name)
    assert report, report
    assert len(report.checks) == 11 and not any(c.status == "skipped" for c in report.checks)


def _precision() -> torch.Tensor:
    a = torch.randn(30, 12, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return torch.linalg.inv(a.T @ a / 30 + 0.1 * torch.eye(12, dtype=torch.float64))


@pytest.mark.parametrize(
    "dtype",
    [
        torch.float64,
        torch.float32,
    ],
)
def test_partial_correlation_graph_passes(dtype):
    report = check_graph(
        "partial_correlation",
        features=_precision(),
        dtypes=(dtype,),
        permutation_equivariant=False,
        through_spectral=False,
    )
    assert report, report


@pytest.mark.parametrize(
    "name",
    [
        "dense",
        "arpack_flipped",
        "arpack_shift_invert",
        "torch_lobpcg",
        "lanczos_torch",
        "lobpcg",
        "lobpcg_amg",
    ],
)
def test_builtin_eigensolvers_pass(name):
    report = check_eigensolver(name)
    assert report, report


def test_every_builtin_eigensolver_is_checked():
    listed = {"dense", "arpack_flipped", "arpack_shift_invert", "torch_lobpcg", "lanczos_torch"}
    assert set(graphopt.registry.names("eigensolver")) == listed | {"lobpcg", "lobpcg_amg"}


@pytest.mark.parametrize(
    ("name", "options"), [("heat", {"t": 0.5}), ("tikhonov", {}), ("ideal", {"cutoff": 0.3})]
)
def test_builtin_responses_pass(name, options):
    report = check_response(name, options=options)
    assert report, report


def test_builtin_transform_passes():
    report = check_transform("spectral_filter", config={"high_gain": 0.3})
    assert report, report


@pytest.mark.parametrize(("name", "options"), [("l1", {}), ("l2p", {}), ("l2p", {"p": 1.0})])
def test_builtin_penalties_pass(name, options):
    report = check_penalty(name, options=options)
    assert report, report


def test_admm_passes():
    report = check_ggm_solver("admm")
    assert report, report


def test_the_templates_pass_their_checks_as_objects():
    assert check_graph(knn_cosine)
    assert check_eigensolver(inverse_subspace)
    assert check_response(butterworth, options={"cutoff": 0.5, "order": 3})
    assert check_penalty(MCPPenalty, options={"gamma": 0.7})
    assert check_ggm_solver(proximal_gradient)


# -- each check catches a broken plugin ----------------------------------------------------------


def _graph(transform):
    def graph(features, k=5):
        return transform(knn_cosine(features, k=k).to_dense())

    return graph


@pytest.mark.parametrize(
    ("broken", "expected"),
    [
        (_graph(lambda w: w.triu()), "finite, non-negative, symmetric"),
        (_graph(lambda w: w + torch.eye(w.shape[0], dtype=w.dtype)), "finite, non-negative"),
        (_graph(lambda w: w - 1.5 * w.T), "finite, non-negative"),
        (_graph(lambda w: w.double()), "returns an (n, n) tensor"),
        (_graph(lambda w: w.numpy()), "returns an (n, n) tensor"),
        (_graph(lambda w: w[:-1]), "returns an (n, n) tensor"),
        (_graph(lambda w: w * (1 + torch.rand(()))), "deterministic"),
        (_graph(lambda w: w.roll(1, dims=0).roll(1, dims=1)), "permutation equivariant"),
        (_graph(lambda w: torch.zeros_like(w)), "some edge"),
    ],
)
def test_check_graph_catches(broken, expected):
    report = check_graph(broken)
    assert not report
    assert any(expected in name for name in failed(report)), report


def _eigen(change):
    def solver(L, k):
        return change(graphopt.registry.get("eigensolver", "dense")(L, k), L)

    return solver


def _replace(**fields):
    def change(result, L):
        for name, make in fields.items():
            setattr(result, name, make(result))
        return result

    return change


@pytest.mark.parametrize(
    "change",
    [
        _replace(
            values=lambda r: r.values.flip(0) if hasattr(r.values, "flip") else r.values[::-1]
        ),
        _replace(values=lambda r: r.values + 1e-3),
        _replace(vectors=lambda r: 2 * r.vectors),
        _replace(vectors=lambda r: -r.vectors),
        _replace(residuals=lambda r: 0 * r.residuals + 0.5),
        _replace(converged=lambda r: False),
        _replace(values=lambda r: np.asarray(torch.as_tensor(r.values))),
        _replace(vectors=lambda r: r.vectors[:, :-1]),
    ],
)
def test_check_eigensolver_catches(change):
    assert not check_eigensolver(_eigen(change))


def test_check_eigensolver_catches_an_accepted_bad_k():
    def lenient(L, k):
        dense = graphopt.registry.get("eigensolver", "dense")
        return dense(L, min(max(k, 1), L.shape[0] - 1))

    assert failed(check_eigensolver(lenient)) == ["k outside 1..n-1 is a ValueError"]


@pytest.mark.parametrize(
    ("factory", "expected"),
    [
        (lambda: lambda v: 2 * torch.exp(-v), "in [0, 1]"),
        (lambda: lambda v: -torch.exp(-v), "in [0, 1]"),
        (lambda: lambda v: v.mul_(0).add_(1), "in [0, 1]"),
        (lambda: lambda v: torch.exp(-v).double(), "in [0, 1]"),
        (lambda: lambda v: torch.exp(-v).tolist(), "in [0, 1]"),
        (lambda: 3, "returns a callable"),
    ],
)
def test_check_response_catches(factory, expected):
    report = check_response(factory)
    assert not report
    assert any(expected in name for name in failed(report)), report


@pytest.fixture
def registered(monkeypatch):
    """Register objects in a fresh global registry (built-ins included) for one test."""

    def add(kind, name, obj):
        registry = Registry()

        class Plugin:
            @graphopt.hookimpl
            def graphopt_register(self, registry):
                registry.add(kind, name, obj)

        registry.register(Plugin(), name=f"test-{name}")
        monkeypatch.setattr(graphopt, "registry", registry)

    return add


class _Counting(NormPreservingFilter):
    """Gains that decay with a step counter it does not save: resume differs."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = 0

    def transform(self, grad, param, state, high_gain=None):
        self.calls += 1
        return super().transform(grad, param, state, high_gain) / self.calls


class _Float64(NormPreservingFilter):
    def transform(self, grad, param, state, high_gain=None):
        return super().transform(grad, param, state, high_gain).double()


class _TouchesParam(NormPreservingFilter):
    def transform(self, grad, param, state, high_gain=None):
        param.data.mul_(0.5)
        return super().transform(grad, param, state, high_gain)


class _NoSum(NormPreservingFilter):
    def transform(self, grad, param, state, high_gain=None):
        state = {k: v for k, v in state.items() if k != "gradient_sum"}
        return super().transform(grad, param, state, high_gain)


@pytest.mark.parametrize(
    ("cls", "expected"),
    [
        (_Counting, "resume from state_dict"),
        (_Float64, "init_state and transform"),
        (_TouchesParam, "init_state and transform"),
        (_NoSum, "gradient_sum"),
    ],
)
def test_check_transform_catches(registered, cls, expected):
    registered("transform", "broken_filter", cls)
    report = check_transform("broken_filter")
    assert not report
    assert any(expected in name for name in failed(report)), report


def test_the_norm_preserving_template_keeps_the_norm_and_the_filtered_direction():
    """Independent of the check: the built-in filter's output, rescaled to ||g||."""
    from graphopt.plugins.spectral import SpectralFilter

    torch.manual_seed(0)
    vectors = torch.linalg.qr(torch.randn(20, 4, dtype=torch.float64))[0]
    values = torch.tensor([0.0, 0.3, 0.8, 1.5], dtype=torch.float64)
    basis = type("Basis", (), {"vectors": vectors, "values": values})()
    param = torch.zeros(20, 6, dtype=torch.float64)
    grad = torch.randn(20, 6, dtype=torch.float64)
    ours = NormPreservingFilter([param], [basis], heat(0.5), high_gain=0.2)
    builtin = SpectralFilter([param], [basis], heat(0.5), high_gain=0.2)
    out = ours.transform(grad.clone(), param, ours.init_state(param))
    reference = builtin.transform(grad.clone(), param, builtin.init_state(param))
    torch.testing.assert_close(out.norm(), grad.norm())
    torch.testing.assert_close(out, reference * grad.norm() / reference.norm())
    assert (
        float(ours.transform(torch.zeros_like(grad), param, ours.init_state(param)).abs().max())
        == 0
    )


class _WrongProx(MCPPenalty):
    def prox(self, t, weight):
        return (t - torch.as_tensor(weight, dtype=t.dtype)).clamp_min(0)  # soft thresholding


class _ClaimsConvex(MCPPenalty):
    convex = True


class _ClaimsNonConvex(MCPPenalty):
    def phi(self, t):
        return t

    def prox(self, t, weight):
        return (t - torch.as_tensor(weight, dtype=t.dtype)).clamp_min(0)

    def derivative(self, t):
        return torch.ones_like(t)


class _Offset(MCPPenalty):
    def phi(self, t):
        return super().phi(t) + 1.0


class _WrongDerivative(MCPPenalty):
    def derivative(self, t):
        return torch.ones_like(t)


@pytest.mark.parametrize(
    ("cls", "expected"),
    [
        (_WrongProx, "prox(t, w) minimises"),
        (_ClaimsConvex, "convex flag"),
        (_ClaimsNonConvex, "convex flag"),
        (_Offset, "phi(0) = 0"),
        (_WrongDerivative, "derivative matches phi"),
    ],
)
def test_check_penalty_catches(cls, expected):
    report = check_penalty(cls)
    assert not report
    assert any(expected in name for name in failed(report)), report


def test_the_mcp_prox_is_firm_then_hard_thresholding():
    """Closed forms (Gao & Bruce 1997) at points on each branch, independent of the check."""
    mcp = MCPPenalty(gamma=2.0)
    t = torch.tensor([0.3, 1.0, 1.9, 2.5], dtype=torch.float64)
    firm = mcp.prox(t, 0.5)  # w < gamma: 0, (t - w) / (1 - w / gamma), t beyond gamma
    torch.testing.assert_close(
        firm, torch.tensor([0.0, 0.5 / 0.75, 1.4 / 0.75, 2.5], dtype=torch.float64)
    )
    hard = mcp.prox(t, 3.0)  # w >= gamma: hard threshold at sqrt(w gamma) = 2.449
    torch.testing.assert_close(hard, torch.tensor([0.0, 0.0, 0.0, 2.5], dtype=torch.float64))


def _stops_early(s, structure, penalty, lam, **options):
    options["max_iter"] = 3
    result = graphopt.registry.get("ggm_solver", "admm")(s, structure, penalty, lam, **options)
    result.converged = True
    return result


def _never_warns(s, structure, penalty, lam, **options):
    options["warn"] = False
    return graphopt.registry.get("ggm_solver", "admm")(s, structure, penalty, lam, **options)


@pytest.mark.parametrize(
    ("solver", "expected"),
    [(_stops_early, "matches cvxpy"), (_never_warns, "GGMConvergenceWarning")],
)
def test_check_ggm_solver_catches(solver, expected):
    report = check_ggm_solver(solver, groups=("singleton",))
    assert not report
    assert any(expected in name for name in failed(report)), report
