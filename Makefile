# The commands a newcomer types: `make demo` (a first look), `make run` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= 8
export DVC_NO_ANALYTICS := 1
export MLFLOW_ALLOW_FILE_STORE := false

DEMO ?= demo
.PHONY: setup demo run test test-fast bench bench-quick dvc-repro lint clean

setup:
	bash scripts/setup.sh

# The tiny profile end to end (a few hundred images, a few steps per stage), in its own folder
# with its own params.yaml, results, MLflow store and Snakemake state: a few minutes on 2 cores.
demo: setup
	mkdir -p $(DEMO) && cp config/params-tiny.yaml $(DEMO)/params.yaml && ln -sfn $(CURDIR)/hardware $(DEMO)/hardware
	cd $(DEMO) && PATH="$(CURDIR)/$(BIN):$$PATH" $(CURDIR)/$(BIN)/snakemake --snakefile $(CURDIR)/Snakefile --cores 2 \
		--workflow-profile $(CURDIR)/workflow/profiles/default
	@echo "demo report: $(DEMO)/results/fashion-mnist/resnet8/s0/report/report.html"
	@echo "demo runs in MLflow: .venv/bin/mlflow ui --backend-store-uri sqlite:///$(DEMO)/mlflow.db"

run: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/snakemake --cores $(CORES) --workflow-profile workflow/profiles/default

dvc-repro: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro

test: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q

test-fast: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q -m "not e2e and not slow"

bench: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m benchmarks.run

bench-quick: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m benchmarks.run --quick

clean:
	rm -rf results .mps-work .snakemake logs $(DEMO)
