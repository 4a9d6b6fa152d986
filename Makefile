# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
MMKERAS_DATA_DIR ?= ../shared/data
export MMKERAS_DATA_DIR
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: demo test install clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,notebooks]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m mmkeras.demo

# pytest exits 5 when it collects no test: that must fail, never pass silently.
test: $(STAMP)
	$(PY) -m pytest -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
