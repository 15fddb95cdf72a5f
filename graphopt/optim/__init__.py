"""One torch optimizer interface for every graphopt method.

``GraphOptimizer`` wraps any ``torch.optim`` optimizer and runs gradient
transforms and regularizer gradients before its step, update transforms and
step callbacks after it.
"""

from graphopt.optim.masking import ParameterMask
from graphopt.optim.optimizer import GraphOptimizer
from graphopt.optim.protocols import GradientTransform, Regularizer, StepCallback, UpdateTransform

__all__ = [
    "GradientTransform",
    "GraphOptimizer",
    "ParameterMask",
    "Regularizer",
    "StepCallback",
    "UpdateTransform",
]
