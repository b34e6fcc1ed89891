"""Makes the authors' L2D code (SakanaAI/L2D) importable for the fixture scripts.

`L2D_REFERENCE_SRC` names a checkout. hydra and omegaconf are imported by the reference's
modules but unused by the model code, so they are stubbed rather than installed.
"""

import importlib.machinery
import os
import sys
import types


def add_reference_to_path():
    """Puts the checkout named by L2D_REFERENCE_SRC on sys.path (exits if it is unset)."""
    src = os.environ.get("L2D_REFERENCE_SRC")
    if not src:
        sys.exit("set L2D_REFERENCE_SRC to a checkout of SakanaAI/L2D")
    hydra = types.ModuleType("hydra")
    omegaconf = types.ModuleType("omegaconf")
    omegaconf.DictConfig = dict
    for stub in (hydra, omegaconf):
        # A spec, so that importers that scan sys.modules (torch._dynamo, on an optimizer's
        # first use) accept the stubs.
        stub.__spec__ = importlib.machinery.ModuleSpec(stub.__name__, None)
        sys.modules.setdefault(stub.__name__, stub)
    sys.path.insert(0, src)
