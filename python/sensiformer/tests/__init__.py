"""The validation suite shipped with sensiformer: ``sensiformer.test()``, ``sensiformer selftest``
or ``python -m pytest --pyargs sensiformer``. It runs on the base install plus pytest (PyTorch
comparisons are skipped where torch is missing). The project's full suite lives in its repository.
"""
