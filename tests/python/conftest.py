"""Shared setup for the Python binding's tests: find the package in python/ when
it is not installed (after `python3 setup.py build_ext --inplace`)."""

import os
import sys

_PYTHON_DIR = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "python")

try:
    import hushcall  # noqa: F401  (installed, or on PYTHONPATH)
except ImportError:
    sys.path.insert(0, os.path.abspath(_PYTHON_DIR))
