package aws

import (
	"context"
	"errors"
	"fmt"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"github.com/containerd/errdefs"
)

// Error codes by what they mean to the caller. AWS spells them
// differently per protocol (awsJson vs awsQuery) and per service.
var (
	throttleCodes = set("ThrottlingException", "Throttling", "ThrottledException", "TooManyRequestsException",
		"RequestLimitExceeded", "RequestThrottled", "RequestThrottledException", "SlowDown", "PriorRequestNotComplete",
		"ProvisionedThroughputExceededException", "TransactionInProgressException", "EC2ThrottledException")
	unknownKeyCodes = set("UnrecognizedClientException", "InvalidClientTokenId", "InvalidAccessKeyId", "AuthFailure")
	badSecretCodes  = set("InvalidSignatureException", "SignatureDoesNotMatch", "IncompleteSignature")
	expiredCodes    = set("ExpiredTokenException", "ExpiredToken", "RequestExpired")
	deniedCodes     = set("AccessDeniedException", "AccessDenied", "UnauthorizedOperation")
	transientCodes  = set("ServiceUnavailable", "ServiceUnavailableException", "ServerException", "InternalFailure",
		"InternalError", "InternalServiceException", "RequestTimeout", "RequestTimeoutException")
)

func set(s ...string) map[string]bool {
	m := make(map[string]bool, len(s))
	for _, v := range s {
		m[v] = true
	}
	return m
}

func status(err error) int {
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		return re.HTTPStatusCode()
	}
	return 0
}

// retryable: throttling and server-side failures pass with time. A refused
// connection does not, within one pull; the keychain's background refresh
// tries again later.
func retryable(err error) bool {
	if err == nil {
		return false
	}
	var ae smithy.APIError
	if errors.As(err, &ae) && (throttleCodes[ae.ErrorCode()] || transientCodes[ae.ErrorCode()]) {
		return true
	}
	s := status(err)
	return s == 429 || s >= 500
}

// classify turns an SDK error into one that says which API failed and
// why, classified for errdefs (and so for gRPC). AWS error messages and
// the SDK's own do not carry keys, so err is kept in the chain.
func classify(api string, attempts int, err error) error {
	var ae smithy.APIError
	code := ""
	if errors.As(err, &ae) {
		code = ae.ErrorCode()
	}
	s := status(err)
	switch {
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled):
		return fmt.Errorf("%s: no answer in time (%d attempts): %w", api, attempts, err)
	case throttleCodes[code] || s == 429:
		return fmt.Errorf("%s throttled (%d attempts): %w: %w", api, attempts, err, errdefs.ErrUnavailable)
	case unknownKeyCodes[code]:
		return fmt.Errorf("%s: AWS does not recognise the access key or session token: %w: %w", api, err, errdefs.ErrUnauthenticated)
	case badSecretCodes[code]:
		return fmt.Errorf("%s: the secret access key does not match the access key: %w: %w", api, err, errdefs.ErrUnauthenticated)
	case expiredCodes[code]:
		return fmt.Errorf("%s: the credentials have expired: %w: %w", api, err, errdefs.ErrUnauthenticated)
	case deniedCodes[code]:
		return fmt.Errorf("%s: access denied: %w: %w", api, err, errdefs.ErrPermissionDenied)
	case transientCodes[code] || s >= 500:
		return fmt.Errorf("%s unavailable (%d attempts): %w: %w", api, attempts, err, errdefs.ErrUnavailable)
	}
	var se *smithyhttp.RequestSendError
	if errors.As(err, &se) {
		return fmt.Errorf("%s endpoint unreachable: %w: %w", api, err, errdefs.ErrUnavailable)
	}
	if errdefs.IsUnauthorized(err) || errdefs.IsUnavailable(err) || errdefs.IsInvalidArgument(err) || errdefs.IsPermissionDenied(err) {
		return fmt.Errorf("%s: %w", api, err)
	}
	return fmt.Errorf("%s failed: %w: %w", api, err, errdefs.ErrUnknown)
}
