"""The mixed-precision supernet: operators, choice layers, conversion, mappings, extraction.

Start with :func:`convert_to_supernet` (any model -> supernet), :class:`Supernet` (modes,
sub-networks, alphas), :func:`extract` (sub-network -> standalone model) and
:mod:`mps.supernet.mapping` (the mapping file contract).
"""

from mps.supernet.choice import ChoiceLayer
from mps.supernet.convert import Supernet, convert_to_supernet, realize, trace_layers
from mps.supernet.extract import extract, load_deployed, load_supernet, save_deployed, save_supernet
from mps.supernet.mapping import MappingError, MappingFile, check_layers, load_mapping
from mps.supernet.operators import OPERATORS, register_operator

__all__ = ["ChoiceLayer", "Supernet", "convert_to_supernet", "realize", "trace_layers", "extract",
           "load_deployed", "load_supernet", "save_deployed", "save_supernet", "MappingError", "MappingFile",
           "check_layers", "load_mapping", "OPERATORS", "register_operator"]
