# `make run`: the quickstart (maze data -> BC and filtered BC -> evaluation -> score table).
# `make test`: the test suite. Both create .venv with the pinned CPU stack on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
STOCKFISH := /usr/games/stockfish
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: run test install clean

run: $(STAMP)
	$(BIN)/lmrl quickstart $(ARGS)

test: $(STAMP) $(STOCKFISH)
	$(BIN)/python -m pytest -q -n auto --maxprocesses 4 --dist loadfile $(ARGS)

install: $(STAMP)

# torch is pinned in the same pip command as everything else: otherwise pip resolves a multi-GB CUDA build.
$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

# The chess tasks' tests play Stockfish 15.1, Debian's package.
$(STOCKFISH):
	apt-get update -qq && apt-get install -y -qq stockfish || { echo "the chess tests need Stockfish: apt-get install -y stockfish"; exit 1; }

clean:
	rm -rf $(VENV) runs build dist *.egg-info
