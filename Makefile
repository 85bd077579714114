# modelfs — see README.md.
GO      ?= go
BIN     := bin
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
# The race detector slows FUSE round trips a lot; the suite still fits CI's budget.
# -count=1: the end-to-end tests build and run binaries whose sources the test
# cache does not track, so a cached pass could hide a broken change.
TESTFLAGS ?= -race -count=1 -timeout 30m
# go-nvml's cgo code calls NVML functions NVIDIA marked deprecated; the C
# compiler's warnings about them look like failures and are not ours to fix.
# Go's default, -O2 -g, stands in for an unset or empty CGO_CFLAGS.
export CGO_CFLAGS := $(or $(strip $(CGO_CFLAGS)),-O2 -g) -Wno-deprecated-declarations

.PHONY: all build tools test test-chart lint demo serve bench bench-peers cluster-bench soak fuzz clean

all: build

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/modelfs ./cmd/modelfs

# Helper programs used by the demo and the end-to-end tests.
tools:
	$(GO) build -o $(BIN)/ ./tests/cmd/...

# The bench harness's own tests time a rate-limiting proxy to within 10%:
# they run alone, after the rest, so other packages' tests do not skew them.
test: lint test-chart
	$(GO) test $(TESTFLAGS) $$($(GO) list ./... | grep -v /tests/bench$$)
	$(GO) test $(TESTFLAGS) ./tests/bench

# The Helm chart, linted and rendered by Helm's own packages, in a module of
# its own (csi/deploy/helm) so that modelfs does not depend on Helm. Its
# first build takes a few minutes.
test-chart:
	cd csi/deploy/helm && $(GO) vet . && $(GO) test -count=1 .

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# End to end: a local S3 server with a generated model, mounted and read.
demo: build tools
	$(BIN)/demo -modelfs $(BIN)/modelfs -mmapread $(BIN)/mmapread -dir .demo

# The demo's S3 server and model, kept running until Ctrl-C, with the
# commands to mount it by hand. SERVEFLAGS="-addr 127.0.0.1:9100" for
# another port.
SERVEFLAGS ?=
serve: build tools
	$(BIN)/demo -serve -modelfs $(BIN)/modelfs -dir .demo $(SERVEFLAGS)

# Cold and warm throughput, CPU and RSS against raw GETs, download-then-read,
# a local copy and the peers installed (s3fs, rclone, goofys: make
# bench-peers) (docs/benchmarks.md). BENCHFLAGS="--size 8GiB --runs 5",
# "--link s3" (5 Gbit/s, 100 MB/s per connection, 20 ms RTT, HTTPS),
# "--rate-gbit 10 --rtt-ms 2", "--scenarios seq,mmap-header", "--peers s3fs", ...
BENCHFLAGS ?=
bench: build
	$(GO) build -o $(BIN)/bench ./tests/bench
	$(BIN)/bench -modelfs $(BIN)/modelfs $(BENCHFLAGS)
	@echo "==> cost of checking objects against their store's checksum (8 MiB blocks)"
	$(GO) test -run '^$$' -bench Sums -benchtime 50x ./internal/objsum

# Eight mounts with their own caches load one model at once from a distant
# origin, without and with --shared-cache: origin bytes / model size and
# each node's load time (docs/shared-cache.md). Root, or fusermount3.
# CLUSTERFLAGS="-nodes 16 -size 1GiB -origin-latency 50ms".
CLUSTERFLAGS ?=
cluster-bench: build
	$(GO) build -o $(BIN)/clusterbench ./tests/clusterbench
	$(BIN)/clusterbench -modelfs $(BIN)/modelfs $(CLUSTERFLAGS)

# The other S3 filesystems make bench measures, as root: s3fs and rclone from
# Debian; goofys with go install (into /usr/local/bin) where the Go module proxy serves it (it
# refuses github.com/kahing/goofys today: the bench then skips it, saying so).
bench-peers:
	apt-get install -y s3fs rclone
	GOBIN=/usr/local/bin $(GO) install github.com/kahing/goofys@latest || \
		echo "==> goofys not installed: go install github.com/kahing/goofys@latest failed (see above); make bench skips it"

# Many readers (preads and mmap) for a set time against three mounts with
# small caches, ~5% of GETs faulted, every byte and the mounts' RSS checked
# (tests/soak). SOAKFLAGS="--duration 8m", "--sizes 64MiB,256MiB,512MiB",
# "--fault-rate 0.1", "--dir /tmp/soak" (kept, with the mounts' logs), ...
SOAKFLAGS ?=
soak: build tools
	$(GO) build -o $(BIN)/soak ./tests/soak
	$(BIN)/soak -modelfs $(BIN)/modelfs -mmapread $(BIN)/mmapread $(SOAKFLAGS)

# Longer fuzzing of every parser (the seed corpora run in 'make test').
FUZZTIME ?= 30s
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

clean:
	rm -rf $(BIN) .demo
