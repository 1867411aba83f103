"""The command-line entry points, the package's top layer: each module's `main(argv)` is an installed command
(`vlps-train`, `vlps-sweep`, ...; see pyproject.toml), and `train.py` and `tools/<name>.py` run the same."""
