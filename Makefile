# b9-resolver — build, test, demo. `make` builds bin/; `make test` is what CI runs.
GO        ?= go
BIN       := $(CURDIR)/bin
TOOLS     := $(CURDIR)/.cache/bin
STATICCHECK_VERSION := v0.8.2
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -X github.com/beam-cloud/b9-resolver/internal/version.Version=$(VERSION)
export CGO_ENABLED ?= 0

.PHONY: all build test unit lint vet staticcheck bench bench-e2e fuzz demo clean proto release-bin image deb

all: build

build: $(BIN)/ctr-b9

$(BIN)/ctr-b9: FORCE
	$(GO) build -ldflags '$(LDFLAGS)' -o $@ ./cmd/ctr-b9

FORCE:

$(TOOLS)/staticcheck:
	GOBIN=$(TOOLS) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

vet:
	$(GO) vet ./...

staticcheck: $(TOOLS)/staticcheck
	$(TOOLS)/staticcheck ./...

lint: vet staticcheck

# test: vet and staticcheck, then every test with the race detector. The
# integration suite (./integration) runs too; it needs root and skips
# with a message otherwise.
test: lint build
	CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 40m ./...

unit: lint
	CGO_ENABLED=1 $(GO) test -race -count=1 $$($(GO) list ./... | grep -v /integration)

bench:
	$(GO) test -run '^$$' -bench . -benchmem -count 5 $$($(GO) list ./... | grep -v /integration)

# bench-e2e (root, ~6 minutes at the default n): containerd-b9, two standalone
# daemons and registries, full CRI
# pulls through b9 side by side with stock CRI; prints one table. Not part
# of `make test`. B9_BENCH_N sets the pulls per path (default 10).
bench-e2e:
	$(GO) test -run '^$$' -bench '^BenchmarkE2E$$' -benchtime 1x -timeout 30m ./integration

# fuzz: each target for FUZZTIME (default 5m).
FUZZTIME ?= 5m
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzParseReference$$' -fuzztime $(FUZZTIME) ./internal/keychain/registry
	$(GO) test -run '^$$' -fuzz '^FuzzNormalizeHost$$' -fuzztime $(FUZZTIME) ./internal/keychain/registry
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./internal/keychain/document
	$(GO) test -run '^$$' -fuzz '^FuzzFromAnnotations$$' -fuzztime $(FUZZTIME) ./internal/keychain/document
	$(GO) test -run '^$$' -fuzz '^FuzzOpen$$' -fuzztime $(FUZZTIME) ./internal/sealed
	$(GO) test -run '^$$' -fuzz '^FuzzEnvelope$$' -fuzztime $(FUZZTIME) ./internal/sealed
	$(GO) test -run '^$$' -fuzz '^FuzzParseAuthHeader$$' -fuzztime $(FUZZTIME) ./internal/resolver
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeDockerAuth$$' -fuzztime $(FUZZTIME) ./internal/keychain/chain
	$(GO) test -run '^$$' -fuzz '^FuzzDockerConfig$$' -fuzztime $(FUZZTIME) ./internal/keychain/chain

# proto: regenerate api/ from its .proto files (protoc from Debian's
# protobuf-compiler; plugins at the versions go.mod's protobuf and grpc match).
PROTOC_GEN_GO_VERSION      := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2
proto:
	GOBIN=$(TOOLS) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	GOBIN=$(TOOLS) $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
	PATH=$(TOOLS):$$PATH protoc -I api -I /usr/include \
		--go_out=. --go_opt=module=github.com/beam-cloud/b9-resolver \
		--go-grpc_out=. --go-grpc_opt=module=github.com/beam-cloud/b9-resolver \
		api/credentials/v1/credentials.proto

clean:
	rm -rf $(BIN) $(DIST)

# containerd-b9: upstream containerd with the b9-resolver plugin, plus the
# `standalone` subcommand. CGO_ENABLED=0 (above) drops btrfs, which needs cgo.
build: $(BIN)/containerd-b9

$(BIN)/containerd-b9: FORCE
	$(GO) build -ldflags '$(LDFLAGS)' -o $@ ./cmd/containerd-b9

# demo: as root, build, start a registry with auth and containerd-b9 under a
# temp dir, pull through the b9 socket with an annotation credential.
demo: $(BIN)/containerd-b9 $(BIN)/ctr-b9
	./hack/demo.sh

# Release artifacts, reproducible from a commit: static binaries built with
# -trimpath and no build id, every timestamp SOURCE_DATE_EPOCH (the commit
# time), nothing pulled but Go modules.
DIST              := $(CURDIR)/dist
GOARCH            ?= $(shell $(GO) env GOARCH)
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
REVISION          ?= $(shell git rev-parse HEAD 2>/dev/null)
IMAGE_NAME        ?= ghcr.io/beam-cloud/b9-resolver:$(VERSION)
RELEASE_BIN       := $(DIST)/bin-linux-$(GOARCH)
export SOURCE_DATE_EPOCH

release-bin:
	CGO_ENABLED=0 GOOS=linux GOARCH=$(GOARCH) $(GO) build -trimpath -buildvcs=false \
		-ldflags '-s -w -buildid= $(LDFLAGS)' -o $(RELEASE_BIN)/containerd-b9 ./cmd/containerd-b9
	CGO_ENABLED=0 GOOS=linux GOARCH=$(GOARCH) $(GO) build -trimpath -buildvcs=false \
		-ldflags '-s -w -buildid= $(LDFLAGS)' -o $(RELEASE_BIN)/ctr-b9 ./cmd/ctr-b9

# image: the standalone daemon's container image as an OCI layout in
# dist/image (no Docker daemon, no base image: see hack/image), then checked.
# Push it with any OCI tool, e.g. `crane push dist/image REF` or
# `skopeo copy oci:dist/image docker://REF`.
image: release-bin
	$(GO) run ./hack/image -bin $(RELEASE_BIN) -out $(DIST)/image -name $(IMAGE_NAME) \
		-version $(VERSION) -revision $(REVISION) -arch $(GOARCH)
	$(GO) run ./hack/image -verify $(DIST)/image

# deb: dist/b9-resolver_<version>_<arch>.deb with nfpm (contrib/nfpm.yaml):
# both binaries, the standalone unit and the plugin-mode containerd drop-in.
NFPM_VERSION := v2.45.2
# v1.2.3 -> 1.2.3, v1.2.3-4-gSHA -> 1.2.3+4+gSHA, a bare SHA -> 0.0.0~gitSHA.
DEB_VERSION  := $(shell echo '$(VERSION)' | sed -E '/^v[0-9]/{s/^v//;b};s/^/0.0.0~git/' | sed 's/-/+/g')
$(TOOLS)/nfpm:
	GOBIN=$(TOOLS) CGO_ENABLED=0 $(GO) install github.com/goreleaser/nfpm/v2/cmd/nfpm@$(NFPM_VERSION)

deb: release-bin $(TOOLS)/nfpm
	rm -rf $(DIST)/deb-bin && mkdir -p $(DIST)/deb-bin
	cp $(RELEASE_BIN)/containerd-b9 $(RELEASE_BIN)/ctr-b9 $(DIST)/deb-bin/
	DEB_VERSION='$(DEB_VERSION)' \
		$(TOOLS)/nfpm package --config contrib/nfpm.yaml --packager deb \
		--target $(DIST)/b9-resolver_$(DEB_VERSION)_$(GOARCH).deb
	./hack/check-deb.sh $(DIST)/b9-resolver_$(DEB_VERSION)_$(GOARCH).deb
