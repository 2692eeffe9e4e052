package document

import (
	"fmt"

	"github.com/containerd/errdefs"
)

// Error is a bad credential document. It names where the document came
// from (an annotation key, "auth", a config path) and the field within it
// ("credentials.AWS_REGION", "[1].type"), never a value. It unwraps to
// its Class: errdefs.ErrInvalidArgument (gRPC InvalidArgument) unless
// set — a sealed document for another namespace is PermissionDenied, one
// no identity here opens FailedPrecondition.
type Error struct {
	Source string
	Field  string
	Reason string
	// Class is the errdefs class; nil means errdefs.ErrInvalidArgument.
	Class error
}

func (e *Error) Error() string {
	switch {
	case e.Source != "" && e.Field != "":
		return fmt.Sprintf("credential document %s: field %s: %s", e.Source, e.Field, e.Reason)
	case e.Source != "":
		return fmt.Sprintf("credential document %s: %s", e.Source, e.Reason)
	case e.Field != "":
		return fmt.Sprintf("credential document: field %s: %s", e.Field, e.Reason)
	}
	return "credential document: " + e.Reason
}

func (e *Error) Unwrap() error {
	if e.Class != nil {
		return e.Class
	}
	return errdefs.ErrInvalidArgument
}

func fieldErr(source, field, format string, args ...any) error {
	return &Error{Source: source, Field: field, Reason: fmt.Sprintf(format, args...)}
}
