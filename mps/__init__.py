"""MPS: Mixed-Precision Supernetwork mapping of DNNs onto heterogeneous analog/digital hardware.

The library is importable on its own and knows nothing of Snakemake, DVC or the CLI;
``mps.cli`` exposes one sub-command per pipeline stage (see DESIGN in the README).
"""

__version__ = "0.1.0"
