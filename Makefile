# The two commands of the quick start are `make search` and `make test`; both install first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install search test bench bench-gpu lint clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -e '.[dev]'
	touch $(STAMP)

search: install
	$(BIN)/nasps search --config configs/default.yaml

# Two test processes, each with its own shared Ray (tests/conftest.py), one test file at a time:
# most of the suite waits on Ray and on child processes, so two keep a 2-core machine busy.
test: install
	$(BIN)/python -m pytest -q -ra -n 2 --dist loadfile

bench: install
	$(BIN)/python bench/orchestration.py
	$(BIN)/python bench/controller.py
	$(BIN)/python bench/child.py
	$(BIN)/python bench/ptb.py --max-tokens 100000
	$(BIN)/python bench/cifar10.py
	$(BIN)/python bench/nb201/run.py
	$(BIN)/python bench/faults.py
	$(BIN)/python bench/default_search.py
	$(BIN)/python bench/early_stopping.py

# On a GPU machine with its own PyTorch (and perhaps no Ray, no network): no install step.
bench-gpu:
	mkdir -p bench/data
	if [ -f ../shared/data/cifar10-jpeg.tar.gz ]; then cp -n ../shared/data/cifar10-jpeg.tar.gz bench/data/; fi
	bash bench/gpu_check.sh

lint: install
	$(BIN)/ruff check nasps tests bench

clean:
	rm -rf $(VENV) runs .pytest_cache
