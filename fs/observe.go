package fs

import "time"

// Op is a FUSE operation modelfs answers itself, for an Observer. Others
// (forget, release, statfs, ...) are left to go-fuse and not observed.
type Op int

// The observed operations.
const (
	OpLookup Op = iota
	OpGetattr
	OpReaddir
	OpOpen
	OpRead
)

// Ops lists every Op, for an Observer that prepares state per operation.
func Ops() []Op { return []Op{OpLookup, OpGetattr, OpReaddir, OpOpen, OpRead} }

func (o Op) String() string {
	switch o {
	case OpLookup:
		return "lookup"
	case OpGetattr:
		return "getattr"
	case OpReaddir:
		return "readdir"
	case OpOpen:
		return "open"
	case OpRead:
		return "read"
	}
	return "unknown"
}

// Observer is told about the operations the filesystem answers, so that a
// caller can keep metrics without this package knowing a metrics library.
// Its methods are called from many goroutines at once and must be quick.
type Observer interface {
	// Op reports how long one operation took, from its arrival in modelfs
	// to its answer (a read includes waiting for its blocks).
	Op(op Op, d time.Duration)
	// FirstByte reports, once per file and mount, the time from the
	// file's first open to the first byte modelfs served of it. Reads the
	// kernel serves from its page cache or through passthrough never
	// reach modelfs, so a file read only that way reports nothing.
	FirstByte(d time.Duration)
}

// observer calls an Observer that may be nil.
type observer struct{ o Observer }

// start returns the time an operation began; zero when nobody observes.
func (ob observer) start() time.Time {
	if ob.o == nil {
		return time.Time{}
	}
	return time.Now()
}

func (ob observer) done(op Op, t0 time.Time) {
	if ob.o != nil {
		ob.o.Op(op, time.Since(t0))
	}
}
