"""Worked examples of each plugin kind, one complete module per kind.

``graphopt new-plugin NAME --kind KIND`` copies the module of KIND into a new
distribution (with its entry point, registration and a test calling the kind's
``graphopt.testing`` check), and each guide in docs/plugins/ shows its module.
They are not registered: nothing here is a built-in.

- ``graph``: ``epsilon_ball`` (an epsilon-neighbourhood graph);
- ``eigensolver``: ``inverse_subspace`` (block inverse iteration with a sparse LU);
- ``response``: ``butterworth`` (a Butterworth low-pass response);
- ``transform``: ``norm_preserving`` (a spectral filter that keeps the gradient norm);
- ``penalty``: ``mcp`` (the minimax concave penalty);
- ``ggm_solver``: ``proximal_gradient`` (G-ISTA, proximal gradient with backtracking).
"""
