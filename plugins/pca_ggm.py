"""pca_ggm: principal-component allocation with the l2,g-GGM (Zheng & Cao, arXiv 2412.08592).

METHODS.md section 4, reference code ``Graph_based_peft``:

1. each target ``W = U S V^T`` keeps r = 10 components as trainable factors
   ``A = U_r`` (d_out x r), ``B = S_r V_r^T`` (r x d_in); the residual
   ``W_res = W - A B`` replaces the frozen base weight (PiSSA-like):
   ``y = W_res x + A (B x) + b``. Node i = the pair (A[:, i], B[i, :]); the
   layer's bias vector is a node too (``train_bias``);
2. during ``warmup_steps`` optimizer steps a step callback collects the
   sensitivity ``I = |p * grad p|``, its EMA Ibar (beta1) and the EMA Ubar of
   ``|I - Ibar|`` (beta2); node score = mean of Ibar * Ubar over the node's A
   part and B part, averaged;
3. then ``plugins/pca_ggm_allocation.py`` picks the nodes (important set, GGM,
   top-K or budget), and the rest are frozen: their factors are folded into
   ``W_res`` and the trainable factors **shrink** to the kept columns/rows
   (same ``nn.Parameter`` objects; the optimizer's state is sliced, so frozen
   nodes have neither gradient nor optimizer state), which makes a training
   step after selection cheaper than LoRA's;
4. merge: ``W_res + A B`` (exact); ``export_delta`` writes the change to the
   base model as a dense delta or in PEFT's LoRA format (rank 2r).

Trainable parameters: before selection ``sum r (d_in + d_out) + d_out`` (bias
nodes), after it ``sum over kept component nodes (d_in + d_out) + sum over kept
bias nodes d_out``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from graphopt.adapters import freeze_untrained
from graphopt.io import atomic_write, atomic_write_json
from graphopt.layers import AdaptedLinear, WrappingMethod
from graphopt.methods import MethodConfig, check_state_matches, methods_of
from graphopt.peft_export import LoraFactors, write_peft_lora
from graphopt.plugins.pca_ggm_allocation import allocate, plot_allocation

BIAS = "bias"
"""Slot name of a layer's bias node."""


@dataclass
class PcaGgmConfig(MethodConfig):
    """pca_ggm settings (reference values as defaults; see docs/methods/pca_ggm.md).

    Attributes:
        r: principal components per target matrix (the SVD nodes).
        train_bias: whether each target's bias vector is a node too.
        warmup_steps: optimizer steps of score collection before the allocation.
        beta1, beta2: EMA factors of the sensitivity and of its uncertainty.
        n_important: size of the important set I (top mean log-score).
        top_k: nodes kept in all (I included), when ``budget`` is None.
        budget: trainable-parameter budget; when set, nodes are kept greedily by
            group norm while they fit (``top_k`` is then ignored).
        solver: GGM solver, ``"bcd"`` (the paper's, reference defaults) or ``"admm"``.
        penalty: group penalty, ``"l2p"`` (phi(t) = t^0.9, the paper's) or ``"l1"``.
        lam: penalty weight (None: the solver's default, tau = 20 for bcd).
        solver_options: further keyword arguments of ``graphopt.solvers.ggm.solve``.
        ridge: relative diagonal loading of the score covariance (design choice).
    """

    r: int = 10
    train_bias: bool = True
    warmup_steps: int = 100
    beta1: float = 0.85
    beta2: float = 0.85
    n_important: int = 30
    top_k: int = 60
    budget: int | None = None
    solver: str = "bcd"
    penalty: str = "l2p"
    lam: float | None = None
    solver_options: dict[str, Any] = field(default_factory=dict)
    ridge: float = 1e-3

    def __post_init__(self) -> None:
        from graphopt.solvers.ggm import PENALTIES, SOLVERS

        for name in ("r", "warmup_steps", "n_important", "top_k"):
            value = getattr(self, name)
            low = 2 if name == "warmup_steps" else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}; got {value!r}")
        if self.budget is not None and (
            isinstance(self.budget, bool) or not isinstance(self.budget, int) or self.budget < 1
        ):
            raise ValueError(f"budget must be None or a positive integer; got {self.budget!r}")
        if self.budget is None and self.top_k < self.n_important:
            raise ValueError(
                f"top_k ({self.top_k}) must be >= n_important ({self.n_important}): "
                "the important set is always kept"
            )
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1); got {getattr(self, name)!r}")
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {sorted(SOLVERS)}; got {self.solver!r}")
        if self.penalty not in PENALTIES:
            raise ValueError(f"penalty must be one of {sorted(PENALTIES)}; got {self.penalty!r}")
        if not self.ridge >= 0:
            raise ValueError(f"ridge must be >= 0; got {self.ridge!r}")


class PcaGgmLinear(AdaptedLinear):
    """``W_res x + A (B x) + b`` with ``W_res`` in ``base_layer.weight``.

    Buffers (not in the model's ``state_dict``; the adapter saves them): ``A0``,
    ``B0`` the initial factors (``W = W_res + A0 B0`` at apply), ``A_frozen``,
    ``B_frozen`` the frozen nodes' final factors (folded into ``W_res``),
    ``bias0`` the original bias. ``components`` = the original component index
    of each column of ``A``.
    """

    def __init__(self, base_layer: nn.Linear, r: int, dtype: torch.dtype) -> None:
        super().__init__(base_layer)
        weight = base_layer.weight
        with torch.no_grad():
            u, s, vh = torch.linalg.svd(weight.detach().float(), full_matrices=False)
            a0, b0 = u[:, :r].contiguous(), (s[:r, None] * vh[:r]).contiguous()
            weight.copy_((weight.float() - a0 @ b0).to(weight.dtype))
        a0, b0 = a0.to(dtype), b0.to(dtype)
        self.A = nn.Parameter(a0.clone())
        self.B = nn.Parameter(b0.clone())
        self.register_buffer("A0", a0, persistent=False)
        self.register_buffer("B0", b0, persistent=False)
        self.register_buffer("A_frozen", a0[:, :0].clone(), persistent=False)
        self.register_buffer("B_frozen", b0[:0].clone(), persistent=False)
        bias = base_layer.bias
        self.register_buffer(
            "bias0", None if bias is None else bias.detach().clone(), persistent=False
        )
        self.components: list[int] = list(range(r))
        self.bias_trainable = bias is not None

    @property
    def rank(self) -> int:
        """Trainable components left."""
        return len(self.components)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base_layer(x)
        if self.merged or not self.components:
            return out
        return out + self.delta(x).to(out.dtype)

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(F.linear(x.to(self.A.dtype), self.B), self.A)

    def delta_weight(self) -> tuple[torch.Tensor, None]:
        return self.A @ self.B, None

    @torch.no_grad()
    def freeze_components(self, kept: list[int]) -> tuple[list[int], list[int]]:
        """Keep the original components ``kept`` trainable; fold the others into
        ``W_res`` (in order) and replace ``A``, ``B`` by new parameters holding the
        kept ones. Returns the column positions (kept, frozen) in the old ``A``."""
        keep = [i for i, c in enumerate(self.components) if c in set(kept)]
        drop = [i for i, c in enumerate(self.components) if c not in set(kept)]
        if drop:
            # contiguous copies: the same matmul as load_adapter_state_dict's, bit for bit
            a_f, b_f = self.A[:, drop].contiguous(), self.B[drop].contiguous()
            self.A_frozen = torch.cat([self.A_frozen, a_f], dim=1)
            self.B_frozen = torch.cat([self.B_frozen, b_f], dim=0)
            weight = self.base_layer.weight
            weight += (a_f @ b_f).to(weight.dtype)
        # new leaves: reshaping a Parameter in place would confuse autograd's cached
        # gradient accumulator while the last step's graph is still alive
        self.A = nn.Parameter(self.A.detach()[:, keep].contiguous())
        self.B = nn.Parameter(self.B.detach()[keep].contiguous())
        self.components = [self.components[i] for i in keep]
        return keep, drop

    def original_delta(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(dW, db): merged weights minus the original base layer's, in float32."""
        up = torch.cat([self.A, self.A_frozen, -self.A0], dim=1).float()
        down = torch.cat([self.B, self.B_frozen, self.B0], dim=0).float()
        bias = self.base_layer.bias
        delta_b = None if bias is None else (bias - self.bias0).float()
        return up @ down, delta_b


class PcaGgm(WrappingMethod):
    """Principal-component nodes, scored during a warm-up, allocated with the l2,g-GGM."""

    name = "pca_ggm"
    config_class = PcaGgmConfig
    reparameterizes_base = True
    config: PcaGgmConfig

    def __init__(self, config: PcaGgmConfig) -> None:
        super().__init__(config)
        self.step = 0
        self.allocation: dict[str, Any] | None = None
        self.timing: dict[str, float] = {}
        self.samples: torch.Tensor | None = None
        self.ema: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.pending: dict[str, Any] | None = None

    # -- applying --------------------------------------------------------------------

    def validate(self, targets: dict[str, nn.Module]) -> None:
        super().validate(targets)  # r <= min(d_in, d_out)
        nodes = sum(
            self.config.r + int(self.config.train_bias and layer.bias is not None)
            for layer in targets.values()
            if isinstance(layer, nn.Linear)
        )
        if nodes <= self.config.n_important:
            raise ValueError(
                f"n_important = {self.config.n_important} must be below the number of nodes "
                f"({nodes}) of the targets"
            )
        if self.config.budget is None and self.config.top_k > nodes:
            raise ValueError(
                f"top_k = {self.config.top_k} exceeds the {nodes} nodes of the targets"
            )

    def wrap(self, layer: nn.Linear) -> PcaGgmLinear:
        wrapped = PcaGgmLinear(layer, self.config.r, self.config.torch_dtype(layer.weight))
        wrapped.bias_trainable = self.config.train_bias and layer.bias is not None
        return wrapped

    def apply(self, model: nn.Module, targets: dict[str, nn.Module]) -> None:
        start = time.perf_counter()
        super().apply(model, targets)
        self.timing["svd_s"] = time.perf_counter() - start

    def layers(self, model: nn.Module) -> dict[str, PcaGgmLinear]:  # type: ignore[override]
        """The adapted layers, by module name."""
        return super().layers(model)  # type: ignore[return-value]

    @property
    def selected(self) -> bool:
        """Whether the allocation has run (the factors are shrunk)."""
        return self.allocation is not None

    def nodes(self, model: nn.Module) -> list[tuple[str, int | str]]:
        """Every node (module name, component index or ``"bias"``), in score order."""
        nodes: list[tuple[str, int | str]] = []
        for name, layer in self.layers(model).items():
            nodes += [(name, c) for c in range(self.config.r)]
            if self.config.train_bias and layer.base_layer.bias is not None:
                nodes.append((name, BIAS))
        return nodes

    # -- training --------------------------------------------------------------------

    def adapter_parameters(self, model: nn.Module) -> dict[str, nn.Parameter]:
        params: dict[str, nn.Parameter] = {}
        for name, layer in self.layers(model).items():
            if layer.rank:
                params[f"{name}.A"] = layer.A
                params[f"{name}.B"] = layer.B
            if layer.bias_trainable:
                assert layer.base_layer.bias is not None
                params[f"{name}.base_layer.bias"] = layer.base_layer.bias
        return params

    def num_trainable_parameters(self, model: nn.Module) -> int:
        """``sum over layers of k (d_in + d_out) + [bias node trained] d_out``, with k = r
        before the allocation and the kept components after it."""
        return sum(
            layer.rank * (layer.in_features + layer.out_features)
            + (layer.out_features if layer.bias_trainable else 0)
            for layer in self.layers(model).values()
        )

    def callbacks(self, model: nn.Module) -> list[Any]:
        return [SensitivityCallback(self, model)]

    @torch.no_grad()
    def observe(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Record one sample of node scores (after an optimizer step, gradients still
        set); at ``warmup_steps`` samples, run the allocation. No host sync until then."""
        if self.selected:
            return
        beta1, beta2 = self.config.beta1, self.config.beta2
        scores = []
        for name, layer in self.layers(model).items():
            parts = {"A": layer.A, "B": layer.B}
            bias = layer.base_layer.bias
            if self.config.train_bias and bias is not None:
                parts[BIAS] = bias
            node = {}
            for part, param in parts.items():
                key = f"{name}.{part}"
                grad = param.grad if param.grad is not None else torch.zeros_like(param)
                sensitivity = (param * grad).abs()
                if key not in self.ema:
                    self.ema[key] = (torch.zeros_like(param), torch.zeros_like(param))
                ibar, ubar = self.ema[key]
                ibar.mul_(beta1).add_(sensitivity, alpha=1 - beta1)
                ubar.mul_(beta2).add_((sensitivity - ibar).abs(), alpha=1 - beta2)
                node[part] = ibar * ubar
            scores.append(0.5 * (node["A"].mean(dim=0) + node["B"].mean(dim=1)))
            if BIAS in node:
                scores.append(node[BIAS].mean().reshape(1))
        sample = torch.cat(scores).float()
        if self.samples is None:
            self.samples = sample.new_zeros(self.config.warmup_steps, sample.numel())
        self.samples[self.step] = sample
        self.step += 1
        if self.step >= self.config.warmup_steps:
            self.select(model, optimizer)

    def select(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Allocate from the collected samples and freeze every node not kept; the
        ``optimizer``'s param groups and state are updated to the shrunk factors."""
        if self.selected:
            return
        if self.samples is None or self.step < 2:
            raise ValueError(f"pca_ggm needs >= 2 score samples to allocate; has {self.step}")
        start = time.perf_counter()
        nodes = self.nodes(model)
        layers = self.layers(model)
        costs = [
            layers[module].out_features + (0 if slot == BIAS else layers[module].in_features)
            for module, slot in nodes
        ]
        config = self.config
        allocation = allocate(
            self.samples[: self.step],
            costs,
            n_important=config.n_important,
            top_k=config.top_k,
            budget=config.budget,
            solver=config.solver,
            penalty=config.penalty,
            lam=config.lam,
            ridge=config.ridge,
            solver_options=config.solver_options,
        )
        kept_nodes = [nodes[j] for j in allocation.kept]
        self._freeze_unkept(model, kept_nodes, optimizer)
        self.allocation = {
            **allocation.to_json(),
            "nodes": [list(n) for n in nodes],
            "kept_nodes": [list(n) for n in kept_nodes],
        }
        self.samples, self.ema = None, {}
        self.timing["allocation_s"] = time.perf_counter() - start

    def _freeze_unkept(
        self,
        model: nn.Module,
        kept_nodes: list[tuple[str, int | str]],
        optimizer: torch.optim.Optimizer | None,
    ) -> None:
        kept: dict[str, set[int | str]] = {}
        for module, slot in kept_nodes:
            kept.setdefault(module, set()).add(slot)
        removed: list[nn.Parameter] = []
        swapped: dict[int, tuple[nn.Parameter, nn.Parameter, list[int], int]] = {}
        for name, layer in self.layers(model).items():
            chosen = kept.get(name, set())
            old_a, old_b = layer.A, layer.B
            keep, _ = layer.freeze_components([c for c in chosen if c != BIAS])
            if layer.rank:
                swapped[id(old_a)] = (old_a, layer.A, keep, 1)
                swapped[id(old_b)] = (old_b, layer.B, keep, 0)
            else:
                removed += [old_a, old_b]
            if layer.bias_trainable and BIAS not in chosen:
                layer.bias_trainable = False
                assert layer.base_layer.bias is not None
                layer.base_layer.bias.grad = None
                removed.append(layer.base_layer.bias)
        if optimizer is not None:
            _update_optimizer(optimizer, swapped, removed)
        freeze_untrained(model)

    # -- saving ----------------------------------------------------------------------

    def _state_names(self, name: str, layer: PcaGgmLinear) -> dict[str, torch.Tensor]:
        state = {
            f"{name}.A": layer.A.detach(),
            f"{name}.B": layer.B.detach(),
            f"{name}.A0": layer.A0,
            f"{name}.B0": layer.B0,
            f"{name}.A_frozen": layer.A_frozen,
            f"{name}.B_frozen": layer.B_frozen,
        }
        if layer.base_layer.bias is not None:
            state[f"{name}.bias"] = layer.base_layer.bias.detach()
            state[f"{name}.bias0"] = layer.bias0
        return state

    def adapter_state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        state: dict[str, torch.Tensor] = {}
        for name, layer in self.layers(model).items():
            state.update(self._state_names(name, layer))
        return state

    def extra_state(self) -> dict[str, Any]:
        """The allocation (nodes, kept nodes, scores, the GGM solve's report), the
        step count and timings; plot it with ``plot_allocation(extra["allocation"], path)``."""
        return {"step": self.step, "allocation": self.allocation, "timing": dict(self.timing)}

    def load_extra_state(self, model: nn.Module, extra: dict[str, Any]) -> None:
        self.pending = extra

    def _expected_shapes(self, model: nn.Module) -> dict[str, torch.Tensor]:
        kept = self._pending_kept()
        expected: dict[str, torch.Tensor] = {}
        r = self.config.r
        for name, layer in self.layers(model).items():
            k = layer.rank if kept is None else len([c for c in kept.get(name, ()) if c != BIAS])
            d_out, d_in = layer.out_features, layer.in_features
            shapes = {
                "A": (d_out, k),
                "B": (k, d_in),
                "A0": (d_out, r),
                "B0": (r, d_in),
                "A_frozen": (d_out, r - k),
                "B_frozen": (r - k, d_in),
            }
            if layer.base_layer.bias is not None:
                shapes.update(bias=(d_out,), bias0=(d_out,))
            for part, shape in shapes.items():
                expected[f"{name}.{part}"] = torch.empty(shape, device="meta")
        return expected

    def _pending_kept(self) -> dict[str, set[int | str]] | None:
        if not self.pending or not self.pending.get("allocation"):
            return None
        kept: dict[str, set[int | str]] = {}
        for module, slot in self.pending["allocation"]["kept_nodes"]:
            kept.setdefault(module, set()).add(slot)
        return kept

    def check_adapter_state(self, model: nn.Module, state: dict[str, torch.Tensor]) -> None:
        if self.selected and self._pending_kept() is None:
            raise ValueError(
                "cannot load a pca_ggm adapter saved before its allocation onto a model "
                "whose allocation has run"
            )
        check_state_matches(self.name, self._expected_shapes(model), state)

    @torch.no_grad()
    def load_adapter_state_dict(self, model: nn.Module, state: dict[str, torch.Tensor]) -> None:
        """Restore factors, frozen nodes and ``W_res``. On the device that saved it the
        result is bitwise identical (same SVD, same fold); elsewhere ``W_res`` is
        corrected by ``A0' B0' - A0 B0`` (exact up to rounding)."""
        self.check_adapter_state(model, state)
        kept = self._pending_kept()
        for name, layer in self.layers(model).items():
            weight = layer.base_layer.weight

            def get(part: str, like: torch.Tensor, name: str = name) -> torch.Tensor:
                return state[f"{name}.{part}"].to(device=like.device, dtype=like.dtype)

            a0, b0 = get("A0", layer.A0), get("B0", layer.B0)
            if not (torch.equal(a0, layer.A0) and torch.equal(b0, layer.B0)):
                weight += (layer.A0 @ layer.B0 - a0 @ b0).to(weight.dtype)
                layer.A0, layer.B0 = a0, b0
            if layer.A_frozen.shape[1]:
                weight -= (layer.A_frozen @ layer.B_frozen).to(weight.dtype)
            a_f, b_f = get("A_frozen", layer.A_frozen), get("B_frozen", layer.B_frozen)
            if a_f.shape[1]:
                weight += (a_f @ b_f).to(weight.dtype)
            layer.A_frozen, layer.B_frozen = a_f, b_f
            for part in ("A", "B"):  # same shape: keep the Parameter (an optimizer may hold it)
                param, value = getattr(layer, part), get(part, getattr(layer, part))
                if param.shape == value.shape:
                    param.copy_(value)
                else:
                    setattr(layer, part, nn.Parameter(value.clone()))
            if kept is not None:
                chosen = kept.get(name, set())
                layer.components = sorted(c for c in chosen if c != BIAS)  # type: ignore[type-var]
                layer.bias_trainable = layer.bias_trainable and BIAS in chosen
            if layer.base_layer.bias is not None:
                layer.base_layer.bias.copy_(get("bias", layer.base_layer.bias))
                layer.bias0 = get("bias0", layer.base_layer.bias)
        if self.pending:
            self.step = int(self.pending.get("step", self.step))
            if self.pending.get("allocation"):
                self.allocation = self.pending["allocation"]
                self.samples, self.ema = None, {}
        self.pending = None
        freeze_untrained(model)

    # -- export ----------------------------------------------------------------------

    def plot(self, model: nn.Module, folder: Path) -> list[Path]:
        """``pca_ggm_allocation.png`` (see ``plot_allocation``), once the warm-up is over."""
        if self.allocation is None:
            return []
        return [plot_allocation(self.allocation, Path(folder) / "pca_ggm_allocation.png")]


def _update_optimizer(
    optimizer: torch.optim.Optimizer,
    swapped: dict[int, tuple[nn.Parameter, nn.Parameter, list[int], int]],
    removed: list[nn.Parameter],
) -> None:
    """Point the optimizer at the shrunk factors, with their per-parameter tensors
    (e.g. Adam's moments) cut to the kept nodes, and drop the frozen parameters."""
    gone = {id(p) for p in removed}
    for group in optimizer.param_groups:
        params = []
        for param in group["params"]:
            if id(param) in gone:
                optimizer.state.pop(param, None)
            elif id(param) in swapped:
                old, new, keep, dim = swapped[id(param)]
                state = optimizer.state.pop(old, None)
                if state:
                    index = torch.tensor(keep, dtype=torch.long, device=old.device)
                    optimizer.state[new] = {
                        key: value.index_select(dim, index).contiguous()
                        if isinstance(value, torch.Tensor) and value.shape == old.shape
                        else value
                        for key, value in state.items()
                    }
                params.append(new)
            else:
                params.append(param)
        group["params"] = params


class SensitivityCallback:
    """``StepCallback`` of pca_ggm: scores after every step until the allocation."""

    def __init__(self, method: PcaGgm, model: nn.Module) -> None:
        self.method = method
        self.model = model

    def after_step(self, optimizer: torch.optim.Optimizer) -> None:
        self.method.observe(self.model, optimizer)

    def state_dict(self) -> dict[str, Any]:
        """Step count, score samples and EMA tensors (tensors and ints only)."""
        method = self.method
        state: dict[str, Any] = {"step": method.step}
        if method.samples is not None:
            state["samples"] = method.samples
            state["ema"] = {k: list(v) for k, v in method.ema.items()}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        method = self.method
        if method.selected:
            return
        method.step = int(state["step"])
        if "samples" in state:
            method.samples = state["samples"]
            method.ema = {k: (v[0], v[1]) for k, v in state["ema"].items()}


def _find(model: nn.Module) -> PcaGgm:
    found = [m for m in methods_of(model) if isinstance(m, PcaGgm)]
    if len(found) != 1:
        raise ValueError(f"model must have exactly one pca_ggm method; it has {len(found)}")
    return found[0]


def export_delta(model: nn.Module, directory: str | Path, form: str = "dense") -> Path:
    """Write what pca_ggm changed in the base model.

    ``form="dense"``: ``delta_model.safetensors`` with ``<module>.weight`` = dW and
    ``<module>.bias`` = db (merged minus original) + ``delta_config.json``.
    ``form="lowrank"``: a PEFT LoRA adapter of rank 2r (``lora_B = [A, A_frozen,
    -A0]``, ``lora_A = [B; B_frozen; B0]``, scaling 1, trained biases via
    ``bias="lora_only"``) that ``peft.PeftModel.from_pretrained`` loads on the
    original base model.
    """
    from safetensors.torch import save_file

    if form not in ("dense", "lowrank"):
        raise ValueError(f"form must be 'dense' or 'lowrank'; got {form!r}")
    method = _find(model)
    if method.merged:
        raise ValueError("the pca_ggm adapter is merged; unmerge it before export_delta")
    directory = Path(directory)
    layers = method.layers(model)
    with torch.no_grad():
        if form == "lowrank":
            factors = {
                name: LoraFactors(
                    torch.cat([layer.B, layer.B_frozen, layer.B0], dim=0),
                    torch.cat([layer.A, layer.A_frozen, -layer.A0], dim=1),
                    None if layer.base_layer.bias is None else layer.base_layer.bias,
                )
                for name, layer in layers.items()
            }
            rank = 2 * method.config.r
            return write_peft_lora(directory, factors, r=rank, alpha=float(rank))
        tensors: dict[str, torch.Tensor] = {}
        for name, layer in layers.items():
            delta_w, delta_b = layer.original_delta()
            tensors[f"{name}.weight"] = delta_w.cpu().contiguous()
            if delta_b is not None:
                tensors[f"{name}.bias"] = delta_b.cpu().contiguous()
    atomic_write(directory / "delta_model.safetensors", lambda t: save_file(tensors, str(t)))
    atomic_write_json(
        directory / "delta_config.json",
        {"format": "graphopt-delta", "method": "pca_ggm", "modules": sorted(layers)},
    )
    return directory
