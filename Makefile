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

.PHONY: all build run test vet fmt fuzz fuzz-short bench load clean

all: build

build:
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/ ./cmd/...

## run: one node with an embedded NATS server (JetStream on), in --dev mode,
## and a simulated fleet of 12 robots; Ctrl-C stops both.
run: build
	@$(BIN)/devsim --dev --devices 12 --log-level warn & SIM=$$!; \
	trap 'kill $$SIM 2>/dev/null' EXIT; trap 'exit 130' INT TERM; \
	$(BIN)/hub --dev --data-dir ./data

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

## load: real sockets against a real node process (10,000 sessions by default).
load:
	$(GO) test -count=1 -tags load -v -timeout 30m ./internal/loadtest
	UPKEEP_DEVICES=100000 $(GO) test -count=1 -tags load -run TestPresenceUpkeepSteady -v -timeout 20m ./hub

clean:
	rm -rf $(BIN) ./data
