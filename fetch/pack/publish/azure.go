package publish

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"strings"
	"sync"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
)

// AzureDest writes block blobs under a prefix of an Azure container.
type AzureDest struct {
	client   *container.Client
	name     string // az://account/container/prefix, for messages
	prefix   string // ends in "/" unless empty
	lister   keyLister
	inflight int // blocks staged at once
}

// NewAzureDest writes under prefix with client (fetch.NewAzureClient's,
// which retries), listing what is there with src (a source over the same
// prefix), with up to inflight blocks of a blob staged at once.
func NewAzureDest(client *container.Client, account, containerName, prefix string, src keyLister, inflight int) *AzureDest {
	if prefix != "" && !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	return &AzureDest{client: client, name: "az://" + account + "/" + containerName + "/" + prefix, prefix: prefix,
		lister: src, inflight: max(inflight, 1)}
}

func (d *AzureDest) String() string { return d.name }

// Keys lists the prefix; an empty or missing one holds nothing.
func (d *AzureDest) Keys(ctx context.Context) (map[string]bool, error) {
	return listKeys(ctx, d, d.lister)
}

// Remove deletes key; one that is not there is no error.
func (d *AzureDest) Remove(ctx context.Context, key string) error {
	_, err := d.client.NewBlobClient(d.prefix+key).Delete(ctx, nil)
	if err != nil && !isAzureCode(err, "BlobNotFound") {
		return fmt.Errorf("deleting %s: %w", key, azureErr(err))
	}
	return nil
}

// Create starts a block blob upload of key, in blocks sized for an object
// about as big as the original.
func (d *AzureDest) Create(ctx context.Context, key string, size int64) (Writer, error) {
	var id [8]byte
	rand.Read(id[:])
	w := &azureWriter{ctx: ctx, blob: d.client.NewBlockBlobClient(d.prefix + key), key: key, upload: id, sum: md5.New()}
	w.p.init(partSize(size), d.inflight)
	return w, nil
}

// azureWriter uploads a block blob: one Put Blob if it fits one block,
// otherwise blocks staged in the background while the next ones are
// written, committed as a list at the end. Staged blocks are not the
// blob's content: until the commit nothing is at the key, and blocks never
// committed are dropped by the service (after a week).
type azureWriter struct {
	ctx    context.Context
	blob   *blockblob.Client
	key    string
	upload [8]byte   // tells this upload's block IDs from others'
	p      pieces    // the blocks
	sum    hash.Hash // MD5 of the whole, kept as its Content-MD5
	ids    []string  // the blocks staged, in order
}

func (w *azureWriter) Write(p []byte) (int, error) {
	w.sum.Write(p)
	if err := w.p.write(p, w.flush); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (w *azureWriter) blockID(n int) string {
	b := binary.BigEndian.AppendUint32(w.upload[:len(w.upload):len(w.upload)], uint32(n))
	return base64.StdEncoding.EncodeToString(b)
}

// flush starts staging the buffered block.
func (w *azureWriter) flush() error {
	if err := w.p.failed(); err != nil {
		return err
	}
	id := w.blockID(len(w.ids))
	w.ids = append(w.ids, id)
	num := len(w.ids)
	w.p.send(func(body []byte) error {
		opts := &blockblob.StageBlockOptions{TransactionalValidation: bodyMD5(body)}
		if _, err := w.blob.StageBlock(w.ctx, id, newRewindableBody(body), opts); err != nil {
			return fmt.Errorf("staging block %d of %s: %w", num, w.key, azureErr(err))
		}
		return nil
	})
	return nil
}

func (w *azureWriter) Commit() error {
	md5sum := w.sum.Sum(nil)
	headers := &blob.HTTPHeaders{BlobContentMD5: md5sum}
	if len(w.ids) == 0 {
		_, err := w.blob.Upload(w.ctx, newRewindableBody(w.p.buf), &blockblob.UploadOptions{HTTPHeaders: headers, TransactionalValidation: bodyMD5(w.p.buf)})
		if err != nil {
			return fmt.Errorf("uploading %s: %w", w.key, azureErr(err))
		}
		return nil
	}
	if len(w.p.buf) > 0 {
		if err := w.flush(); err != nil {
			w.Abort()
			return err
		}
	}
	if err := w.p.wait(); err != nil {
		w.Abort()
		return err
	}
	_, err := w.blob.CommitBlockList(w.ctx, w.ids, &blockblob.CommitBlockListOptions{HTTPHeaders: headers})
	if err != nil {
		return fmt.Errorf("committing the blocks of %s: %w", w.key, azureErr(err))
	}
	return nil
}

// Abort waits for blocks in flight and commits nothing: the staged
// blocks are left for the service to drop, as Azure has no call that
// removes uncommitted blocks alone.
func (w *azureWriter) Abort() {
	w.p.wait()
}

// isAzureCode reports whether err is the store's reply with that code.
func isAzureCode(err error, code string) bool {
	var re *azcore.ResponseError
	return errors.As(err, &re) && re.ErrorCode == code
}

// azureErr is err without the SDK's message, which quotes the request (a
// SAS among it) and the reply's body: the status and code remain.
func azureErr(err error) error {
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		return fmt.Errorf("HTTP %d %s", re.StatusCode, re.ErrorCode)
	}
	return err
}

// rewindableBody is a request body the SDK may rewind to send it again.
// net/http can still be reading a body for an attempt that already
// failed (an early 503) when the SDK rewinds it for the next
// (golang/go#51907): the lock keeps those reads and the rewind apart, and
// the body's MD5, which the store checks (bodyMD5), refuses a request
// whose bytes such a late read took.
type rewindableBody struct {
	mu sync.Mutex
	r  *bytes.Reader
}

func newRewindableBody(p []byte) *rewindableBody { return &rewindableBody{r: bytes.NewReader(p)} }

func (b *rewindableBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.r.Read(p)
}

func (b *rewindableBody) Seek(off int64, whence int) (int64, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.r.Seek(off, whence)
}

func (b *rewindableBody) Close() error { return nil }

// bodyMD5 has the store check a request's body against its MD5.
func bodyMD5(p []byte) blob.TransferValidationType {
	sum := md5.Sum(p)
	return blob.TransferValidationTypeMD5(sum[:])
}
