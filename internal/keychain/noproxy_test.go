package keychain

import (
	"net/http"
	"testing"
	"time"
)

// The node's proxy never carries a metadata request, and the caller's
// client keeps its own.
func TestWithoutProxy(t *testing.T) {
	base := &http.Client{Timeout: 7 * time.Second, Transport: &http.Transport{Proxy: http.ProxyFromEnvironment, MaxIdleConns: 3}}
	for name, c := range map[string]*http.Client{"custom transport": base, "default transport": {}} {
		got := WithoutProxy(c)
		tr, ok := got.Transport.(*http.Transport)
		if !ok || tr.Proxy != nil {
			t.Errorf("%s: transport %T with a proxy func; want none", name, got.Transport)
		}
		if got.Timeout != c.Timeout {
			t.Errorf("%s: timeout %v, want %v", name, got.Timeout, c.Timeout)
		}
	}
	if tr := WithoutProxy(base).Transport.(*http.Transport); tr.MaxIdleConns != 3 {
		t.Errorf("transport settings lost: MaxIdleConns %d", tr.MaxIdleConns)
	}
	if base.Transport.(*http.Transport).Proxy == nil {
		t.Error("the caller's client lost its proxy")
	}
}
