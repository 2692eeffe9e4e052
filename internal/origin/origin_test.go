package origin

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

func TestOf(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		same bool
	}{
		{"https://example.com/v2/", "https://example.com:443/blobs", true},
		{"https://example.com/", "https://EXAMPLE.COM/", true},
		{"https://example.com/", "HTTPS://Example.Com.:443/", true},
		{"http://example.com/", "http://example.com:80/", true},
		{"https://[::1]:5000/", "https://[::1]:5000/x", true},
		{"https://example.com/", "http://example.com/", false},
		{"https://example.com:443/", "http://example.com:443/", false},
		{"https://example.com/", "https://example.com:8443/", false},
		{"https://example.com/", "https://blobs.example.com/", false},
		{"https://example.com/", "https://example.com.evil.test/", false},
		{"http://127.0.0.1:5000/", "http://localhost:5000/", false},
	} {
		a, _ := url.Parse(tc.a)
		b, _ := url.Parse(tc.b)
		if got := Same(a, b); got != tc.same {
			t.Errorf("Same(%s, %s) = %v, want %v (%s vs %s)", tc.a, tc.b, got, tc.same, Of(a), Of(b))
		}
	}
	if got := OfHost("HTTPS", "Registry.Example").String(); got != "https://registry.example:443" {
		t.Errorf("OfHost: %s", got)
	}
}

// A redirect to the same host name on another port keeps Go's copied
// Authorization header without Transport (the control), and loses it with
// Transport; a same-origin redirect keeps it.
func TestTransportDropsCredentialsOffOrigin(t *testing.T) {
	var got []string
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = append(got, r.URL.Path+" "+r.Header.Get("Authorization"))
	}))
	defer target.Close()
	var self string
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/away":
			http.Redirect(w, r, target.URL+"/landed", http.StatusTemporaryRedirect)
		case "/home":
			// Same origin, spelt with upper case: keeps the header.
			http.Redirect(w, r, strings.ToUpper(self[:4])+self[4:]+"/here", http.StatusFound)
		default:
			got = append(got, r.URL.Path+" "+r.Header.Get("Authorization"))
		}
	}))
	defer origin.Close()
	self = origin.URL

	do := func(c *http.Client, path string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, origin.URL+path, nil)
		req.Header.Set("Authorization", "Basic c2VjcmV0")
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	do(&http.Client{}, "/away")
	if len(got) != 1 || got[0] != "/landed Basic c2VjcmV0" {
		t.Fatalf("control: Go did not copy the header to another port (%q); the test proves nothing", got)
	}
	got = nil
	do(&http.Client{Transport: Transport(nil)}, "/away")
	do(&http.Client{Transport: Transport(nil)}, "/home")
	if len(got) != 2 || got[0] != "/landed " || got[1] != "/here Basic c2VjcmV0" {
		t.Fatalf("with Transport: %q, want the header dropped off origin and kept on it", got)
	}
	got = nil
	do(&http.Client{CheckRedirect: CheckRedirect}, "/away")
	if len(got) != 1 || got[0] != "/landed " {
		t.Fatalf("with CheckRedirect: %q, want the header dropped", got)
	}
}
