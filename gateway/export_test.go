package gateway

import "time"

// SetIdleTransfer sets how long an upload or a download may stall, for a
// test that does not run in parallel with others; it returns the restore.
func SetIdleTransfer(d time.Duration) (restore func()) {
	old := idleTransfer
	idleTransfer = d
	return func() { idleTransfer = old }
}

// LaneAnswered is how many requests the tsa listener's fast lane answered
// itself (not handed to net/http).
func LaneAnswered(s *TSAServer) int64 { return s.answered.Load() }

// ParseLaneHead is parseLaneHead, for the fuzz target.
var ParseLaneHead = parseLaneHead
