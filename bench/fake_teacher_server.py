"""Fake OpenAI-compatible teacher on loopback (for bench/gateway.py).

    python bench/fake_teacher_server.py --port 0      # prints "READY http://127.0.0.1:PORT/v1"
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from protege.testing.fake_teacher_server import main  # noqa: E402

if __name__ == "__main__":
    main()
