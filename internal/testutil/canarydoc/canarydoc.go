// Package canarydoc plants canaries in every value position of every
// credential document — each key of each type, the envelope's fields,
// every form (envelope, array, flat map, user:pass), a service-account
// key's own fields, values of the wrong JSON type, malformed and oversized
// documents — and finds a canary in text in every encoding a leak could
// take (raw, any case, URL-encoded, JSON-escaped, base64 at any
// alignment). Tests feed the cases through the parser, the keychain with
// every provider against the loopback cloud emulators, and the CRI
// service, and search every error for the canaries.
package canarydoc

import (
	"encoding/base64"
	"encoding/json"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/beam-cloud/b9-resolver/internal/keychain"
	"github.com/beam-cloud/b9-resolver/internal/keychain/aws"
	"github.com/beam-cloud/b9-resolver/internal/keychain/azure"
	"github.com/beam-cloud/b9-resolver/internal/keychain/document"
	"github.com/beam-cloud/b9-resolver/internal/keychain/gcp"
	"github.com/beam-cloud/b9-resolver/internal/keychain/registry"
	"github.com/beam-cloud/b9-resolver/internal/testutil/cloudemu"
)

// Canary is lower-case letters and digits only, so it survives the
// lower-casing of hosts and passes the syntax checks of hosts, regions and
// tenants: planted there, it reaches the code past them.
const Canary = "q7canaryz9"

// RichCanary holds characters each encoding changes (URL, JSON, base64),
// so a leak in encoded form is told apart from none.
const RichCanary = `q8rich/+=&<"z8`

// canaries are searched for in every text.
var canaries = []string{Canary, RichCanary}

// Annotation is the credential annotation the cases use, and Named a
// sibling with a name.
const (
	Annotation = document.DefaultAnnotationPrefix + document.AnnotationName
	Named      = Annotation + ".tenant"
)

// Env is the cloud emulators and the hosts of each kind the cases pull.
type Env struct {
	AWS   *cloudemu.AWS
	GCP   *cloudemu.GCP
	Azure *cloudemu.Azure
	// Hosts per document type: the registry the type's documents are
	// pulled for (the Azure host is the emulator, a mapped ACR).
	Hosts map[document.Type]string
	// Mappings make the Azure emulator's host an ACR.
	Mappings []registry.Mapping
	// KeychainOptions give the keychain the aws, gcp and azure providers,
	// each sent to its emulator and blind to the process environment.
	KeychainOptions []keychain.Option
	// gcpKey is a valid service-account key (token_uri the emulator), the
	// base the key cases plant canaries in.
	gcpKey map[string]string
}

// Start starts the emulators; tb's cleanup stops them.
func Start(tb testing.TB) *Env {
	tb.Helper()
	e := &Env{AWS: cloudemu.NewAWS(tb), GCP: cloudemu.NewGCP(tb), Azure: cloudemu.NewAzure(tb)}
	e.AWS.AddUser(benignAKID, benignSecret)
	e.Azure.AddServicePrincipal(benignTenant, benignClient, benignSecret)
	if err := json.Unmarshal(e.GCP.NewServiceAccountKey(tb, "puller@emulated.iam.gserviceaccount.com"), &e.gcpKey); err != nil {
		tb.Fatal(err)
	}
	e.Hosts = map[document.Type]string{
		document.TypeAWS:    "123456789012.dkr.ecr.us-west-2.amazonaws.com",
		document.TypeGCP:    "us-docker.pkg.dev",
		document.TypeAzure:  e.Azure.Host,
		document.TypeBasic:  "registry.example.com:5000",
		document.TypeToken:  "nvcr.io",
		document.TypePublic: "ghcr.io",
	}
	e.Mappings = []registry.Mapping{{Host: e.Azure.Host, Kind: registry.KindACR, Account: "emulated", Partition: "azure"}}
	noEnv := func(string) string { return "" }
	fast := keychain.RetryPolicy{Attempts: 2, Base: time.Millisecond, Max: 2 * time.Millisecond}
	e.KeychainOptions = []keychain.Option{
		keychain.WithProvider(must(aws.New(aws.WithEndpoints(aws.Endpoints{ECR: e.AWS.URL, ECRPublic: e.AWS.URL, STS: e.AWS.URL}),
			aws.WithGetenv(noEnv), aws.WithRetry(fast)))),
		keychain.WithProvider(must(gcp.New(gcp.WithTokenURICheck(gcp.LoopbackOrGoogleTokenURI), gcp.WithRetry(fast)))),
		keychain.WithProvider(must(azure.New(azure.WithHTTPClient(e.Azure.Client()), azure.WithAuthorityHost(e.Azure.URL),
			azure.WithGetenv(noEnv), azure.WithRetry(fast)))),
	}
	return e
}

// Values that carry no canary, to fill the keys a case does not plant in.
const (
	benignAKID   = "AKIABENIGN0000000001"
	benignSecret = "benign-secret-value"
	benignTenant = "benign-tenant"
	benignClient = "benign-client"
)

// baseKeys are a working document of each type.
func baseKeys(t document.Type) map[string]string {
	switch t {
	case document.TypeBasic:
		return map[string]string{document.KeyUsername: "robot", document.KeyPassword: benignSecret}
	case document.TypeAWS:
		return map[string]string{document.KeyAWSAccessKeyID: benignAKID, document.KeyAWSSecretKey: benignSecret}
	case document.TypeGCP:
		return map[string]string{document.KeyGCPAccessToken: "ya29.benign"}
	case document.TypeAzure:
		return map[string]string{document.KeyAzureClientID: benignClient, document.KeyAzureClientSecret: benignSecret,
			document.KeyAzureTenantID: benignTenant}
	case document.TypeToken:
		return map[string]string{document.KeyNGCAPIKey: benignSecret}
	}
	return map[string]string{}
}

// plantings are the values a key is given: the canary alone, as a
// fragment of a longer value (a message that quotes part of a value must
// be caught too), with each canary, and forms that pass a key's syntax
// checks so the value travels further.
func plantings(key string) []string {
	out := []string{Canary, "x-" + Canary + "-y", RichCanary, "  " + Canary + "\n"}
	switch key {
	case document.KeyAWSRoleARN:
		out = append(out, "arn:aws:iam::123456789012:role/"+Canary, "arn:"+RichCanary)
	case document.KeyAWSRegion:
		out = append(out, "us-"+Canary+"-1")
	case document.KeyAzureTenantID:
		out = append(out, Canary+".onmicrosoft.com")
	case document.KeyGoogleAppCreds:
		out = append(out, "/var/keys/"+Canary+".json", base64.StdEncoding.EncodeToString([]byte(`{"type":"`+Canary+`"}`)),
			`{"type":"sa-`+Canary+`"}`, `{"type":"service_account"`+Canary)
	}
	return out
}

// Case is one pull's worth of planted annotations.
type Case struct {
	Name string
	// Host is the registry the image is pulled from.
	Host        string
	Annotations map[string]string
}

// Cases lists every planting. Each document is also pulled for a host of
// another kind, which some types refuse by name.
func (e *Env) Cases() []Case {
	var out []Case
	add := func(name string, typ document.Type, text string) {
		for _, host := range []string{e.Hosts[typ], e.Hosts[document.TypeBasic]} {
			out = append(out, Case{Name: name + " @" + host, Host: host, Annotations: map[string]string{Annotation: text}})
		}
	}
	envelope := func(v map[string]any) string {
		b, _ := json.Marshal(v)
		return string(b)
	}
	with := func(t document.Type, key, value string) map[string]string {
		keys := baseKeys(t)
		keys[key] = value
		return keys
	}

	// Every key of the vocabulary, planted in a document of every type
	// (its own or not), typed and detected, as envelope and flat map.
	for _, t := range document.Types {
		for _, key := range document.AllKeys() {
			for i, v := range plantings(key) {
				keys := with(t, key, v)
				name := string(t) + "/" + key + "#" + string(rune('a'+i))
				add(name+" envelope", t, envelope(map[string]any{"type": t, "credentials": keys}))
				add(name+" detected", t, envelope(map[string]any{"credentials": keys}))
				flat := map[string]any{}
				for k, v := range keys {
					flat[k] = v
				}
				add(name+" flat", t, envelope(flat))
			}
		}
	}
	// A service-account key's own fields, inline and as base64.
	for field := range e.gcpKey {
		for i, v := range []string{Canary, "sa-" + Canary, RichCanary} {
			k := map[string]string{}
			for f, fv := range e.gcpKey {
				k[f] = fv
			}
			k[field] = v
			kj, _ := json.Marshal(k)
			name := "gcp key " + field + "#" + string(rune('a'+i))
			add(name, document.TypeGCP, envelope(map[string]any{"type": "gcp", "credentials": map[string]string{document.KeyGoogleAppCreds: string(kj)}}))
			add(name+" base64", document.TypeGCP, envelope(map[string]any{"type": "gcp", "credentials": map[string]string{
				document.KeyGoogleAppCreds: base64.StdEncoding.EncodeToString(kj)}}))
		}
	}
	// The envelope's own fields and values of the wrong JSON type.
	for _, v := range []string{Canary, RichCanary, "https://" + Canary + ":99999/x", Canary + "/path", "x-" + Canary + "-y"} {
		add("envelope registry "+v, document.TypeBasic, envelope(map[string]any{"registry": v, "credentials": baseKeys(document.TypeBasic)}))
		add("envelope type "+v, document.TypeBasic, envelope(map[string]any{"type": v, "credentials": baseKeys(document.TypeBasic)}))
		add("envelope credentials string "+v, document.TypeBasic, envelope(map[string]any{"type": "basic", "credentials": v}))
		add("envelope extra field "+v, document.TypeBasic, envelope(map[string]any{"type": "basic", "credentials": baseKeys(document.TypeBasic), "extra": v}))
		add("value array "+v, document.TypeBasic, envelope(map[string]any{"type": "basic", "credentials": map[string]any{"USERNAME": []string{v}, "PASSWORD": "p"}}))
		add("value object "+v, document.TypeBasic, envelope(map[string]any{"type": "basic", "credentials": map[string]any{"USERNAME": "u", "PASSWORD": map[string]string{"k": v}}}))
		add("registry array "+v, document.TypeBasic, envelope(map[string]any{"registry": []string{v}, "credentials": baseKeys(document.TypeBasic)}))
		add("array second "+v, document.TypeBasic, `[`+envelope(map[string]any{"registry": "other.example.com", "credentials": baseKeys(document.TypeBasic)})+`,`+
			envelope(map[string]any{"type": v})+`]`)
		add("array element "+v, document.TypeBasic, `[`+envelope(map[string]any{"credentials": baseKeys(document.TypeBasic)})+`,`+mustJSON(v)+`]`)
		add("oversized "+v[:4], document.TypeBasic, envelope(map[string]any{"type": "basic", "credentials": map[string]string{
			"USERNAME": "u", "PASSWORD": strings.Repeat(v, document.MaxValueBytes/len(v)+1)}}))
	}
	// user:pass and text that is not a document.
	for _, text := range []string{
		Canary + ":pw", "robot:" + Canary, "robot:" + RichCanary, Canary, RichCanary, ":" + Canary, Canary + ":",
		"robot\n" + Canary + ":pw", "robot" + Canary + "\xff:pw",
		`{"PASSWORD":"` + Canary, `{"PASSWORD":"` + Canary + `",}`, `{"PASSWORD":` + Canary + `}`, `[` + Canary + `]`,
		`{"USERNAME":"u","PASSWORD":"` + Canary + `"} trailing`, `{"type":"basic","credentials":{"PASSWORD":"` + Canary + `"}`,
		`{"credentials":{"USERNAME":"u","PASSWORD":"p"},"registry":` + Canary + `}`,
	} {
		add("text "+text, document.TypeBasic, text)
	}
	// The same planted values under a named annotation, and a pod with
	// both.
	n := len(out)
	for _, c := range out[:n:n] {
		if strings.HasPrefix(c.Name, "text ") || strings.HasPrefix(c.Name, "basic/") {
			out = append(out, Case{Name: "named " + c.Name, Host: c.Host, Annotations: map[string]string{
				Named: c.Annotations[Annotation], Annotation: mustJSON(map[string]any{"registry": "other.example.com", "credentials": baseKeys(document.TypeBasic)})}})
		}
	}
	return out
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// Find returns where a canary shows in s — "raw", "case-folded",
// "url-query", "url-path", "json", "base64..." — or "" when none does.
func Find(s string) string {
	lower := strings.ToLower(s)
	for _, c := range canaries {
		forms := map[string]string{"raw": c, "url-query": url.QueryEscape(c), "url-path": url.PathEscape(c), "json": jsonEscaped(c)}
		for name, f := range forms {
			if strings.Contains(s, f) {
				return name + " " + c
			}
		}
		if strings.Contains(lower, strings.ToLower(c)) {
			return "case-folded " + c
		}
		for name, enc := range map[string]*base64.Encoding{"base64": base64.StdEncoding, "base64url": base64.URLEncoding} {
			for _, p := range base64Patterns(enc, c) {
				if strings.Contains(s, p) {
					return name + " " + c
				}
			}
		}
	}
	return ""
}

func jsonEscaped(s string) string {
	b, _ := json.Marshal(s)
	return strings.Trim(string(b), `"`)
}

// base64Patterns are the runs of base64 that encode c whatever the number
// of bytes before it: for each offset, the full 4-character groups made
// of c's bytes alone.
func base64Patterns(enc *base64.Encoding, c string) []string {
	var out []string
	for k := range 3 {
		b := enc.EncodeToString(append(make([]byte, k), c...))
		start := 0
		if k > 0 {
			start = 4
		}
		end := 4 * ((k + len(c)) / 3)
		if end-start >= 8 {
			out = append(out, b[start:end])
		}
	}
	return out
}

// must panics on a provider the fixed, valid options above cannot fail to
// build.
func must(p keychain.Provider, err error) keychain.Provider {
	if err != nil {
		panic(err)
	}
	return p
}
