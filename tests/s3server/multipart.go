package s3server

import (
	"crypto/md5"
	"encoding/hex"
	"encoding/xml"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

// Multipart uploads: CreateMultipartUpload, UploadPart,
// CompleteMultipartUpload and AbortMultipartUpload, which is what upload
// tools (the SDK's upload manager, aws s3 cp) use for large files.
// ListParts and ListMultipartUploads are not implemented.

const (
	maxParts    = 10000
	minPartSize = 5 << 20 // every part but the last
)

type upload struct {
	id        string
	key       string
	header    http.Header
	initiated time.Time
	parts     map[int]*part
}

type part struct {
	written
	number int
	etag   string
}

func (u *upload) removeFiles() {
	for _, p := range u.parts {
		_ = os.Remove(p.path)
	}
}

// getUpload finds an upload. st.mu must be held.
func (st *store) getUpload(bucketName, id, key string) (*bucket, *upload, *apiError) {
	b := st.buckets[bucketName]
	if b == nil {
		return nil, nil, errNoSuchBucket.with("BucketName", bucketName)
	}
	u := b.uploads[id]
	if u == nil || u.key != key {
		return b, nil, errNoSuchUpload.with("UploadId", id)
	}
	return b, u, nil
}

func (s *Server) createMultipartUpload(w http.ResponseWriter, req *request) *apiError {
	u := &upload{id: newVersionID(), key: req.key, header: metadataFrom(req.Header), initiated: s.clock(), parts: map[int]*part{}}
	st := s.store
	st.mu.Lock()
	b := st.buckets[req.bucket]
	if b != nil {
		b.uploads[u.id] = u
	}
	st.mu.Unlock()
	if b == nil {
		return errNoSuchBucket.with("BucketName", req.bucket)
	}
	return writeXML(w, struct {
		XMLName  xml.Name `xml:"InitiateMultipartUploadResult"`
		Xmlns    string   `xml:"xmlns,attr"`
		Bucket   string
		Key      string
		UploadID string `xml:"UploadId"`
	}{Xmlns: s3Namespace, Bucket: req.bucket, Key: req.key, UploadID: u.id})
}

func (s *Server) uploadPart(w http.ResponseWriter, req *request) *apiError {
	s.stats.puts.Add(1)
	number, err := strconv.Atoi(req.query.Get("partNumber"))
	if err != nil || number < 1 || number > maxParts {
		return errInvalidArgument.withMessage("Part number must be an integer between 1 and 10000, inclusive").with("ArgumentName", "partNumber")
	}
	id := req.query.Get("uploadId")
	st := s.store
	st.mu.RLock()
	_, _, aerr := st.getUpload(req.bucket, id, req.key)
	st.mu.RUnlock()
	if aerr != nil {
		return aerr
	}
	data, aerr := s.receive(req)
	if aerr != nil {
		return aerr
	}
	p := &part{written: data, number: number, etag: `"` + hex.EncodeToString(data.md5) + `"`}

	var replaced *part
	st.mu.Lock()
	_, u, aerr := st.getUpload(req.bucket, id, req.key)
	if aerr == nil {
		replaced = u.parts[number]
		u.parts[number] = p
	}
	st.mu.Unlock()
	if aerr != nil { // aborted or completed meanwhile
		_ = os.Remove(data.path)
		return aerr
	}
	if replaced != nil {
		_ = os.Remove(replaced.path)
	}
	w.Header().Set("ETag", p.etag)
	if data.checksum.algorithm != "" {
		w.Header().Set(checksumHeader(data.checksum.algorithm), data.checksum.value)
	}
	w.WriteHeader(http.StatusOK)
	return nil
}

func (s *Server) completeMultipartUpload(w http.ResponseWriter, req *request) *apiError {
	var body struct {
		Parts []struct {
			PartNumber int
			ETag       string
		} `xml:"Part"`
	}
	if found, err := readXML(req, &body); err != nil {
		return err
	} else if !found || len(body.Parts) == 0 {
		return errMalformedXML.withMessage("You must specify at least one part")
	}
	check, aerr := writeConditions(req)
	if aerr != nil {
		return aerr
	}
	id := req.query.Get("uploadId")

	// Validate the part list and open the parts' files under the lock, then
	// assemble the object without holding it.
	st := s.store
	st.mu.RLock()
	_, u, aerr := st.getUpload(req.bucket, id, req.key)
	var files []*os.File
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	var sizes []int64
	etagHash := md5.New()
	for i, cp := range body.Parts {
		if aerr != nil {
			break
		}
		p := u.parts[cp.PartNumber]
		switch {
		case i > 0 && cp.PartNumber <= body.Parts[i-1].PartNumber:
			aerr = errInvalidPartOrder
		case p == nil || strings.Trim(cp.ETag, `"`) != strings.Trim(p.etag, `"`):
			aerr = errInvalidPart.with("UploadId", id).with("PartNumber", strconv.Itoa(cp.PartNumber)).with("ETag", cp.ETag)
		case i < len(body.Parts)-1 && p.size < minPartSize:
			aerr = errEntityTooSmall.with("ProposedSize", strconv.FormatInt(p.size, 10)).with("MinSizeAllowed", strconv.Itoa(minPartSize)).with("PartNumber", strconv.Itoa(cp.PartNumber)).with("ETag", p.etag)
		default:
			f, err := os.Open(p.path)
			if err != nil {
				aerr = errInternal
				break
			}
			files = append(files, f)
			sizes = append(sizes, p.size)
			etagHash.Write(p.md5)
		}
	}
	var header http.Header
	if u != nil {
		header = u.header
	}
	st.mu.RUnlock()
	if aerr != nil {
		return aerr
	}

	readers := make([]io.Reader, len(files))
	for i, f := range files {
		readers[i] = f
	}
	// S3 keeps a full-object CRC64NVME of multipart objects too.
	data, err := st.write(io.MultiReader(readers...), defaultChecksum)
	if err != nil {
		return errInternal
	}
	obj := data.object(req.key, s.clock())
	obj.header = header
	obj.partSizes = sizes
	// S3's multipart ETag: the MD5 of the parts' binary MD5s, and the count.
	obj.etag = `"` + hex.EncodeToString(etagHash.Sum(nil)) + "-" + strconv.Itoa(len(sizes)) + `"`

	var obsolete []*object
	st.mu.Lock()
	b, u, aerr := st.getUpload(req.bucket, id, req.key)
	if aerr == nil {
		if obsolete, aerr = st.commit(b, obj, check); aerr == nil {
			delete(b.uploads, id)
		}
	}
	st.mu.Unlock()
	if aerr != nil {
		_ = os.Remove(obj.path)
		return aerr
	}
	removeFiles(obsolete)
	u.removeFiles()

	if obj.versionID != "" {
		w.Header().Set("x-amz-version-id", obj.versionID)
	}
	return writeXML(w, struct {
		XMLName  xml.Name `xml:"CompleteMultipartUploadResult"`
		Xmlns    string   `xml:"xmlns,attr"`
		Location string
		Bucket   string
		Key      string
		ETag     string
	}{Xmlns: s3Namespace, Location: "/" + req.bucket + "/" + req.key, Bucket: req.bucket, Key: req.key, ETag: obj.etag})
}

func (s *Server) abortMultipartUpload(w http.ResponseWriter, req *request) *apiError {
	st := s.store
	id := req.query.Get("uploadId")
	st.mu.Lock()
	b, u, aerr := st.getUpload(req.bucket, id, req.key)
	if aerr == nil {
		delete(b.uploads, id)
	}
	st.mu.Unlock()
	if aerr != nil {
		return aerr
	}
	u.removeFiles()
	w.WriteHeader(http.StatusNoContent)
	return nil
}
