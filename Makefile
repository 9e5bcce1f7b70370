# make train   set up (once) and run the main job: SFT + GRPO on arithmetic, CPU preset
# make test    set up (once) and run every test: unit, property and notebook (nbval)
# make lab     set up (once) and open the lessons in JupyterLab
# make bench   set up (once, with TRL) and time minigrpo against TRL's GRPOTrainer (~30 min on 2 cores)
# make gpu-run the GPU work in one command (on a CUDA machine, <= 9 min): benchmarks/gpu_run.py
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: install train test lab bench gpu-run data clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

train: $(STAMP)
	$(PY) -m minigrpo train

test: $(STAMP)
	$(PY) -m pytest

lab: $(STAMP)
	$(VENV)/bin/jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root) notebooks/

bench: $(STAMP)
	$(PY) -m pip install --quiet -e ".[dev,bench]"
	$(PY) benchmarks/grpo_speed.py
	$(PY) benchmarks/profile_step.py

gpu-run:
	PYTHONPATH=. python3 benchmarks/gpu_run.py --out runs/gpu

data: $(STAMP)
	$(PY) -m minigrpo data

clean:
	rm -rf runs .pytest_cache
