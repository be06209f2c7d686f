# kiln — make targets. Every target creates .venv and installs the pinned
# requirements when they are missing or have changed.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: help test demo bench policy-check mutate clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): requirements.txt requirements-dev.txt | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

test: $(STAMP)  ## run the whole test suite
	$(PY) -m pytest -q -n 2 --dist loadfile tests

demo: $(STAMP)  ## rotate a simulated fleet on a local moto server; chart in out/
	$(PY) -m automation demo

bench: $(STAMP)  ## rollout benchmark: default strategy vs double-and-drain, 50/200/1000 nodes
	$(PY) -m automation.bench

policy-check: $(STAMP)  ## run the CrossGuard pack offline on Pulumi.example.yaml
	$(PY) -m policies check --config Pulumi.example.yaml

# MUTANTS narrows the run to mutmut's names, e.g. make mutate MUTANTS='automation.gate*'.
mutate: $(STAMP)  ## mutation testing of the core (hours on 2 cores; not in CI): scores and survivors
	# 6 GiB of address space per process: a mutant that loops appending to a list fails fast instead
	# of taking the machine's memory (mutmut itself limits only CPU time).
	ulimit -v 6291456 && $(PY) -m mutmut run --max-children 2 $(MUTANTS)
	$(PY) -m tests.mutation.score

clean:  ## remove the virtualenv and generated output
	rm -rf $(VENV) out .pytest_cache .hypothesis mutants
