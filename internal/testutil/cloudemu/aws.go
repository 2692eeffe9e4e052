package cloudemu

import (
	"encoding/base64"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// API names the AWS emulator counts calls under.
const (
	APIECRGetAuthorizationToken       = "ecr:GetAuthorizationToken"
	APIECRPublicGetAuthorizationToken = "ecr-public:GetAuthorizationToken"
	APISTSAssumeRole                  = "sts:AssumeRole"
)

// DefaultAWSAccount is the account of users added without one.
const DefaultAWSAccount = "123456789012"

const (
	ecrTarget       = "AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken"
	ecrPublicTarget = "SpencerFrontendService.GetAuthorizationToken"
	amzJSON         = "application/x-amz-json-1.1"
)

// AWSRequest is what the emulator saw of one authenticated call.
type AWSRequest struct {
	API string
	// AccessKeyID, Region and Service are from the SigV4 credential scope.
	AccessKeyID, Region, Service string
	// Host is the Host header the SDK signed.
	Host         string
	SessionToken bool
	// RoleARN is the role asked for (AssumeRole).
	RoleARN string
	// RegistryIDs is GetAuthorizationToken's registryIds.
	RegistryIDs []string
}

type awsUser struct {
	secret  string
	session string
	expires time.Time // zero for long-term keys
	account string
}

// AWS emulates ECR, ECR Public and STS on one loopback listener: point
// AWS_ENDPOINT_URL (or the _ECR, _ECR_PUBLIC and _STS variants) at URL.
// Every request's SigV4 signature is checked against the registered keys.
type AWS struct {
	*Control
	// URL is http://127.0.0.1:port.
	URL string

	srv         *httptest.Server
	mu          sync.Mutex
	users       map[string]awsUser
	roles       map[string]bool
	seen        []AWSRequest
	sessionLife time.Duration
}

// NewAWS starts the emulator; tb's cleanup stops it.
func NewAWS(tb testing.TB) *AWS {
	a := &AWS{Control: newControl(), users: map[string]awsUser{}, roles: map[string]bool{}, sessionLife: time.Hour}
	a.srv = httptest.NewServer(http.HandlerFunc(a.serve))
	a.URL = a.srv.URL
	tb.Cleanup(a.srv.Close)
	return a
}

// Close stops the listener, so calls fail as with an endpoint that is down.
func (a *AWS) Close() { a.srv.Close() }

// AddUser registers long-term keys of DefaultAWSAccount.
func (a *AWS) AddUser(accessKeyID, secret string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.users[accessKeyID] = awsUser{secret: secret, account: DefaultAWSAccount}
}

// AddSessionUser registers temporary keys that need session and stop
// working at expires.
func (a *AWS) AddSessionUser(accessKeyID, secret, session string, expires time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.users[accessKeyID] = awsUser{secret: secret, session: session, expires: expires, account: DefaultAWSAccount}
}

// AddRole lets any registered user assume arn.
func (a *AWS) AddRole(arn string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.roles[arn] = true
}

// SetSessionLifetime caps the life of AssumeRole sessions (default 1 h).
func (a *AWS) SetSessionLifetime(d time.Duration) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.sessionLife = d
}

// Requests lists the calls that passed authentication, oldest first.
func (a *AWS) Requests() []AWSRequest {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]AWSRequest(nil), a.seen...)
}

// awsProto writes errors in the protocol of the API called.
type awsProto struct {
	query bool // STS: awsQuery, XML errors
}

func (p awsProto) fail(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("X-Amzn-RequestId", randomString("", 8))
	if p.query {
		w.Header().Set("Content-Type", "text/xml")
		w.WriteHeader(status)
		typ := "Sender"
		if status >= 500 {
			typ = "Receiver"
		}
		fmt.Fprintf(w, `<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>%s</Type><Code>%s</Code><Message>%s</Message></Error><RequestId>%s</RequestId></ErrorResponse>`,
			typ, code, xmlEscape(msg), randomString("", 8))
		return
	}
	w.Header().Set("Content-Type", amzJSON)
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"__type": code, "message": msg})
}

func xmlEscape(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}

func (a *AWS) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil || r.Method != http.MethodPost {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	var api, service string
	var proto awsProto
	var form url.Values
	switch r.Header.Get("X-Amz-Target") {
	case ecrTarget:
		api, service = APIECRGetAuthorizationToken, "ecr"
	case ecrPublicTarget:
		api, service = APIECRPublicGetAuthorizationToken, "ecr-public"
	case "":
		proto.query = true
		form, err = url.ParseQuery(string(body))
		if err != nil || form.Get("Action") != "AssumeRole" {
			proto.fail(w, http.StatusBadRequest, "InvalidAction", "only AssumeRole is emulated")
			return
		}
		api, service = APISTSAssumeRole, "sts"
	default:
		proto.fail(w, http.StatusBadRequest, "UnknownOperationException", "unknown operation")
		return
	}

	fault, life := a.begin(r.Context(), api)
	switch fault {
	case Throttle:
		if proto.query {
			proto.fail(w, http.StatusBadRequest, "Throttling", "Rate exceeded")
		} else {
			proto.fail(w, http.StatusBadRequest, "ThrottlingException", "Rate exceeded")
		}
		return
	case Unavailable:
		proto.fail(w, http.StatusServiceUnavailable, "ServiceUnavailable", "Service is unavailable")
		return
	case NotFound:
		http.NotFound(w, r)
		return
	case BadRequest:
		proto.fail(w, http.StatusBadRequest, "ValidationException", "emulated bad request")
		return
	}

	req, user, ok := a.authenticate(w, r, body, proto, service)
	if !ok {
		return
	}
	if fault == Deny {
		code := "AccessDeniedException"
		status := http.StatusBadRequest
		if proto.query {
			code, status = "AccessDenied", http.StatusForbidden
		}
		proto.fail(w, status, code, fmt.Sprintf("User: arn:aws:iam::%s:user/emulated is not authorized to perform: %s", user.account, api))
		return
	}
	req.API = api

	switch api {
	case APISTSAssumeRole:
		a.assumeRole(w, form, req, proto)
	default:
		a.authorizationToken(w, r, body, req, user, life, api == APIECRPublicGetAuthorizationToken)
	}
}

// authenticate checks SigV4 and the session token against the registered
// users, answering as AWS does when they fail.
func (a *AWS) authenticate(w http.ResponseWriter, r *http.Request, body []byte, proto awsProto, service string) (AWSRequest, awsUser, bool) {
	invalidKey := func() {
		if proto.query {
			proto.fail(w, http.StatusForbidden, "InvalidClientTokenId", "The security token included in the request is invalid.")
		} else {
			proto.fail(w, http.StatusBadRequest, "UnrecognizedClientException", "The security token included in the request is invalid.")
		}
	}
	badSig := func(msg string) {
		if proto.query {
			proto.fail(w, http.StatusForbidden, "SignatureDoesNotMatch", msg)
		} else {
			proto.fail(w, http.StatusBadRequest, "InvalidSignatureException", msg)
		}
	}
	auth, err := parseSigV4(r.Header.Get("Authorization"))
	if err != nil {
		code := "MissingAuthenticationTokenException"
		if proto.query {
			code = "MissingAuthenticationToken"
		}
		proto.fail(w, http.StatusBadRequest, code, "Missing Authentication Token")
		return AWSRequest{}, awsUser{}, false
	}
	a.mu.Lock()
	user, known := a.users[auth.AccessKeyID]
	a.mu.Unlock()
	if !known {
		invalidKey()
		return AWSRequest{}, awsUser{}, false
	}
	if auth.Service != service {
		badSig(fmt.Sprintf("Credential should be scoped to correct service: '%s'.", service))
		return AWSRequest{}, awsUser{}, false
	}
	if service == "ecr-public" && auth.Region != "us-east-1" {
		badSig("Credential should be scoped to a valid region.")
		return AWSRequest{}, awsUser{}, false
	}
	if err := verifySigV4(r, body, auth, user.secret, time.Now()); err != nil {
		badSig("The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method.")
		return AWSRequest{}, awsUser{}, false
	}
	tok := r.Header.Get("X-Amz-Security-Token")
	if tok != user.session {
		invalidKey()
		return AWSRequest{}, awsUser{}, false
	}
	if !user.expires.IsZero() && !time.Now().Before(user.expires) {
		code := "ExpiredTokenException"
		if proto.query {
			code = "ExpiredToken"
		}
		proto.fail(w, http.StatusBadRequest, code, "The security token included in the request is expired")
		return AWSRequest{}, awsUser{}, false
	}
	return AWSRequest{AccessKeyID: auth.AccessKeyID, Region: auth.Region, Service: auth.Service, Host: r.Host, SessionToken: tok != ""}, user, true
}

func (a *AWS) record(req AWSRequest) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.seen = append(a.seen, req)
}

func (a *AWS) authorizationToken(w http.ResponseWriter, r *http.Request, body []byte, req AWSRequest, user awsUser, life time.Duration, public bool) {
	proto := awsProto{}
	if ct := r.Header.Get("Content-Type"); ct != amzJSON {
		proto.fail(w, http.StatusBadRequest, "SerializationException", "wrong content type")
		return
	}
	var in struct {
		RegistryIDs []string `json:"registryIds"`
	}
	if err := json.Unmarshal(body, &in); err != nil {
		proto.fail(w, http.StatusBadRequest, "SerializationException", "body is not a JSON object")
		return
	}
	req.RegistryIDs = in.RegistryIDs
	a.record(req)

	pw := randomString("ecrpw-", 24)
	// ECR sends epoch seconds, fractional; keep millisecond precision so
	// the client's idea of the expiry is exactly the emulator's.
	exp := time.UnixMilli(time.Now().Add(life).UnixMilli())
	a.register(pw, exp)
	data := map[string]any{
		"authorizationToken": base64.StdEncoding.EncodeToString([]byte("AWS:" + pw)),
		"expiresAt":          float64(exp.UnixMilli()) / 1000,
	}
	var out any
	if public {
		out = map[string]any{"authorizationData": data}
	} else {
		data["proxyEndpoint"] = fmt.Sprintf("https://%s.dkr.ecr.%s.amazonaws.com", user.account, req.Region)
		out = map[string]any{"authorizationData": []any{data}}
	}
	w.Header().Set("Content-Type", amzJSON)
	w.Header().Set("X-Amzn-RequestId", randomString("", 8))
	_ = json.NewEncoder(w).Encode(out)
}

func (a *AWS) assumeRole(w http.ResponseWriter, form url.Values, req AWSRequest, proto awsProto) {
	arn := form.Get("RoleArn")
	req.RoleARN = arn
	a.mu.Lock()
	known := a.roles[arn]
	life := a.sessionLife
	a.mu.Unlock()
	if !known {
		proto.fail(w, http.StatusForbidden, "AccessDenied", "User is not authorized to perform: sts:AssumeRole on resource: "+arn)
		return
	}
	if form.Get("RoleSessionName") == "" {
		proto.fail(w, http.StatusBadRequest, "ValidationError", "RoleSessionName is required")
		return
	}
	if s, err := strconv.Atoi(form.Get("DurationSeconds")); err == nil && s > 0 && time.Duration(s)*time.Second < life {
		life = time.Duration(s) * time.Second
	}
	a.record(req)
	akid := strings.ToUpper(randomString("ASIA", 8))
	secret := randomString("sts-secret-", 16)
	session := randomString("sts-session-", 24)
	exp := time.Now().Add(life)
	a.AddSessionUser(akid, secret, session, exp)
	w.Header().Set("Content-Type", "text/xml")
	fmt.Fprintf(w, `<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleResult>
    <AssumedRoleUser><Arn>%s/%s</Arn><AssumedRoleId>AROAEMULATED:%s</AssumedRoleId></AssumedRoleUser>
    <Credentials>
      <AccessKeyId>%s</AccessKeyId>
      <SecretAccessKey>%s</SecretAccessKey>
      <SessionToken>%s</SessionToken>
      <Expiration>%s</Expiration>
    </Credentials>
  </AssumeRoleResult>
  <ResponseMetadata><RequestId>%s</RequestId></ResponseMetadata>
</AssumeRoleResponse>`,
		xmlEscape(strings.Replace(arn, ":role/", ":assumed-role/", 1)), xmlEscape(form.Get("RoleSessionName")), xmlEscape(form.Get("RoleSessionName")),
		akid, secret, session, exp.UTC().Format(time.RFC3339), randomString("", 8))
}
