# Bulkhead. `make test` is the README's test command; CI runs it with -race.
GO        ?= go
TESTFLAGS ?=
BENCHFLAGS ?= -benchtime=2s
PKGS      ?= ./...

.PHONY: build test bench fmt vet clean

build:
	$(GO) build -o bin/bulkhead ./cmd/bulkhead

test:
	$(GO) test $(TESTFLAGS) $(PKGS)

# Side-by-side benchmarks (each compares Bulkhead with its baseline in one
# run); their tables and plots are written to docs/benchmarks/.
bench:
	@mkdir -p docs/benchmarks
	$(GO) test -run '^$$' -bench . -benchmem $(BENCHFLAGS) $(PKGS) > docs/benchmarks/run.txt || { cat docs/benchmarks/run.txt; exit 1; }
	@cat docs/benchmarks/run.txt
	$(GO) run ./internal/tools/benchreport -in docs/benchmarks/run.txt -out docs/benchmarks

fmt:
	gofmt -w $$(git ls-files '*.go')

vet:
	$(GO) vet ./...

clean:
	rm -rf bin bulkhead-data
