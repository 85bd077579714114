package s3server

import (
	"crypto/md5"
	"encoding/base64"
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
	// checksum is what CreateMultipartUpload asked for: the algorithm
	// ("" for S3's default, a full-object CRC64NVME) and whether the
	// object's checksum is composite (over the parts' checksums).
	checksum checksumSpec
}

// uploadChecksum reads the checksum a CreateMultipartUpload asks for, as
// S3 allows it: COMPOSITE for CRC32, CRC32C, SHA1 and SHA256 (their
// default), FULL_OBJECT for CRC32, CRC32C and CRC64NVME (its default and
// only type).
func uploadChecksum(h http.Header) (checksumSpec, *apiError) {
	alg := strings.ToUpper(h.Get("x-amz-checksum-algorithm"))
	typ := strings.ToUpper(h.Get("x-amz-checksum-type"))
	if alg == "" {
		if typ != "" {
			return checksumSpec{}, errInvalidRequest.withMessage("The x-amz-checksum-type header can only be used with the x-amz-checksum-algorithm header.")
		}
		return checksumSpec{}, nil
	}
	if checksumAlgorithms[alg] == nil {
		return checksumSpec{}, errInvalidRequest.withMessage("Checksum algorithm provided is unsupported. Please try again with any of the valid types: [CRC32, CRC32C, CRC64NVME, SHA1, SHA256]")
	}
	spec := checksumSpec{algorithm: alg, composite: alg != "CRC64NVME"}
	switch typ {
	case "":
	case "COMPOSITE":
		spec.composite = true
	case "FULL_OBJECT":
		spec.composite = false
	default:
		return checksumSpec{}, errInvalidRequest.withMessage("Value for x-amz-checksum-type header is invalid.")
	}
	if spec.composite && alg == "CRC64NVME" || !spec.composite && (alg == "SHA1" || alg == "SHA256") {
		return checksumSpec{}, errInvalidRequest.withMessage("The " + spec.checksumType() + " checksum type cannot be used with the " + strings.ToLower(alg) + " checksum algorithm.")
	}
	return spec, nil
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
	spec, aerr := uploadChecksum(req.Header)
	if aerr != nil {
		return aerr
	}
	u := &upload{id: newVersionID(), key: req.key, header: metadataFrom(req.Header), initiated: s.clock(), parts: map[int]*part{}, checksum: spec}
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
	if spec.algorithm != "" {
		w.Header().Set("x-amz-checksum-algorithm", spec.algorithm)
		w.Header().Set("x-amz-checksum-type", spec.checksumType())
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
	_, u, aerr := st.getUpload(req.bucket, id, req.key)
	var want string // the upload's checksum algorithm
	if u != nil {
		want = u.checksum.algorithm
	}
	st.mu.RUnlock()
	if aerr != nil {
		return aerr
	}
	if declared, aerr := requestChecksum(req.Request); aerr == nil && want != "" && declared.algorithm != "" && declared.algorithm != want {
		return errInvalidRequest.withMessage("Checksum Type mismatch occurred, expected checksum Type: " +
			strings.ToLower(want) + ", actual checksum Type: " + strings.ToLower(declared.algorithm))
	}
	data, aerr := s.receive(req)
	if aerr != nil {
		return aerr
	}
	if want != "" && data.checksum.algorithm != want {
		// Sent without one: summed here, as the object's checksum needs it.
		sum, err := fileChecksum(data.path, want)
		if err != nil {
			_ = os.Remove(data.path)
			return errInternal
		}
		data.checksum = checksumSpec{algorithm: want, value: sum}
	}
	p := &part{written: data, number: number, etag: `"` + hex.EncodeToString(data.md5) + `"`}

	var replaced *part
	st.mu.Lock()
	_, u, aerr = st.getUpload(req.bucket, id, req.key)
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
	var partSums []string
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
			partSums = append(partSums, p.checksum.value)
			etagHash.Write(p.md5)
		}
	}
	var header http.Header
	var spec checksumSpec
	if u != nil {
		header, spec = u.header, u.checksum
	}
	st.mu.RUnlock()
	if aerr != nil {
		return aerr
	}

	readers := make([]io.Reader, len(files))
	for i, f := range files {
		readers[i] = f
	}
	// Without an algorithm asked for, S3 keeps a full-object CRC64NVME of
	// multipart objects too; with one, the full-object checksum of that
	// algorithm or the composite one, over the parts' checksums.
	full := defaultChecksum
	switch {
	case spec.composite:
		full = ""
	case spec.algorithm != "":
		full = spec.algorithm
	}
	data, err := st.write(io.MultiReader(readers...), full)
	if err != nil {
		return errInternal
	}
	obj := data.object(req.key, s.clock())
	obj.header = header
	obj.partSizes = sizes
	if spec.composite {
		outer := checksumAlgorithms[spec.algorithm]()
		for _, ps := range partSums {
			raw, _ := base64.StdEncoding.DecodeString(ps)
			outer.Write(raw)
		}
		obj.partChecksums = partSums
		obj.checksum = checksumSpec{algorithm: spec.algorithm, composite: true,
			value: base64.StdEncoding.EncodeToString(outer.Sum(nil)) + "-" + strconv.Itoa(len(partSums))}
	}
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
	res := completeResult{Xmlns: s3Namespace, Location: "/" + req.bucket + "/" + req.key, Bucket: req.bucket, Key: req.key, ETag: obj.etag}
	if obj.checksum.algorithm != "" {
		res.setChecksum(obj.checksum)
	}
	return writeXML(w, res)
}

// completeResult is CompleteMultipartUpload's answer.
type completeResult struct {
	XMLName           xml.Name `xml:"CompleteMultipartUploadResult"`
	Xmlns             string   `xml:"xmlns,attr"`
	Location          string
	Bucket            string
	Key               string
	ETag              string
	ChecksumCRC32     string `xml:",omitempty"`
	ChecksumCRC32C    string `xml:",omitempty"`
	ChecksumCRC64NVME string `xml:",omitempty"`
	ChecksumSHA1      string `xml:",omitempty"`
	ChecksumSHA256    string `xml:",omitempty"`
	ChecksumType      string `xml:",omitempty"`
}

func (r *completeResult) setChecksum(c checksumSpec) {
	r.ChecksumType = c.checksumType()
	switch c.algorithm {
	case "CRC32":
		r.ChecksumCRC32 = c.value
	case "CRC32C":
		r.ChecksumCRC32C = c.value
	case "CRC64NVME":
		r.ChecksumCRC64NVME = c.value
	case "SHA1":
		r.ChecksumSHA1 = c.value
	case "SHA256":
		r.ChecksumSHA256 = c.value
	}
}

// fileChecksum is the base64 checksum of a data file.
func fileChecksum(path, algorithm string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := checksumAlgorithms[algorithm]()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(h.Sum(nil)), nil
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
