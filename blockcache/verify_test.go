package blockcache

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// sumVerifier checks objects against the sums it was given, by name: an
// order-free sum of per-block CRCs, or a SHA-256 of the bytes in order.
type sumVerifier struct {
	ordered bool
	want    map[string][]byte // by name; absent: no checksum
}

func (v *sumVerifier) Check(id ObjectID) ObjectCheck {
	want, ok := v.want[id.Name]
	if !ok {
		return nil
	}
	return &sumCheck{ordered: v.ordered, want: want, crcs: map[int64]uint32{}}
}

type sumCheck struct {
	ordered bool
	want    []byte
	mu      sync.Mutex
	crcs    map[int64]uint32
}

func (c *sumCheck) Ordered() bool { return c.ordered }

func (c *sumCheck) Block(i int64, p []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.crcs[i] = crc32.ChecksumIEEE(p)
}

func (c *sumCheck) Finish(_ context.Context, whole io.Reader) error {
	var got []byte
	if c.ordered {
		h := sha256.New()
		if _, err := io.Copy(h, whole); err != nil {
			return err
		}
		got = h.Sum(nil)
	} else {
		got = crcList(c.crcs)
	}
	if !bytes.Equal(got, c.want) {
		return fmt.Errorf("sum %x, want %x", got, c.want)
	}
	return nil
}

func crcList(crcs map[int64]uint32) []byte {
	var b []byte
	for i := int64(0); i < int64(len(crcs)); i++ {
		b = fmt.Appendf(b, "%08x", crcs[i])
	}
	return b
}

func blockCRCs(data []byte, bs int) []byte {
	m := map[int64]uint32{}
	for i := 0; i*bs < len(data); i++ {
		m[int64(i)] = crc32.ChecksumIEEE(data[i*bs : min(len(data), (i+1)*bs)])
	}
	return crcList(m)
}

// A reader that reads a damaged object to its end never gets a clean EOF:
// the read that completes it fails, and every read after; the intact object
// next to it reads clean, and one without a checksum is Unverified.
func TestVerifyOnCompletion(t *testing.T) {
	for _, ordered := range []bool{false, true} {
		for _, disk := range []bool{false, true} {
			t.Run(fmt.Sprintf("ordered=%v/disk=%v", ordered, disk), func(t *testing.T) {
				const bs = 64 << 10
				good, bad, bare := randomBytes(5*bs+100, 1), randomBytes(4*bs, 2), randomBytes(bs+1, 3)
				sum := func(b []byte) []byte {
					if ordered {
						s := sha256.Sum256(b)
						return s[:]
					}
					return blockCRCs(b, bs)
				}
				v := &sumVerifier{ordered: ordered, want: map[string][]byte{"good": sum(good), "bad": sum(bad)}}
				damaged := bytes.Clone(bad)
				damaged[3*bs+7] ^= 1
				l := &memLoader{data: map[string][]byte{"goodv": good, "badv": damaged, "barev": bare}}
				opts := Options{BlockSize: bs, MemBytes: 64 * bs, Workers: 4, Verifier: v}
				if disk {
					opts.Disk = &DiskOptions{Dir: t.TempDir(), MaxBytes: 1 << 30}
				}
				c := New(opts, l)
				defer c.Close()
				id := func(name string, data []byte) ObjectID {
					return ObjectID{Source: "s", Name: name, Version: "v", Size: int64(len(data))}
				}
				readAll := func(name string, data []byte) error {
					o := c.Object(id(name, data))
					buf := make([]byte, 10000)
					for off := int64(0); ; off += 10000 {
						_, err := o.ReadAt(context.Background(), buf, off)
						if err == io.EOF {
							return nil
						}
						if err != nil {
							return err
						}
					}
				}
				if err := readAll("good", good); err != nil {
					t.Fatalf("intact object: %v", err)
				}
				if err := readAll("bad", bad); !errors.Is(err, ErrCorrupt) {
					t.Fatalf("damaged object read to its end: %v, want ErrCorrupt", err)
				}
				for _, off := range []int64{0, 3 * bs, int64(len(bad)) - 1} {
					if _, err := c.Object(id("bad", bad)).ReadAt(context.Background(), make([]byte, 1), off); !errors.Is(err, ErrCorrupt) {
						t.Fatalf("read at %d after the failure: %v, want ErrCorrupt", off, err)
					}
				}
				if err := readAll("bare", bare); err != nil {
					t.Fatalf("object without a checksum: %v", err)
				}
				st := c.ObjectStats([]ObjectID{id("good", good), id("bad", bad), id("bare", bare)})
				if st[0].Verify != Verified || st[1].Verify != VerifyFailed || st[2].Verify != Unverified {
					t.Fatalf("states %v %v %v, want verified, failed, unverified", st[0].Verify, st[1].Verify, st[2].Verify)
				}
				if st[1].MemBytes != 0 || st[1].DiskBytes != 0 {
					t.Fatalf("the damaged object still has %d bytes in RAM, %d on disk", st[1].MemBytes, st[1].DiskBytes)
				}
				if s := c.Stats(); s.VerifiedObjects != 1 || s.VerifyFailures != 1 || s.UnverifiedObjects != 1 {
					t.Fatalf("stats: %d verified, %d failed, %d unverified", s.VerifiedObjects, s.VerifyFailures, s.UnverifiedObjects)
				}
				if _, ok := c.Object(id("bad", bad)).VerifiedBacking(); ok {
					t.Fatal("a damaged object was handed out for passthrough")
				}
			})
		}
	}
}

// Fill (warm) verifies too: the Fill that completes a damaged object fails,
// its blocks are dropped, and a fresh cache over the same disk verifies a
// complete object from its file before passing it through.
func TestVerifyFillAndBacking(t *testing.T) {
	const bs = 64 << 10
	dir := t.TempDir()
	good, bad := randomBytes(3*bs+5, 4), randomBytes(2*bs, 5)
	damaged := bytes.Clone(bad)
	damaged[10] ^= 0x80
	for _, ordered := range []bool{false, true} {
		sum := func(b []byte) []byte {
			if ordered {
				s := sha256.Sum256(b)
				return s[:]
			}
			return blockCRCs(b, bs)
		}
		v := &sumVerifier{ordered: ordered, want: map[string][]byte{"good": sum(good), "bad": sum(bad)}}
		l := &memLoader{data: map[string][]byte{"goodv": good, "badv": damaged}}
		opts := Options{BlockSize: bs, MemBytes: 16 * bs, Workers: 2, Verifier: v, Disk: &DiskOptions{Dir: dir, MaxBytes: 1 << 30}}
		c := New(opts, l)
		gid := ObjectID{Source: "s", Name: "good", Version: "v", Size: int64(len(good))}
		bid := ObjectID{Source: "s", Name: "bad", Version: "v", Size: int64(len(bad))}
		for i := int64(0); i*bs < gid.Size; i++ {
			if _, err := c.Fill(context.Background(), gid, i); err != nil {
				t.Fatal(err)
			}
		}
		var ferr error
		for i := int64(0); i*bs < bid.Size; i++ {
			if _, err := c.Fill(context.Background(), bid, i); err != nil {
				ferr = err
			}
		}
		if !errors.Is(ferr, ErrCorrupt) || c.Object(bid).CompleteOnDisk() {
			t.Fatalf("fill of a damaged object: %v, complete on disk %v", ferr, c.Object(bid).CompleteOnDisk())
		}
		c.Close()

		// A fresh cache: the good object is complete on disk and marked
		// as having passed, so it is handed out without a load.
		loads := len(l.loadOrder())
		c = New(opts, l)
		b, ok := c.Object(gid).Backing()
		if !ok {
			t.Fatal("a complete object that passed its check was not handed out")
		}
		b.Close()
		if st, _ := c.Object(gid).Verification(); st != Verified || len(l.loadOrder()) != loads {
			t.Fatalf("from the mark: %v, %d loads", st, len(l.loadOrder())-loads)
		}
		c.Close()

		// Without the mark, it is checked from its file first; and when
		// the store's checksum disagrees, it is dropped instead.
		gdir := filepath.Join(dir, diskVersionDir, objectDirID(gid, bs))
		if err := os.Remove(filepath.Join(gdir, storeMarkName)); err != nil {
			t.Fatal(err)
		}
		c = New(opts, l)
		if b, ok := c.Object(gid).VerifiedBacking(); !ok {
			t.Fatal("a complete, intact object was not handed out")
		} else {
			b.Close()
		}
		c.Close()
		os.Remove(filepath.Join(gdir, storeMarkName))
		v.want["good"] = sum(bad)
		c = New(opts, l)
		if _, ok := c.Object(gid).VerifiedBacking(); ok {
			t.Fatal("an object that fails its check was handed out")
		}
		if st, _ := c.Object(gid).Verification(); st != VerifyFailed || c.Object(gid).CompleteOnDisk() {
			t.Fatalf("after a failed file pass: %v, complete on disk %v", st, c.Object(gid).CompleteOnDisk())
		}
		c.Close()
		dir = t.TempDir()
	}
}

// Blocks served whole are reused first, except those an ordered check
// (SHA, MD5) still has to read back: without a disk tier they are only
// in RAM, and the check must not fail for want of them.
func TestOrderedCheckKeepsConsumedBlocks(t *testing.T) {
	const bs = 64 << 10
	data := randomBytes(6*bs+5, 41)
	sum := sha256.Sum256(data)
	id := ObjectID{Name: "sha", Version: "v", Size: int64(len(data))}
	l := &memLoader{data: map[string][]byte{"shav": data}}
	c := New(Options{BlockSize: bs, MemBytes: 64 * bs, Workers: 2,
		Verifier: &sumVerifier{ordered: true, want: map[string][]byte{"sha": sum[:]}}}, l)
	defer c.Close()
	obj := c.Object(id)
	for off := int64(0); off < id.Size; off += bs {
		if _, err := obj.ReadAt(context.Background(), make([]byte, bs), off); err != nil && !errors.Is(err, io.EOF) {
			t.Fatal(err)
		}
	}
	if st, err := obj.Verification(); st != Verified {
		t.Fatalf("verification %v (%v), want verified", st, err)
	}
	if s := c.Stats(); s.Loads != 7 {
		t.Fatalf("%d loads, want 7", s.Loads)
	}
}
