"""graphopt's own fine-tuning methods and graph constructions, importable as
``graphopt.plugins``. Each module is a plugin registered through the same
``graphopt_register`` hook a third-party plugin implements.
"""
