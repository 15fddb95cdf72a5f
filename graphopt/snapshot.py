"""``ModelSnapshot``: put a model back exactly as it was after a failed ``apply``/``load``.

``graphopt.apply`` promises that on any error the model is unchanged: the same
module tree, bitwise the same ``state_dict``, the same ``requires_grad`` flags and
the same method stack. The snapshot records the tree (each module's child,
parameter and buffer tables: references, no copies), the flags and graphopt's
model attributes; tensors are copied only for the modules passed to ``protect``
(the targets of a method that writes base tensors in place, e.g. pca_ggm), so a
LoRA apply on a large model costs no memory.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from graphopt.methods import EXTRA_ATTR, METHODS_ATTR


class ModelSnapshot:
    """The restorable state of ``model`` at construction (see the module docstring)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.modules = [
            (
                module,
                dict(module._modules),
                dict(module._parameters),
                dict(module._buffers),
                set(module._non_persistent_buffers_set),
                module.training,
            )
            for module in model.modules()
        ]
        self.flags = [(p, p.requires_grad) for p in model.parameters()]
        self.attributes = {
            name: model.__dict__[name]
            for name in (METHODS_ATTR, EXTRA_ATTR)
            if name in model.__dict__
        }
        self.tensors: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def protect(self, modules: Iterable[nn.Module]) -> None:
        """Copy the current values of these modules' parameters and buffers."""
        for module in modules:
            for tensor in [*module.parameters(), *module.buffers()]:
                if id(tensor) not in self.tensors:
                    self.tensors[id(tensor)] = (tensor, tensor.detach().clone())

    @torch.no_grad()
    def restore(self) -> None:
        """Undo everything done to the model since the snapshot."""
        for module, children, params, buffers, non_persistent, training in self.modules:
            for table, saved in (
                (module._modules, children),
                (module._parameters, params),
                (module._buffers, buffers),
            ):
                table.clear()
                table.update(saved)
            module._non_persistent_buffers_set = non_persistent
            module.training = training
        for tensor, saved in self.tensors.values():
            if tensor.shape == saved.shape and tensor.dtype == saved.dtype:
                tensor.copy_(saved)
            else:
                tensor.data = saved
        for param, flag in self.flags:
            param.requires_grad_(flag)
        for name in (METHODS_ATTR, EXTRA_ATTR):
            if name in self.attributes:
                object.__setattr__(self.model, name, self.attributes[name])
            elif name in self.model.__dict__:
                object.__delattr__(self.model, name)
