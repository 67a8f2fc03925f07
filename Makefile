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

# Side-by-side benchmarks (each compares Bulkhead with its baseline in one run).
bench:
	$(GO) test -run '^$$' -bench . -benchmem $(BENCHFLAGS) $(PKGS)

fmt:
	gofmt -w $$(git ls-files '*.go')

vet:
	$(GO) vet ./...

clean:
	rm -rf bin bulkhead-data
