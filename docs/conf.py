"""Sphinx configuration for the probgen derivation companion (builds offline, -W clean)."""
import os
import sys

sys.path.insert(0, os.path.abspath(".."))

project = "probgen"
author = "probgen developers"
copyright = "2026, probgen developers"

extensions = [
    "myst_parser",
    "sphinx.ext.mathjax",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
]
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
master_doc = "index"
exclude_patterns = ["_build"]
html_theme = "alabaster"
napoleon_numpy_docstring = True
napoleon_google_docstring = False
autodoc_member_order = "bysource"
autodoc_typehints = "none"
math_number_all = False
math_eqref_format = "({number})"
suppress_warnings = ["myst.header"]
