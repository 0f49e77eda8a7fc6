"""The ``corral`` command line (a placeholder until the control-plane issue lands)."""

import sys


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args in (["--version"], ["version"]):
        print("corral 0.1.0")
        return 0
    print(
        "corral: the CLI arrives with the control plane; only `corral --version` works for now",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(main())
