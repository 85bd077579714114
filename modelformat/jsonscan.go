package modelformat

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"unicode/utf16"
	"unicode/utf8"
)

// jsonScanner reads JSON from a stream one value at a time, keeping only
// the strings a caller asks for, in one buffer it reuses: so a header's
// shapes, metadata and unknown fields cost no memory however large.
type jsonScanner struct {
	r   *bufio.Reader
	off int64  // bytes consumed, for messages
	buf []byte // the last string kept
}

func (p *jsonScanner) next() (byte, error) {
	c, err := p.r.ReadByte()
	if err != nil {
		return 0, noEOF(err)
	}
	p.off++
	return c, nil
}

// window returns the input buffered, reading more if there is none: the
// scanner works on runs of it rather than byte by byte.
func (p *jsonScanner) window() ([]byte, error) {
	w, err := p.r.Peek(max(p.r.Buffered(), 1))
	if len(w) == 0 {
		return nil, noEOF(err)
	}
	return w, nil
}

// consume drops n bytes of the window.
func (p *jsonScanner) consume(n int) {
	p.r.Discard(n)
	p.off += int64(n)
}

// peek returns the next byte that is not whitespace, without consuming it.
// At the end of the input it returns io.ErrUnexpectedEOF.
func (p *jsonScanner) peek() (byte, error) {
	for {
		w, err := p.window()
		if err != nil {
			return 0, err
		}
		i := 0
		for i < len(w) && (w[i] == ' ' || w[i] == '\t' || w[i] == '\n' || w[i] == '\r') {
			i++
		}
		if i < len(w) {
			c := w[i]
			p.consume(i)
			return c, nil
		}
		p.consume(i)
	}
}

func (p *jsonScanner) invalid(c byte, want string) error {
	return fmt.Errorf("invalid character %q at offset %d, want %s", c, p.off, want)
}

// expect consumes the next byte that is not whitespace, which must be want.
func (p *jsonScanner) expect(want byte) error {
	c, err := p.peek()
	if err != nil {
		return err
	}
	if c != want {
		return p.invalid(c, fmt.Sprintf("%q", want))
	}
	_, err = p.next()
	return err
}

// object reads an object, calling member for each member: it must read
// the key, the colon and the value.
func (p *jsonScanner) object(member func() error) error {
	return p.list('{', '}', member)
}

// array reads an array, calling elem to read each element.
func (p *jsonScanner) array(what string, elem func() error) error {
	if c, err := p.peek(); err != nil {
		return err
	} else if c != '[' {
		return fmt.Errorf("%s at offset %d is not an array", what, p.off)
	}
	return p.list('[', ']', elem)
}

func (p *jsonScanner) list(open, close byte, item func() error) error {
	if err := p.expect(open); err != nil {
		return err
	}
	if c, err := p.peek(); err != nil {
		return err
	} else if c == close {
		_, err = p.next()
		return err
	}
	for {
		if err := item(); err != nil {
			return err
		}
		c, err := p.peek()
		if err != nil {
			return err
		}
		if c != ',' && c != close {
			return p.invalid(c, fmt.Sprintf("',' or %q", close))
		}
		p.next()
		if c == close {
			return nil
		}
	}
}

// str reads a string, keeping at most limit bytes of it (decoded) in
// p.buf, which the next call reuses. long reports that it had more; a
// kept string must be valid UTF-8. Skipped bytes are checked only for
// JSON's rules.
func (p *jsonScanner) str(limit int) (s []byte, long bool, err error) {
	if err := p.expect('"'); err != nil {
		return nil, false, err
	}
	p.buf = p.buf[:0]
	for {
		// Take the run of plain bytes up to the next quote, backslash or
		// control character straight from the buffer.
		n := max(p.r.Buffered(), 1)
		run, err := p.r.Peek(n)
		if len(run) == 0 {
			return nil, false, noEOF(err)
		}
		i := 0
		for i < len(run) && run[i] != '"' && run[i] != '\\' && run[i] >= 0x20 {
			i++
		}
		if !long {
			keep := min(i, limit-len(p.buf))
			p.buf = append(p.buf, run[:keep]...)
			long = keep < i
		}
		p.r.Discard(i)
		p.off += int64(i)
		if i == len(run) {
			continue
		}
		c, err := p.next()
		if err != nil {
			return nil, false, err
		}
		switch {
		case c == '"':
			if !long && !utf8.Valid(p.buf) {
				return nil, false, fmt.Errorf("string ending at offset %d is not valid UTF-8", p.off)
			}
			return p.buf, long, nil
		case c == '\\':
			r, err := p.escape()
			if err != nil {
				return nil, false, err
			}
			if !long && len(p.buf)+utf8.RuneLen(r) <= limit {
				p.buf = utf8.AppendRune(p.buf, r)
			} else {
				long = true
			}
		default:
			return nil, false, fmt.Errorf("control character %#x in a string at offset %d", c, p.off-1)
		}
	}
}

// escape reads what follows a backslash in a string.
func (p *jsonScanner) escape() (rune, error) {
	c, err := p.next()
	if err != nil {
		return 0, err
	}
	switch c {
	case '"', '\\', '/':
		return rune(c), nil
	case 'b':
		return '\b', nil
	case 'f':
		return '\f', nil
	case 'n':
		return '\n', nil
	case 'r':
		return '\r', nil
	case 't':
		return '\t', nil
	case 'u':
		r, err := p.hex4()
		if err != nil || !utf16.IsSurrogate(r) {
			return r, err
		}
		// A surrogate must be the first of a pair, as serde_json insists.
		if a, err := p.next(); err != nil {
			return 0, err
		} else if b, err := p.next(); err != nil {
			return 0, err
		} else if a != '\\' || b != 'u' {
			return 0, fmt.Errorf("lone surrogate at offset %d", p.off)
		}
		r2, err := p.hex4()
		if err != nil {
			return 0, err
		}
		if d := utf16.DecodeRune(r, r2); d != utf8.RuneError {
			return d, nil
		}
		return 0, fmt.Errorf("lone surrogate at offset %d", p.off)
	}
	return 0, p.invalid(c, "an escape")
}

func (p *jsonScanner) hex4() (rune, error) {
	var r rune
	for range 4 {
		c, err := p.next()
		if err != nil {
			return 0, err
		}
		var v byte
		switch {
		case c >= '0' && c <= '9':
			v = c - '0'
		case c >= 'a' && c <= 'f':
			v = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			v = c - 'A' + 10
		default:
			return 0, p.invalid(c, "a hex digit")
		}
		r = r<<4 | rune(v)
	}
	return r, nil
}

var errNotUint = errors.New("not an unsigned integer")

// uint reads a number that must be an unsigned integer of 64 bits.
func (p *jsonScanner) uint() (uint64, error) {
	c, err := p.peek()
	if err != nil {
		return 0, err
	}
	if c < '0' || c > '9' {
		return 0, fmt.Errorf("value at offset %d: %w", p.off, errNotUint)
	}
	var v uint64
	overflow := false
	for digits := 0; ; {
		w, err := p.window()
		if err == io.ErrUnexpectedEOF {
			break // the caller finds the input cut short
		} else if err != nil {
			return 0, err
		}
		i := 0
		for ; i < len(w) && w[i] >= '0' && w[i] <= '9'; i++ {
			if digits == 1 && v == 0 {
				c := w[i]
				p.consume(i)
				return 0, p.invalid(c, "no leading zero")
			}
			hi, lo := bits.Mul64(v, 10)
			lo, carry := bits.Add64(lo, uint64(w[i]-'0'), 0)
			overflow = overflow || hi != 0 || carry != 0
			v = lo
			digits++
		}
		if i == len(w) {
			p.consume(i)
			continue
		}
		c := w[i]
		p.consume(i)
		if c == '.' || c == 'e' || c == 'E' {
			return 0, fmt.Errorf("value at offset %d: %w", p.off, errNotUint)
		}
		break
	}
	if overflow {
		return 0, fmt.Errorf("value at offset %d overflows 64 bits", p.off)
	}
	return v, nil
}

// skip reads a value of any kind, keeping nothing, at the given depth of
// nesting.
func (p *jsonScanner) skip(depth int) error {
	if depth > maxDepth {
		return fmt.Errorf("values nested more than %d deep at offset %d", maxDepth, p.off)
	}
	c, err := p.peek()
	if err != nil {
		return err
	}
	switch {
	case c == '{':
		return p.object(func() error {
			if _, _, err := p.str(0); err != nil {
				return err
			}
			if err := p.expect(':'); err != nil {
				return err
			}
			return p.skip(depth + 1)
		})
	case c == '[':
		return p.list('[', ']', func() error { return p.skip(depth + 1) })
	case c == '"':
		_, _, err := p.str(0)
		return err
	case c == '-' || c >= '0' && c <= '9':
		return p.number()
	case c == 't':
		return p.literal("true")
	case c == 'f':
		return p.literal("false")
	case c == 'n':
		return p.literal("null")
	}
	return p.invalid(c, "a value")
}

func (p *jsonScanner) literal(word string) error {
	for i := range len(word) {
		c, err := p.next()
		if err != nil {
			return err
		}
		if c != word[i] {
			return p.invalid(c, word)
		}
	}
	return nil
}

// number reads any JSON number: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?
func (p *jsonScanner) number() error {
	c, err := p.next()
	if err != nil {
		return err
	}
	if c == '-' {
		if c, err = p.next(); err != nil {
			return err
		}
	}
	if c < '0' || c > '9' {
		return p.invalid(c, "a digit")
	}
	if c != '0' {
		if err := p.digits(false); err != nil {
			return err
		}
	}
	if ok, err := p.accept("."); err != nil {
		return err
	} else if ok {
		if err := p.digits(true); err != nil {
			return err
		}
	}
	if ok, err := p.accept("eE"); err != nil {
		return err
	} else if ok {
		if _, err := p.accept("+-"); err != nil {
			return err
		}
		return p.digits(true)
	}
	return nil
}

// accept consumes the next byte if it is one of set. At the end of the
// input it returns false, for the caller to find the input cut short.
func (p *jsonScanner) accept(set string) (bool, error) {
	c, err := p.r.ReadByte()
	if err == io.EOF {
		return false, nil
	} else if err != nil {
		return false, err
	}
	for i := range len(set) {
		if c == set[i] {
			p.off++
			return true, nil
		}
	}
	return false, p.r.UnreadByte()
}

// digits consumes a run of digits, at least one if one is required.
func (p *jsonScanner) digits(one bool) error {
	for n := 0; ; n++ {
		ok, err := p.accept("0123456789")
		if err != nil {
			return err
		}
		if !ok {
			if one && n == 0 {
				c, err := p.peek()
				if err != nil {
					return err
				}
				return p.invalid(c, "a digit")
			}
			return nil
		}
	}
}
