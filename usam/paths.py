"""The one folder U-SAM keeps downloads and derived files in: $USAM_CACHE, else ~/.cache/usam.

  <root>/models/<id>                  pip-package weights converted into transformers folders (usam.hub)
  <root>/everyday_pool-<hash>.txt.gz  the everyday-English sentence pool (usam.synth.text)
  <root>/real/pocketsphinx-<version>  real speech recordings (usam.prepare.pocketsphinx_test)
"""
from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    env = os.environ.get("USAM_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "usam"
