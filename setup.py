"""The one compiled piece: QUIC's coordinate descent for the ``newton`` solver's CPU path.

Everything else is in pyproject.toml. ``optional=True``: without a C compiler the
package still installs, and ``newton`` uses its conjugate-gradient inner solver.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "graphopt.solvers.ggm._coordinate_descent",
            ["solvers/ggm/_coordinate_descent.c"],
            extra_compile_args=["-O3"],
            optional=True,
        )
    ]
)
