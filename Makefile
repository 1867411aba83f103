# The two commands of the README, and the setup they share.
.PHONY: quickstart test

.venv/.installed: pyproject.toml tools/setup.sh
	bash tools/setup.sh

quickstart: .venv/.installed
	.venv/bin/python tools/quickstart.py

test: .venv/.installed
	.venv/bin/python -m pytest -q --durations=15 tests
