package mountproc

import (
	"bytes"
	"fmt"
	"slices"
	"sync"
)

// Log keeps what a process writes, line by line: all of it, or the last
// Max bytes. Lines containing Omit (when set) are counted rather than
// kept, for a message a daemon repeats so often that it would push
// everything else out. Each complete line is also handed to OnLine, when
// set, in the order written. It is safe for concurrent use.
type Log struct {
	// Max is how many bytes to keep; 0 keeps everything.
	Max int
	// Omit marks the lines to count and drop.
	Omit string
	// OnLine sees every complete line, without its newline, omitted ones
	// included.
	OnLine func(line string)

	mu      sync.Mutex
	b       []byte
	partial []byte // an unfinished line
	omitted int64
}

// Write splits p into lines: a pipe delivers a log in arbitrary chunks.
func (l *Log) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, p...)
	done := 0
	for {
		i := bytes.IndexByte(l.partial[done:], '\n')
		if i < 0 {
			break
		}
		line := l.partial[done : done+i+1]
		if l.OnLine != nil {
			l.OnLine(string(line[:len(line)-1]))
		}
		if l.Omit != "" && bytes.Contains(line, []byte(l.Omit)) {
			l.omitted++
		} else {
			l.keep(line)
		}
		done += i + 1
	}
	l.partial = l.partial[:copy(l.partial, l.partial[done:])]
	if l.Max > 0 && len(l.partial) > l.Max { // a line longer than the tail: keep its end
		l.keep(l.partial)
		l.partial = l.partial[:0]
	}
	return len(p), nil
}

func (l *Log) keep(p []byte) {
	l.b = append(l.b, p...)
	if l.Max > 0 && len(l.b) > l.Max {
		l.b = l.b[len(l.b)-l.Max:]
	}
}

// String is what was kept, an unfinished last line included, after a note
// of how many lines were omitted, if any.
func (l *Log) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := string(append(slices.Clip(l.b), l.partial...))
	if l.omitted > 0 {
		s = fmt.Sprintf("(%d lines %q... left out)\n%s", l.omitted, l.Omit, s)
	}
	return s
}
