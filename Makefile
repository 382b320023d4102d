# precipgen: `make demo` runs the pipeline on the embedded synthetic data; `make test` the suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PORT   ?= 5000
# Where `make server` keeps its store; AUTH=1 starts MLflow's basic-auth app instead.
MLSERVER_DIR ?= mlserver
AUTH   ?=
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION := false

.PHONY: install demo test lint server ui dashboard clean bench

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test,dashboard]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m precipgen.demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests entrypoints bench

# The viewers never install anything: they say how when the venv is missing.
need = @test -x $(BIN)/$(1) || { echo "$(BIN)/$(1) not found: run 'make install' first" >&2; exit 2; }

# A real tracking server, bound to 127.0.0.1: sqlite backend and artifacts under $(MLSERVER_DIR)/.
# Unauthenticated unless AUTH=1 (MLflow's basic-auth app; users in $(MLSERVER_DIR)/basic_auth.db,
# admin password from MLFLOW_AUTH_ADMIN_PASSWORD the first time).
server:
	$(call need,mlflow)
	@mkdir -p $(MLSERVER_DIR)
	@echo "MLflow tracking server: http://127.0.0.1:$(PORT)  (export MLFLOW_TRACKING_URI=http://127.0.0.1:$(PORT))"
ifeq ($(AUTH),1)
	@test -n "$$MLFLOW_AUTH_ADMIN_PASSWORD" || test -f $(MLSERVER_DIR)/basic_auth.db || \
	  { echo "AUTH=1: set MLFLOW_AUTH_ADMIN_PASSWORD (the admin's password, used once to create the admin user)" >&2; exit 2; }
	@printf '[mlflow]\ndefault_permission = READ\ndatabase_uri = sqlite:///%s/basic_auth.db\nadmin_username = admin\nauthorization_function = mlflow.server.auth:authenticate_request_basic_auth\n' \
	  "$(abspath $(MLSERVER_DIR))" > $(MLSERVER_DIR)/basic_auth.ini
	@test -f $(MLSERVER_DIR)/secret_key || $(BIN)/python -c "import secrets; print(secrets.token_hex(32))" > $(MLSERVER_DIR)/secret_key
	MLFLOW_AUTH_CONFIG_PATH=$(abspath $(MLSERVER_DIR))/basic_auth.ini \
	MLFLOW_FLASK_SERVER_SECRET_KEY=$$(cat $(MLSERVER_DIR)/secret_key) \
	$(BIN)/mlflow server --app-name basic-auth --host 127.0.0.1 --port $(PORT) --workers 1 \
	  --backend-store-uri sqlite:///$(abspath $(MLSERVER_DIR))/mlflow.db \
	  --artifacts-destination $(abspath $(MLSERVER_DIR))/artifacts
else
	$(BIN)/mlflow server --host 127.0.0.1 --port $(PORT) --workers 1 \
	  --backend-store-uri sqlite:///$(abspath $(MLSERVER_DIR))/mlflow.db \
	  --artifacts-destination $(abspath $(MLSERVER_DIR))/artifacts
endif

# The UI over the default local store (what `make demo` writes to).
ui:
	$(call need,mlflow)
	@echo "MLflow UI: http://127.0.0.1:$(PORT)"
	$(BIN)/mlflow server --host 127.0.0.1 --port $(PORT) --workers 1 \
	  --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --default-artifact-root $(CURDIR)/mlruns

# optuna-dashboard over the default study store (PORT as for the others).
dashboard:
	$(call need,optuna-dashboard)
	@echo "Optuna dashboard: http://127.0.0.1:$(PORT)"
	$(BIN)/optuna-dashboard --host 127.0.0.1 --port $(PORT) sqlite:///$(CURDIR)/optuna.db

bench: $(STAMP)
	@for f in bench/bench_*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

clean:
	rm -rf outputs experiments_generative_crps data/prepared reports/*/ mlruns mlflow.db optuna.db
