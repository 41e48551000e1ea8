"""``mlir-rl-train`` (console script ``mlir_rl.train:main``): placeholder.

Not implemented yet: the training program is being written separately and will replace this module. Until then the
command says so and exits with status 2.
"""

from __future__ import annotations

import sys
from typing import List, Optional


def main(argv: Optional[List[str]] = None) -> int:
    print("mlir-rl-train: not implemented yet (placeholder module mlir_rl.train)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
