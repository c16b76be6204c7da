# gongshu (公数) — everything a fresh machine with Python 3.11 and make needs.
#   make demo    set up, generate the demo city, run the nightly 归集 on SQLite, print a summary
#   make test    set up with dev extras, lint, and run the whole test suite (both rings)
#   make test-core   the fast core ring: pure functions, storage on SQLite and PostgreSQL (pytest -m "not e2e")
#   make test-e2e    the end-to-end ring: generated cities through the real nightly job (pytest -m e2e)
#   make snapshot    rewrite tests/snapshots/definitions.yaml (the reviewed code location); review its git diff
#   make fonts   a CJK font for the report charts (Debian fonts-noto-cjk; part of make install)
#   make ui      Dagster UI on the same data (http://127.0.0.1:3000), with the demo API and the Data Docs pages
#   make ui-test the browser test of the UI (Playwright + Debian's Chromium, installed by make browser)
#   make browser install Chromium and CJK fonts (Debian packages) when missing; make test runs it
#   make worker  one Celery worker for GONGSHU_EXECUTOR=celery (docs/deploy.md); Ctrl-C stops it
#   make bench   benchmarks (not part of make test); the nightly job's figures also in .gongshu/bench-guiji.json
#   make migration MSG="..."  a new warehouse migration in warehouse/migrations/versions/

PY      ?= $(shell command -v python3.11 || command -v python3)
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

export GONGSHU_HOME    ?= $(CURDIR)/.gongshu
export GONGSHU_LANDING ?= $(GONGSHU_HOME)/landing
export DAGSTER_HOME    ?= $(GONGSHU_HOME)/dagster
export GONGSHU_DOCS_URL ?= http://127.0.0.1:$(DOCS_PORT)

PERSONS  ?= 100000
SEED     ?= 20261121
DAYS     ?= 2
API_PORT ?= 8765
UI_PORT  ?= 3000
DOCS_PORT ?= 3001
DATE     ?= $(shell $(PY) -c 'import datetime as d, zoneinfo as z; print(d.datetime.now(z.ZoneInfo("Asia/Shanghai")).date() - d.timedelta(days=1))')
BENCH_PERSONS ?= 1000000
# nights of the bench (each into a fresh database; medians printed)
BENCH_RUNS ?= 3
# make test runs the test files on this many pytest-xdist workers (each file whole on one worker, so a
# file's module fixtures are built once; the slowest files first, tests/conftest.py SLOW_FIRST); 0 runs
# them in this process, in order. Three on two cores: the end-to-end files spend much of their time
# waiting on daemons, brokers and step processes (whole suite: 7:20 on three, 11:33 on two)
TEST_WORKERS ?= 3
# The demo's pseudonymisation key: GONGSHU_PSEUDONYM_KEY when set, else a random key made once per
# checkout in .gongshu/ (git-ignored). Production sets the variable from its secret store.
DEMO_KEY := $(GONGSHU_HOME)/demo-pseudonym.key
WITH_KEY  = GONGSHU_PSEUDONYM_KEY="$${GONGSHU_PSEUDONYM_KEY:-$$(cat "$(DEMO_KEY)")}"

.PHONY: install fonts demo test test-core test-e2e snapshot ui ui-test browser worker bench bench-10m lint clean demo-key migration

$(STAMP): pyproject.toml
	@test -n "$(PY)" || { echo "需要 Python 3.11 (python3.11 或 python3)"; exit 1; }
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	@rm -f $(VENV)/.installed-*; touch $(STAMP)

install: $(STAMP) fonts

# The department reports' charts are drawn in Chinese and need a CJK font (matplotlib would draw
# empty boxes; quality/report/charts.py refuses to): Debian's fonts-noto-cjk, installed when no
# Chinese font is found and apt-get can be used (root), else a message saying what to install.
fonts:
	@if fc-list :lang=zh 2>/dev/null | grep -q . || dpkg -s fonts-noto-cjk >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  echo "安装中文字体 fonts-noto-cjk (报告图表需要)"; \
	  apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends fonts-noto-cjk >/dev/null 2>&1 || \
	  { apt-get -o DPkg::Lock::Timeout=600 update -q >/dev/null && \
	    apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends fonts-noto-cjk >/dev/null; }; \
	else echo "未找到中文字体: 报告图表需要 CJK 字体, 请安装 fonts-noto-cjk (Debian/Ubuntu: sudo apt-get install fonts-noto-cjk) 或 Noto Sans CJK SC"; fi

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
	@# to the application applied for above (--expect: any other verdict fails the demo)
	@app=$$(sed -n 's/^申请编号 \([^ ]*\).*/\1/p' "$(GONGSHU_HOME)/share-apply.txt"); \
	  $(BIN)/python -c 'import sys, polars as pl; f = pl.read_csv(sys.argv[1], infer_schema=False); \
	    f.sample(200, seed=1).select("mobile", "name", "valid_from").write_csv(sys.argv[2])' \
	    "$$(ls -d "$(GONGSHU_HOME)/share/$$app"/*/ | tail -1)$$app.csv" "$(GONGSHU_HOME)/share-leak-sample.csv" && \
	  $(WITH_KEY) $(BIN)/gongshu share trace "$(GONGSHU_HOME)/share-leak-sample.csv" --by make-demo --expect "$$app"

test: lint browser
	$(BIN)/python -m pytest -m "not ui_backfill" -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

test-core: install
	$(BIN)/python -m pytest -m "not e2e"

test-e2e: install browser
	$(BIN)/python -m pytest -m "e2e and not ui_backfill"

# The browser test drives Debian's Chromium (Playwright cannot download a browser here) and needs CJK
# fonts for its screenshots: installed when missing, where apt-get can (as root, or with sudo).
browser:
	@if [ -x /usr/bin/chromium ] && fc-list 2>/dev/null | grep -qi "Noto Sans CJK"; then :; \
	elif command -v apt-get >/dev/null 2>&1; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium fonts-noto-cjk; \
	else echo "没有 apt-get: 请自行安装 Chromium (/usr/bin/chromium) 与 Noto CJK 字体, 否则浏览器测试跳过 (CI 下失败)"; fi

ui-test: install browser
	$(BIN)/python -m pytest tests/test_ui.py

snapshot: install
	$(BIN)/gongshu definitions-snapshot --out tests/snapshots/definitions.yaml

ui: install demo-key
	$(WITH_KEY) $(BIN)/gongshu ui --port $(UI_PORT) --api-port $(API_PORT) --docs-port $(DOCS_PORT)

# One Celery worker (dagster-celery) on the queue GONGSHU_CELERY_QUEUE (default gongshu) of the broker
# GONGSHU_CELERY_BROKER (default: this machine's RabbitMQ), running GONGSHU_MAX_CONCURRENT steps at a
# time (default 2), with the same settings, key and Dagster instance as `make demo`/`make ui`. Runs
# use it when GONGSHU_EXECUTOR=celery. WORKER_NAME names it (default dagster-<random>@host).
worker: install demo-key
	$(BIN)/gongshu instance
	$(WITH_KEY) PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dagster-celery worker start -A pipelines.celery_app $(if $(WORKER_NAME),-n $(WORKER_NAME)) \
	  -- --concurrency "$${GONGSHU_MAX_CONCURRENT:-2}"

bench: install
	$(BIN)/python benchmarks/bench_generator.py --persons $(BENCH_PERSONS)
	$(BIN)/python benchmarks/bench_masking.py --rows $(BENCH_PERSONS)
	$(BIN)/python benchmarks/bench_guiji.py --persons $(BENCH_PERSONS) --runs $(BENCH_RUNS) --json "$(GONGSHU_HOME)/bench-guiji.json"

# A 10-million-person city (Wenzhou, Linyi): one first-load night and its incremental night. Needs ~2 GB of
# landing, ~60 GB free for PostgreSQL (ods, std, base, WAL) and more than an hour on two cores.
bench-10m:
	$(MAKE) bench BENCH_PERSONS=10000000 BENCH_RUNS=1

migration: install
	@test -n "$(MSG)" || { echo "用法: make migration MSG=\"迁移说明\""; exit 1; }
	$(BIN)/python -m warehouse.migrations revision -m "$(MSG)"

lint: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports

clean:
	rm -rf .gongshu .pytest_cache .ruff_cache
