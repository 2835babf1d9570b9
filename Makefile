# The commands a person types. Each sets itself up first: a .venv with the project and its tools.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup tools run test reliability scale lint format bench proto clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python 3.11 or newer is needed" or 0)'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

run: setup
	$(BIN)/msc up

# Everything but the long reliability runs (their fast subset, marked reliability_smoke,
# stays). The scale-out runs are included. TEST_WORKERS pytest-xdist processes share the
# tests (2, one a core here: about 6.5 minutes instead of 9.5-10; TEST_WORKERS=0 runs them in
# one process). Every test starts its own servers on free ports and its own schemas, and each
# worker gets a PostgreSQL database of its own (the role needs CREATEDB for that).
TEST_WORKERS ?= 2
test: setup tools
	$(BIN)/pytest -q -n $(TEST_WORKERS) -m "not reliability" --durations=15

# Crashes, outages, concurrency and hostile input under load, with a table of figures at the
# end (also appended to bench/results/reliability.md). About 10-12 minutes on 2 cores.
reliability: setup tools
	$(BIN)/pytest -q -m "reliability or reliability_smoke"

# Scale-out: 3 cart and 3 billing instances on PostgreSQL under load, over a 3-node NATS
# cluster and over Kafka (Tansu), SIGKILLing instances (and the stream leader) midway; a
# table of figures at the end. About 80-110 s on 2 cores; make test runs them too.
scale: setup
	$(BIN)/pytest -q -m scale tests/scale

# Debian packages some tests run for real: Prometheus and promtool, docker-compose (config
# check only), Chromium (the event browser's tests, through Playwright); and wrk, the HTTP
# load of bench/http_throughput.py. Installed when missing and we are root, as on this
# project's machines and CI.
tools:
	@command -v promtool >/dev/null && command -v docker-compose >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing prometheus and docker-compose (Debian packages) for the tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      --no-install-recommends prometheus docker-compose >/dev/null; \
	  else echo "note: install prometheus and docker-compose to run the deployment tests"; fi; }
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing chromium (Debian package) for the event browser's tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      --no-install-recommends chromium >/dev/null; \
	  else echo "note: install chromium to run the event browser's tests"; fi; }
	@command -v wrk >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing wrk (Debian package) for bench/http_throughput.py"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      --no-install-recommends wrk >/dev/null; \
	  else echo "note: install wrk to run bench/http_throughput.py"; fi; }

lint: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy --strict src

format: setup
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

bench: setup
	$(BIN)/python bench/commands.py

# Regenerate the committed Protobuf code from the .proto files (grpcio-tools, dev only).
PROTO := src/microservice_connector/events/proto
proto: setup
	$(BIN)/python -m grpc_tools.protoc -I $(PROTO) --python_out=$(PROTO) --pyi_out=$(PROTO) $(PROTO)/cart.proto $(PROTO)/billing.proto

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache
