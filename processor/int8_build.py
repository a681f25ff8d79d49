"""``python -m processor.int8_build PACK HEIGHT WIDTH FOLDER``: build the person detector's int8 variant for
one input size into ``FOLDER``, at the lowest CPU priority: the process a running processor starts instead
of building it in the cameras' way (:class:`processor.quantize.BackgroundBuilds`)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from processor.stages.persons import PersonDetector


def main(argv: list[str]) -> int:
    os.nice(19)
    pack, height, width, folder = argv
    PersonDetector(pack, precision="int8").int8_model((int(height), int(width)), Path(folder))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
