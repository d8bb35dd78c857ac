import os
import sys
from pathlib import Path

# make `tests._require` importable as `_require` from every test module
sys.path.insert(0, str(Path(__file__).resolve().parent))

from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile(
    "probgen",
    deadline=None,
    max_examples=int(os.environ.get("PROBGEN_HYPOTHESIS_EXAMPLES", "40")),
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
settings.load_profile("probgen")
