package integration

import (
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/beam-cloud/b9-resolver/internal/testutil/registrytest"
)

// freeAddr is a loopback TCP address nothing listens on (yet).
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// scrape reads /v1/metrics at addr and returns the raw text and the
// parsed families.
func scrape(t *testing.T, addr string) (string, map[string]*dto.MetricFamily) {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/v1/metrics")
	if err != nil {
		t.Fatalf("scrape %s: %v", addr, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("scrape %s: %v", addr, err)
	}
	return string(body), fams
}

// value is the counter (or histogram count) of family name whose labels
// include want; 0 when there is none.
func value(fams map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	f := fams[name]
	if f == nil {
		return 0
	}
	var sum float64
next:
	for _, m := range f.GetMetric() {
		got := map[string]string{}
		for _, l := range m.GetLabel() {
			got[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if got[k] != v {
				continue next
			}
		}
		switch {
		case m.GetCounter() != nil:
			sum += m.GetCounter().GetValue()
		case m.GetHistogram() != nil:
			sum += float64(m.GetHistogram().GetSampleCount())
		}
	}
	return sum
}

// TestMetrics: in plugin mode the b9 metrics are on containerd's own
// [metrics] address, standalone on --metrics-address; they count pulls by
// mode, kind and code, mints and cache lookups, token fetches and socket
// calls — and hold no secret and no username.
func TestMetrics(t *testing.T) {
	binaries(t)
	passA, admin := canary("alice"), canary("admin")
	reg := registrytest.Start(t, registrytest.WithTokenAuth(),
		registrytest.WithUser("alice", passA, "metrics/app"), registrytest.WithUser("admin", admin, "*"))
	cdMetrics, standMetrics := freeAddr(t), freeAddr(t)
	n := newNode(t, nodeConfig{extra: fmt.Sprintf("[metrics]\n  address = '%s'\n", cdMetrics)})
	n.startStandalone("forward", "--metrics-address", standMetrics)
	img := reg.PushRandomImage(t, "metrics/app", "v1", "admin", admin)
	alice := map[string]string{annKey: basicDoc(reg.Host, "alice", passA)}

	mustSucceed(t, n.pull(n.b9, img.Ref, alice), "direct pull")
	mustSucceed(t, n.pull(n.b9, img.Ref, alice), "direct re-pull")
	wantCode(t, n.pull(n.b9, img.Ref, nil), "direct pull without a credential", "Unauthenticated")
	mustSucceed(t, n.pull(n.standAddr, img.Ref, alice), "forward pull")

	body, fams := scrape(t, cdMetrics)
	for _, c := range []struct {
		name    string
		labels  map[string]string
		want    float64
		atLeast bool // the count depends on caching, not on this test
	}{
		{"b9_resolver_image_pulls_total", map[string]string{"mode": "direct", "kind": "generic", "code": "OK"}, 2, false},
		{"b9_resolver_image_pulls_total", map[string]string{"mode": "direct", "kind": "generic", "code": "Unauthenticated"}, 1, false},
		{"b9_resolver_image_pull_seconds", map[string]string{"mode": "direct"}, 3, false},
		{"b9_resolver_credential_mints_total", map[string]string{"type": "basic", "outcome": "ok"}, 1, true},
		{"b9_resolver_credential_cache_lookups_total", map[string]string{"result": "miss"}, 1, true},
		{"b9_resolver_credential_cache_lookups_total", map[string]string{"result": "hit"}, 1, true},
		{"b9_resolver_registry_token_fetches_total", map[string]string{"outcome": "ok"}, 1, true},
		{"b9_resolver_grpc_calls_total", map[string]string{"method": "/runtime.v1.ImageService/PullImage", "code": "OK"}, 2, false},
		{"b9_resolver_grpc_calls_total", map[string]string{"method": "/runtime.v1.ImageService/PullImage", "code": "Unauthenticated"}, 1, false},
	} {
		if got := value(fams, c.name, c.labels); got != c.want && !(c.atLeast && got > c.want) {
			t.Errorf("containerd's /v1/metrics: %s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	// Pulls run for minutes: the histogram must see them.
	if top := maxBucket(fams["b9_resolver_image_pull_seconds"]); top < 600 {
		t.Errorf("pull duration buckets end at %vs; pulls of minutes would all be +Inf", top)
	}
	if value(fams, "b9_resolver_image_pulls_total", map[string]string{"mode": "forward"}) != 0 {
		t.Error("the standalone daemon's forward pull shows in containerd's metrics")
	}

	standBody, standFams := scrape(t, standMetrics)
	if got := value(standFams, "b9_resolver_image_pulls_total", map[string]string{"mode": "forward", "code": "OK"}); got != 1 {
		t.Errorf("standalone --metrics-address: forward pulls = %v, want 1", got)
	}
	for _, text := range []string{body, standBody} {
		for _, leak := range []string{passA, admin, "alice", img.Ref} {
			if strings.Contains(text, leak) {
				t.Errorf("metrics contain %q", leak)
			}
		}
	}
}

// maxBucket is the largest finite upper bound of a histogram family.
func maxBucket(f *dto.MetricFamily) float64 {
	var top float64
	for _, m := range f.GetMetric() {
		for _, b := range m.GetHistogram().GetBucket() {
			if ub := b.GetUpperBound(); ub > top && !math.IsInf(ub, 1) {
				top = ub
			}
		}
	}
	return top
}
