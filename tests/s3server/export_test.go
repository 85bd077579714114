package s3server

import "time"

// SetClock replaces the clock used for object and bucket timestamps, so tests
// can make time pass without sleeping. Call it before serving requests.
func (s *Server) SetClock(now func() time.Time) { s.now = now }
