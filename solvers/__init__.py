"""Numerical solvers, importable as ``graphopt.solvers``.

They know nothing of models or training: numpy or torch arrays in, results out.
"""
