"""Former name of ``protege.engines`` (the student engines), kept so that
``protege.serve``, ``protege.serve.engine`` and ``protege.serve.vllm`` still
import. ``protege serve`` is the gateway command; nothing new goes here."""

from __future__ import annotations

import sys
import warnings

from protege.engines import *  # noqa: F403
from protege.engines import __all__ as __all__
from protege.engines import engine, vllm

warnings.warn("protege.serve is now protege.engines", DeprecationWarning, stacklevel=2)
sys.modules[__name__ + ".engine"] = engine
sys.modules[__name__ + ".vllm"] = vllm
