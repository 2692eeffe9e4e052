package registrytest

import (
	"net/http"
	"strings"
	"sync"
)

// Server names which of a Registry's listeners a request reached.
type Server string

const (
	ServerRegistry Server = "registry"
	ServerToken    Server = "token"
	ServerBlob     Server = "blob"
)

// Request is one recorded request. It keeps no header values and no body:
// only whether an Authorization header was present and its scheme.
type Request struct {
	Server Server
	// Host is the request's Host header (what the client dialled by name).
	Host   string
	Method string
	Path   string
	// Query is the raw query of token requests (service, scope, account);
	// empty for other servers.
	Query  string
	Status int
	// Auth is the Authorization scheme sent ("Basic", "Bearer"), "" if none.
	Auth string
	// GrantType is the OAuth2 grant_type of a POST /token.
	GrantType string
}

// HadAuth reports whether the request carried an Authorization header.
func (r Request) HadAuth() bool { return r.Auth != "" }

// IsManifest reports whether r is a request for a manifest.
func (r Request) IsManifest() bool { return strings.Contains(r.Path, "/manifests/") }

// IsBlob reports whether r is a blob request on the registry.
func (r Request) IsBlob() bool { return strings.Contains(r.Path, "/blobs/") }

type recorder struct {
	mu   sync.Mutex
	reqs []Request
	logf func(string, ...any)
}

func (rec *recorder) add(r Request) {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	rec.reqs = append(rec.reqs, r)
	if rec.logf != nil {
		// Under the lock: the caller's logf need not be concurrency-safe.
		rec.logf("registrytest: %s %s %s%s -> %d (auth=%q)", r.Server, r.Method, r.Host, r.Path, r.Status, r.Auth)
	}
}

// wrap records every request h serves as server.
func (rec *recorder) wrap(server Server, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		entry := Request{Server: server, Host: r.Host, Method: r.Method, Path: r.URL.Path, Auth: authScheme(r)}
		if server == ServerToken {
			entry.Query = r.URL.RawQuery
			if r.Method == http.MethodPost {
				// Parse here, before the handler reads the body; the form
				// stays available to it through r.PostForm.
				_ = r.ParseForm()
				entry.GrantType = r.PostForm.Get("grant_type")
			}
		}
		h.ServeHTTP(sw, r)
		entry.Status = sw.status
		rec.add(entry)
	})
}

func authScheme(r *http.Request) string {
	v := r.Header.Get("Authorization")
	if v == "" {
		return ""
	}
	scheme, _, _ := strings.Cut(v, " ")
	return scheme
}

type statusWriter struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wrote {
		w.status, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	w.wrote = true
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Requests returns a copy of every request recorded since Start or Reset.
func (r *Registry) Requests() []Request {
	r.rec.mu.Lock()
	defer r.rec.mu.Unlock()
	return append([]Request(nil), r.rec.reqs...)
}

// Reset forgets the recorded requests.
func (r *Registry) Reset() {
	r.rec.mu.Lock()
	r.rec.reqs = nil
	r.rec.mu.Unlock()
}

// Count is the number of recorded requests match accepts (all if nil).
func (r *Registry) Count(match func(Request) bool) int {
	n := 0
	for _, q := range r.Requests() {
		if match == nil || match(q) {
			n++
		}
	}
	return n
}

// TokenFetches is the number of requests to the token endpoint (GET or POST,
// whatever their status).
func (r *Registry) TokenFetches() int {
	return r.Count(func(q Request) bool { return q.Server == ServerToken })
}

// Unauthorized is the number of 401 answers from the registry.
func (r *Registry) Unauthorized() int {
	return r.Count(func(q Request) bool { return q.Server == ServerRegistry && q.Status == http.StatusUnauthorized })
}

// Summary renders the recorded requests one per line, for failure messages.
func (r *Registry) Summary() string {
	var b strings.Builder
	for _, q := range r.Requests() {
		b.WriteString(string(q.Server))
		b.WriteByte(' ')
		b.WriteString(q.Method)
		b.WriteByte(' ')
		b.WriteString(q.Host)
		b.WriteString(q.Path)
		if q.GrantType != "" {
			b.WriteString(" grant_type=" + q.GrantType)
		}
		b.WriteString(" -> ")
		b.WriteString(http.StatusText(q.Status))
		if q.Auth != "" {
			b.WriteString(" [" + q.Auth + "]")
		}
		b.WriteByte('\n')
	}
	return b.String()
}
