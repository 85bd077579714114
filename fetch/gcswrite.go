package fetch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// Writing objects to Cloud Storage, for pack publishing: the JSON API's
// single-request media upload for small objects, its resumable upload for
// the rest, over the source's HTTP client, credentials (GCSOptions.Write)
// and retry budget. Either way nothing is at the name until the whole
// object is stored.

// OpPut is an upload request, for an Observer.
const OpPut = "put"

// GCSChunkAlign is what every chunk of a resumable upload but the last
// must be a multiple of.
const GCSChunkAlign = 256 << 10

// gcsUploadEndpoint is the upload URL that goes with a JSON API base URL:
// Google's and emulators' put /upload before /storage/v1/.
func gcsUploadEndpoint(api string) string {
	u, err := url.Parse(api)
	if err != nil {
		return api
	}
	if base, ok := strings.CutSuffix(u.Path, "/storage/v1/"); ok {
		u.Path = base + "/upload/storage/v1/"
	} else {
		u.Path = "/upload" + u.Path
	}
	return u.String()
}

// uploadURL is where an upload of full starts, with its type.
func (g *GCS) uploadURL(full, uploadType string) string {
	return g.upload + "b/" + url.PathEscape(g.name) + "/o?" + url.Values{"uploadType": {uploadType}, "name": {full}}.Encode()
}

// PutObject stores p as key (relative to the prefix) in one request,
// retried whole.
func (g *GCS) PutObject(ctx context.Context, key string, p []byte) error {
	full := g.fullKey(key)
	return g.retry.do(ctx, OpPut, 0, "upload "+full, func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, g.uploadURL(full, "media"), bytes.NewReader(p))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/octet-stream")
		resp, err := g.do(req)
		if err != nil {
			return err
		}
		return drainClose(resp.Body)
	})
}

// DeleteObject deletes key (relative to the prefix); one that is not
// there is no error.
func (g *GCS) DeleteObject(ctx context.Context, key string) error {
	full := g.fullKey(key)
	err := g.retry.do(ctx, OpPut, 0, "delete "+full, func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodDelete, g.objectURL(full), nil)
		if err != nil {
			return err
		}
		resp, err := g.do(req)
		if err != nil {
			return err
		}
		return drainClose(resp.Body)
	})
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	return err
}

// GCSUpload is a resumable upload of one object. Its chunks are sent one
// after another; nothing is at the name until Finish succeeds.
type GCSUpload struct {
	g    *GCS
	full string
	// uri is the session: whoever holds it can write the upload, so it
	// is never logged or quoted.
	uri string
	off int64 // bytes the store holds
}

// StartUpload starts a resumable upload of key (relative to the prefix).
func (g *GCS) StartUpload(ctx context.Context, key string) (*GCSUpload, error) {
	full := g.fullKey(key)
	var uri string
	err := g.retry.do(ctx, OpPut, 0, "start the upload of "+full, func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, g.uploadURL(full, "resumable"), strings.NewReader("{}"))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json; charset=UTF-8")
		req.Header.Set("X-Upload-Content-Type", "application/octet-stream")
		resp, err := g.do(req)
		if err != nil {
			return err
		}
		uri = resp.Header.Get("Location")
		return drainClose(resp.Body)
	})
	if err != nil {
		return nil, err
	}
	// The session is sent the credentials too: it must be the store's.
	u, err := url.Parse(uri)
	base, _ := url.Parse(g.upload)
	if uri == "" || err != nil || u.Scheme != base.Scheme || u.Host != base.Host {
		return nil, fmt.Errorf("start the upload of %s: the store named no upload session on %s", full, base.Host)
	}
	return &GCSUpload{g: g, full: full, uri: uri}, nil
}

// Write sends p, a multiple of GCSChunkAlign bytes, as the next chunk.
func (u *GCSUpload) Write(ctx context.Context, p []byte) error {
	if len(p)%GCSChunkAlign != 0 {
		return fmt.Errorf("upload of %s: a chunk of %d bytes, not a multiple of %d", u.full, len(p), GCSChunkAlign)
	}
	return u.send(ctx, p, false)
}

// Finish sends p, of any length, as the last chunk, which stores the
// object.
func (u *GCSUpload) Finish(ctx context.Context, p []byte) error {
	return u.send(ctx, p, true)
}

// send sends p as the bytes after what the store holds. A try that fails
// after its request may have reached the store asks the session how much
// it kept first, and sends the rest, as the protocol has it.
func (u *GCSUpload) send(ctx context.Context, p []byte, final bool) error {
	start, end := u.off, u.off+int64(len(p))
	total := "*"
	if final {
		total = strconv.FormatInt(end, 10)
	}
	what := fmt.Sprintf("upload %s [%d, %d)", u.full, start, end)
	unsure := false
	return u.g.retry.do(ctx, OpPut, 0, what, func(ctx context.Context) error {
		if unsure {
			have, done, err := u.status(ctx, total)
			if err != nil {
				return err
			}
			switch {
			case done && final:
				u.off = end
				return nil
			case done:
				return errors.New("the store ended the upload before its last chunk")
			case have < start || have > end:
				return fmt.Errorf("the store holds %d bytes of the upload, %d were sent", have, end)
			}
			u.off = have
		}
		unsure = true
		body := p[u.off-start:]
		req, err := http.NewRequestWithContext(ctx, http.MethodPut, u.uri, bytes.NewReader(body))
		if err != nil {
			return err
		}
		if len(body) == 0 {
			req.Header.Set("Content-Range", "bytes */"+total)
		} else {
			req.Header.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%s", u.off, end-1, total))
		}
		resp, err := u.g.do(req)
		if err != nil {
			return err
		}
		defer drainClose(resp.Body)
		if resp.StatusCode != http.StatusPermanentRedirect {
			if !final {
				return errors.New("the store ended the upload before its last chunk")
			}
			u.off = end
			return nil
		}
		if final {
			return transient(errors.New("the store wants more after the last chunk"), 0)
		}
		have, err := persisted(resp.Header.Get("Range"))
		if err != nil {
			return err
		}
		unsure = false
		u.off = have
		if have != end {
			// A store may keep part of a chunk: the rest goes again.
			return transient(fmt.Errorf("the store kept %d of the %d bytes sent", have-start, end-start), 0)
		}
		return nil
	})
}

// status asks the session how many bytes it holds, or whether the upload
// is done.
func (u *GCSUpload) status(ctx context.Context, total string) (have int64, done bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, u.uri, nil)
	if err != nil {
		return 0, false, err
	}
	req.Header.Set("Content-Range", "bytes */"+total)
	resp, err := u.g.do(req)
	if err != nil {
		return 0, false, err
	}
	defer drainClose(resp.Body)
	if resp.StatusCode != http.StatusPermanentRedirect {
		return 0, true, nil
	}
	have, err = persisted(resp.Header.Get("Range"))
	return have, false, err
}

// persisted reads a 308's Range header ("bytes=0-N"; none when the
// store holds nothing) as the number of bytes the store holds.
func persisted(rng string) (int64, error) {
	if rng == "" {
		return 0, nil
	}
	last, ok := strings.CutPrefix(rng, "bytes=0-")
	n, err := strconv.ParseInt(last, 10, 64)
	if !ok || err != nil || n < 0 {
		return 0, fmt.Errorf("the store's upload status has a malformed Range %q", rng)
	}
	return n + 1, nil
}

// Cancel ends the session: nothing is stored, and the chunks sent are
// dropped. It is sent once, on its own context, as it runs when an
// upload has already failed.
func (u *GCSUpload) Cancel(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, u.uri, nil)
	if err != nil {
		return err
	}
	resp, err := u.g.do(req)
	var ae *gcsAPIError
	if errors.As(err, &ae) && ae.Code == 499 {
		return nil // what Cloud Storage answers a cancelled session
	}
	if err != nil {
		return fmt.Errorf("cancelling the upload of %s: %w", u.full, err)
	}
	return drainClose(resp.Body)
}

// drainClose reads what is left of a small reply, so that its connection
// is reused, and closes it.
func drainClose(body io.ReadCloser) error {
	_, err := io.Copy(io.Discard, io.LimitReader(body, gcsJSONBodyMax))
	body.Close()
	return err
}
