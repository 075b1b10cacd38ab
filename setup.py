"""The one C extension (pyproject.toml holds everything else): the domain index's lookups.

Optional, so an install without a compiler still works, on the slower pure-Python index.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("esafety.policy._hostindex", ["esafety/policy/_hostindex.c"], optional=True)])
