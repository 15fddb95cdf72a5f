"""Hypothesis strategies of good and bad calls to every public solver entry point, and
the oracle that classifies what a call did.

A ``Case`` is one call: ``bad`` names the argument it breaks (``None`` for a
valid call). ``outcome(case)`` runs it under a time limit and returns one of

- ``"clear"``: bad input, ``ValueError``/``TypeError`` whose message names the
  argument (the wanted answer);
- ``"ok"``: good input, an answer whose arrays are all finite (or a warning
  said it is not to be trusted);
- ``"deep"``: any other exception (or a bad-input error that does not name the
  argument): a traceback from deep inside;
- ``"hang"``: the call ran past ``TIME_LIMIT``;
- ``"silent_nan"``: a non-finite answer without a warning;
- ``"wrong_acceptance"``: bad input accepted;
- ``"wrong_answer"``: a good eigenproblem whose converged answer differs from
  dense ``eigh``.

Used by ``tests/test_fuzz_*.py`` (bounded runs) and
``benchmarks/robustness.py`` (the large run behind
``benchmarks/results/robustness.md``).
"""

from __future__ import annotations

import signal
import tempfile
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

TIME_LIMIT = 20.0
"""Seconds a single call may take before it counts as a hang."""

DEFAULT_EXAMPLES = 100
"""Cases per entry point in the default test run (deterministic: ``derandomize``): 28
entry points in about a minute on the shared 2-core machine (200 took 110 s)."""

SLOW_EXAMPLES = 2000
"""Cases per entry point under ``-m slow`` (random: a different sample every run)."""

OUTCOMES = ("clear", "ok", "deep", "hang", "silent_nan", "wrong_acceptance", "wrong_answer")
FAILURES = ("deep", "hang", "silent_nan", "wrong_acceptance", "wrong_answer")


@dataclass
class Case:
    """One call of an entry point; ``bad`` is the argument made invalid, or None."""

    call: Callable[[], Any]
    bad: str | None
    description: str
    check: Callable[[Any], bool] | None = field(default=None, repr=False)
    """For a good call: False when the answer is wrong (an independent reference)."""
    names: tuple[str, ...] = ()
    """Other spellings of ``bad`` an error may use (``--lam`` for ``lam``...)."""

    def __repr__(self) -> str:  # hypothesis prints this for a failing example
        return f"Case({self.description!r}, bad={self.bad!r})"


class CallTimeout(Exception):
    """The call ran past ``TIME_LIMIT``."""


@contextmanager
def time_limit(seconds: float):
    """Raise ``CallTimeout`` in the main thread after ``seconds`` (SIGALRM)."""

    def expire(signum, frame):
        raise CallTimeout(f"ran past {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def outcome(case: Case, seconds: float = TIME_LIMIT) -> tuple[str, str]:
    """(outcome, detail) of running ``case`` (module doc)."""
    try:
        with warnings.catch_warnings(record=True) as caught, time_limit(seconds):
            warnings.simplefilter("always")
            result = case.call()
    except CallTimeout as err:
        return "hang", str(err)
    except (ValueError, TypeError) as err:
        message = str(err)
        if case.bad is None:
            return "deep", f"good input rejected: {type(err).__name__}: {message}"
        if any(name in message for name in (case.bad, *case.names)):
            return "clear", message
        return "deep", f"error not naming {case.bad!r}: {type(err).__name__}: {message}"
    except Exception as err:
        return "deep", f"{type(err).__name__}: {err}"
    if case.bad is not None:
        return "wrong_acceptance", f"{case.bad} accepted"
    warned = any(issubclass(w.category, UserWarning) for w in caught)
    if not all_finite(result) and not warned:
        return "silent_nan", "non-finite answer without a warning"
    if case.check is not None and not warned and not case.check(result):
        return "wrong_answer", "answer differs from the reference"
    return "ok", ""


def all_finite(value: Any) -> bool:
    """Whether every number in ``value`` (arrays, tensors, results, containers) is finite."""
    if isinstance(value, torch.Tensor):
        dense = value.to_dense() if value.layout != torch.strided else value
        return bool(torch.isfinite(dense.detach().double()).all()) if dense.numel() else True
    if sp.issparse(value):
        return bool(np.isfinite(value.data).all())
    if isinstance(value, np.ndarray):
        return bool(np.isfinite(value).all()) if value.dtype.kind in "fc" else True
    if isinstance(value, float):
        return bool(np.isfinite(value))
    if isinstance(value, (list, tuple)):
        return all(all_finite(v) for v in value)
    if isinstance(value, dict):
        return all(all_finite(v) for v in value.values())
    fields = getattr(value, "__dataclass_fields__", None)
    if fields:
        return all(all_finite(getattr(value, name)) for name in fields if name != "info")
    return True


# -- building blocks ---------------------------------------------------------------------


def as_kind(array: np.ndarray, kind: str) -> Any:
    """``array`` as numpy, a nested list, a float64 or float32 tensor."""
    if kind == "numpy":
        return array
    if kind == "list":
        return array.tolist()
    if kind == "torch32":
        return torch.from_numpy(np.ascontiguousarray(array)).float()
    return torch.from_numpy(np.ascontiguousarray(array))


KINDS = st.sampled_from(["numpy", "list", "torch", "torch32"])
SCALES = [1e-150, 1e-40, 1e-8, 1e-3, 1.0, 1e3, 1e8, 1e40, 1e150]
FLOAT32_SCALES = [1e-20, 1e-8, 1e-3, 1.0, 1e3, 1e8, 1e20]
"""Scales of good data: every decade float64 holds (float32 overflows past ~1e38)."""


def scale_for(draw, kind: str) -> float:
    return draw(st.sampled_from(FLOAT32_SCALES if kind == "torch32" else SCALES))


@st.composite
def gaussian(draw, rows: int, columns: int) -> np.ndarray:
    """A seeded standard normal (rows, columns) matrix."""
    seed = draw(st.integers(0, 2**31 - 1))
    return np.random.default_rng(seed).standard_normal((rows, columns))


def bad_arrays(square: bool = False, symmetric: bool = False) -> st.SearchStrategy:
    """(description, value) of arrays no matrix argument may accept."""
    asym = np.array([[1.0, 2.0], [0.0, 1.0]])
    options: list[tuple[str, Any]] = [
        ("None", None),
        ("a string", "abc"),
        ("a dict", {"a": 1}),
        ("a set", {1, 2}),
        ("a scalar", 3.0),
        ("empty list", []),
        ("empty (0, 0)", np.zeros((0, 0))),
        ("1-D", np.ones(4)),
        ("3-D", np.ones((2, 2, 2))),
        ("complex", np.eye(3) * (1 + 1j)),
        ("complex tensor", torch.eye(3, dtype=torch.complex64)),
        ("bool", np.eye(3, dtype=bool)),
        ("bool tensor", torch.eye(3, dtype=torch.bool)),
        ("strings", np.array([["a", "b"], ["c", "d"]])),
        ("objects", np.array([[1, None], [None, 1]], dtype=object)),
        ("ragged list", [[1.0, 2.0], [3.0]]),
        ("NaN entry", np.array([[1.0, np.nan], [np.nan, 1.0]])),
        ("inf entry", torch.tensor([[1.0, np.inf], [np.inf, 1.0]])),
    ]
    if square:
        options.append(("not square", np.ones((2, 3))))
    if symmetric:
        options.append(("asymmetric", asym))
        options.append(("asymmetric list", asym.tolist()))
    return st.sampled_from(options)


def bad_reals(
    low: float | None = 0.0, strict: bool = False, none_ok: bool = True
) -> st.SearchStrategy:
    """(description, value) that a real-number option bounded below by ``low`` rejects
    (``None`` too unless ``none_ok``: it means "the default")."""
    options: list[tuple[str, Any]] = [
        ("NaN", float("nan")),
        ("inf", float("inf")),
        ("-inf", float("-inf")),
        ("a string", "x"),
        ("bool", True),
        ("a list", [1.0, 2.0]),
        ("complex", 1 + 1j),
    ]
    if not none_ok:
        options.append(("None", None))
    if low is not None:
        options.append(("below the bound", low - 1.0))
        if strict:
            options.append(("the open bound", low))
    return st.sampled_from(options)


def bad_integers(low: int = 1, high: int | None = None, none_ok: bool = True) -> st.SearchStrategy:
    """(description, value) that an integer option in [low, high) rejects (``None`` too
    unless ``none_ok``)."""
    options: list[tuple[str, Any]] = [
        ("a fraction", low + 0.5),
        ("bool", True),
        ("a string", "3"),
        ("NaN", float("nan")),
        ("below the bound", low - 1),
    ]
    if not none_ok:
        options.append(("None", None))
    if high is not None:
        options.append(("the open upper bound", high))
    return st.sampled_from(options)


def pick(draw, choices: dict[str, float]) -> str:
    """One key of ``choices``, drawn with about its relative weight (tenths)."""
    pool = [key for key, weight in choices.items() for _ in range(round(10 * weight))]
    return draw(st.sampled_from(pool))


def named_bad(draw, argument: str, strategy: st.SearchStrategy) -> tuple[str, Any]:
    description, value = draw(strategy)
    return f"{argument}: {description}", value


# -- graphs ----------------------------------------------------------------------------


def is_adjacency(adjacency: torch.Tensor, n: int) -> bool:
    dense = adjacency.to_dense().double()
    return (
        dense.shape == (n, n)
        and bool(torch.equal(dense, dense.T))
        and bool((dense >= 0).all())
        and bool((dense.diagonal() == 0).all())
    )


@st.composite
def features_matrix(draw, kind: str, min_rows: int = 2, min_columns: int = 1) -> np.ndarray:
    rows = draw(st.integers(min_rows, 12))
    columns = draw(st.integers(min_columns, 5))
    x = draw(gaussian(rows, columns)) * scale_for(draw, kind)
    if draw(st.booleans()):  # duplicated and zero rows: ties and exact symmetries
        x[-1] = x[0]
        if rows > 2 and draw(st.booleans()):
            x[1] = 0.0
    return x


@st.composite
def knn_graph_cases(draw, function: str) -> Case:
    from graphopt.solvers import graphs

    build = getattr(graphs, function)
    kind = draw(KINDS)
    x = draw(features_matrix(kind))
    n = x.shape[0]
    arguments: dict[str, Any] = {
        "features": as_kind(x, kind),
        "k": draw(st.integers(1, n - 1)),
        "block_size": draw(st.integers(1, 2 * n)),
    }
    if function == "gaussian_kernel" and draw(st.booleans()):
        arguments["bandwidth"] = draw(st.floats(1e-3, 1e3)) * float(np.abs(x).max() or 1.0)
    choices = {"good": 3, "features": 2, "shape": 1, "k": 1, "block_size": 0.5}
    if function == "gaussian_kernel":
        choices["bandwidth"] = 1
    bad = pick(draw, choices)
    description = f"{function} n={n}"
    if bad == "good":
        return Case(lambda: build(**arguments), None, description, lambda w: is_adjacency(w, n))
    if bad == "shape":
        shape = draw(st.sampled_from([(n, 0), (0, 3), (1, 3)]))
        description, arguments["features"] = f"features: shape {shape}", np.ones(shape)
        bad = "features"
    elif bad == "features":
        description, arguments["features"] = named_bad(draw, bad, bad_arrays())
    elif bad == "k":
        description, arguments["k"] = named_bad(draw, bad, bad_integers(1, n, none_ok=False))
    elif bad == "block_size":
        description, arguments["block_size"] = named_bad(draw, bad, bad_integers(1, none_ok=False))
    else:
        description, arguments["bandwidth"] = named_bad(draw, bad, bad_reals(0.0, strict=True))
    return Case(lambda: build(**arguments), bad, description)


@st.composite
def correlation_cases(draw) -> Case:
    from graphopt.solvers.graphs import correlation_threshold

    kind = draw(KINDS)
    x = draw(features_matrix(kind, min_columns=2))
    n = x.shape[0]
    arguments: dict[str, Any] = {
        "features": as_kind(x, kind),
        "threshold": draw(st.floats(0.0, 1.0)),
        "absolute": draw(st.booleans()),
        "block_size": draw(st.integers(1, 2 * n)),
    }
    bad = pick(draw, {"good": 3, "features": 2, "threshold": 1, "absolute": 0.5, "block_size": 0.5})
    if bad == "good":
        return Case(
            lambda: correlation_threshold(**arguments), None, "good", lambda w: is_adjacency(w, n)
        )
    if bad == "features":
        strategy = st.one_of(bad_arrays(), st.just(("one column", np.ones((4, 1)))))
        description, arguments["features"] = named_bad(draw, bad, strategy)
    elif bad == "threshold":
        strategy = st.one_of(bad_reals(0.0, none_ok=False), st.just(("above 1", 1.5)))
        description, arguments["threshold"] = named_bad(draw, bad, strategy)
    elif bad == "absolute":
        description, arguments["absolute"] = "absolute: 1", draw(st.sampled_from([1, "yes", None]))
    else:
        description, arguments["block_size"] = named_bad(draw, bad, bad_integers(1, none_ok=False))
    return Case(lambda: correlation_threshold(**arguments), bad, description)


@st.composite
def precision_matrix(draw, kind: str) -> np.ndarray:
    p = draw(st.integers(1, 8))
    x = draw(gaussian(3 * p + 2, p))
    inverse = np.linalg.inv(np.cov(x, rowvar=False, bias=True).reshape(p, p))
    return inverse * scale_for(draw, kind)


@st.composite
def partial_correlation_cases(draw) -> Case:
    from graphopt.solvers.graphs import partial_correlation_graph

    kind = draw(KINDS)
    omega = draw(precision_matrix(kind))
    n = omega.shape[0]
    arguments: dict[str, Any] = {
        "precision": as_kind(omega, kind),
        "threshold": draw(st.floats(0.0, 0.99)),
        "absolute": draw(st.booleans()),
    }
    bad = pick(draw, {"good": 3, "precision": 3, "threshold": 1})
    if bad == "good":
        return Case(
            lambda: partial_correlation_graph(**arguments),
            None,
            "good",
            lambda w: is_adjacency(w, n),
        )
    if bad == "precision":
        strategy = st.one_of(
            bad_arrays(square=True, symmetric=True),
            st.just(("negative diagonal", -np.eye(3))),
        )
        description, arguments["precision"] = named_bad(draw, bad, strategy)
    else:
        strategy = st.one_of(bad_reals(0.0, none_ok=False), st.just(("1 (open bound)", 1.0)))
        description, arguments["threshold"] = named_bad(draw, bad, strategy)
    return Case(lambda: partial_correlation_graph(**arguments), bad, description)


# -- Laplacians -------------------------------------------------------------------------


@st.composite
def adjacency_matrix(draw, kind: str, min_size: int = 1, max_size: int = 14) -> np.ndarray:
    """A symmetric non-negative weight matrix: random, or an exact symmetry (ring, star,
    complete graph), with a random scale; isolated nodes allowed."""
    n = draw(st.integers(min_size, max_size))
    shape = draw(st.sampled_from(["random", "ring", "star", "complete"]))
    if shape == "random" or n < 3:
        rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
        weights = rng.random((n, n)) * (rng.random((n, n)) < draw(st.floats(0.1, 1.0)))
        weights = np.triu(weights, 1)
        weights = weights + weights.T
    elif shape == "ring":
        weights = np.roll(np.eye(n), 1, axis=1)
        weights = weights + weights.T
    elif shape == "star":
        weights = np.zeros((n, n))
        weights[0, 1:] = weights[1:, 0] = 1.0
    else:
        weights = np.ones((n, n)) - np.eye(n)
    return weights * scale_for(draw, kind)


def as_format(weights: np.ndarray, name: str) -> Any:
    if name == "scipy":
        return sp.csr_array(weights)
    if name == "torch_coo":
        return torch.from_numpy(weights).to_sparse()
    return as_kind(weights, name)


FORMATS = st.sampled_from(["numpy", "list", "torch", "torch32", "scipy", "torch_coo"])


@st.composite
def laplacian_cases(draw, function: str) -> Case:
    from graphopt.solvers import laplacian as module

    build = getattr(module, function)
    fmt = draw(FORMATS)
    weights = draw(adjacency_matrix(fmt))
    arguments: dict[str, Any] = {"adjacency": as_format(weights, fmt)}
    if function == "laplacian":
        arguments["kind"] = draw(st.sampled_from(module.KINDS))
    choices = {"good": 3, "adjacency": 3, "kind": 1 if function == "laplacian" else 0}
    bad = pick(draw, choices)
    if bad == "good":
        return Case(lambda: build(**arguments), None, f"{function} good")
    if bad == "adjacency":
        mutations = [
            bad_arrays(square=True, symmetric=True),
            st.just(("negative weight", np.array([[0.0, -1.0], [-1.0, 0.0]]))),
        ]
        if function != "validate_adjacency":  # valid entries; only their sums overflow
            overflow = np.full((3, 3), 1e308) - np.diag([1e308] * 3)
            mutations.append(st.just(("overflowing degrees", overflow)))
        strategy = st.one_of(*mutations)
        description, arguments["adjacency"] = named_bad(draw, bad, strategy)
    else:
        description, arguments["kind"] = (
            "kind: unknown",
            draw(st.sampled_from(["normalized", None, 3, ["symmetric"]])),
        )
    return Case(lambda: build(**arguments), bad, description)


# -- eigensolvers ------------------------------------------------------------------------


def eigen_check(matrix: np.ndarray, k: int) -> Callable[[Any], bool]:
    """A converged answer must match dense eigh to the residual tolerance's accuracy."""
    expected = np.linalg.eigvalsh(matrix)[:k]
    norm = float(np.abs(matrix).sum(axis=1).max()) or 1.0

    def check(result: Any) -> bool:
        if not result.converged:
            return True  # it said so (and warned)
        values = np.asarray(torch.as_tensor(result.values).double())
        return bool(np.abs(values - expected).max() <= 1e-5 * norm)

    return check


@st.composite
def eigen_cases(draw, method: str | None, registry_front: bool = False) -> Case:
    from graphopt.solvers.eigen import SOLVERS, smallest
    from graphopt.solvers.laplacian import laplacian

    fmt = draw(st.sampled_from(["numpy", "list", "torch", "scipy", "torch_coo"]))
    large = draw(st.sampled_from([True, False, False, False]))  # past DENSE_BELOW: the solver
    weights = draw(adjacency_matrix(fmt, min_size=64 if large else 2, max_size=90 if large else 30))
    if draw(st.booleans()):
        matrix = laplacian(weights, draw(st.sampled_from(["combinatorial", "symmetric"])))
    else:  # any symmetric matrix, indefinite too
        matrix = weights - np.diag(draw(gaussian(weights.shape[0], 1))[:, 0] * weights.max())
    n = matrix.shape[0]
    arguments: dict[str, Any] = {"L": as_format(matrix, fmt), "k": draw(st.integers(1, n - 1))}
    if registry_front:
        from graphopt.eigen import smallest_eigenpairs

        solve = smallest_eigenpairs
    elif method is None:
        solve = smallest
    else:
        solve = SOLVERS[method]
    options = {"good": 4, "L": 3, "k": 1, "tol": 0.5, "residual_tol": 0.5, "seed": 0.5}
    if method in (None, "dense") and not registry_front:
        options.update(tol=0, seed=0)
    bad = pick(draw, options)
    description = f"{method or 'auto'} n={n} k={arguments['k']} {fmt}"
    if bad == "good":
        check = eigen_check(matrix, arguments["k"])
        return Case(lambda: solve(**arguments), None, description, check)
    if bad == "L":
        strategy = st.one_of(
            bad_arrays(square=True, symmetric=True),
            st.just(("complex sparse", sp.csr_array(np.eye(3) * 1j))),
        )
        description, arguments["L"] = named_bad(draw, bad, strategy)
    elif bad == "k":
        strategy = st.one_of(bad_integers(1, n, none_ok=False), st.just(("k = n", n)))
        description, arguments["k"] = named_bad(draw, bad, strategy)
    elif bad == "seed":
        description, arguments["seed"] = named_bad(draw, bad, bad_integers(0, none_ok=False))
    else:
        strategy = bad_reals(0.0, strict=True)
        description, arguments[bad] = named_bad(draw, bad, strategy)
    if method is None and bad in ("tol", "seed") and not registry_front:
        arguments["method"] = "arpack_flipped"
    if registry_front and bad in ("tol", "seed"):
        arguments["method"] = draw(st.sampled_from(sorted(set(SOLVERS) - {"dense"})))
    return Case(lambda: solve(**arguments), bad, description)


# -- spectral regularizers and filter ------------------------------------------------------


@st.composite
def spectral_cases(draw, function: str) -> Case:
    from graphopt.solvers import spectral
    from graphopt.solvers.laplacian import laplacian

    weights = draw(adjacency_matrix("numpy", min_size=2, max_size=12))
    n = weights.shape[0]
    dtype = draw(st.sampled_from([torch.float64, torch.float32]))
    L = torch.from_numpy(laplacian(weights / (weights.max() or 1.0))).to(dtype)
    values, vectors = torch.linalg.eigh(L.double())
    k = draw(st.integers(1, n))
    values, vectors = values[:k].to(dtype), vectors[:, :k].to(dtype)
    X = torch.from_numpy(draw(gaussian(n, draw(st.integers(1, 4))))).to(dtype)
    response = draw(st.sampled_from([spectral.heat(1.0), spectral.tikhonov(2.0), spectral.ideal()]))
    if function == "dirichlet_energy":
        arguments: dict[str, Any] = {"X": X, "L": L.to_sparse() if draw(st.booleans()) else L}
    elif function == "spectral_dirichlet_energy":
        arguments = {"X": X, "vectors": vectors, "values": values}
    elif function == "spectral_filter":
        arguments = {
            "G": X,
            "vectors": vectors,
            "values": values,
            "response": response,
            "high_gain": draw(st.floats(0.0, 1.0)),
        }
    else:
        arguments = {"cutoff" if function == "ideal" else "t": draw(st.floats(0.0, 10.0))}
    build = getattr(spectral, function)
    names = list(arguments)
    bad = pick(draw, {"good": 3, **{name: 3 / len(names) for name in names}})
    if bad == "good":
        if function in ("heat", "tikhonov", "ideal"):
            return Case(lambda: build(**arguments)(values), None, f"{function} good")
        return Case(lambda: build(**arguments), None, f"{function} good")
    tensors = {"X": X, "G": X, "L": L, "vectors": vectors, "values": values}
    if bad in tensors:
        good = tensors[bad]
        strategy = st.sampled_from(
            [
                ("numpy", good.numpy()),
                ("NaN entry", good.clone().fill_(float("nan"))),
                ("integer dtype", good.to(torch.int64)),
                ("other dtype", good.to(torch.float16)),
                ("empty", good[:0]),
                ("None", None),
            ]
        )
        description, arguments[bad] = named_bad(draw, bad, strategy)
    elif bad == "response":
        strategy = st.sampled_from(
            [("a string", "heat"), ("wrong shape", lambda v: v[:0]), ("inf gains", lambda v: v / 0)]
        )
        description, arguments[bad] = named_bad(draw, bad, strategy)
        return Case(lambda: build(**arguments), bad, description, names=("gains",))
    else:  # t of heat/tikhonov, cutoff of ideal (None: keep every mode), high_gain
        strategy = bad_reals(0.0, none_ok=function == "ideal")
        description, arguments[bad] = named_bad(draw, bad, strategy)
    call = (
        (lambda: build(**arguments)(values))
        if function in ("heat", "tikhonov", "ideal")
        else (lambda: build(**arguments))
    )
    return Case(call, bad, description)


# -- GGM ---------------------------------------------------------------------------------


@st.composite
def covariance_matrix(draw, kind: str, well_conditioned: bool = False) -> np.ndarray:
    """A sample covariance, singular (fewer samples than variables) or not, at a random
    scale; ``well_conditioned``: 4p samples and unit scale."""
    p = draw(st.integers(1, 7))
    samples = 4 * p + 4 if well_conditioned else draw(st.integers(2, 4 * p + 4))
    x = draw(gaussian(samples, p))
    scale = 1.0 if well_conditioned else scale_for(draw, kind)
    return np.cov(x, rowvar=False, bias=True).reshape(p, p) * scale


@st.composite
def ggm_cases(draw, front: str = "graphopt", focus: str = "all") -> Case:
    """``graphopt.ggm.solve`` (front "graphopt") or ``graphopt.solvers.ggm.solve``.

    ``focus="S"``: only the covariance argument varies (bad S, or a well-conditioned
    unit-scale S with the l1 penalty); ``"all"``: every argument, singular and badly
    scaled S too.
    """
    if front == "graphopt":
        from graphopt.ggm import solve
    else:
        from graphopt.solvers.ggm import solve
    kind = draw(KINDS)
    s = draw(covariance_matrix(kind, well_conditioned=focus == "S"))
    p = s.shape[0]
    scale = float(np.abs(s).max())
    arguments: dict[str, Any] = {
        "S": as_kind(s, kind),
        "lam": draw(st.floats(0.01, 1.0)) * scale,
        "solver": draw(st.sampled_from(["admm", "bcd"])),
        "max_iter": draw(st.sampled_from([None, 5, 50])),
    }
    if arguments["solver"] == "bcd":  # its coupling has the units of S^2 (docs/solvers/ggm.md)
        arguments["lambda0"] = 1000.0 * scale**2
    penalty = draw(st.sampled_from(["l1", "l2p"])) if focus == "all" else "l1"
    if penalty == "l2p":
        arguments.update(penalty="l2p", p=draw(st.floats(0.1, 1.0)))
    if p >= 2:
        arguments["groups"] = draw(st.sampled_from(["singleton", "node", "important:1", None]))
    options = {"good": 3, "S": 2, "lam": 1, "tol": 0.5, "max_iter": 0.5, "groups": 1}
    options.update(penalty=0.3, solver=0.3, p=0.5 if penalty == "l2p" else 0)
    if focus == "S":
        options = {"good": 3, "S": 3}
    bad = pick(draw, options)
    description = f"ggm p={p} max|S|={scale:.0e} {kind} {arguments['solver']} {penalty}"
    if bad == "good":
        return Case(lambda: solve(**arguments), None, description)
    if bad == "S":
        strategy = st.one_of(
            bad_arrays(square=True, symmetric=True),
            st.just(("not PSD", np.array([[1.0, 2.0], [2.0, 1.0]]))),
            st.just(("zero diagonal", np.zeros((3, 3)))),
            st.just(("scipy sparse", sp.csr_array(np.eye(3)))),
            st.just(("torch sparse", torch.eye(3, dtype=torch.float64).to_sparse())),
        )
        description, arguments["S"] = named_bad(draw, bad, strategy)
        arguments.pop("groups", None)
    elif bad == "lam":
        description, arguments["lam"] = named_bad(draw, bad, bad_reals(0.0))
    elif bad == "tol":
        description, arguments["tol"] = named_bad(draw, bad, bad_reals(0.0, strict=True))
    elif bad == "max_iter":
        description, arguments["max_iter"] = named_bad(draw, bad, bad_integers(1))
    elif bad == "p":
        description, arguments["p"] = named_bad(draw, bad, bad_reals(0.0, strict=True))
    elif bad in ("penalty", "solver"):
        description, arguments[bad] = f"{bad}: unknown", draw(st.sampled_from(["magic", "", 3]))
    else:
        strategy = st.sampled_from(
            [
                ("important:x", "important:x"),
                ("important out of range", f"important:{p + 3}"),
                ("diagonal pair", [[(0, 0)]]),
                ("index out of range", [[(0, p + 5)]]),
                ("fractional index", [[(0, 1.5)]]),
                ("bool index", [[(True, 0)]]),
                ("a number", 3),
                ("int list", [1, 2]),
                ("unknown name", "blocks"),
            ]
        )
        description, arguments["groups"] = named_bad(draw, bad, strategy)
        if p < 2:
            arguments["S"] = np.eye(3)
    return Case(lambda: solve(**arguments), bad, description, names=("important",))


# -- the command line --------------------------------------------------------------------


class CLIFailure(ValueError):
    """The command exited 2: its one-line message."""


def run_cli(argv: list[str], environ: dict[str, str] | None = None) -> int:
    """``graphopt.cli.main(argv)`` capturing output; exit 2 raises ``CLIFailure`` with the
    message (``RuntimeError`` when it is not one ``graphopt: error:`` line)."""
    import io
    import os
    from contextlib import redirect_stderr, redirect_stdout

    from graphopt.cli import main

    err, out = io.StringIO(), io.StringIO()
    saved = dict(os.environ)
    os.environ.update(environ or {})
    try:
        with redirect_stderr(err), redirect_stdout(out):
            try:
                code = main(argv)
            except SystemExit as exit_:  # argparse usage errors
                code = exit_.code
    finally:
        os.environ.clear()
        os.environ.update(saved)
    if code == 2:
        lines = err.getvalue().strip().splitlines()
        if (
            not lines
            or not lines[-1].startswith("graphopt: error: ")
            or "Traceback" in err.getvalue()
        ):
            raise RuntimeError(f"exit 2 without a one-line error: {err.getvalue()!r}")
        raise CLIFailure(lines[-1])
    if code != 0:
        raise RuntimeError(f"exit code {code}: {err.getvalue()[-500:]}")
    return code


@st.composite
def cli_solve_cases(draw, folder: str) -> Case:
    """``graphopt solve ggm`` on files written into ``folder``."""
    from pathlib import Path

    root = Path(tempfile.mkdtemp(dir=folder))  # files of this case only
    s = draw(covariance_matrix("numpy", well_conditioned=True))
    source = root / "S.npy"
    np.save(source, s)
    argv = ["solve", "ggm", str(source), "--quiet", "--lam", repr(0.1 * float(np.abs(s).max()))]
    bad = pick(draw, {"good": 2, "file": 3, "option": 2, "output": 1, "threads": 0.5})

    def good_outputs() -> Any:
        run_cli(argv)
        return np.load(root / "S.precision.npy")

    if bad == "good":
        return Case(good_outputs, None, "solve ggm good")
    if bad == "file":
        return damaged_file_case(draw, root, argv, 2, DAMAGED_FILES)
    if bad == "option":
        option, value = draw(
            st.sampled_from(
                [
                    ("--lam", "nan"),
                    ("--lam", "-1"),
                    ("--lam", "x"),
                    ("--tol", "0"),
                    ("--max-iter", "0"),
                    ("--max-iter", "1.5"),
                    ("--penalty", "scad"),
                    ("--solver", "magic"),
                    ("--groups", "important:x"),
                    ("--device", "cuda:7"),
                    ("--device", "gpu"),
                ]
            )
        )
        return Case(lambda: run_cli([*argv, option, value]), option, f"{option} {value}")
    if bad == "output":
        option, target = draw(
            st.sampled_from(
                [("--output", source), ("--output", root / "P.json"), ("--output", root)]
            )
        )
        label = "--report" if str(target).endswith(".json") else option
        return Case(lambda: run_cli([*argv, option, str(target)]), label, f"{option} {target}")
    value = draw(st.sampled_from(["0", "-2", "many", "1.5"]))
    return Case(lambda: run_cli([*argv, "--threads", value]), "--threads", f"--threads {value}")


DAMAGED_FILES = [
    (".npy", "empty"),
    (".npy", "truncated"),
    (".npy", "garbage"),
    (".npy", "objects"),
    (".npy", "complex"),
    (".npy", "nan"),
    (".npy", "3-D"),
    (".csv", "text"),
    (".csv", "ragged"),
    (".csv", "binary"),
    (".npz", "truncated"),
    (".npz", "missing member"),
    (".npz", "two arrays"),
    (".txt", "wrong suffix"),
    ("", "folder"),
]


def damaged_file_case(
    draw, root: Any, argv: list[str], position: int, files: list[tuple[str, str]]
) -> Case:
    """The command ``argv`` with its input (``argv[position]``) replaced by a damaged file."""
    suffix, content = draw(st.sampled_from(files))
    target = root / f"bad{suffix}"
    write_damaged(target, content)
    arguments = [*argv[:position], str(target), *argv[position + 1 :]]
    return Case(lambda: run_cli(arguments), str(target), f"file: {content}")


def write_damaged(path: Any, content: str) -> None:
    """Write one kind of damaged matrix file at ``path``."""
    import io
    import zipfile

    good = io.BytesIO()
    np.save(good, np.eye(3))
    raw = good.getvalue()
    if content == "folder":
        path.mkdir()
    elif content == "empty":
        path.write_bytes(b"")
    elif content == "truncated" and path.suffix == ".npy":
        path.write_bytes(raw[:-20])
    elif content == "garbage":
        path.write_bytes(raw[:12] + b"\x00garbage{{{" + raw[24:])
    elif content == "objects":
        np.save(path, np.array([1, None], dtype=object), allow_pickle=True)
    elif content == "complex":
        np.save(path, np.eye(3) * 1j)
    elif content == "nan":
        np.save(path, np.full((3, 3), np.nan))
    elif content == "3-D":
        np.save(path, np.ones((2, 2, 2)))
    elif content == "text":
        path.write_text("1,2\nabc,4\n")
    elif content == "ragged":
        path.write_text("1,2,3\n4,5\n")
    elif content == "binary":
        path.write_bytes(b"\xff\xfe\x00\x01")
    elif content == "truncated":
        buffer = io.BytesIO()
        np.savez(buffer, a=np.eye(3))
        path.write_bytes(buffer.getvalue()[:40])
    elif content == "missing member":
        buffer = io.BytesIO()
        sp.save_npz(buffer, sp.csr_array(np.eye(3)))
        with zipfile.ZipFile(buffer) as full, zipfile.ZipFile(path, "w") as partial:
            for member in full.namelist():
                if member != "indices.npy":
                    partial.writestr(member, full.read(member))
    elif content == "two arrays":
        np.savez(path, a=np.eye(3), b=np.eye(3))
    else:
        path.write_text("1 0\n0 1\n")


@st.composite
def cli_eigen_cases(draw, folder: str) -> Case:
    """``graphopt eigen`` on files written into ``folder``."""
    from pathlib import Path

    root = Path(tempfile.mkdtemp(dir=folder))  # files of this case only
    weights = draw(adjacency_matrix("numpy", min_size=2, max_size=30))
    source = root / "A.npz"
    sp.save_npz(source, sp.csr_array(weights))
    k = draw(st.integers(1, weights.shape[0] - 1))
    out = root / "pairs.npz"
    argv = ["eigen", str(source), "-k", str(k), "--adjacency", "--out", str(out)]
    bad = pick(draw, {"good": 2, "file": 3, "option": 2, "output": 1})

    def good_outputs() -> Any:
        run_cli(argv)
        with np.load(out) as pairs:
            return {name: pairs[name] for name in pairs.files}

    if bad == "good":
        return Case(good_outputs, None, f"eigen n={weights.shape[0]} k={k}")
    if bad == "file":
        return damaged_file_case(draw, root, argv, 1, [f for f in DAMAGED_FILES if f[0] != ".csv"])
    if bad == "option":
        option, value = draw(
            st.sampled_from(
                [("-k", "0"), ("-k", str(weights.shape[0])), ("-k", "x"), ("--method", "magic")]
            )
        )
        arguments = [*argv[:2], *argv[4:], option, value]
        return Case(lambda: run_cli(arguments), option, f"{option} {value}")
    option, target = draw(st.sampled_from([("--out", source), ("--out", root), ("--report", out)]))
    label = "--report" if option == "--report" else "--out"
    return Case(lambda: run_cli([*argv, option, str(target)]), label, f"{option} {target}")


@st.composite
def cli_plugins_cases(draw) -> Case:
    """``graphopt plugins`` with good and bad options and environment."""
    bad = pick(draw, {"good": 2, "kind": 2, "threads": 1})
    if bad == "good":
        argv = ["plugins", *draw(st.sampled_from([[], ["--json"], ["--kind", "eigensolver"]]))]
        return Case(lambda: run_cli(argv), None, " ".join(argv))
    if bad == "kind":
        kind = draw(st.text(alphabet="abcxyz_-", min_size=1, max_size=8))
        return Case(lambda: run_cli(["plugins", "--kind", kind]), "--kind", f"--kind {kind!r}")
    value = draw(st.sampled_from(["0", "x", "-1", "2.5"]))
    environ = {"GRAPHOPT_THREADS": value}
    return Case(
        lambda: run_cli(["plugins"], environ),
        "GRAPHOPT_THREADS",
        f"GRAPHOPT_THREADS={value!r}",
    )


# -- every entry point ---------------------------------------------------------------------


def entry_points(folder: str) -> dict[str, st.SearchStrategy]:
    """Entry point name -> its strategy of cases (CLI files go under ``folder``)."""
    from graphopt.solvers.eigen import SOLVERS

    points: dict[str, st.SearchStrategy] = {
        "solvers.graphs.knn_cosine": knn_graph_cases("knn_cosine"),
        "solvers.graphs.gaussian_kernel": knn_graph_cases("gaussian_kernel"),
        "solvers.graphs.correlation_threshold": correlation_cases(),
        "solvers.graphs.partial_correlation_graph": partial_correlation_cases(),
        "solvers.laplacian.laplacian": laplacian_cases("laplacian"),
        "solvers.laplacian.degrees": laplacian_cases("degrees"),
        "solvers.laplacian.validate_adjacency": laplacian_cases("validate_adjacency"),
    }
    for method in sorted(SOLVERS):
        points[f"solvers.eigen.{method}"] = eigen_cases(method)
    points["solvers.eigen.smallest"] = eigen_cases(None)
    points["eigen.smallest_eigenpairs"] = eigen_cases(None, registry_front=True)
    for function in (
        "dirichlet_energy",
        "spectral_dirichlet_energy",
        "spectral_filter",
        "heat",
        "tikhonov",
        "ideal",
    ):
        points[f"solvers.spectral.{function}"] = spectral_cases(function)
    points["ggm.solve (S)"] = ggm_cases("graphopt", focus="S")
    points["solvers.ggm.solve (S)"] = ggm_cases("solvers", focus="S")
    points["ggm.solve (all arguments)"] = ggm_cases("graphopt")
    points["solvers.ggm.solve (all arguments)"] = ggm_cases("solvers")
    points["cli: solve ggm"] = cli_solve_cases(folder)
    points["cli: eigen"] = cli_eigen_cases(folder)
    points["cli: plugins"] = cli_plugins_cases()
    return points


def run_fuzz(strategy: st.SearchStrategy, examples: int, derandomize: bool) -> None:
    """Draw ``examples`` cases and assert each is "clear" or "ok" (hypothesis shrinks a
    failure to a small example)."""

    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=derandomize,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(case=strategy)
    def check(case: Case) -> None:
        result, detail = outcome(case)
        assert result in ("clear", "ok"), f"{case}: {result}: {detail}"

    check()
