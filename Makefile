# Two commands do all the set-up on a fresh clone:
#   make train   train MNIST with the built-in config (the full recipe: 50 epochs)
#   make test    check notebooks and package are in sync, run every notebook, run the tests
# Both create .venv and install the project into it (torch included) on first use.
#   make smoke   a one-minute MNIST run into runs/smoke (replaced each time): is everything in place?
# ARGS goes to `adaptive-cnn train`: make train ARGS=--resume, make train ARGS="--overwrite --set train.epochs=10".

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
ARGS   ?=
# one epoch on 20,000 of the 55,000 training images: about a minute on a 2-core CPU, about 97% test accuracy
SMOKE  := --set train.epochs=1 --set data.train_subset=20000 --output-dir runs/smoke --overwrite

.PHONY: install train smoke test sync nbtest pytest clean

install: $(STAMP)

$(STAMP): setup.py settings.ini
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

train: $(STAMP)
	$(BIN)/adaptive-cnn train mnist $(ARGS) || { status=$$?; \
	  echo "make: options go to adaptive-cnn train through ARGS, e.g. make train ARGS=--resume or ARGS=--overwrite" >&2; exit $$status; }

smoke: $(STAMP)
	$(BIN)/adaptive-cnn train mnist $(SMOKE) $(ARGS)

test: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" bash tools/test.sh

clean:
	rm -rf $(VENV) build dist *.egg-info _docs _proc
