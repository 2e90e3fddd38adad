# make test: set up .venv when missing, install qretrain with its test extras, run pytest.
# make demo: the best end-to-end path so far (cluster, store, reload, compare).
# make bench: the measured figures of docs/BENCHMARKS.md (not part of make test).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# torch and torchvision are pinned here (they install from this machine's disk);
# pyproject.toml keeps loose ranges for outside users.
TORCH_PIN := torch==2.14.1 torchvision==0.29.1

.PHONY: test demo bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH_PIN)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

$(VENV)/.bench-installed: $(VENV)/.installed
	$(PY) -m pip install --quiet -e '.[test,bench]'
	touch $@

test: $(VENV)/.installed
	$(PY) -m pytest -q

demo: $(VENV)/.installed
	$(PY) examples/demo.py --out out/demo

bench: $(VENV)/.bench-installed
	$(PY) benchmarks/bench_cluster_vgg16.py
	$(PY) benchmarks/bench_sizes.py

clean:
	rm -rf $(VENV) out
