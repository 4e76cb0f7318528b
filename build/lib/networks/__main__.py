"""List the registered networks and their options (``model.network_kwargs``), typed, with defaults.

    python -m networks            # every network
    python -m networks unet3d     # one
"""

from __future__ import annotations

import sys

from networks import describe_options, list_networks, network_class


def main(argv: list[str] | None = None) -> int:
    names = argv if argv is not None else sys.argv[1:]
    try:
        for name in names or list_networks():
            doc = (network_class(name).__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
            options = describe_options(name).replace("\n", "\n    ")
            print(f"{name}: {' '.join(doc.split())}\n    {options or '(no options)'}\n")
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
