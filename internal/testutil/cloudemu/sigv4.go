package cloudemu

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

// sigv4Auth is the parsed Authorization header of a SigV4 request.
type sigv4Auth struct {
	AccessKeyID   string
	Date          string
	Region        string
	Service       string
	SignedHeaders []string
	Signature     string
}

var errNoSigV4 = errors.New("missing or malformed AWS4-HMAC-SHA256 Authorization header")

// parseSigV4 reads "AWS4-HMAC-SHA256 Credential=AKID/20260101/us-east-1/ecr/aws4_request,
// SignedHeaders=a;b, Signature=hex".
func parseSigV4(h string) (sigv4Auth, error) {
	rest, ok := strings.CutPrefix(h, "AWS4-HMAC-SHA256 ")
	if !ok {
		return sigv4Auth{}, errNoSigV4
	}
	var a sigv4Auth
	for _, part := range strings.Split(rest, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return sigv4Auth{}, errNoSigV4
		}
		switch k {
		case "Credential":
			f := strings.Split(v, "/")
			if len(f) != 5 || f[4] != "aws4_request" {
				return sigv4Auth{}, errNoSigV4
			}
			a.AccessKeyID, a.Date, a.Region, a.Service = f[0], f[1], f[2], f[3]
		case "SignedHeaders":
			a.SignedHeaders = strings.Split(v, ";")
		case "Signature":
			a.Signature = v
		}
	}
	if a.AccessKeyID == "" || a.Signature == "" || len(a.SignedHeaders) == 0 {
		return sigv4Auth{}, errNoSigV4
	}
	return a, nil
}

// verifySigV4 recomputes the request's signature with secret. It follows
// the SigV4 spec, not the SDK's signer, so a signer bug would show.
func verifySigV4(r *http.Request, body []byte, a sigv4Auth, secret string, now time.Time) error {
	amzDate := r.Header.Get("X-Amz-Date")
	t, err := time.Parse("20060102T150405Z", amzDate)
	if err != nil || !strings.HasPrefix(amzDate, a.Date) {
		return errors.New("bad X-Amz-Date")
	}
	if d := now.Sub(t); d > 15*time.Minute || d < -15*time.Minute {
		return errors.New("signature expired")
	}
	signedHost := false
	var ch strings.Builder
	for _, h := range a.SignedHeaders {
		var v string
		switch h {
		case "host":
			v, signedHost = r.Host, true
		case "content-length":
			v = strconv.FormatInt(r.ContentLength, 10)
		default:
			vals := append([]string(nil), r.Header.Values(h)...)
			for i := range vals {
				vals[i] = strings.Join(strings.Fields(vals[i]), " ")
			}
			v = strings.Join(vals, ",")
		}
		ch.WriteString(h + ":" + v + "\n")
	}
	if !signedHost {
		return errors.New("host is not signed")
	}
	payload := r.Header.Get("X-Amz-Content-Sha256")
	if payload == "" || payload == "UNSIGNED-PAYLOAD" {
		sum := sha256.Sum256(body)
		payload = hex.EncodeToString(sum[:])
	}
	path := r.URL.EscapedPath()
	if path == "" {
		path = "/"
	}
	canonical := strings.Join([]string{
		r.Method, path, canonicalQuery(r.URL.Query()), ch.String(),
		strings.Join(a.SignedHeaders, ";"), payload,
	}, "\n")
	scope := strings.Join([]string{a.Date, a.Region, a.Service, "aws4_request"}, "/")
	sum := sha256.Sum256([]byte(canonical))
	toSign := "AWS4-HMAC-SHA256\n" + amzDate + "\n" + scope + "\n" + hex.EncodeToString(sum[:])
	key := []byte("AWS4" + secret)
	for _, p := range []string{a.Date, a.Region, a.Service, "aws4_request"} {
		key = hmacSHA256(key, p)
	}
	want := hex.EncodeToString(hmacSHA256(key, toSign))
	if !hmac.Equal([]byte(want), []byte(a.Signature)) {
		return errors.New("signature does not match")
	}
	return nil
}

func hmacSHA256(key []byte, s string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(s))
	return m.Sum(nil)
}

func canonicalQuery(q url.Values) string {
	keys := make([]string, 0, len(q))
	for k := range q {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		vals := append([]string(nil), q[k]...)
		sort.Strings(vals)
		for _, v := range vals {
			parts = append(parts, awsEscape(k)+"="+awsEscape(v))
		}
	}
	return strings.Join(parts, "&")
}

func awsEscape(s string) string {
	return strings.ReplaceAll(url.QueryEscape(s), "+", "%20")
}
