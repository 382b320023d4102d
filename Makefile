# precipgen: `make demo` runs the pipeline on the embedded synthetic data; `make test` the suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PORT   ?= 5000
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION := false

.PHONY: install demo test lint server ui dashboard clean bench

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m precipgen.demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests entrypoints bench

# A real tracking server: sqlite backend and artifacts under ./mlserver/.
server: $(STAMP)
	@mkdir -p mlserver
	@echo "MLflow tracking server: http://127.0.0.1:$(PORT)  (export MLFLOW_TRACKING_URI=http://127.0.0.1:$(PORT))"
	$(BIN)/mlflow server --host 127.0.0.1 --port $(PORT) --workers 1 \
	  --backend-store-uri sqlite:///$(CURDIR)/mlserver/mlflow.db \
	  --artifacts-destination $(CURDIR)/mlserver/artifacts

# The UI over the default local store (what `make demo` writes to).
ui: $(STAMP)
	@echo "MLflow UI: http://127.0.0.1:$(PORT)"
	$(BIN)/mlflow server --host 127.0.0.1 --port $(PORT) --workers 1 \
	  --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --default-artifact-root $(CURDIR)/mlruns

dashboard: $(STAMP)
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dashboard]'
	$(BIN)/optuna-dashboard --host 127.0.0.1 --port 8080 sqlite:///$(CURDIR)/optuna.db

bench: $(STAMP)
	@for f in bench/bench_*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

clean:
	rm -rf outputs experiments_generative_crps data/prepared reports/*/ mlruns mlflow.db optuna.db
