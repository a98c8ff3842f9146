package signing

import (
	"errors"
	"fmt"
)

// RequestError is a mistake in a signature or verification request that
// the caller can fix: a digest of the wrong length, a document that is not
// a PDF, an option the profile does not allow. Reason is safe to show the
// caller.
type RequestError struct {
	Reason string
}

func (e *RequestError) Error() string { return "signing: " + e.Reason }

func badRequest(format string, args ...any) error {
	return &RequestError{Reason: fmt.Sprintf(format, args...)}
}

var (
	// ErrUnknownProfile: no signature profile has the name asked for.
	ErrUnknownProfile = errors.New("signing: unknown signature profile")
	// ErrNotAllowed: the client may not use the profile. Nothing was
	// signed.
	ErrNotAllowed = errors.New("signing: client not allowed to use this profile")
)
