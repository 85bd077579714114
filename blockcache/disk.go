package blockcache

import (
	"container/list"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/minio/crc64nvme"
	"golang.org/x/sys/unix"
)

// DiskOptions enables the disk tier.
type DiskOptions struct {
	// Dir holds the cache; several processes may share it.
	Dir string
	// MaxBytes bounds the bytes of cached blocks in Dir.
	MaxBytes int64
}

// On-disk layout, under Dir/v1/<id>/ where id hashes {source, name, version, size, block size}:
//
//	data  a sparse file the size of the object; block i at offset i*blockSize
//	meta  a 4 KiB header (magic line + JSON identity), then one 16-byte record
//	      per block: the block's sum, a state word that says which sum
//	      (xxhash64, or the CRC64NVME its object's check computed), and a
//	      check word over both and the block index
//
// A block is published by writing its data, then its record: the record is
// the commit point, so a process killed in between leaves a block that is
// simply absent. Every read from disk is checked against the record's hash;
// a mismatch (bit rot, a torn write, a concurrent eviction) is a miss, and
// the block is cleared and fetched again.
const (
	diskVersionDir = "v1"
	metaMagic      = "modelfs-cache v1\n"
	metaHeaderSize = 4096
	recordSize     = 16
	statePresent   = 0x50524553 // "PRES": the sum is the block's xxhash64
	stateCRC       = 0x4e343643 // "C64N": the sum is the block's CRC64NVME

	// Cached weights are a tenant's data: only the cache's owner may read
	// them, whatever the umask (which can only narrow these).
	filePerm = 0o600
	dirPerm  = 0o700

	// Every size read from a header or an ObjectID is bounded before
	// anything is allocated or created from it. maxDiskBlocks records make
	// a 1 GiB meta file: 4 TiB objects at 64 KiB blocks, 512 TiB at 8 MiB.
	// Larger objects are served from RAM and the source only.
	maxDiskBlocks = 1 << 26
	maxBlockSize  = 256 << 20 // the largest --block-size
	// recordChunk records (64 KiB) are read at a time, whatever the object.
	recordChunk = 4096

	// A full or read-only directory pauses write-back; it resumes when
	// eviction frees room, or tries again after this backoff, doubling.
	// verifyCloseGrace is how long closing waits for background
	// verifications before cancelling them.
	verifyCloseGrace = 2 * time.Second

	minWriteBackoff = time.Second
	maxWriteBackoff = time.Minute
)

// errTooLarge refuses an object the disk tier does not hold.
var errTooLarge = errors.New("object too large for the disk cache")

type metaHeader struct {
	Source    string `json:"source,omitempty"`
	Name      string `json:"name"`
	Version   string `json:"version"`
	Size      int64  `json:"size"`
	BlockSize int64  `json:"block_size"`
}

type diskKey struct {
	id    string
	index int64
}

type diskObject struct {
	id   string
	hdr  metaHeader
	data *os.File
	// direct is data opened for direct I/O, nil where refused.
	direct *directFile
	meta   *os.File
	// present counts this process's entries for the object, to notice
	// when a write completes it.
	present int64
	// written counts the blocks this process wrote while the data file
	// changed only by its writes: ownStamp is the file's stamp after the
	// last of them, and a file whose stamp moved in between (another
	// process's write, an eviction's hole) stops the count for good. An
	// object written whole that way needs no read-back before
	// passthrough: each block was hashed for its record from the bytes
	// written. See markWritten. wmu guards the three and orders the
	// object's writes.
	wmu      sync.Mutex
	written  int64
	ownStamp string
	foreign  bool
	// busy counts this process's reads and writes of the files under
	// way, which keep them open; gone marks an object forgotten
	// meanwhile, whose files the last of them closes. Both under the
	// tier's lock.
	busy int
	gone bool
	// verified is the data file's stamp when this process last found the
	// object verified whole (verifiedWhole): an open that finds the same
	// stamp skips reading the mark from disk.
	verified atomic.Pointer[string]
}

func (o *diskObject) closeFiles() {
	o.data.Close()
	o.direct.close()
	o.meta.Close()
}

func (o *diskObject) blocks() int64 { return (o.hdr.Size + o.hdr.BlockSize - 1) / o.hdr.BlockSize }

func (o *diskObject) blockLen(index int64) int64 {
	return min(o.hdr.BlockSize, o.hdr.Size-index*o.hdr.BlockSize)
}

type diskEntry struct {
	key diskKey
	obj *diskObject
	n   int64
}

// diskTier is the persistent tier below RAM.
type diskTier struct {
	root string // Dir/v1
	max  int64
	bs   int64
	log  *slog.Logger
	lock *os.File // flock'ed while making room, so processes evict one at a time

	// ctx is cancelled by close: it stops background verifications, which
	// may read a whole object and must not hold up a shutdown.
	ctx    context.Context
	cancel context.CancelFunc
	// verifyHook, when set (tests), runs before each block a
	// verification reads.
	verifyHook func(ctx context.Context, index int64)
	// writeHook, when set (tests), runs before each block's write, with
	// the object's write lock held and the tier's lock not.
	writeHook func(id ObjectID, index int64)
	// awaitHook, when set (tests), runs when a read or write of a block
	// begins to wait for its write under way.
	awaitHook func(index int64)
	now       func() time.Time

	mu      sync.Mutex
	objs    map[string]*diskObject
	lru     list.List // *diskEntry, most recently used at the front
	entries map[diskKey]*list.Element
	used    int64
	// pending holds the blocks being written, outside the lock, each
	// with a channel closed when its write ends, and reserved their
	// bytes, which makeRoom counts as held.
	pending  map[diskKey]chan struct{}
	reserved int64
	closed   bool
	// rootID is the device and inode of root when opened: a change means
	// the directory was deleted (or replaced) under the mount.
	rootID   [2]uint64
	rootLost bool // logged, not yet recreated
	// failed holds objects whose writes failed for reasons of their own
	// (EFBIG, EIO, too large): only they stop being written.
	failed map[string]bool
	// Write-back is paused while the directory is full or read-only.
	paused  bool
	retryAt time.Time
	backoff time.Duration
	// background verifications of complete objects, by object id
	verifying map[string]chan struct{} // closed when the verification ends
	bg        sync.WaitGroup

	hits, misses, corrupt, writes, evictions atomic.Int64
	// pageCacheHits counts the hits read from the page cache.
	pageCacheHits atomic.Int64
}

func openDiskTier(opts DiskOptions, bs int64, log *slog.Logger) (*diskTier, error) {
	root := filepath.Join(opts.Dir, diskVersionDir)
	if err := os.MkdirAll(root, dirPerm); err != nil {
		return nil, fmt.Errorf("disk cache %s: %w", opts.Dir, err)
	}
	// A directory made by an older version may be open to all: closing
	// its top closes every object below it.
	if err := os.Chmod(root, dirPerm); err != nil {
		log.Warn("disk cache: cannot make the directory private", "dir", root, "err", err)
	}
	lock, err := os.OpenFile(filepath.Join(opts.Dir, "lock"), os.O_CREATE|os.O_RDWR, filePerm)
	if err != nil {
		return nil, fmt.Errorf("disk cache %s: %w", opts.Dir, err)
	}
	lock.Chmod(filePerm) // best effort, as above
	t := &diskTier{root: root, max: opts.MaxBytes, bs: bs, log: log, lock: lock, now: time.Now,
		objs: map[string]*diskObject{}, verifying: map[string]chan struct{}{}, failed: map[string]bool{},
		pending: map[diskKey]chan struct{}{}}
	t.ctx, t.cancel = context.WithCancel(context.Background())
	t.rootID, _ = dirID(root)
	t.mu.Lock()
	t.rescan()
	t.mu.Unlock()
	return t, nil
}

func dirID(path string) ([2]uint64, bool) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return [2]uint64{}, false
	}
	return [2]uint64{st.Dev, st.Ino}, true
}

func (t *diskTier) close() {
	t.mu.Lock()
	t.closed = true
	t.mu.Unlock()
	// A verification about to finish is worth its stamp (the next mount
	// passes the object through), so it gets a short grace; one reading a
	// large object from a slow disk is cancelled, since a shutdown must not
	// wait for it.
	finished := make(chan struct{})
	go func() {
		t.bg.Wait()
		close(finished)
	}()
	grace := time.NewTimer(verifyCloseGrace)
	select {
	case <-finished:
	case <-grace.C:
	}
	grace.Stop()
	t.cancel()
	<-finished
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, o := range t.objs {
		t.closeObject(o)
	}
	t.objs = map[string]*diskObject{}
	t.lock.Close()
}

func objectDirID(id ObjectID, bs int64) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00%s\x00%d\x00%d", id.Source, id.Name, id.Version, id.Size, bs)
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// object returns the open disk object, creating its files when create is set.
// Called with t.mu held.
func (t *diskTier) object(id ObjectID, create bool) (*diskObject, error) {
	dirID := objectDirID(id, t.bs)
	if o, ok := t.objs[dirID]; ok {
		return o, nil
	}
	want := metaHeader{Source: id.Source, Name: id.Name, Version: id.Version, Size: id.Size, BlockSize: t.bs}
	if err := checkHeader(want); err != nil {
		return nil, fmt.Errorf("%s: %w", id.Name, err)
	}
	o, err := t.openObject(dirID, &want)
	if err == nil || !create {
		return o, err
	}
	if err := t.createObject(dirID, want); err != nil {
		return nil, err
	}
	return t.openObject(dirID, &want)
}

// openObject opens an existing object. A header that does not match want
// (garbage, or not ours) makes the object unusable: it is removed.
func (t *diskTier) openObject(dirID string, want *metaHeader) (*diskObject, error) {
	dir := filepath.Join(t.root, dirID)
	meta, err := os.OpenFile(filepath.Join(dir, "meta"), os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	hdr, err := readHeader(meta)
	if err == nil && want != nil && hdr != *want {
		err = fmt.Errorf("header names %+v", hdr)
	}
	if err != nil {
		meta.Close()
		t.log.Warn("disk cache: dropping object with bad metadata", "dir", dir, "err", err)
		os.RemoveAll(dir)
		return nil, fmt.Errorf("bad metadata in %s: %w", dir, err)
	}
	data, err := os.OpenFile(filepath.Join(dir, "data"), os.O_RDWR, 0)
	if err != nil {
		meta.Close()
		return nil, err
	}
	o := &diskObject{id: dirID, hdr: hdr, data: data, meta: meta, direct: openDirect(data.Name())}
	t.objs[dirID] = o
	now := time.Now()
	os.Chtimes(meta.Name(), now, now) // last use, for other processes' LRU
	return o, nil
}

// createObject makes the object's files. The meta file appears atomically
// (link of a complete temporary), so a concurrent creator never sees half a
// header and never clobbers records another process already wrote.
func (t *diskTier) createObject(dirID string, hdr metaHeader) error {
	dir := filepath.Join(t.root, dirID)
	if err := os.MkdirAll(dir, dirPerm); err != nil {
		return err
	}
	data, err := os.OpenFile(filepath.Join(dir, "data"), os.O_CREATE|os.O_RDWR, filePerm)
	if err != nil {
		return err
	}
	err = data.Truncate(hdr.Size)
	data.Close()
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, "meta.tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	header := make([]byte, metaHeaderSize)
	js, _ := json.Marshal(hdr)
	if len(metaMagic)+len(js)+1 > metaHeaderSize {
		tmp.Close()
		return fmt.Errorf("object name too long for the cache header")
	}
	n := copy(header, metaMagic)
	n += copy(header[n:], js)
	header[n] = '\n'
	nblocks := (&diskObject{hdr: hdr}).blocks()
	_, err = tmp.Write(header)
	if err == nil {
		err = tmp.Truncate(metaHeaderSize + nblocks*recordSize)
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := os.Link(tmp.Name(), filepath.Join(dir, "meta")); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	return nil
}

func readHeader(f *os.File) (metaHeader, error) {
	var hdr metaHeader
	buf := make([]byte, metaHeaderSize)
	if _, err := f.ReadAt(buf, 0); err != nil {
		return hdr, fmt.Errorf("reading header: %w", err)
	}
	if string(buf[:len(metaMagic)]) != metaMagic {
		return hdr, errors.New("not a modelfs cache header")
	}
	rest := buf[len(metaMagic):]
	end := 0
	for end < len(rest) && rest[end] != '\n' {
		end++
	}
	if err := json.Unmarshal(rest[:end], &hdr); err != nil {
		return hdr, fmt.Errorf("header: %w", err)
	}
	return hdr, checkHeader(hdr)
}

// checkHeader bounds an object's sizes before anything is allocated or
// created from them: a damaged header or an absurd object must never make
// the cache allocate, or create, more than maxDiskBlocks records.
func checkHeader(hdr metaHeader) error {
	if hdr.Size < 0 || hdr.BlockSize <= 0 || hdr.BlockSize > maxBlockSize {
		return fmt.Errorf("impossible size %d or block size %d", hdr.Size, hdr.BlockSize)
	}
	if hdr.Size/hdr.BlockSize >= maxDiskBlocks {
		return fmt.Errorf("%w: %d bytes in %d-byte blocks", errTooLarge, hdr.Size, hdr.BlockSize)
	}
	return nil
}

// blockSum is what a record checks its block with. A block of an object
// checked against a CRC64NVME (S3's default) has that CRC computed by the
// check as it loads (see BlockCRC): the record keeps it, which spares the
// write-back a second pass over every byte (0.07 CPU-s/GiB of a cold
// read's 0.8 on the VM of docs/benchmarks.md). Any other block is
// summed with xxhash64. Both are 64 bits.
type blockSum struct {
	crc bool // CRC64NVME, not xxhash64
	v   uint64
}

func xxSum(p []byte) blockSum { return blockSum{v: xxhash.Sum64(p)} }

// matches reports whether p is the block s was taken of.
func (s blockSum) matches(p []byte) bool {
	if s.crc {
		return crc64nvme.Checksum(p) == s.v
	}
	return xxhash.Sum64(p) == s.v
}

func encodeRecord(index int64, sum blockSum) []byte {
	rec := make([]byte, recordSize)
	binary.LittleEndian.PutUint64(rec[0:], sum.v)
	state := uint32(statePresent)
	if sum.crc {
		state = stateCRC
	}
	binary.LittleEndian.PutUint32(rec[8:], state)
	binary.LittleEndian.PutUint32(rec[12:], recordCheck(rec, index))
	return rec
}

// recordCheck ties a record to its position, so a record copied or
// shifted to another index, or plain garbage, reads as absent.
func recordCheck(rec []byte, index int64) uint32 {
	var buf [20]byte
	copy(buf[:12], rec[:12])
	binary.LittleEndian.PutUint64(buf[12:], uint64(index))
	return uint32(xxhash.Sum64(buf[:]))
}

// decodeRecord returns the block's sum if the record says it is present.
func decodeRecord(rec []byte, index int64) (blockSum, bool) {
	state := binary.LittleEndian.Uint32(rec[8:])
	if (state != statePresent && state != stateCRC) || binary.LittleEndian.Uint32(rec[12:]) != recordCheck(rec, index) {
		return blockSum{}, false
	}
	return blockSum{crc: state == stateCRC, v: binary.LittleEndian.Uint64(rec[0:])}, true
}

// scanRecords calls fn with every block's record in index order, reading
// recordChunk records at a time, until fn returns false. With skipHoles
// it skips the holes of the sparse meta file (absent blocks) without
// reading them, so a huge, mostly absent object costs little to scan.
func scanRecords(o *diskObject, skipHoles bool, fn func(index int64, sum blockSum, present bool) bool) error {
	n := o.blocks()
	buf := make([]byte, min(n, recordChunk)*recordSize)
	for start := int64(0); start < n; {
		if skipHoles {
			off, err := unix.Seek(int(o.meta.Fd()), metaHeaderSize+start*recordSize, unix.SEEK_DATA)
			if errors.Is(err, unix.ENXIO) {
				return nil // only holes from here on
			}
			if err == nil && off > metaHeaderSize+start*recordSize {
				start = (off - metaHeaderSize) / recordSize
				if start >= n {
					return nil
				}
			}
		}
		cnt := min(n-start, recordChunk)
		p := buf[:cnt*recordSize]
		nr, err := o.meta.ReadAt(p, metaHeaderSize+start*recordSize)
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("reading records of %s: %w", o.hdr.Name, err)
		}
		clear(p[nr:]) // past the end of a short file: absent
		for i := range cnt {
			sum, ok := decodeRecord(p[i*recordSize:(i+1)*recordSize], start+i)
			if !fn(start+i, sum, ok) {
				return nil
			}
		}
		start += cnt
	}
	return nil
}

func readRecord(meta *os.File, index int64) (blockSum, bool) {
	rec := make([]byte, recordSize)
	if _, err := meta.ReadAt(rec, metaHeaderSize+index*recordSize); err != nil {
		return blockSum{}, false
	}
	return decodeRecord(rec, index)
}

// get fills p with the block from disk if it is there and verifies.
func (t *diskTier) get(id ObjectID, index int64, p []byte) bool {
	// Pinned (as pin does) and the block's write under way looked up in
	// one hold of the lock: a hit takes it only once more, to publish.
	t.mu.Lock()
	o, err := t.object(id, false)
	var writing chan struct{}
	if err == nil {
		o.busy++
		writing = t.pending[diskKey{o.id, index}]
	}
	t.mu.Unlock()
	if err != nil {
		t.misses.Add(1)
		return false
	}
	if writing != nil {
		// On its way to disk, so there in a moment: wait for it rather
		// than fetch it again.
		t.await(writing, index)
	}
	hit, damaged, cached, err := t.read(o, index, p)
	t.mu.Lock()
	defer t.mu.Unlock()
	t.done(o)
	if damaged {
		t.corrupt.Add(1)
		t.log.Warn("disk cache: block failed verification, fetching it again", "object", id.Name, "block", index, "read_err", err)
		if !o.gone {
			t.dropLocked(o, index)
		}
	}
	if !hit {
		t.misses.Add(1)
		return false
	}
	t.hits.Add(1)
	if cached {
		t.pageCacheHits.Add(1)
	}
	if o.gone {
		return true // verified bytes of an object forgotten meanwhile
	}
	k := diskKey{o.id, index}
	if e, ok := t.entries[k]; ok {
		t.lru.MoveToFront(e)
	} else {
		t.addEntry(k, o, int64(len(p)))
	}
	return true
}

// read fills p with block index of o and checks it against its record,
// outside the tier's lock. A block that does not match a record that is
// still there is damaged; one whose record went meanwhile was evicted (by
// this process or another sharing the directory), a miss.
func (t *diskTier) read(o *diskObject, index int64, p []byte) (hit, damaged, cached bool, err error) {
	sum, ok := readRecord(o.meta, index)
	if !ok {
		return false, false, false, nil
	}
	n, cached, err := o.readBlock(p, index*t.bs)
	if n == len(p) && sum.matches(p) {
		return true, false, cached, nil
	}
	now, ok := readRecord(o.meta, index)
	return false, ok && now == sum, false, err
}

// put writes a block through to disk with its sum, and reports whether
// it is there, and whether this write completed the object.
// A failure is the object's alone (EFBIG, EIO: that object is no longer
// written), or the directory's (full or read-only: write-back pauses and
// resumes); either way the cache goes on serving from RAM and remote.
//
// The tier's lock is held to reserve room and to publish the entry, not
// through the write: a large block takes milliseconds to reach the disk,
// and meanwhile hits and other objects' writes go on. One object's
// writes still go one at a time, which keeps the chain of stamps that
// markWritten follows.
func (t *diskTier) put(id ObjectID, index int64, p []byte, sum blockSum) (stored, completed bool) {
	n := int64(len(p))
	k := diskKey{objectDirID(id, t.bs), index}
	var o *diskObject
	var have, ok bool
	for {
		t.mu.Lock()
		var writing chan struct{}
		o, have, ok, writing = t.reserveLocked(id, k, n)
		t.mu.Unlock()
		if writing == nil {
			break
		}
		t.await(writing, index) // the same block written by another load: then it is there
	}
	if !ok {
		return have, false
	}
	o.wmu.Lock()
	if t.writeHook != nil {
		t.writeHook(id, index)
	}
	before, _ := stampOf(o.data)
	err := o.writeBlock(p, index*t.bs)
	if err == nil {
		_, err = o.meta.WriteAt(encodeRecord(index, sum), metaHeaderSize+index*recordSize)
	}
	if err == nil {
		o.markWritten(before)
	}
	o.wmu.Unlock()

	t.mu.Lock()
	defer t.mu.Unlock()
	close(t.pending[k])
	delete(t.pending, k)
	t.reserved -= n
	t.done(o)
	if o.gone {
		// Forgotten meanwhile (removed from the directory, dropped,
		// closed): the bytes went to files no longer in the cache.
		return false, false
	}
	if err != nil {
		t.writeFailed(k.id, id.Name, err)
		return false, false
	}
	if t.paused {
		t.paused, t.backoff = false, 0
		t.log.Info("disk cache: writes succeed again, write-back resumed", "dir", t.root)
	}
	t.writes.Add(1)
	if _, ok := t.entries[k]; !ok { // a rescan or a hit may have found the record first
		t.addEntry(k, o, n)
	}
	if o.present == o.blocks() {
		// Complete: verify now, so the next open can pass it through,
		// unless every byte of the file is what this process wrote and
		// hashed just now, when reading it all back would only hash it
		// a second time.
		o.wmu.Lock()
		stamped := t.stampWritten(o)
		o.wmu.Unlock()
		if !stamped {
			t.verifyInBackground(o)
		}
		return true, true
	}
	return true, false
}

// reserveLocked makes room for block k of id about to be written and
// marks it pending. It reports whether the block may be written (ok),
// and else whether it is on disk already (have), or returns the write of
// it under way to wait for (writing). Called with t.mu held.
func (t *diskTier) reserveLocked(id ObjectID, k diskKey, n int64) (o *diskObject, have, ok bool, writing chan struct{}) {
	if n > t.max || t.closed || t.failed[k.id] || (t.paused && t.now().Before(t.retryAt)) {
		return nil, false, false, nil
	}
	t.checkRoot()
	if _, ok := t.entries[k]; ok {
		return nil, true, false, nil
	}
	if ch := t.pending[k]; ch != nil {
		return nil, false, false, ch
	}
	o, err := t.object(id, true)
	if err == nil && t.deleted(o) {
		o, err = t.object(id, true)
	}
	if err != nil {
		t.writeFailed(k.id, id.Name, err)
		return nil, false, false, nil
	}
	if !t.makeRoom(n) {
		return nil, false, false, nil
	}
	t.pending[k] = make(chan struct{})
	t.reserved += n
	o.busy++
	return o, false, true, nil
}

// await waits for writing, the write of block index under way, to end.
func (t *diskTier) await(writing chan struct{}, index int64) {
	if t.awaitHook != nil {
		t.awaitHook(index)
	}
	<-writing
}

// markWritten counts a block just written and recorded, given the data
// file's stamp before the write. The chain of stamps (each write starts
// from the stamp the last one left) shows that nothing else changed the
// file in between: a write changes the ctime, and since this process
// reads the ctime after each of its writes, the next change gets a newer
// one (multigrain timestamps; on older kernels a foreign write in the
// same clock tick can go unseen, as it can after any verification).
func (o *diskObject) markWritten(before string) {
	after, ok := stampOf(o.data)
	if !ok || before == "" || (o.written > 0 && before != o.ownStamp) {
		o.foreign = true
	}
	if o.foreign {
		return
	}
	o.written++
	o.ownStamp = after
}

// stampWritten records an object this process wrote whole, unchanged
// since, as verified (the stamp verifiedWhole reads), and reports whether
// it did. Called with t.mu and o.wmu held.
func (t *diskTier) stampWritten(o *diskObject) bool {
	if o.foreign || o.written != o.blocks() {
		return false
	}
	if now, ok := stampOf(o.data); !ok || now != o.ownStamp {
		return false
	}
	path := filepath.Join(t.root, o.id, "verified")
	tmp := path + ".tmp"
	if os.WriteFile(tmp, []byte(o.ownStamp+"\n"), filePerm) != nil {
		return false
	}
	return os.Rename(tmp, path) == nil
}

func (t *diskTier) addEntry(k diskKey, o *diskObject, n int64) {
	t.entries[k] = t.lru.PushFront(&diskEntry{key: k, obj: o, n: n})
	t.used += n
	o.present++
}

// dropObject removes one object's files, unless it is in use through
// passthrough.
func (t *diskTier) dropObject(id ObjectID) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	o, err := t.object(id, false)
	if err != nil {
		return nil // nothing cached
	}
	// A verification in progress pins the object: wait for it, rather
	// than call the object in use.
	for done := t.verifying[o.id]; done != nil; done = t.verifying[o.id] {
		t.mu.Unlock()
		<-done
		t.mu.Lock()
	}
	if t.objs[o.id] != o {
		return nil // dropped meanwhile
	}
	lock, ok := t.evictionLock(o)
	if !ok {
		return fmt.Errorf("dropping %s: in use", id.Name)
	}
	defer lock.Close()
	t.forget(o)
	t.roomFreed()
	return os.RemoveAll(filepath.Join(t.root, o.id))
}

// writeFailed decides what a failed write means. A full or read-only
// directory pauses write-back for every object, until eviction frees room
// or a backoff passes. Anything else (EFBIG, EIO, an object too large, a
// damaged file) is the object's own problem: that object alone stops
// being written, so one bad object never turns the cache off for others.
func (t *diskTier) writeFailed(dirID, name string, err error) {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) || errors.Is(err, syscall.EROFS) {
		t.backoff = min(max(2*t.backoff, minWriteBackoff), maxWriteBackoff)
		t.retryAt = t.now().Add(t.backoff)
		if !t.paused {
			t.paused = true
			t.log.Error("disk cache: directory full or read-only, caching in RAM only until eviction frees room or the retry",
				"dir", t.root, "retry_in", t.backoff, "err", err)
		}
		return
	}
	if !t.failed[dirID] {
		t.failed[dirID] = true
		t.log.Warn("disk cache: not caching this object on disk, serving it from RAM and the source", "object", name, "err", err)
	}
}

// roomFreed ends a pause of write-back: eviction made room, so the next
// write tries again at once.
func (t *diskTier) roomFreed() {
	if t.paused {
		t.retryAt = time.Time{}
	}
}

// checkRoot notices the cache directory deleted or replaced under the
// mount (rm -rf, another tool): writing on would go into deleted files.
// It forgets every open object and recreates the directory.
func (t *diskTier) checkRoot() {
	id, ok := dirID(t.root)
	if ok && id == t.rootID {
		return
	}
	if !t.rootLost {
		t.rootLost = true
		t.log.Warn("disk cache: the cache directory was deleted or replaced under the mount; starting it afresh", "dir", t.root)
	}
	for _, o := range t.objs {
		t.forget(o)
	}
	if err := os.MkdirAll(t.root, dirPerm); err != nil {
		return // the write fails next and says why
	}
	t.rootLost = false
	if lock, err := os.OpenFile(filepath.Join(filepath.Dir(t.root), "lock"), os.O_CREATE|os.O_RDWR, filePerm); err == nil {
		t.lock.Close()
		t.lock = lock
	}
	t.rootID, _ = dirID(t.root)
	t.rescan()
}

// deleted reports whether o's files were removed from the directory
// (cache drop, rm) while open; then o is forgotten, to be recreated.
func (t *diskTier) deleted(o *diskObject) bool {
	var st syscall.Stat_t
	if err := syscall.Fstat(int(o.meta.Fd()), &st); err != nil || st.Nlink > 0 {
		return false
	}
	t.log.Info("disk cache: object was removed from the cache directory; writing it afresh", "object", o.hdr.Name)
	t.forget(o)
	return true
}

// forget drops o from this process's index and closes its files.
func (t *diskTier) forget(o *diskObject) {
	for e := t.lru.Front(); e != nil; {
		next := e.Next()
		if d := e.Value.(*diskEntry); d.obj == o {
			t.used -= d.n
			t.lru.Remove(e)
			delete(t.entries, d.key)
			o.present--
		}
		e = next
	}
	t.closeObject(o)
	delete(t.objs, o.id)
}

// closeObject closes o's files, or leaves that to the last read or
// write of them under way. Called with t.mu held.
func (t *diskTier) closeObject(o *diskObject) {
	if o.busy > 0 {
		o.gone = true
		return
	}
	o.closeFiles()
}

// pin returns the open object for reads of its files outside the
// tier's lock, which keep them open until unpin.
func (t *diskTier) pin(id ObjectID) (*diskObject, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	o, err := t.object(id, false)
	if err == nil {
		o.busy++
	}
	return o, err
}

func (t *diskTier) unpin(o *diskObject) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.done(o)
}

// done ends a read or write of o's files, closing them if o was
// forgotten meanwhile and this was the last. Called with t.mu held.
func (t *diskTier) done(o *diskObject) {
	o.busy--
	if o.gone && o.busy == 0 {
		o.closeFiles()
	}
}

// makeRoom evicts least recently used blocks until n more bytes fit. When
// this process's view says the cache is full it takes the directory lock
// and rescans, since other processes fill and evict the same directory.
func (t *diskTier) makeRoom(n int64) bool {
	n += t.reserved // blocks being written count as held
	if t.used+n <= t.max {
		return true
	}
	if err := syscall.Flock(int(t.lock.Fd()), syscall.LOCK_EX); err == nil {
		defer syscall.Flock(int(t.lock.Fd()), syscall.LOCK_UN)
		t.rescan()
	}
	locks := map[string]*os.File{} // object id -> held eviction lock; nil = pinned
	defer func() {
		for _, f := range locks {
			if f != nil {
				f.Close()
			}
		}
	}()
	e := t.lru.Back()
	for t.used+n > t.max && e != nil {
		d := e.Value.(*diskEntry)
		e = e.Prev()
		lock, seen := locks[d.obj.id]
		if !seen {
			lock, _ = t.evictionLock(d.obj)
			locks[d.obj.id] = lock
		}
		if lock == nil {
			continue // in use through passthrough somewhere
		}
		t.dropLocked(d.obj, d.key.index)
		t.evictions.Add(1)
		t.roomFreed()
	}
	return t.used+n <= t.max
}

// dropLocked clears a block's record, then frees its space.
func (t *diskTier) dropLocked(o *diskObject, index int64) {
	o.meta.WriteAt(make([]byte, recordSize), metaHeaderSize+index*recordSize)
	// Punching a hole returns the space; where unsupported the bytes stay
	// until the object is removed, but the cleared record already hides them.
	unix.Fallocate(int(o.data.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, index*o.hdr.BlockSize, o.blockLen(index))
	k := diskKey{o.id, index}
	if e, ok := t.entries[k]; ok {
		t.used -= e.Value.(*diskEntry).n
		t.lru.Remove(e)
		delete(t.entries, k)
		o.present--
	}
}

// rescan rebuilds the index of present blocks from every object's records.
// Objects are ordered by last use (meta mtime), oldest evicted first.
func (t *diskTier) rescan() {
	dirs, err := os.ReadDir(t.root)
	if err != nil {
		return
	}
	type found struct {
		o     *diskObject
		mtime time.Time
	}
	var objs []found
	for _, d := range dirs {
		if !d.IsDir() {
			continue // foreign files are none of ours
		}
		o, ok := t.objs[d.Name()]
		if !ok {
			var err error
			if o, err = t.openObject(d.Name(), nil); err != nil {
				continue
			}
		}
		st, err := o.meta.Stat()
		if err != nil {
			continue
		}
		objs = append(objs, found{o, st.ModTime()})
	}
	sort.Slice(objs, func(i, j int) bool { return objs[i].mtime.Before(objs[j].mtime) })
	// Blocks this process touched keep their recent order, as the newest.
	var recent []diskKey
	for e := t.lru.Back(); e != nil; e = e.Prev() {
		recent = append(recent, e.Value.(*diskEntry).key)
	}
	t.lru.Init()
	t.entries = map[diskKey]*list.Element{}
	t.used = 0
	for _, o := range t.objs {
		o.present = 0
	}
	for _, f := range objs {
		err := scanRecords(f.o, true, func(i int64, _ blockSum, ok bool) bool {
			if ok {
				t.addEntry(diskKey{f.o.id, i}, f.o, f.o.blockLen(i))
			}
			return true
		})
		if err != nil {
			t.log.Warn("disk cache: cannot read an object's records", "object", f.o.hdr.Name, "err", err)
		}
	}
	for _, k := range recent {
		if e, ok := t.entries[k]; ok {
			t.lru.MoveToFront(e)
		}
	}
}
