"""A `-p` plugin for the suite's self-tests: `import jax` fails, as on a machine without jax."""

import sys

# None in sys.modules makes every later `import jax` raise ImportError, whether or not jax is installed.
sys.modules["jax"] = None  # type: ignore[assignment]
