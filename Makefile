# fleethub: a NATS-backed WebSocket push hub for device fleets.

GO      ?= go
BIN     ?= bin
# Tests run in parallel but light: two packages at a time on a 2-core box.
# The browser tests drive Debian's chromium when it is installed (.ci/run
# installs it) and say why they skip when it is not.
TESTFLAGS ?= -race -count=1 -p 2 -timeout 15m -tags browser
# Fuzzing: each target runs FUZZTIME in make fuzz, FUZZSHORT in make test.
FUZZTIME  ?= 60s
FUZZSHORT ?= 1s

.PHONY: all build run cluster cluster-node multidc multidc-node test vet fmt fuzz fuzz-short bench compare load soak clean

all: build

# The version --version prints: the git description of the checkout.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)

build:
	@mkdir -p $(BIN)
	$(GO) build -ldflags "-X github.com/fleethub/fleethub/internal/cli.version=$(VERSION)" -o $(BIN)/ ./cmd/...

## run: one node with an embedded NATS server (JetStream on), in --dev mode,
## then a simulated fleet of 12 robots once the node is ready; the dashboard
## and the dev login are the last lines printed. Ctrl-C (or q) stops both.
run: build
	@BIN=$(BIN) docs/dev/run.sh

## cluster: the one-binary cluster, three hub nodes each embedding one of
## the three NATS servers of docs/cluster/hub-N.conf (state at R3), in
## --dev mode on 127.0.0.1:8081..8083, and a simulated fleet of 30 robots
## spread over them; prints the dashboards once every node is ready.
## Ctrl-C stops them all. Data in ./data/cluster/hub-N. Kill a node and
## start it again with make cluster-node N=2: it rejoins.
cluster: build
	BIN=$(BIN) docs/cluster/run.sh

cluster-node: build
	BIN=$(BIN) docs/cluster/run.sh node $(N)

## multidc: two data centres, east and west, each a hub node embedding
## its data centre's NATS server of docs/multidc/<dc>.conf (a JetStream
## domain each, west a leaf node of east), in --dev mode on
## 127.0.0.1:8091 (east) and 8092 (west), and a simulated fleet of 20
## robots in each; prints both dashboards (each lists and commands the
## devices of both) once the nodes are ready. Ctrl-C stops them. Data in
## ./data/multidc/<dc>. Kill a node and start it again with
## make multidc-node DC=west.
multidc: build
	BIN=$(BIN) docs/multidc/run.sh

multidc-node: build
	BIN=$(BIN) docs/multidc/run.sh node $(DC)

## test: vet, formatting and the whole suite under the race detector,
## browser tests included (each fuzz target's seeds and testdata/fuzz
## corpus run as tests), then every fuzz target for FUZZSHORT (1s).
test: vet fmt
	$(GO) test $(TESTFLAGS) ./...
	$(MAKE) fuzz-short

## fuzz: every fuzz target (found by go test -list '^Fuzz') for FUZZTIME
## (60s) each, one after another; make fuzz FUZZTIME=10m for longer. A
## failing input lands in the package's testdata/fuzz/FuzzX/: commit it
## with the fix.
fuzz:
	GO=$(GO) .ci/fuzz $(FUZZTIME)

## fuzz-short: the same for FUZZSHORT each, as make test runs it.
fuzz-short:
	GO=$(GO) FUZZMINTIME=1s FUZZLISTFLAGS="$(TESTFLAGS)" .ci/fuzz $(FUZZSHORT)

vet:
	$(GO) vet ./...
	$(GO) vet -tags browser,load ./...

fmt:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

## bench: in-process benchmarks (hub fan-out cost per delivery).
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

## compare: the side-by-side run of docs/perf.md, in one machine state
## (about 20 minutes): ../shared/bench/run-all.sh (hub, Centrifugo,
## nats-server WS), the write(2) floor (internal/cmd/wsfloor) on the same
## publish rows, a connect-rate ramp (idle, 10,000 clients at 5,000, 7,500
## and 10,000/s offered) for every target, then one table with the
## issue's ratios. The peers come from CENTRIFUGO_BIN and NATS_SERVER_BIN
## ($HOME/peers/<name> when unset); results in $TMPDIR/fleet-compare/.
compare:
	docs/perf/compare.sh

## load: real sockets against real node processes: one node under 10,000
## sessions, presence and data-plane timings on several nodes, the chaos
## test (a node, then the NATS server, killed under load) and the soak's
## short form (2 minutes; SOAK_DURATION changes it), 100,000 devices over
## 6 node processes (TestBigLoad; BIGLOAD_DEVICES changes it), and a node
## with no session under a simulated bus-level fleet of 10,000 and 100,000
## devices, listing latency (p50/p99) at 100,000 known devices, and the
## data centre engine's partitions of 20 s (views converged after heal,
## with and without its kick).
load:
	$(GO) test -count=1 -tags load -v -timeout 60m ./internal/loadtest
	$(GO) test -count=1 -tags load -v -timeout 30m ./internal/multidc
	$(GO) test -count=1 -tags load -run 'Long|Stalled' -v -timeout 20m ./hub/dcs
	UPKEEP_DEVICES=100000 $(GO) test -count=1 -tags load -run TestPresenceUpkeepSteady -v -timeout 20m ./hub
	$(GO) test -count=1 -tags load -run TestNodeCostUnderBusFleet -v -timeout 30m ./internal/fleetsim
	$(GO) test -count=1 -tags load -run TestDirectoryLatency -v -timeout 25m ./hub

## fleet-cost: the CPU of one hub process (no session, then one admin on a
## group of 100 devices) under a bus-level simulated fleet of FLEET_SIZES
## devices on other nodes (status every 10 s, 2 events an hour, presence at
## the default TTLs, 1% reconnecting a minute), then node-b: a hub with no
## session beside one holding 5,000 real devices reporting every 2 s. Each
## prints a table. FLEETHUB_NODE_BIN=before=path,after=path measures
## several hub binaries side by side in one run (default: this tree's).
FLEET_SIZES  ?= 10000,100000,1000000
FLEET_WINDOW ?= 60s
.PHONY: fleet-cost node-b
fleet-cost:
	FLEETSIM_SIZES=$(FLEET_SIZES) FLEETSIM_WINDOW=$(FLEET_WINDOW) $(GO) test -count=1 -tags load -run '^TestNodeCostUnderBusFleet$$' -v -timeout 120m ./internal/fleetsim

node-b:
	NODEB_WINDOW=$(FLEET_WINDOW) $(GO) test -count=1 -tags load -run '^TestNodeBCost$$' -v -timeout 30m ./internal/fleetsim

## soak: the churn soak, 30 minutes by default: two nodes on a nats-server
## process, devices and admins coming and going; fails when goroutines, fds
## or heap do not return to the baseline, when an acknowledged record is
## missing or a presence history does not alternate. SOAK_DURATION=2h
## make soak for longer (raise SOAK_TIMEOUT with it).
SOAK_DURATION ?= 30m
SOAK_TIMEOUT  ?= 60m
soak:
	SOAK_DURATION=$(SOAK_DURATION) $(GO) test -count=1 -tags load -run '^TestSoak$$' -v -timeout $(SOAK_TIMEOUT) ./internal/loadtest

clean:
	rm -rf $(BIN) ./data
