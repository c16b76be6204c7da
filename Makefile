# gongshu (公数) — everything a fresh machine with Python 3.11 and make needs.
#   make demo    set up, generate the demo city, run the nightly 归集 on SQLite, print a summary
#   make test    set up with dev extras, lint, and run the whole test suite (both rings)
#   make test-core   the fast core ring: pure functions, storage on SQLite and PostgreSQL (pytest -m "not e2e")
#   make test-e2e    the end-to-end ring: generated cities through the real nightly job (pytest -m e2e)
#   make snapshot    rewrite tests/snapshots/definitions.yaml (the reviewed code location); review its git diff
#   make ui      Dagster UI on the same data (http://127.0.0.1:3000)
#   make bench   benchmarks (not part of make test); the nightly job's figures also in .gongshu/bench-guiji.json
#   make migration MSG="..."  a new warehouse migration in warehouse/migrations/versions/

PY      ?= $(shell command -v python3.11 || command -v python3)
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

export GONGSHU_HOME    ?= $(CURDIR)/.gongshu
export GONGSHU_LANDING ?= $(GONGSHU_HOME)/landing
export DAGSTER_HOME    ?= $(GONGSHU_HOME)/dagster

PERSONS  ?= 100000
SEED     ?= 20261121
DAYS     ?= 2
API_PORT ?= 8765
DATE     ?= $(shell $(PY) -c 'import datetime as d, zoneinfo as z; print(d.datetime.now(z.ZoneInfo("Asia/Shanghai")).date() - d.timedelta(days=1))')
BENCH_PERSONS ?= 1000000
# The demo's pseudonymisation key: GONGSHU_PSEUDONYM_KEY when set, else a random key made once per
# checkout in .gongshu/ (git-ignored). Production sets the variable from its secret store.
DEMO_KEY := $(GONGSHU_HOME)/demo-pseudonym.key
WITH_KEY  = GONGSHU_PSEUDONYM_KEY="$${GONGSHU_PSEUDONYM_KEY:-$$(cat "$(DEMO_KEY)")}"

.PHONY: install demo test test-core test-e2e snapshot ui bench lint clean demo-key migration

$(STAMP): pyproject.toml
	@test -n "$(PY)" || { echo "需要 Python 3.11 (python3.11 或 python3)"; exit 1; }
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	@rm -f $(VENV)/.installed-*; touch $(STAMP)

install: $(STAMP)

demo-key:
	@mkdir -p "$(GONGSHU_HOME)"; test -s "$(DEMO_KEY)" || { umask 077; $(PY) -c 'import secrets; print(secrets.token_urlsafe(32))' > "$(DEMO_KEY)"; }

demo: install demo-key
	rm -rf "$(GONGSHU_LANDING)" "$(GONGSHU_HOME)"/warehouse.db* "$(GONGSHU_HOME)/share"
	$(BIN)/gongshu generate --persons $(PERSONS) --seed $(SEED) --date $(DATE) --days $(DAYS) --out "$(GONGSHU_LANDING)"
	@# 共享申请 (docs/sharing.md): 市人力社保局 applies for 人口库 姓名 and 手机号码; 市公安局 and 市人力社保局
	@# (一数一源) agree, the data bureau approves; the nightly run below writes its extract.
	@$(BIN)/gongshu share apply --requester rsj --library person --elements name,mobile \
	  --purpose 社保待遇资格认证 --until 2099-12-31 | tee "$(GONGSHU_HOME)/share-apply.txt"
	@app=$$(sed -n 's/^申请编号 \([^ ]*\).*/\1/p' "$(GONGSHU_HOME)/share-apply.txt"); \
	  test -n "$$app" || { echo "共享申请未能提交"; exit 1; }; \
	  $(BIN)/gongshu share review $$app --dept gaj --agree --note "限社保待遇资格认证使用" && \
	  $(BIN)/gongshu share review $$app --dept rsj --agree && \
	  $(BIN)/gongshu share approve $$app --by 数据资源管理处 --note 同意
	@$(BIN)/gongshu serve-api --port $(API_PORT) --landing "$(GONGSHU_LANDING)" > "$(GONGSHU_HOME)/api.log" 2>&1 & pid=$$!; \
	  trap "kill $$pid 2>/dev/null" EXIT; \
	  for i in $$(seq 100); do $(BIN)/python -c "import socket; socket.create_connection(('127.0.0.1', $(API_PORT)), 0.2)" 2>/dev/null && break; sleep 0.1; done; \
	  $(WITH_KEY) GONGSHU_API_ZRZY_URL=http://127.0.0.1:$(API_PORT)/zrzy/bdcqz $(BIN)/gongshu run --date $(DATE) --days $(DAYS) \
	    --manifest "$(GONGSHU_LANDING)/manifest.json"
	$(BIN)/gongshu score-detection --manifest "$(GONGSHU_LANDING)/manifest.json"
	@# a leak of 200 sampled rows of the extract, columns reordered, token and key-id columns dropped: traced
	@app=$$(sed -n 's/^申请编号 \([^ ]*\).*/\1/p' "$(GONGSHU_HOME)/share-apply.txt"); \
	  $(BIN)/python -c 'import sys, polars as pl; f = pl.read_csv(sys.argv[1], infer_schema=False); \
	    f.sample(200, seed=1).select("mobile", "name", "valid_from").write_csv(sys.argv[2])' \
	    "$$(ls -d "$(GONGSHU_HOME)/share/$$app"/*/ | tail -1)$$app.csv" "$(GONGSHU_HOME)/share-leak-sample.csv" && \
	  $(WITH_KEY) $(BIN)/gongshu share trace "$(GONGSHU_HOME)/share-leak-sample.csv" --by make-demo

test: lint
	$(BIN)/python -m pytest

test-core: install
	$(BIN)/python -m pytest -m "not e2e"

test-e2e: install
	$(BIN)/python -m pytest -m e2e

snapshot: install
	$(BIN)/gongshu definitions-snapshot --out tests/snapshots/definitions.yaml

ui: install demo-key
	$(BIN)/gongshu instance
	$(WITH_KEY) $(BIN)/dagster dev -w workspace.yaml

bench: install
	$(BIN)/python benchmarks/bench_generator.py --persons $(BENCH_PERSONS)
	$(BIN)/python benchmarks/bench_masking.py --rows $(BENCH_PERSONS)
	$(BIN)/python benchmarks/bench_guiji.py --persons $(BENCH_PERSONS) --json "$(GONGSHU_HOME)/bench-guiji.json"

migration: install
	@test -n "$(MSG)" || { echo "用法: make migration MSG=\"迁移说明\""; exit 1; }
	$(BIN)/python -m warehouse.migrations revision -m "$(MSG)"

lint: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports

clean:
	rm -rf .gongshu .pytest_cache .ruff_cache
