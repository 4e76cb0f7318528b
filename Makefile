# make demo: venv + synthetic iSeg-2017 dataset + train a 3D U-Net + test the best checkpoint.
# make test: ruff, then the whole test suite on every core (what CI runs).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DEMO_DATA := data/demo/iSeg-2017-Training
DEMO_CKPT := runs/demo/latest/checkpoints/best.ckpt  # the run just trained (make runs one at a time)

.PHONY: demo test lint venv clean-demo

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	@echo "== install (.venv, requirements.txt) =="
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	time $(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	@touch $@

demo: venv
	@echo "== demo data (cached in $(DEMO_DATA)) =="
	time $(PY) -m demo.synthetic_iseg --out $(DEMO_DATA)
	@echo "== training (configs/demo.yaml) =="
	time $(PY) train.py fit --config configs/demo.yaml
	@echo "== evaluating the best checkpoint on the held-out test subjects =="
	time $(PY) train.py test --config configs/demo.yaml --ckpt_path $(DEMO_CKPT)

test: venv
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q -n auto --dist loadgroup tests  # a worker per core (pytest-xdist), a module's
	# costly shared fixture on one of them (xdist_group); tests/conftest.py shares the threads

lint: venv
	$(VENV)/bin/ruff check .

clean-demo:
	rm -rf runs/demo data/demo
