// Package metrics counts what b9-resolver does, the way containerd counts
// its own: docker/go-metrics namespaces registered with Prometheus's
// default registry, so in plugin mode they are served on containerd's
// [metrics] address (/v1/metrics) and standalone on --metrics-address.
// Label values are modes, registry kinds, credential types, outcome
// classes and gRPC methods and codes — bounded sets that never carry a
// host, a username, a reference or a secret.
package metrics

import (
	"net/http"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	goMetrics "github.com/docker/go-metrics"
	"google.golang.org/grpc/status"
)

var (
	ns = goMetrics.NewNamespace("b9_resolver", "", nil)

	pulls = ns.NewLabeledCounter("image_pulls",
		"PullImage calls by pull mode, registry kind and gRPC code", "mode", "kind", "code")
	// Pulls take from a manifest round trip to many minutes.
	pullTime = ns.NewLabeledTimerWithBuckets("image_pull",
		"PullImage duration, by pull mode",
		[]float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800}, "mode")
	mints = ns.NewLabeledCounter("credential_mints",
		"credential mints (first and background refresh) by document type and outcome", "type", "outcome")
	// Mints run from microseconds (basic) to the mint timeout (30 s).
	mintTime = ns.NewLabeledTimerWithBuckets("credential_mint",
		"credential mint duration (a cloud token call, a file read), by document type",
		[]float64{0.0001, 0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}, "type")
	lookups = ns.NewLabeledCounter("credential_cache_lookups",
		"keychain lookups: hit (a cached credential served) or miss (minted)", "result")
	tokenFetches = ns.NewLabeledCounter("registry_token_fetches",
		"bearer token fetches from registry token endpoints, by outcome", "outcome")
	ensureDecisions = ns.NewLabeledCounter("ensure_decisions",
		"ensure_secret_pulled_images: ImageStatus answers (shown_open, shown_allowlisted, shown_preloaded, shown_credential, hidden) and pulls the registry could not check (outage_accepted, outage_refused)", "decision")
	calls = ns.NewLabeledCounter("grpc_calls",
		"calls on the b9 sockets (CRI image service, Credentials service) by method and gRPC code", "method", "code")
)

// The lookup counters are resolved once: a cache hit is a ~140 ns path.
var cacheHits, cacheMisses = lookups.WithValues("hit"), lookups.WithValues("miss")

func init() { goMetrics.Register(ns) }

// Handler serves every registered metric, as containerd's /v1/metrics.
func Handler() http.Handler { return goMetrics.Handler() }

// Pull counts one PullImage.
func Pull(mode, kind string, err error, took time.Duration) {
	pulls.WithValues(mode, kind, status.Code(errgrpc.ToGRPC(err)).String()).Inc()
	pullTime.WithValues(mode).Update(took)
}

// Mint counts one credential mint of a document type.
func Mint(typ string, err error, took time.Duration) {
	mints.WithValues(typ, Outcome(err)).Inc()
	mintTime.WithValues(typ).Update(took)
}

// CacheLookup counts one keychain lookup.
func CacheLookup(hit bool) {
	if hit {
		cacheHits.Inc()
		return
	}
	cacheMisses.Inc()
}

// TokenFetch counts one bearer-token fetch.
func TokenFetch(err error) { tokenFetches.WithValues(Outcome(err)).Inc() }

// EnsureDecision counts one ensure_secret_pulled_images decision; d is
// one of the bounded set in the metric's help.
func EnsureDecision(d string) { ensureDecisions.WithValues(d).Inc() }

// Call counts one gRPC call on a b9 socket; method is the full method name.
func Call(method string, err error) {
	calls.WithValues(method, status.Code(err).String()).Inc()
}

// Outcome names err's errdefs class: "ok", "unauthenticated",
// "permission_denied", "unavailable", "invalid_argument", "not_found",
// "deadline_exceeded", "canceled" or "error".
func Outcome(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errdefs.IsUnauthorized(err):
		return "unauthenticated"
	case errdefs.IsPermissionDenied(err):
		return "permission_denied"
	case errdefs.IsUnavailable(err):
		return "unavailable"
	case errdefs.IsInvalidArgument(err):
		return "invalid_argument"
	case errdefs.IsNotFound(err):
		return "not_found"
	case errdefs.IsDeadlineExceeded(err):
		return "deadline_exceeded"
	case errdefs.IsCanceled(err):
		return "canceled"
	}
	return "error"
}
