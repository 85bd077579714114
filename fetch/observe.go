package fetch

import "time"

// Operations an Observer is told about.
const (
	OpList = "list" // a listing page, or an HTTP manifest
	OpStat = "stat" // a HEAD (or a one-byte probe GET) of one object
	OpGet  = "get"  // a ranged GET of object bytes
)

// Observer is told about every request a Source makes, so that a caller can
// keep metrics without this package depending on a metrics library. Its
// methods are called from many goroutines at once and must be quick.
type Observer interface {
	// Request reports one request once it has succeeded or failed for
	// good: d spans every try and backoff, bytes is what a successful GET
	// returned (0 otherwise) and err is the final error, or nil.
	Request(op string, bytes int64, d time.Duration, err error)
	// Retry reports a try that failed transiently and will be repeated.
	Retry(op string)
}
