package publish

import (
	"cmp"
	"sync"
)

// pieces cuts what a writer is given into fixed-size pieces and uploads
// up to a bound of them at once, in the background, while the next one is
// written. The buffers of uploaded pieces are reused, so memory stays at
// the pieces in flight plus the one being filled, with no garbage for the
// collector to let the heap grow on. Set it up with init.
type pieces struct {
	size int
	buf  []byte // the piece being filled
	sem  chan struct{}
	free chan []byte
	wg   sync.WaitGroup

	mu  sync.Mutex
	err error // the first upload's failure
}

func (p *pieces) init(size, inflight int) {
	p.size = size
	p.sem = make(chan struct{}, inflight)
	p.free = make(chan []byte, inflight+1)
}

// write appends b, calling full each time the piece being filled is full.
func (p *pieces) write(b []byte, full func() error) error {
	for len(b) > 0 {
		k := min(len(b), p.size-len(p.buf))
		p.buf = append(p.buf, b[:k]...)
		b = b[k:]
		if len(p.buf) == p.size {
			if err := full(); err != nil {
				return err
			}
		}
	}
	return nil
}

// send hands the piece being filled to upload in the background, once
// fewer than the bound are in flight, and starts filling another.
func (p *pieces) send(upload func(body []byte) error) {
	body := p.buf
	p.sem <- struct{}{}
	select {
	case b := <-p.free:
		p.buf = b[:0]
	default:
		p.buf = make([]byte, 0, p.size)
	}
	p.wg.Go(func() {
		defer func() {
			select {
			case p.free <- body:
			default:
			}
			<-p.sem
		}()
		if err := upload(body); err != nil {
			p.mu.Lock()
			p.err = cmp.Or(p.err, err)
			p.mu.Unlock()
		}
	})
}

// failed is the first upload's error so far.
func (p *pieces) failed() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// wait waits for the uploads in flight and returns the first error.
func (p *pieces) wait() error {
	p.wg.Wait()
	return p.failed()
}
