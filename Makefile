# Two commands do all the set-up on a fresh clone:
#   make train   train MNIST with the built-in config
#   make test    check notebooks and package are in sync, run every notebook, run the tests
# Both create .venv and install the project into it (torch included) on first use.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install train test sync nbtest pytest clean

install: $(STAMP)

$(STAMP): setup.py settings.ini
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

train: $(STAMP)
	$(BIN)/adaptive-cnn train mnist

test: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" bash tools/test.sh

clean:
	rm -rf $(VENV) build dist *.egg-info _docs _proc
