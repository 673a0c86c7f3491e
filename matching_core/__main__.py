"""``python -m matching_core``: the ``match`` and ``demo`` commands of :mod:`matching_core.cli`."""

from matching_core.cli import main

if __name__ == "__main__":
    main(prog_name="python -m matching_core")
