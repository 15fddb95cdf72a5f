"""The conformance matrix every fine-tuning method passes, as a public helper.

Plugin authors call ``check_method("mymethod", make_model, target_modules)``
in their own test suite; graphopt's tests run it for every registered method
on tiny BERT, LLaMA, Qwen2, GPT-2 (``Conv1D``), T5 and ViT models. Each check
raises ``AssertionError`` naming the method and what broke:

1. ``trainable_count``: ``apply``'s summary, the method's documented formula
   (``num_trainable_parameters``) and the tensors it trains agree;
2. ``identity_at_init``: the adapted model computes the base model's outputs
   (when ``Method.identity_at_init``);
3. ``only_trainable_changed``: after a few optimizer steps (``GraphOptimizer.for_model``,
   so the method's callbacks run) every parameter the method does not train
   is unchanged (for ``reparameterizes_base`` methods: outside the targets);

then every trainable tensor is perturbed to random, non-trivial values
(``p += 0.25 max(rms(p), 0.1) N(0, 1)``: a few small steps leave an adapter so
close to its initial value that a wrong merge or unmerge hides in the rounding),
and

4. ``merge_equals_adapted``: merged outputs equal adapted outputs (``rtol``);
5. ``merge_idempotent``: merging twice changes nothing;
6. ``unmerge_restores``: unmerge gives the adapted outputs back (when supported);
7. ``save_load_round_trip``: save, load onto a fresh base model, identical outputs;
8. ``merged_reload`` (Hugging Face models, i.e. with ``save_pretrained``):
   ``merge_and_unload`` -> ``save_pretrained`` -> plain ``from_pretrained`` gives
   the adapted outputs, with exactly the base model's state-dict keys (no bias
   the architecture's config does not declare).
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from graphopt.adapters import apply, load_adapter, merge, merge_and_unload, save_adapter, unmerge
from graphopt.methods import UnsupportedOperationError, methods_of

Inputs = Callable[[nn.Module], Any]


@contextmanager
def no_host_sync() -> Iterator[None]:
    """Make any CUDA host synchronisation inside the block raise (``step()`` must not
    wait for the GPU); pending work is finished first so only the block is checked."""
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


@dataclass
class ConformanceReport:
    """Which checks ran (all passed, or ``check_method`` would have raised) and which
    were skipped because the method does not promise them."""

    method: str
    passed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def default_inputs(model: nn.Module, batch: int = 2, length: int = 8) -> dict[str, torch.Tensor]:
    """Random inputs for a transformers model: ``input_ids`` (``config.vocab_size``) or,
    for a vision model (``main_input_name == "pixel_values"``), images of
    ``config.image_size``; plus ``decoder_input_ids`` for an encoder-decoder (T5)."""
    generator = torch.Generator().manual_seed(1234)
    config = model.config  # type: ignore[union-attr]
    like = next(model.parameters())

    def ids() -> torch.Tensor:
        return torch.randint(0, int(config.vocab_size), (batch, length), generator=generator)

    if getattr(model, "main_input_name", "input_ids") == "pixel_values":
        size, channels = int(config.image_size), int(config.num_channels)
        inputs = {"pixel_values": torch.randn(batch, channels, size, size, generator=generator)}
    else:
        inputs = {"input_ids": ids()}
    if getattr(config, "is_encoder_decoder", False):
        inputs["decoder_input_ids"] = ids()
    return {
        name: value.to(like.device, like.dtype if value.is_floating_point() else value.dtype)
        for name, value in inputs.items()
    }


def first_tensor(output: Any) -> torch.Tensor:
    """The main output of a model call: the tensor itself, or the first element of a
    tuple / ``ModelOutput`` (``last_hidden_state``, ``logits``)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, dict):
        return next(v for v in output.values() if isinstance(v, torch.Tensor))
    return first_tensor(output[0])


def check_method(
    method_name: str,
    model_factory: Callable[[], nn.Module],
    target_modules: str | list[str],
    config: dict[str, Any] | None = None,
    *,
    inputs: Inputs = default_inputs,
    steps: int = 3,
    lr: float = 1e-2,
    rtol: float = 1e-5,
    atol: float = 1e-6,
    seed: int = 0,
) -> ConformanceReport:
    """Run the conformance matrix for ``method_name`` (see the module docstring).

    Args:
        method_name: a registered method.
        model_factory: returns a fresh base model, with the same weights every call
            (it is called with the torch RNG seeded by ``seed``).
        target_modules: passed to ``graphopt.apply``.
        config: the method's other config fields.
        inputs: builds the keyword arguments of a forward call from the model.
        steps: optimizer steps taken before the merge and round-trip checks.
        lr: AdamW learning rate of those steps.
        rtol: relative tolerance of the floating-point comparisons (merge, identity,
            merged reload); the save/load round trip must be bitwise identical.
        atol: absolute tolerance, as a fraction of the largest expected output.

    Returns the report: ``passed`` and ``skipped`` (a check the method or the model
    does not offer, e.g. ``merged_reload`` on a model without ``save_pretrained``)
    list the checks by name; a failed check raises ``AssertionError``.
    """
    config = dict(config or {})
    report = ConformanceReport(method_name)

    def fresh() -> nn.Module:
        torch.manual_seed(seed)
        return model_factory()

    def run(model: nn.Module, batch: Any) -> torch.Tensor:
        with torch.no_grad():
            return first_tensor(model(**batch)).detach().clone()

    def close(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
        scale = float(expected.abs().max()) or 1.0
        if not torch.allclose(actual, expected, rtol=rtol, atol=atol * scale):
            gap = float((actual - expected).abs().max())
            raise AssertionError(f"method {method_name!r}: {what} (max |difference| {gap:.3g})")

    model = fresh().eval()
    batch = inputs(model)
    base_out = run(model, batch)
    base_keys = set(model.state_dict())
    summary = apply(model, method_name, target_modules, **config)
    method = methods_of(model)[-1]

    _check_count(model, method, summary.trainable_parameters, method_name, "after apply")
    report.passed.append("trainable_count")

    if method.identity_at_init:
        close(run(model, batch), base_out, "forward differs from the base model at init")
        report.passed.append("identity_at_init")
    else:
        report.skipped.append("identity_at_init")

    _train(model, batch, steps, lr, method_name)
    report.passed.append("only_trainable_changed")
    _check_count(model, method, None, method_name, f"after {steps} steps")

    model.eval()
    perturb(model, seed)
    adapted = run(model, batch)
    try:
        merge(model)
    except UnsupportedOperationError:
        report.skipped += ["merge_equals_adapted", "merge_idempotent", "unmerge_restores"]
    else:
        merged = run(model, batch)
        close(merged, adapted, "merged output differs from the adapted output")
        report.passed.append("merge_equals_adapted")
        weights = {n: p.detach().clone() for n, p in model.named_parameters()}
        merge(model)
        same = all(torch.equal(weights[n], p) for n, p in model.named_parameters())
        if not same or not torch.equal(run(model, batch), merged):
            raise AssertionError(f"method {method_name!r}: a second merge changed the model")
        report.passed.append("merge_idempotent")
        try:
            unmerge(model)
        except UnsupportedOperationError:
            report.skipped.append("unmerge_restores")
        else:
            close(run(model, batch), adapted, "unmerged output differs from the adapted output")
            report.passed.append("unmerge_restores")

    if any(m.merged for m in methods_of(model)):
        report.skipped.append("save_load_round_trip")
    else:
        with tempfile.TemporaryDirectory() as tmp:
            save_adapter(model, Path(tmp) / "adapter")
            loaded = fresh().eval()
            load_adapter(loaded, Path(tmp) / "adapter")
        if not torch.equal(run(loaded, batch), adapted):
            gap = float((run(loaded, batch) - adapted).abs().max())
            raise AssertionError(
                f"method {method_name!r}: outputs after save -> load differ (max {gap:.3g})"
            )
        report.passed.append("save_load_round_trip")
    _check_merged_reload(model, batch, base_keys, adapted, close, report)
    return report


def perturb(model: nn.Module, seed: int = 0) -> None:
    """Move every trainable tensor of the model's methods by
    ``0.25 max(rms(p), 0.1) N(0, 1)`` (seeded): random, non-trivial adapter values."""
    generator = torch.Generator().manual_seed(seed + 1)
    seen: set[int] = set()
    with torch.no_grad():
        for method in methods_of(model):
            for param in method.trainable_parameters(model).values():
                if id(param) in seen:
                    continue
                seen.add(id(param))
                rms = float(param.detach().float().pow(2).mean().sqrt())
                noise = torch.randn(param.shape, generator=generator, dtype=torch.float32)
                param.add_((0.25 * max(rms, 0.1) * noise).to(param.device, param.dtype))


def _check_merged_reload(
    model: nn.Module,
    batch: Any,
    base_keys: set[str],
    adapted: torch.Tensor,
    close: Callable[[torch.Tensor, torch.Tensor, str], None],
    report: ConformanceReport,
) -> None:
    """``merge_and_unload`` -> ``save_pretrained`` -> ``from_pretrained`` (HF models)."""
    if not hasattr(model, "save_pretrained") or not hasattr(type(model), "from_pretrained"):
        report.skipped.append("merged_reload")
        return
    like = next(model.parameters())
    try:
        merge_and_unload(model)
    except UnsupportedOperationError:
        report.skipped.append("merged_reload")
        return
    extra = sorted(set(model.state_dict()) - base_keys)
    missing = sorted(base_keys - set(model.state_dict()))
    if extra or missing:
        raise AssertionError(
            f"method {report.method!r}: after merge_and_unload the model has state-dict keys "
            f"the architecture does not declare {extra[:5]} (missing {missing[:5]})"
        )
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)  # type: ignore[operator]
        reloaded = type(model).from_pretrained(tmp)  # type: ignore[attr-defined]
        reloaded = reloaded.to(like.device, like.dtype).eval()
    with torch.no_grad():
        output = first_tensor(reloaded(**batch)).detach()
    close(output, adapted, "merge_and_unload -> save_pretrained -> from_pretrained differs")
    report.passed.append("merged_reload")


def _check_count(model: nn.Module, method: Any, reported: int | None, name: str, when: str) -> None:
    counted = method.count_trained_entries(model)
    formula = method.num_trainable_parameters(model)
    if counted != formula or (reported is not None and reported != counted):
        raise AssertionError(
            f"method {name!r} {when}: documented count {formula}, adapter tensors hold "
            f"{counted}, apply reported {reported}"
        )


def _train(model: nn.Module, batch: Any, steps: int, lr: float, name: str) -> None:
    from graphopt.optim import GraphOptimizer

    model.train()
    method = methods_of(model)[-1]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainable_before = set(method.trainable_parameters(model))
    optimizer = GraphOptimizer.for_model(model, lr=lr)
    with torch.no_grad():
        target = torch.randn_like(first_tensor(model(**batch)))
    for _ in range(steps):
        optimizer.zero_grad()
        loss = (first_tensor(model(**batch)) - target).pow(2).mean()
        loss.backward()
        optimizer.step()
    trainable = trainable_before | set(method.trainable_parameters(model))
    protected = set(before) - trainable
    if method.reparameterizes_base:
        protected = {
            n for n in protected if not any(n.startswith(t + ".") for t in method.adapted_modules)
        }
    now = dict(model.named_parameters())
    changed = [n for n in sorted(protected) if n in now and not torch.equal(now[n], before[n])]
    if changed:
        raise AssertionError(
            f"method {name!r}: parameters it does not train changed in training: {changed[:5]}"
        )
    if not any(
        n in before and (now[n].shape != before[n].shape or not torch.equal(now[n], before[n]))
        for n in trainable
        if n in now
    ):
        raise AssertionError(f"method {name!r}: no trainable parameter changed in {steps} steps")


# -- contract checks for the other plugin kinds ------------------------------------------------
#
# ``check_graph``, ``check_eigensolver``, ``check_response``, ``check_transform``,
# ``check_penalty`` and ``check_ggm_solver`` run every check of their kind's contract
# (docs/plugins/) and return a ``CheckReport``: one failing check does not hide the
# others, and ``bool(report)`` is True when none failed, so a plugin's test is
# ``assert check_graph("my_graph")`` (pytest prints the report when it fails).

PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"


@dataclass(frozen=True)
class Check:
    """One check of a contract: its ``name``, ``status`` (passed/failed/skipped) and
    ``detail`` (what failed, or why it was skipped)."""

    name: str
    status: str
    detail: str = ""


@dataclass
class CheckReport:
    """What a ``check_*`` helper found: every ``Check`` in the order run.

    ``bool(report)`` is True when no check failed; ``report.failures`` lists the
    failed ones; ``report.raise_if_failed()`` raises ``AssertionError`` with the
    whole report; ``str(report)`` is one line per check.
    """

    subject: str
    checks: list[Check] = field(default_factory=list)

    @property
    def failures(self) -> list[Check]:
        """The checks that failed."""
        return [c for c in self.checks if c.status == FAILED]

    def __bool__(self) -> bool:
        return not self.failures

    def raise_if_failed(self) -> CheckReport:
        """``self`` when every check passed (or was skipped); else ``AssertionError``."""
        if self.failures:
            raise AssertionError(str(self))
        return self

    def __str__(self) -> str:
        counts = {s: sum(c.status == s for c in self.checks) for s in (PASSED, FAILED, SKIPPED)}
        head = (
            f"{self.subject}: {counts[PASSED]} passed, {counts[FAILED]} failed, "
            f"{counts[SKIPPED]} skipped"
        )
        lines = [
            f"  {c.status:7} {c.name}" + (f": {c.detail}" if c.detail else "") for c in self.checks
        ]
        return "\n".join([head, *lines])

    __repr__ = __str__


class _Checker:
    """Runs checks into a ``CheckReport``: a check is a function that returns nothing (or a
    note) and raises ``AssertionError`` -- or anything else, reported as raised -- to fail."""

    def __init__(self, subject: str) -> None:
        self.report = CheckReport(subject)

    def run(self, name: str, check: Callable[[], Any]) -> bool:
        try:
            note = check()
        except AssertionError as err:
            self.report.checks.append(Check(name, FAILED, str(err)))
            return False
        except Exception as err:
            self.report.checks.append(Check(name, FAILED, f"raised {type(err).__name__}: {err}"))
            return False
        self.report.checks.append(Check(name, PASSED, note if isinstance(note, str) else ""))
        return True

    def skip(self, name: str, reason: str) -> None:
        self.report.checks.append(Check(name, SKIPPED, reason))


def _devices(devices: Sequence[str] | None) -> list[str]:
    """The devices to check on: the given ones, else the CPU and (when present) CUDA."""
    if devices is not None:
        return list(devices)
    return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


def _resolve(kind: str, obj: Any) -> tuple[Any, str]:
    """(object, label) for a registered name or the object itself."""
    if isinstance(obj, str):
        from graphopt import registry

        return registry.get(kind, obj), f"{kind} {obj!r}"
    return obj, f"{kind} {getattr(obj, '__name__', type(obj).__name__)}"


def _dense(matrix: Any) -> torch.Tensor:
    if matrix.layout != torch.strided:
        return matrix.to_dense()
    return matrix


# -- graph ---------------------------------------------------------------------------------------


def check_graph(
    graph: str | Callable[..., torch.Tensor],
    *,
    options: dict[str, Any] | None = None,
    features: torch.Tensor | None = None,
    devices: Sequence[str] | None = None,
    dtypes: Sequence[torch.dtype] = (torch.float64, torch.float32),
    permutation_equivariant: bool = True,
    through_spectral: bool = True,
    seed: int = 0,
) -> CheckReport:
    """Check a graph construction (kind ``graph``) against docs/plugins/graph.md.

    ``graph(features, **options)`` gets the node features (n, d) -- what the spectral
    method passes: a parameter's rows, float64, on the parameter's device -- and must
    return a torch tensor (n, n) (sparse COO/CSR or dense) on the same device and in the
    same dtype that is finite, non-negative, symmetric (max |W - W^T| <= 1e-8 max(max W,
    1), what ``laplacian`` accepts), with a zero diagonal and at least one edge; the same
    input gives the same graph; permuting the nodes permutes the graph (W(PX) = P W(X)
    P^T; ``permutation_equivariant=False`` for constructions that break ties by index);
    and its Laplacian is positive semidefinite with a zero eigenvalue. Checked for
    every dtype in ``dtypes`` on every device in ``devices``; with a registered name,
    also through ``graphopt.apply(model, "spectral", graph=name)``.

    Args:
        graph: a registered graph name or the function itself.
        options: keyword arguments for the graph (the ``graph_options`` a user passes).
        features: the input (default: 40 x 6 standard normal, seeded).
        devices: devices to check on (default: the CPU, and CUDA when available).
        dtypes: feature dtypes to check (the spectral method passes float64).
        permutation_equivariant: check W(PX) = P W(X) P^T.
        through_spectral: also build a spectral basis with it (needs a registered
            name; off for a graph whose input is not node features, such as
            ``partial_correlation``'s precision matrix).
        seed: seed of the default features and the permutation.
    """
    function, label = _resolve("graph", graph)
    options = dict(options or {})
    generator = torch.Generator().manual_seed(seed)
    if features is None:
        features = torch.randn(40, 6, generator=generator, dtype=torch.float64)
    n = features.shape[0]
    permutation = torch.randperm(n, generator=generator)
    checker = _Checker(label)
    for device in _devices(devices):
        for dtype in dtypes:
            x = features.to(device=device, dtype=dtype)
            where = f"[{str(dtype).removeprefix('torch.')}, {device}]"
            built: dict[str, torch.Tensor] = {}

            def build(x: torch.Tensor = x, built: dict[str, torch.Tensor] = built) -> None:
                adjacency = function(x.clone(), **options)
                assert isinstance(adjacency, torch.Tensor), (
                    f"returned {type(adjacency).__name__}, not a torch tensor"
                )
                assert tuple(adjacency.shape) == (n, n), (
                    f"returned shape {tuple(adjacency.shape)} for {n} nodes; expected ({n}, {n})"
                )
                assert adjacency.dtype == x.dtype, f"returned {adjacency.dtype} for {x.dtype} input"
                assert adjacency.device == x.device, (
                    f"returned a tensor on {adjacency.device} for input on {x.device}"
                )
                built["w"] = adjacency

            if not checker.run(f"returns an (n, n) tensor, input dtype and device {where}", build):
                continue
            w = _dense(built["w"]).to(torch.float64).cpu()

            def valid(w: torch.Tensor = w) -> None:
                assert bool(torch.isfinite(w).all()), "has NaN or infinite weights"
                assert float(w.min()) >= 0, f"has a negative weight ({float(w.min()):.3g})"
                gap = float((w - w.T).abs().max())
                assert gap <= 1e-8 * max(float(w.max()), 1.0), (
                    f"not symmetric: max |W - W^T| = {gap:.3g}"
                )
                loops = float(w.diagonal().abs().max())
                assert loops == 0, f"has self loops (largest diagonal weight {loops:.3g})"
                assert bool((w > 0).any()), "has no edge on the test features"

            checker.run(f"finite, non-negative, symmetric, no self loops, some edge {where}", valid)

            def deterministic(x: torch.Tensor = x, w: torch.Tensor = w) -> None:
                again = _dense(function(x.clone(), **options)).to(torch.float64).cpu()
                assert torch.equal(again, w), "a second call on the same input gave another graph"

            checker.run(f"deterministic {where}", deterministic)
            if permutation_equivariant:

                def equivariant(x: torch.Tensor = x, w: torch.Tensor = w) -> None:
                    p = permutation.to(x.device)
                    permuted = _dense(function(x[p].clone(), **options)).to(torch.float64).cpu()
                    expected = w[permutation][:, permutation]
                    gap = float((permuted - expected).abs().max())
                    scale = max(float(w.abs().max()), 1.0)
                    tol = (1e-10 if x.dtype == torch.float64 else 1e-5) * scale
                    assert gap <= tol, f"W(PX) differs from P W(X) P^T by {gap:.3g}"

                checker.run(f"permutation equivariant {where}", equivariant)

            def laplacian_psd(w: torch.Tensor = w) -> None:
                from graphopt.solvers.laplacian import laplacian

                values = torch.linalg.eigvalsh(laplacian(w))
                scale = max(float(values.abs().max()), 1.0)
                assert float(values[0]) >= -1e-10 * scale, (
                    f"Laplacian has eigenvalue {float(values[0]):.3g}"
                )
                assert abs(float(values[0])) <= 1e-10 * scale, "Laplacian has no zero eigenvalue"

            checker.run(
                f"Laplacian positive semidefinite, smallest eigenvalue 0 {where}", laplacian_psd
            )
    spectral = "through the spectral method (graphopt.apply)"
    if not through_spectral:
        checker.skip(spectral, "through_spectral=False")
    elif isinstance(graph, str):
        checker.run(spectral, lambda: _spectral_with_graph(graph, options))
    else:
        checker.skip(spectral, "needs a registered name")
    return checker.report


def _spectral_with_graph(name: str, options: dict[str, Any]) -> None:
    from graphopt.adapters import apply as apply_method

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 40))
    apply_method(model, "spectral", ["0"], k=3, graph=name, graph_options=options)
    [method] = methods_of(model)
    [transform] = method.transforms(model)
    state = transform.init_state(model[0].weight)
    values = state["values"]
    assert bool(torch.isfinite(values).all()) and float(values[0]) >= -1e-6, (
        f"the basis built on this graph has eigenvalues {values.tolist()}"
    )


# -- eigensolver ---------------------------------------------------------------------------------


def _path_laplacian(n: int) -> np.ndarray:
    lap = np.diag(np.r_[1.0, np.full(n - 2, 2.0), 1.0])
    index = np.arange(n - 1)
    lap[index, index + 1] = lap[index + 1, index] = -1.0
    return lap


def _ring_laplacian(n: int) -> np.ndarray:
    lap = 2.0 * np.eye(n)
    index = np.arange(n)
    lap[index, (index + 1) % n] = lap[(index + 1) % n, index] = -1.0
    return lap


def _eigen_problems(seed: int) -> list[tuple[str, np.ndarray, np.ndarray, int, bool]]:
    """(name, L, its exact spectrum, k, eigenvalues below k simple) -- closed forms where
    there is one (Fiedler; Chung, "Spectral Graph Theory", 1997, section 1.5), else
    numpy's dense ``eigvalsh`` of a random weighted graph."""
    from scipy.linalg import block_diag

    path = _path_laplacian(30)
    ring = _ring_laplacian(24)
    two = block_diag(_path_laplacian(12), _path_laplacian(18))
    rng = np.random.default_rng(seed)
    weights = np.triu(rng.uniform(0.1, 1.0, (60, 60)) * (rng.random((60, 60)) < 0.1), 1)
    weights = weights + weights.T
    weights[np.arange(59), np.arange(1, 60)] = weights[np.arange(1, 60), np.arange(59)] = 0.5
    random = np.diag(weights.sum(axis=1)) - weights
    return [
        ("path(30)", path, 2 - 2 * np.cos(np.pi * np.arange(30) / 30), 4, True),
        ("ring(24)", ring, np.sort(2 - 2 * np.cos(2 * np.pi * np.arange(24) / 24)), 5, False),
        (
            "path(12) + path(18)",
            two,
            np.sort(
                np.r_[
                    2 - 2 * np.cos(np.pi * np.arange(12) / 12),
                    2 - 2 * np.cos(np.pi * np.arange(18) / 18),
                ]
            ),
            4,
            False,
        ),
        ("random weighted graph(60)", random, np.linalg.eigvalsh(random), 6, True),
    ]


def _as_format(lap: np.ndarray, form: str, device: str) -> Any:
    import scipy.sparse as sp

    if form == "numpy":
        return lap
    if form == "scipy csr":
        return sp.csr_array(lap)
    dtype = torch.float32 if form.endswith("float32") else torch.float64
    tensor = torch.from_numpy(lap).to(device=device, dtype=dtype)
    return tensor.to_sparse_coo() if "sparse" in form else tensor


def check_eigensolver(
    solver: str | Callable[..., Any],
    *,
    options: dict[str, Any] | None = None,
    devices: Sequence[str] | None = None,
    seed: int = 0,
) -> CheckReport:
    """Check an eigensolver (kind ``eigensolver``) against docs/plugins/eigensolver.md.

    ``solver(L, k, **options)`` gets a symmetric positive semidefinite L (torch dense or
    sparse COO on any device, scipy sparse, numpy) and returns an ``EigenResult`` of its
    k smallest eigenpairs, in L's kind of array (torch on L's device and dtype; numpy
    float64 for scipy/numpy input): values ascending and equal to the exact spectrum
    (closed forms for a path, a ring and two components; numpy's ``eigvalsh`` for a
    random graph) to 1e-6 ||L|| (float64; 1e-3 for float32 input), orthonormal
    vectors, each with its largest-magnitude entry positive (where the eigenvalue is
    simple), ``residuals`` equal to ||L u - l u|| / ||L||_inf recomputed here and below
    1e-6 (1e-4 in float32), ``converged`` True; k outside 1..n-1 is a ``ValueError``.
    """
    function, label = _resolve("eigensolver", solver)
    options = dict(options or {})
    checker = _Checker(label)
    forms = ["numpy", "scipy csr"]
    torch_forms = ["torch dense float64", "torch sparse float64", "torch dense float32"]
    for name, lap, spectrum, k, simple in _eigen_problems(seed):
        cases = [(form, "cpu") for form in forms] + [
            (form, device) for device in _devices(devices) for form in torch_forms
        ]
        for form, device in cases:
            where = f"{name}, {form}" + (f", {device}" if form.startswith("torch") else "")
            matrix = _as_format(lap, form, device)
            single = form.endswith("float32")

            def check(
                matrix: Any = matrix,
                lap: np.ndarray = lap,
                spectrum: np.ndarray = spectrum,
                k: int = k,
                simple: bool = simple,
                single: bool = single,
            ) -> None:
                result = function(matrix, k, **options)
                _check_eigen_result(result, matrix, lap, spectrum[:k], simple, single)

            checker.run(f"k smallest eigenpairs of {where}", check)

    def rejects_bad_k() -> None:
        lap = torch.from_numpy(_path_laplacian(10))
        for k in (0, 10, 11):
            try:
                function(lap, k, **options)
            except ValueError:
                continue
            raise AssertionError(f"k={k} for n=10 was accepted (must be a ValueError)")

    checker.run("k outside 1..n-1 is a ValueError", rejects_bad_k)
    return checker.report


def _check_eigen_result(
    result: Any,
    matrix: Any,
    lap: np.ndarray,
    exact: np.ndarray,
    simple: bool,
    single: bool,
) -> None:
    for attribute in ("values", "vectors", "residuals", "converged", "method"):
        assert hasattr(result, attribute), f"result has no {attribute!r}"
    k, n = len(exact), lap.shape[0]
    if isinstance(matrix, torch.Tensor):
        for attribute in ("values", "vectors", "residuals"):
            value = getattr(result, attribute)
            assert isinstance(value, torch.Tensor), (
                f"{attribute} is {type(value).__name__} for torch input"
            )
            assert value.device == matrix.device and value.dtype == matrix.dtype, (
                f"{attribute} is {value.dtype} on {value.device} for {matrix.dtype} input on "
                f"{matrix.device}"
            )
    else:
        for attribute in ("values", "vectors", "residuals"):
            value = getattr(result, attribute)
            assert isinstance(value, np.ndarray) and value.dtype == np.float64, (
                f"{attribute} is {type(value).__name__} {getattr(value, 'dtype', '')} for "
                f"{type(matrix).__name__} input (expected numpy float64)"
            )
    values, vectors, residuals = (
        np.asarray(torch.as_tensor(getattr(result, a)).detach().cpu().double())
        for a in ("values", "vectors", "residuals")
    )
    assert values.shape == (k,) and vectors.shape == (n, k) and residuals.shape == (k,), (
        f"shapes values {values.shape}, vectors {vectors.shape}, residuals {residuals.shape}; "
        f"expected ({k},), ({n}, {k}), ({k},)"
    )
    assert isinstance(result.method, str), "method must be the solver's name"
    norm = float(np.abs(lap).sum(axis=1).max())
    value_tol, residual_tol = (1e-3, 1e-4) if single else (1e-6, 1e-6)
    assert np.all(np.diff(values) >= -value_tol * norm), f"values not ascending: {values}"
    error = float(np.abs(values - exact).max())
    assert error <= value_tol * norm, (
        f"values off the exact spectrum by {error:.3g} ({values} vs {exact})"
    )
    gram = float(np.abs(vectors.T @ vectors - np.eye(k)).max())
    assert gram <= value_tol, f"vectors not orthonormal: max |V^T V - I| = {gram:.3g}"
    recomputed = np.linalg.norm(lap @ vectors - vectors * values, axis=0) / norm
    assert np.all(recomputed <= residual_tol), f"residuals {recomputed} above {residual_tol:g}"
    gap = float(np.abs(residuals - recomputed).max())
    assert gap <= max(residual_tol, 10 * float(recomputed.max())), (
        f"reported residuals {residuals} differ from ||L u - l u|| / ||L|| = {recomputed}"
    )
    assert result.converged is True, "converged is not True although the residuals are small"
    if simple:
        pivots = vectors[np.abs(vectors).argmax(axis=0), np.arange(k)]
        assert np.all(pivots > 0), "an eigenvector's largest-magnitude entry is negative"


# -- response ------------------------------------------------------------------------------------


def check_response(
    response: str | Callable[..., Callable[[torch.Tensor], torch.Tensor]],
    *,
    options: dict[str, Any] | None = None,
    devices: Sequence[str] | None = None,
) -> CheckReport:
    """Check a filter response (kind ``response``) against docs/plugins/response.md.

    ``response(**options)`` (the spectral method's ``response_options``) returns a
    callable h that maps the k lowest Laplacian eigenvalues (a 1-D tensor, ascending,
    >= 0, float32 or float64, on the parameters' device) to gains of the same shape,
    dtype and device, finite and in [0, 1], without changing its input (the
    eigenvalues are optimizer state) and without host synchronisation (it runs in
    every optimizer step; checked on CUDA). Also run through
    ``graphopt.solvers.spectral.spectral_filter`` and, with a registered name, through
    the spectral method (``graphopt.apply``, an optimizer step).
    """
    factory, label = _resolve("response", response)
    options = dict(options or {})
    checker = _Checker(label)
    built: dict[str, Any] = {}

    def build() -> None:
        h = factory(**options)
        assert callable(h), f"response(**options) returned {type(h).__name__}, not a callable"
        built["h"] = h

    if not checker.run("response(**options) returns a callable", build):
        return checker.report
    h = built["h"]
    for device in _devices(devices):
        for dtype in (torch.float64, torch.float32):
            where = f"[{str(dtype).removeprefix('torch.')}, {device}]"
            values = torch.cat([torch.zeros(1), torch.linspace(0.01, 6.0, 15)]).to(device, dtype)

            def gains(values: torch.Tensor = values) -> None:
                original = values.clone()
                out = h(values)
                assert isinstance(out, torch.Tensor), f"returned {type(out).__name__}"
                assert out.shape == values.shape, (
                    f"shape {tuple(out.shape)} for {tuple(values.shape)}"
                )
                assert out.dtype == values.dtype and out.device == values.device, (
                    f"returned {out.dtype} on {out.device} for {values.dtype} on {values.device}"
                )
                assert torch.equal(values, original), "changed its input (the eigenvalues)"
                assert bool(torch.isfinite(out).all()), f"non-finite gains {out.tolist()}"
                low, high = float(out.min()), float(out.max())
                assert low >= 0 and high <= 1, (
                    f"gains outside [0, 1]: min {low:.3g}, max {high:.3g}"
                )
                assert torch.equal(h(values), out), "two calls on the same values differ"
                single = h(values[:1])
                assert single.shape == (1,), "k = 1 (one eigenvalue) gives the wrong shape"

            checker.run(f"gains: same shape/dtype/device, finite, in [0, 1] {where}", gains)
            if device.startswith("cuda"):

                def no_sync(values: torch.Tensor = values) -> None:
                    with no_host_sync():
                        h(values)

                checker.run(f"no host synchronisation {where}", no_sync)
    if not any(d.startswith("cuda") for d in _devices(devices)):
        checker.skip("no host synchronisation", "needs CUDA")

    def through_filter() -> None:
        from graphopt.solvers.spectral import spectral_filter

        lap = torch.from_numpy(_path_laplacian(12))
        values, vectors = torch.linalg.eigh(lap)
        grad = torch.randn(12, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        out = spectral_filter(grad, vectors[:, :4], values[:4], h, high_gain=0.5)
        assert bool(torch.isfinite(out).all()), "the filtered gradient is not finite"

    checker.run("through graphopt.solvers.spectral.spectral_filter", through_filter)
    name = "through the spectral method (graphopt.apply, one optimizer step)"
    if isinstance(response, str):
        checker.run(
            name, lambda: _spectral_step({"response": response, "response_options": options})
        )
    else:
        checker.skip(name, "needs a registered name")
    return checker.report


def _spectral_step(config: dict[str, Any]) -> None:
    """Apply spectral with ``config`` to a tiny model and take two optimizer steps."""
    from graphopt.adapters import apply as apply_method
    from graphopt.optim import GraphOptimizer

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 24), nn.Tanh(), nn.Linear(24, 3))
    before = model[0].weight.detach().clone()
    apply_method(model, "spectral", ["0"], **{"k": 4, "graph_options": {"k": 5}, **config})
    optimizer = GraphOptimizer.for_model(model, lr=1e-2)
    x = torch.randn(16, 6)
    for _ in range(2):
        optimizer.zero_grad()
        model(x).pow(2).mean().backward()
        optimizer.step()
    weight = model[0].weight.detach()
    assert bool(torch.isfinite(weight).all()), "the trained weight is not finite"
    assert not torch.equal(weight, before), "two optimizer steps did not change the target weight"


# -- transform -----------------------------------------------------------------------------------


def check_transform(
    transform: str,
    *,
    config: dict[str, Any] | None = None,
    devices: Sequence[str] | None = None,
    steps: int = 4,
) -> CheckReport:
    """Check a gradient transform (kind ``transform``) against docs/plugins/transform.md.

    The spectral method builds the registered ``transform`` as
    ``cls(params, bases, response=h, high_gain=g, accumulate_gradients=bool)`` (one
    object for all its target parameters) and hands it to the optimizer. Checked on a
    tiny model in float64 and float32 on every device: the object satisfies
    ``graphopt.optim.GradientTransform`` and covers exactly the target weights;
    ``init_state`` gives tensors on the parameter's device; ``transform`` returns a
    finite gradient of the gradient's shape, dtype and device and leaves the parameter
    alone; an optimizer run resumed from a saved ``state_dict()``
    (``torch.load(weights_only=True)``) ends where the uninterrupted run ends; with
    ``features="gradients"`` the state's ``gradient_sum`` holds the raw gradient
    after one step and the basis refresh replaces ``vectors``; no host
    synchronisation on CUDA.

    Args:
        transform: the registered transform name.
        config: other spectral settings (e.g. ``{"high_gain": 0.2}``).
        devices: devices to check on (default: the CPU, and CUDA when available).
        steps: optimizer steps of the resume check (saved after half of them).
    """
    from graphopt.optim import GradientTransform

    checker = _Checker(f"transform {transform!r}")
    settings = {"k": 4, "graph_options": {"k": 5}, **dict(config or {}), "transform": transform}
    for device in _devices(devices):
        for dtype in (torch.float64, torch.float32):
            where = f"[{str(dtype).removeprefix('torch.')}, {device}]"
            run = _TransformRun(settings, device, dtype)
            built: dict[str, Any] = {}

            def build(run: _TransformRun = run, built: dict[str, Any] = built) -> None:
                model = run.model()
                [method] = methods_of(model)
                objects = method.transforms(model)
                assert len(objects) == 1, f"spectral built {len(objects)} transforms; expected 1"
                [obj] = objects
                assert isinstance(obj, GradientTransform), (
                    f"{type(obj).__name__} lacks a GradientTransform member (name, params, "
                    "init_state, transform, state_dict, load_state_dict)"
                )
                assert isinstance(obj.name, str), "name must be a string"
                targets = {id(model[0].weight), id(model[2].weight)}
                assert {id(p) for p in obj.params} == targets, "params are not the target weights"
                built.update(model=model, obj=obj)

            if not checker.run(f"built by the spectral method {where}", build):
                continue
            obj = built["obj"]

            def one_call(obj: Any = obj, device: str = device) -> None:
                generator = torch.Generator().manual_seed(1)
                for param in obj.params:
                    state = obj.init_state(param)
                    assert isinstance(state, dict), "init_state must return a dict"
                    for key, value in state.items():
                        assert isinstance(value, torch.Tensor), f"state {key!r} is not a tensor"
                        assert value.device == param.device, f"state {key!r} is on {value.device}"
                    grad = torch.randn(param.shape, generator=generator).to(param)
                    original, weight = grad.clone(), param.detach().clone()
                    with torch.no_grad():
                        if device.startswith("cuda"):
                            with no_host_sync():
                                out = obj.transform(grad, param, state)
                        else:
                            out = obj.transform(grad, param, state)
                    assert isinstance(out, torch.Tensor), f"transform returned {type(out).__name__}"
                    assert out.shape == original.shape, f"shape {tuple(out.shape)}"
                    assert out.dtype == original.dtype and out.device == original.device, (
                        f"returned {out.dtype} on {out.device} for {original.dtype} on "
                        f"{original.device}"
                    )
                    assert bool(torch.isfinite(out).all()), "returned non-finite values"
                    assert torch.equal(param.detach(), weight), "transform changed the parameter"

            sync = ", no host synchronisation" if device.startswith("cuda") else ""
            checker.run(
                f"init_state and transform: shapes, dtype, device, finite{sync} {where}", one_call
            )
            checker.run(
                f"resume from state_dict = uninterrupted run {where}",
                lambda run=run: run.resume(steps),
            )
            checker.run(
                f"features='gradients': gradient_sum and basis refresh {where}",
                run.gradient_features,
            )
    return checker.report


class _TransformRun:
    """A tiny model with spectral (the transform under test), trained on fixed batches."""

    def __init__(self, settings: dict[str, Any], device: str, dtype: torch.dtype) -> None:
        self.settings, self.device, self.dtype = settings, device, dtype

    def model(self, **extra: Any) -> nn.Module:
        from graphopt.adapters import apply as apply_method

        torch.manual_seed(0)
        model = nn.Sequential(
            nn.Linear(8, 24), nn.Tanh(), nn.Linear(24, 16), nn.Tanh(), nn.Linear(16, 3)
        )
        model = model.to(self.device, self.dtype)
        apply_method(model, "spectral", ["0", "2"], **{**self.settings, **extra})
        return model

    def batch(self, step: int) -> torch.Tensor:
        x = torch.randn(12, 8, generator=torch.Generator().manual_seed(100 + step))
        return x.to(self.device, self.dtype)

    def train(self, model: nn.Module, optimizer: Any, steps: range) -> None:
        for step in steps:
            optimizer.zero_grad()
            model(self.batch(step)).pow(2).mean().backward()
            optimizer.step()

    def resume(self, steps: int) -> None:
        import io

        from graphopt.optim import GraphOptimizer

        straight = self.model()
        optimizer = GraphOptimizer.for_model(straight, lr=1e-2)
        self.train(straight, optimizer, range(steps))
        first = self.model()
        optimizer = GraphOptimizer.for_model(first, lr=1e-2)
        self.train(first, optimizer, range(steps // 2))
        buffer = io.BytesIO()
        torch.save({"model": first.state_dict(), "optimizer": optimizer.state_dict()}, buffer)
        buffer.seek(0)
        saved = torch.load(buffer, weights_only=True)
        resumed = self.model()
        resumed.load_state_dict(saved["model"])
        optimizer = GraphOptimizer.for_model(resumed, lr=1e-2)
        optimizer.load_state_dict(saved["optimizer"])
        self.train(resumed, optimizer, range(steps // 2, steps))
        for (name, a), b in zip(straight.named_parameters(), resumed.parameters(), strict=True):
            a, b = a.detach(), b.detach()
            assert bool(torch.isfinite(a).all()), f"{name} is not finite after {steps} steps"
            gap = float((a - b).abs().max())
            assert gap == 0 or (self.device != "cpu" and gap <= 1e-6 * float(a.abs().max())), (
                f"{name} of the resumed run differs from the uninterrupted one by {gap:.3g}"
            )

    def gradient_features(self) -> None:
        from graphopt.optim import GraphOptimizer

        model = self.model(features="gradients", refresh_every=2)
        [method] = methods_of(model)
        [obj] = method.transforms(model)
        optimizer = GraphOptimizer.for_model(model, lr=1e-2)
        optimizer.zero_grad()
        model(self.batch(0)).pow(2).mean().backward()
        raw = {p: p.grad.detach().clone() for p in obj.params}
        optimizer.step()
        states = optimizer.transform_state(obj)
        before = {}
        for param, state in states.items():
            for key in ("gradient_sum", "vectors", "values"):
                assert key in state, f"state has no {key!r} with accumulate_gradients=True"
            total = state["gradient_sum"]
            expected = raw[param].to(total.dtype)
            gap = float((total - expected).abs().max())
            assert gap <= 1e-6 * float(expected.abs().max()), (
                f"gradient_sum differs from the raw gradient by {gap:.3g} after one step"
            )
            before[param] = state["vectors"].clone()
        self.train(model, optimizer, range(1, 2))  # the second step refreshes the bases
        for param, state in optimizer.transform_state(obj).items():
            assert float(state["gradient_sum"].abs().max()) == 0, "gradient_sum not reset"
            assert not torch.equal(state["vectors"], before[param]), (
                "refresh left vectors unchanged"
            )


# -- penalty -------------------------------------------------------------------------------------


def _sparse_covariance(p: int, samples: int, seed: int) -> np.ndarray:
    """A sample covariance of ``samples`` draws from N(0, Omega^-1), Omega a chain
    precision (tridiagonal, 1 on the diagonal, 0.4 beside it): a sparse GGM problem."""
    omega = np.eye(p) + 0.4 * (np.eye(p, k=1) + np.eye(p, k=-1))
    rng = np.random.default_rng(seed)
    x = rng.multivariate_normal(np.zeros(p), np.linalg.inv(omega), size=samples)
    return np.cov(x, rowvar=False, bias=True)


def check_penalty(
    penalty: str | type,
    *,
    options: dict[str, Any] | None = None,
    lam: float = 0.2,
    seed: int = 0,
) -> CheckReport:
    """Check a GGM penalty (kind ``penalty``) against docs/plugins/penalty.md.

    The registered object is a ``graphopt.solvers.ggm.penalties.Penalty`` subclass;
    ``options`` are its constructor's keyword arguments (what ``penalty_options``
    passes). Checked: phi is finite, >= 0 and non-decreasing with phi(0) = 0; the
    ``convex`` flag agrees with phi's second differences on a grid (a wrong flag is
    either wrong screening or lost speed); ``prox(t, w)`` is a global minimiser of
    0.5 (x - t)^2 + w phi(x) over x >= 0 -- its value is at most a brute-force
    minimum (a fine grid refined by scipy's bounded scalar minimiser) -- for scalar
    and per-group tensor weights, keeping shape, dtype and device; ``derivative``
    (when defined) matches finite differences of phi; and ``graphopt.ggm.solve``
    through the penalty gives a finite, positive definite precision matrix that is
    stationary: with G = S - Omega^-1, G_ij + lam phi'(|Omega_ij|) sign(Omega_ij) = 0
    where Omega_ij != 0 and |G_ij| <= lam phi'(0+) where it is 0 (relative 1e-5).
    """
    from graphopt.solvers.ggm.penalties import Penalty

    factory, label = _resolve("penalty", penalty)
    options = dict(options or {})
    checker = _Checker(label)
    built: dict[str, Any] = {}

    def build() -> None:
        obj = factory(**options)
        assert isinstance(obj, Penalty), (
            f"{type(obj).__name__} is not a graphopt.solvers.ggm.penalties.Penalty"
        )
        assert isinstance(obj.convex, bool), f"convex must be a bool; got {obj.convex!r}"
        built["penalty"] = obj

    if not checker.run("builds from options: a Penalty with a bool convex flag", build):
        return checker.report
    obj = built["penalty"]
    grid = torch.linspace(0.0, 6.0, 3001, dtype=torch.float64)

    def phi_shape() -> None:
        values = obj.phi(grid)
        assert values.shape == grid.shape and values.dtype == grid.dtype, "phi changed shape/dtype"
        assert bool(torch.isfinite(values).all()), "phi is not finite on [0, 6]"
        assert float(values[0]) == 0, f"phi(0) = {float(values[0])!r}, must be 0"
        assert float(values.min()) >= 0, "phi is negative somewhere"
        assert bool((values.diff() >= -1e-12).all()), "phi decreases somewhere on [0, 6]"

    checker.run("phi(0) = 0, finite, >= 0, non-decreasing", phi_shape)

    def convexity_flag() -> str:
        values = obj.phi(grid)
        second = values[2:] - 2 * values[1:-1] + values[:-2]
        scale = float(values.abs().max()) or 1.0
        convex = bool((second >= -1e-9 * scale).all())
        if obj.convex and not convex:
            t = float(grid[1 + int(second.argmin())])
            raise AssertionError(f"declares convex = True but phi is concave near t = {t:.3g}")
        if convex and not obj.convex:
            raise AssertionError(
                "declares convex = False but phi is convex on [0, 6]: it loses screening, "
                "acceleration and the duality gap for nothing"
            )
        return f"convex = {obj.convex}"

    checker.run("convex flag agrees with phi", convexity_flag)

    def prox_global() -> None:
        from scipy.optimize import minimize_scalar

        t = torch.linspace(0.0, 5.0, 41, dtype=torch.float64)
        candidates = torch.linspace(0.0, 11.0, 22001, dtype=torch.float64)
        phi_candidates = obj.phi(candidates)
        for w in (0.05, 0.3, 1.0, 3.0, 8.0):
            for weight in (w, torch.full_like(t, w)):
                x = obj.prox(t, weight)
                assert x.shape == t.shape and x.dtype == t.dtype, "prox changed shape/dtype"
                assert bool(torch.isfinite(x).all()) and float(x.min()) >= 0, (
                    "prox not finite, >= 0"
                )
            x = obj.prox(t, torch.full_like(t, w))
            at_prox = 0.5 * (x - t) ** 2 + w * obj.phi(x)
            grid = 0.5 * (candidates[None, :] - t[:, None]) ** 2 + w * phi_candidates[None, :]
            best = grid.argmin(dim=1)
            for i, ti in enumerate(t.tolist()):

                def f(v: float, ti: float = ti, w: float = w) -> float:
                    point = torch.tensor([v], dtype=torch.float64)
                    return 0.5 * (v - ti) ** 2 + w * float(obj.phi(point)[0])

                j = int(best[i])
                bounds = (float(candidates[max(j - 1, 0)]), float(candidates[min(j + 1, 22000)]))
                refined = minimize_scalar(
                    f, bounds=bounds, method="bounded", options={"xatol": 1e-12}
                )
                brute = min(float(grid[i, j]), float(refined.fun))
                value = float(at_prox[i])
                assert value <= brute + 1e-9 * max(1.0, abs(brute)), (
                    f"prox({ti:.3g}, w={w}) = {float(x[i]):.6g} has objective {value:.10g}; "
                    f"x = {float(refined.x):.6g} gives {brute:.10g}"
                )

    checker.run("prox(t, w) minimises 0.5 (x - t)^2 + w phi(x) (brute force)", prox_global)
    if not _has_derivative(obj):
        checker.skip("derivative matches phi", "no derivative defined: no stationarity residual")
        derivative = None
    else:

        def derivative_check() -> None:
            h = 1e-6
            t = torch.linspace(0.01, 5.0, 200, dtype=torch.float64)
            numeric = (obj.phi(t + h) - obj.phi(t - h)) / (2 * h)
            gap = (obj.derivative(t) - numeric).abs()
            kinks = (obj.phi(t + 2 * h) - 2 * obj.phi(t) + obj.phi(t - 2 * h)).abs() > 1e-6
            worst = float(gap[~kinks].max()) if bool((~kinks).any()) else 0.0
            assert worst <= 1e-5, (
                f"derivative differs from (phi(t+h) - phi(t-h)) / 2h by {worst:.3g}"
            )
            zero = torch.zeros(1, dtype=torch.float64)
            right = float((obj.phi(zero + h) - obj.phi(zero)) / h)
            at_zero = float(obj.derivative(zero))
            assert math.isinf(at_zero) or abs(at_zero - right) <= 1e-4 * max(1.0, abs(right)), (
                f"derivative(0) = {at_zero:.6g}, right difference {right:.6g}"
            )

        checker.run(
            "derivative matches phi (central differences; right derivative at 0)", derivative_check
        )
        derivative = obj.derivative

    def solve_stationary() -> str:
        from graphopt.ggm import solve

        s = _sparse_covariance(8, 200, seed)
        result = solve(s, penalty=obj, lam=lam)
        omega = np.asarray(result.precision, dtype=np.float64)
        assert np.isfinite(omega).all(), "precision is not finite"
        assert np.abs(omega - omega.T).max() <= 1e-10 * np.abs(omega).max(), (
            "precision not symmetric"
        )
        np.linalg.cholesky(omega)
        g = torch.from_numpy(s - np.linalg.inv(omega))
        o = torch.from_numpy(omega)
        slope = derivative if derivative is not None else _autograd_derivative(obj)
        off = ~torch.eye(8, dtype=torch.bool)
        active = (o != 0) & off
        residual = torch.zeros_like(g)
        residual[active] = g[active] + lam * slope(o[active].abs()) * o[active].sign()
        at_zero = float(slope(torch.zeros(1, dtype=torch.float64)))
        inactive = (o == 0) & off
        residual[inactive] = (g[inactive].abs() - lam * at_zero).clamp_min(0)
        relative = float(residual.norm() / max(float(torch.from_numpy(s).norm()), 1.0))
        assert relative <= 1e-5, f"stationarity residual {relative:.3g} (relative to ||S||_F)"
        return f"relative stationarity residual {relative:.1e}, converged={result.converged}"

    checker.run(
        "graphopt.ggm.solve through it: finite, positive definite, stationary", solve_stationary
    )
    return checker.report


def _has_derivative(penalty: Any) -> bool:
    """Whether ``derivative`` is defined: the base class's raises ``TypeError`` (and so
    may a penalty without one for some options, e.g. ``l2p`` with p < 1)."""
    try:
        penalty.derivative(torch.ones(1, dtype=torch.float64))
    except TypeError:
        return False
    return True


def _autograd_derivative(penalty: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    def derivative(t: torch.Tensor) -> torch.Tensor:
        t = t.detach().clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(penalty.phi(t).sum(), t)
        return grad

    return derivative


# -- ggm_solver ----------------------------------------------------------------------------------


def check_ggm_solver(
    solver: str | Callable[..., Any],
    *,
    options: dict[str, Any] | None = None,
    groups: Sequence[str] = ("singleton", "node"),
    lam: float = 0.1,
    devices: Sequence[str] | None = None,
    seed: int = 0,
) -> CheckReport:
    """Check a GGM solver (kind ``ggm_solver``) against docs/plugins/ggm_solver.md.

    Run through ``graphopt.ggm.solve(S, lam=lam, groups=g, solver=solver)`` for each
    structure in ``groups`` ("singleton": the l1 graphical lasso, "node": the node
    group lasso) on a chain-precision sample covariance made of two independent
    blocks (so screening packs them into one block-diagonal solve): the answer
    matches cvxpy's (``graphopt.solvers.reference``; objective to 1e-6 relative,
    precision to 1e-4 of its largest entry), is symmetric positive definite with
    ``covariance`` its inverse and ``converged`` True. Also: a warm start at the
    answer stays there; ``max_iter=2`` gives ``converged=False`` with a
    ``GGMConvergenceWarning``; ``progress`` is called with the iteration and a
    dict holding "objective"; on CUDA the result stays on the device.
    ``options`` go to the solver through ``solve``.
    """
    import warnings

    from graphopt.ggm import solve
    from graphopt.solvers.ggm import GGMConvergenceWarning
    from graphopt.solvers.reference import graphical_lasso_reference, group_lasso_reference

    function, label = _resolve("ggm_solver", solver)
    options = dict(options or {})
    checker = _Checker(label)
    first, second = _sparse_covariance(6, 80, seed), _sparse_covariance(5, 80, seed + 1)
    s = np.zeros((11, 11))
    s[:6, :6], s[6:, 6:] = first, second
    answers: dict[str, np.ndarray] = {}
    for structure in groups:
        if structure not in ("singleton", "node"):
            raise ValueError(f"groups must hold 'singleton' and/or 'node'; got {structure!r}")

        def matches(structure: str = structure) -> str:
            if structure == "singleton":
                reference = graphical_lasso_reference(s, lam)
            else:
                reference = group_lasso_reference(s, lam, "node")
            result = solve(s, lam=lam, groups=structure, solver=function, **options)
            omega = np.asarray(result.precision)
            assert isinstance(result.precision, np.ndarray), "numpy S must give a numpy answer"
            assert omega.shape == s.shape and np.isfinite(omega).all(), (
                "precision not finite (p, p)"
            )
            assert np.abs(omega - omega.T).max() <= 1e-10 * np.abs(omega).max(), "not symmetric"
            np.linalg.cholesky(omega)
            inverse_gap = np.abs(np.asarray(result.covariance) @ omega - np.eye(11)).max()
            assert inverse_gap <= 1e-6, (
                f"covariance is not precision^-1 (|W Omega - I| {inverse_gap:.2g})"
            )
            relative = (result.objective - reference.objective) / abs(reference.objective)
            assert relative <= 1e-6, (
                f"objective {result.objective:.10g} above cvxpy's {reference.objective:.10g}"
            )
            gap = np.abs(omega - reference.precision).max() / np.abs(reference.precision).max()
            assert gap <= 1e-4, f"precision differs from cvxpy's by {gap:.2g} (relative)"
            assert result.converged is True, "converged is not True"
            answers[structure] = omega
            return f"objective {relative:+.1e} relative to cvxpy, {result.n_iter} iterations"

        checker.run(f"{structure} groups: matches cvxpy, positive definite, converged", matches)

    def warm_start() -> None:
        structure, omega = next(iter(answers.items()))
        result = solve(s, lam=lam, groups=structure, solver=function, omega0=omega, **options)
        gap = np.abs(np.asarray(result.precision) - omega).max() / np.abs(omega).max()
        assert result.converged and gap <= 1e-5, (
            f"moved {gap:.2g} away from the answer it started at"
        )

    if answers:
        checker.run("a warm start at the answer stays there", warm_start)
    else:
        checker.skip("a warm start at the answer stays there", "no structure was solved")

    def honest_stop() -> None:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            # one connected block: the solver itself must warn (on screened blocks the
            # core passes warn=False and warns for them)
            result = solve(first, lam=lam, groups=groups[0], solver=function, max_iter=2, **options)
        assert result.converged is False, "max_iter=2 reported converged=True"
        assert result.n_iter <= 2, f"ran {result.n_iter} iterations with max_iter=2"
        assert any(issubclass(w.category, GGMConvergenceWarning) for w in caught), (
            "no GGMConvergenceWarning for a solve stopped at max_iter"
        )

    checker.run("max_iter=2: converged False, n_iter <= 2, GGMConvergenceWarning", honest_stop)

    def progress_calls() -> None:
        calls: list[tuple[int, dict[str, float]]] = []
        solve(
            first,
            lam=lam,
            groups=groups[0],
            solver=function,
            progress=lambda i, values: calls.append((i, values)),
            **options,
        )
        assert calls, "progress was never called"
        assert all(isinstance(i, int) and "objective" in v for i, v in calls), (
            f"progress got {calls[0]!r}; expected (iteration, {{'objective': ...}})"
        )

    checker.run("progress(iteration, {'objective': ...}) is called", progress_calls)
    for device in _devices(devices):
        if device == "cpu":
            continue

        def on_device(device: str = device) -> None:
            tensor = torch.from_numpy(s).to(device)
            result = solve(tensor, lam=lam, groups=groups[0], solver=function, **options)
            assert result.precision.device == tensor.device, f"answer on {result.precision.device}"

        checker.run(f"torch input on {device}: the answer stays there", on_device)
    return checker.report
