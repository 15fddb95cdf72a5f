"""One torch optimizer interface for every graphopt method.

``GraphOptimizer`` wraps any ``torch.optim`` optimizer and runs gradient
transforms, regularizer gradients and step callbacks around its step.
"""

from graphopt.optim.optimizer import GraphOptimizer
from graphopt.optim.protocols import GradientTransform, Regularizer, StepCallback

__all__ = ["GradientTransform", "GraphOptimizer", "Regularizer", "StepCallback"]
