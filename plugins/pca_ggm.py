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
   top-K or budget), and the rest are frozen by **masks**: ``A``, ``B`` keep their
   shape and identity for the whole run (so DDP/FSDP wrappers, optimizers and
   checkpoints built before the allocation stay valid), and a
   ``ParameterMask`` gives frozen entries no gradient and no update (no weight
   decay either): they stay bitwise at their value at the allocation;
4. merge: ``W_res + A B`` (exact); ``export_delta`` writes the change to the
   base model as a dense delta, ``graphopt.export_peft`` in PEFT's LoRA format
   (rank 2r: ``lora_B = [A, -A0]``, ``lora_A = [B; B0]``, scaling 1).

Weights are handled in (out, in) form (``graphopt.linear_layers``), so GPT-2's
``Conv1D`` targets work the same way.

Trainable parameters: before selection ``sum r (d_in + d_out) + d_out`` (bias
nodes), after it ``sum over kept component nodes (d_in + d_out) + sum over kept
bias nodes d_out``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from graphopt.io import atomic_write, atomic_write_json
from graphopt.layers import AdaptedLinear, WrappingMethod
from graphopt.linear_layers import weight_matrix
from graphopt.methods import LowRankDelta, MethodConfig, methods_of
from graphopt.optim.masking import ParameterMask
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
        rank_pattern: ``{module regex: r}`` for modules with another ``r`` (PEFT's rule).
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
    rank_pattern: dict[str, int] = field(default_factory=dict)

    pattern_fields: ClassVar[dict[str, str]] = {"rank_pattern": "r"}

    def __post_init__(self) -> None:
        from graphopt.solvers.ggm import PENALTIES, SOLVERS

        super().__post_init__()

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

    ``A`` (d_out, r) and ``B`` (r, d_in) keep their shape for the whole run; the
    allocation only writes the persistent masks ``component_mask`` (r,) and
    ``bias_mask`` () -- 1 = the node trains -- and sets ``allocated``. They are
    buffers, so ``model.state_dict()``, a Trainer checkpoint or accelerate's
    ``save_state`` carries them. Non-persistent buffers (the adapter file saves
    them): ``A0``, ``B0`` the initial factors (``W = W_res + A0 B0`` at apply)
    and ``bias0`` the original bias.
    """

    output_factor = "A"

    def __init__(self, base_layer: nn.Module, r: int, dtype: torch.dtype) -> None:
        super().__init__(base_layer)
        weight = self.base_weight()
        with torch.no_grad():
            u, s, vh = torch.linalg.svd(weight.detach().float(), full_matrices=False)
            a0, b0 = u[:, :r].contiguous(), (s[:r, None] * vh[:r]).contiguous()
            weight.copy_((weight.float() - a0 @ b0).to(weight.dtype))
        a0, b0 = a0.to(dtype), b0.to(dtype)
        self.A = nn.Parameter(a0.clone())
        self.B = nn.Parameter(b0.clone())
        self.register_buffer("A0", a0, persistent=False)
        self.register_buffer("B0", b0, persistent=False)
        bias = base_layer.bias
        self.register_buffer(
            "bias0", None if bias is None else bias.detach().clone(), persistent=False
        )
        self.register_buffer("component_mask", torch.ones(r, dtype=dtype, device=a0.device))
        self.register_buffer("bias_mask", torch.ones((), dtype=dtype, device=a0.device))
        self.register_buffer("allocated", torch.zeros((), dtype=torch.bool, device=a0.device))
        self.bias_trainable = bias is not None
        """Whether the bias vector is a node (trained until the allocation freezes it)."""

    @property
    def components(self) -> list[int]:
        """The components that train (all of them before the allocation)."""
        return [int(i) for i in torch.nonzero(self.component_mask).flatten()]

    @property
    def rank(self) -> int:
        """Number of components that train."""
        return len(self.components)

    @property
    def bias_trains(self) -> bool:
        """Whether the bias vector trains (a node that was kept, or before the allocation)."""
        return self.bias_trainable and bool(self.bias_mask)

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(F.linear(x.to(self.A.dtype), self.B), self.A)

    def delta_weight(self) -> tuple[torch.Tensor, None]:
        return self.A @ self.B, None

    def low_rank_delta(self) -> LowRankDelta:
        """Merged minus original weight as rank 2r: ``[A, -A0] [B; B0]``, scaling 1
        (``alpha = 2r``); the bias node's trained value when the bias is a node."""
        rank = 2 * self.A.shape[1]
        bias = self.base_layer.bias if self.bias_trainable else None
        up, down = torch.cat([self.A, -self.A0], dim=1), torch.cat([self.B, self.B0], dim=0)
        return LowRankDelta(down, up, float(rank), bias=bias)

    def masks(self) -> dict[str, torch.Tensor]:
        """Masks broadcastable to ``A``, ``B`` (and the bias node): 0 = frozen entries."""
        masks = {"A": self.component_mask[None, :], "B": self.component_mask[:, None]}
        if self.bias_trainable:
            masks["base_layer.bias"] = self.bias_mask
        return masks

    @torch.no_grad()
    def keep(self, components: list[int], bias: bool) -> None:
        """Set the masks: the original ``components`` (and the bias node when ``bias``)
        keep training; the rest stay exactly where they are for the rest of the run."""
        self.component_mask.zero_()
        self.component_mask[components] = 1
        self.bias_mask.fill_(1.0 if bias and self.bias_trainable else 0.0)
        self.allocated.fill_(True)

    def original_delta(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(dW, db): merged weights minus the original base layer's, in float32."""
        up = torch.cat([self.A, -self.A0], dim=1).float()
        down = torch.cat([self.B, self.B0], dim=0).float()
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
        self._mask: ParameterMask | None = None

    # -- applying --------------------------------------------------------------------

    def validate(self, targets: dict[str, nn.Module]) -> None:
        super().validate(targets)  # linear layers, r <= min(d_in, d_out)
        config = self.config
        with_bias = [name for name, layer in targets.items() if layer.bias is not None]
        if config.train_bias and config.bias != "none" and with_bias:
            raise ValueError(
                f"pca_ggm makes each target's bias an allocation node (train_bias=True), which "
                f"bias={config.bias!r} would train throughout (e.g. {with_bias[0]!r}); set "
                "train_bias=False or bias='none'"
            )
        ranks = [self.config_for(name).r for name in targets]  # type: ignore[attr-defined]
        nodes = sum(ranks) + (len(with_bias) if config.train_bias else 0)
        if nodes <= self.config.n_important:
            raise ValueError(
                f"n_important = {self.config.n_important} must be below the number of nodes "
                f"({nodes}) of the targets"
            )
        if self.config.budget is None and self.config.top_k > nodes:
            raise ValueError(
                f"top_k = {self.config.top_k} exceeds the {nodes} nodes of the targets"
            )

    def wrap(self, layer: nn.Module, config: MethodConfig) -> PcaGgmLinear:
        assert isinstance(config, PcaGgmConfig)
        wrapped = PcaGgmLinear(layer, config.r, config.torch_dtype(weight_matrix(layer)))
        wrapped.bias_trainable = config.train_bias and layer.bias is not None
        return wrapped

    def apply(self, model: nn.Module, targets: dict[str, nn.Module]) -> None:
        start = time.perf_counter()
        super().apply(model, targets)
        self.timing["svd_s"] = time.perf_counter() - start

    def layers(self, model: nn.Module) -> dict[str, PcaGgmLinear]:  # type: ignore[override]
        """The adapted layers, by module name."""
        return super().layers(model)  # type: ignore[return-value]

    def selected(self, model: nn.Module) -> bool:
        """Whether the allocation has run (read from the layers' ``allocated`` buffers,
        so a model restored from any state dict knows)."""
        return all(bool(layer.allocated) for layer in self.layers(model).values())

    def nodes(self, model: nn.Module) -> list[tuple[str, int | str]]:
        """Every node (module name, component index or ``"bias"``), in score order."""
        nodes: list[tuple[str, int | str]] = []
        for name, layer in self.layers(model).items():
            nodes += [(name, c) for c in range(layer.A.shape[1])]
            if layer.bias_trainable:
                nodes.append((name, BIAS))
        return nodes

    # -- training --------------------------------------------------------------------

    def adapter_parameters(self, model: nn.Module) -> dict[str, nn.Parameter]:
        params: dict[str, nn.Parameter] = {}
        for name, layer in self.layers(model).items():
            params[f"{name}.A"] = layer.A
            params[f"{name}.B"] = layer.B
            if layer.bias_trainable:
                assert layer.base_layer.bias is not None
                params[f"{name}.base_layer.bias"] = layer.base_layer.bias
        return params

    def parameter_masks(self, model: nn.Module) -> dict[str, torch.Tensor]:
        return {
            f"{name}.{part}": mask
            for name, layer in self.layers(model).items()
            for part, mask in layer.masks().items()
        }

    def num_trainable_parameters(self, model: nn.Module) -> int:
        """``sum over layers of k (d_in + d_out) + [bias node trains] d_out``, with k = r
        before the allocation and the kept components after it."""
        return sum(
            layer.rank * (layer.in_features + layer.out_features)
            + (layer.out_features if layer.bias_trains else 0)
            for layer in self.layers(model).values()
        )

    def transforms(self, model: nn.Module) -> list[Any]:
        return [self._parameter_mask(model)]

    def update_transforms(self, model: nn.Module) -> list[Any]:
        return [self._parameter_mask(model)]

    def callbacks(self, model: nn.Module) -> list[Any]:
        return [SensitivityCallback(self, model)]

    def _parameter_mask(self, model: nn.Module) -> ParameterMask:
        """One mask object: frozen nodes get no gradient and no update (so no weight
        decay either); before the allocation every mask is 1."""
        if self._mask is None:
            # masks looked up at every step: model.to() replaces buffers, not parameters
            owners = {
                id(layer.get_parameter(part)): (layer, part)
                for layer in self.layers(model).values()
                for part in layer.masks()
            }
            self._mask = ParameterMask(
                "pca_ggm_mask",
                list(self.adapter_parameters(model).values()),
                lambda param: _mask_of(*owners[id(param)]),
            )
        return self._mask

    @torch.no_grad()
    def observe(self, model: nn.Module) -> None:
        """Record one sample of node scores (after an optimizer step, gradients still
        set); at ``warmup_steps`` samples, run the allocation. No host sync until then."""
        if self.selected(model):
            return
        beta1, beta2 = self.config.beta1, self.config.beta2
        scores = []
        for name, layer in self.layers(model).items():
            parts = {"A": layer.A, "B": layer.B}
            if layer.bias_trainable:
                assert layer.base_layer.bias is not None
                parts[BIAS] = layer.base_layer.bias
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
            self.select(model)

    def select(self, model: nn.Module) -> None:
        """Allocate from the collected samples and mask every node not kept.

        Under ``torch.distributed`` every process computes the same allocation from
        the same (all-reduced) gradients; rank 0's masks are then broadcast, so the
        processes cannot diverge even if their solvers round differently.
        """
        if self.selected(model):
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
        kept: dict[str, set[int | str]] = {}
        for module, slot in kept_nodes:
            kept.setdefault(module, set()).add(slot)
        for name, layer in layers.items():
            chosen = kept.get(name, set())
            layer.keep(sorted(c for c in chosen if c != BIAS), BIAS in chosen)  # type: ignore[type-var]
            _broadcast_from_first_rank(layer.component_mask, layer.bias_mask)
        self.allocation = {
            **allocation.to_json(),
            "nodes": [list(n) for n in nodes],
            "kept_nodes": [list(n) for n in kept_nodes],
        }
        self.samples, self.ema = None, {}
        self.timing["allocation_s"] = time.perf_counter() - start

    # -- saving ----------------------------------------------------------------------

    def adapter_state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        state: dict[str, torch.Tensor] = {}
        for name, layer in self.layers(model).items():
            parts = ["A", "B", "A0", "B0", "component_mask", "bias_mask", "allocated"]
            state.update({f"{name}.{part}": getattr(layer, part).detach() for part in parts})
            if layer.base_layer.bias is not None:
                state[f"{name}.bias"] = layer.base_layer.bias.detach()
                state[f"{name}.bias0"] = layer.bias0
        return state

    def extra_state(self) -> dict[str, Any]:
        """The allocation (nodes, kept nodes, scores, the GGM solve's report), the
        step count and timings; plot it with ``plot_allocation(extra["allocation"], path)``."""
        return {"step": self.step, "allocation": self.allocation, "timing": dict(self.timing)}

    def load_extra_state(self, model: nn.Module, extra: dict[str, Any]) -> None:
        self.pending = extra

    @torch.no_grad()
    def load_adapter_state_dict(self, model: nn.Module, state: dict[str, torch.Tensor]) -> None:
        """Restore factors, masks and ``W_res``. On the device that saved it the result
        is bitwise identical (same SVD); elsewhere ``W_res`` is corrected by
        ``A0' B0' - A0 B0`` (exact up to rounding). Every tensor keeps its identity."""
        self.check_adapter_state(model, state)
        for name, layer in self.layers(model).items():
            weight = layer.base_weight()

            def get(part: str, like: torch.Tensor, name: str = name) -> torch.Tensor:
                return state[f"{name}.{part}"].to(device=like.device, dtype=like.dtype)

            a0, b0 = get("A0", layer.A0), get("B0", layer.B0)
            if not (torch.equal(a0, layer.A0) and torch.equal(b0, layer.B0)):
                weight += (layer.A0 @ layer.B0 - a0 @ b0).to(weight.dtype)
                layer.A0.copy_(a0)
                layer.B0.copy_(b0)
            for part in ("A", "B", "component_mask", "bias_mask", "allocated"):
                getattr(layer, part).copy_(get(part, getattr(layer, part)))
            if layer.base_layer.bias is not None:
                layer.base_layer.bias.copy_(get("bias", layer.base_layer.bias))
                layer.bias0.copy_(get("bias0", layer.base_layer.bias))
        if self.pending:
            self.step = int(self.pending.get("step", self.step))
            self.allocation = self.pending.get("allocation") or self.allocation
        if self.selected(model):
            self.samples, self.ema = None, {}
        self.pending = None

    # -- export ----------------------------------------------------------------------

    def plot(self, model: nn.Module, folder: Path) -> list[Path]:
        """``pca_ggm_allocation.png`` (see ``plot_allocation``), once the warm-up is over."""
        if self.allocation is None:
            return []
        return [plot_allocation(self.allocation, Path(folder) / "pca_ggm_allocation.png")]


def _mask_of(layer: PcaGgmLinear, part: str) -> torch.Tensor:
    return layer.masks()[part]


def _broadcast_from_first_rank(*tensors: torch.Tensor) -> None:
    """Make every process hold rank 0's values (no-op outside ``torch.distributed``)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        for tensor in tensors:
            dist.broadcast(tensor, src=0)


class SensitivityCallback:
    """``StepCallback`` of pca_ggm: scores after every step until the allocation."""

    def __init__(self, method: PcaGgm, model: nn.Module) -> None:
        self.method = method
        self.model = model

    def after_step(self, optimizer: torch.optim.Optimizer) -> None:
        self.method.observe(self.model)

    def state_dict(self) -> dict[str, Any]:
        """Step count, score samples and EMA tensors, and the allocation report (tensors
        and plain values only), so a resume from the optimizer state alone (a Trainer
        checkpoint, accelerate's ``save_state``) keeps the report too."""
        method = self.method
        state: dict[str, Any] = {"step": method.step, "allocation": method.allocation}
        if method.samples is not None:
            state["samples"] = method.samples
            state["ema"] = {k: list(v) for k, v in method.ema.items()}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        method = self.method
        if method.allocation is None:
            method.allocation = state.get("allocation")
        if method.selected(self.model):
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
    ``<module>.bias`` = db (merged minus original, (out, in) form) +
    ``delta_config.json``. ``form="lowrank"``: ``graphopt.export_peft``, a PEFT LoRA
    adapter of rank 2r (``lora_B = [A, -A0]``, ``lora_A = [B; B0]``, scaling 1,
    trained biases as ``bias="lora_only"``) that ``peft.PeftModel.from_pretrained``
    loads on the original base model.
    """
    from safetensors.torch import save_file

    from graphopt.peft import export_peft

    if form not in ("dense", "lowrank"):
        raise ValueError(f"form must be 'dense' or 'lowrank'; got {form!r}")
    method = _find(model)
    if method.merged:
        raise ValueError("the pca_ggm adapter is merged; unmerge it before export_delta")
    if form == "lowrank":
        return export_peft(model, directory)
    directory = Path(directory)
    layers = method.layers(model)
    tensors: dict[str, torch.Tensor] = {}
    with torch.no_grad():
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
