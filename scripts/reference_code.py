"""Makes the authors' L2D code (SakanaAI/L2D) importable for the fixture scripts.

`L2D_REFERENCE_SRC` names a checkout. hydra and omegaconf are imported by the reference's
modules but unused by the model code, so they are stubbed rather than installed.
"""

import os
import sys
import types


def add_reference_to_path():
    """Puts the checkout named by L2D_REFERENCE_SRC on sys.path (exits if it is unset)."""
    src = os.environ.get("L2D_REFERENCE_SRC")
    if not src:
        sys.exit("set L2D_REFERENCE_SRC to a checkout of SakanaAI/L2D")
    sys.modules.setdefault("hydra", types.ModuleType("hydra"))
    omegaconf = types.ModuleType("omegaconf")
    omegaconf.DictConfig = dict
    sys.modules.setdefault("omegaconf", omegaconf)
    sys.path.insert(0, src)
