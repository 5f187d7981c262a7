# The two commands a newcomer types:  `make demo`  and  `make test`.
# Both set everything up first (Debian packages, a pinned Python environment in $(VENV)); a second
# run reuses it. VENV=/elsewhere keeps the 7 GB environment out of the checkout.
VENV ?= .venv
CORES ?= all
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: setup demo test lint bench
setup:
	@scripts/setup.sh "$(VENV)"

demo: setup  ## the demo subject through every stage that exists
	snakemake --cores $(CORES) --profile workflow/profiles/local

test: setup lint  ## lint + the whole test suite
	python -m pytest -ra

lint: setup
	ruff check .
	ruff format --check .
	snakemake --lint

bench: setup  ## stage throughput figures (see README, Benchmarks)
	python scripts/benchmark.py
