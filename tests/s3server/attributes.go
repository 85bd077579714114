package s3server

import (
	"bytes"
	"crypto/md5"
	"encoding/base64"
	"encoding/hex"
	"encoding/xml"
	"fmt"
	"net/http"
	"strconv"
	"strings"
)

// getObjectAttributes is GetObjectAttributes (GET ?attributes): the ETag
// without quotes, size, full-object checksum and the parts of a multipart
// object, each as x-amz-object-attributes asks.
func (s *Server) getObjectAttributes(w http.ResponseWriter, req *request) *apiError {
	obj, _, aerr := s.store.get(req.bucket, req.key, req.query.Get("versionId"), false)
	if aerr != nil {
		return aerr
	}
	want := map[string]bool{}
	for _, v := range req.Header.Values("x-amz-object-attributes") {
		for _, a := range strings.Split(v, ",") {
			want[strings.TrimSpace(a)] = true
		}
	}
	type part = attributesPart
	type parts struct {
		PartsCount           int
		PartNumberMarker     int
		NextPartNumberMarker int
		MaxParts             int
		IsTruncated          bool
		Part                 []part
	}
	type checksum struct {
		ChecksumCRC32     string `xml:",omitempty"`
		ChecksumCRC32C    string `xml:",omitempty"`
		ChecksumCRC64NVME string `xml:",omitempty"`
		ChecksumSHA1      string `xml:",omitempty"`
		ChecksumSHA256    string `xml:",omitempty"`
		ChecksumType      string `xml:",omitempty"`
	}
	out := struct {
		XMLName      xml.Name  `xml:"GetObjectAttributesResponse"`
		Xmlns        string    `xml:"xmlns,attr"`
		ETag         string    `xml:",omitempty"`
		Checksum     *checksum `xml:",omitempty"`
		ObjectParts  *parts    `xml:",omitempty"`
		StorageClass string    `xml:",omitempty"`
		ObjectSize   *int64    `xml:",omitempty"`
	}{Xmlns: s3Namespace}
	if want["ETag"] {
		out.ETag = strings.Trim(obj.etag, `"`)
	}
	if want["StorageClass"] {
		out.StorageClass = "STANDARD"
	}
	if want["ObjectSize"] {
		out.ObjectSize = &obj.size
	}
	if want["Checksum"] && obj.checksum.algorithm != "" {
		c := &checksum{ChecksumType: obj.checksum.checksumType()}
		switch obj.checksum.algorithm {
		case "CRC32":
			c.ChecksumCRC32 = obj.checksum.value
		case "CRC32C":
			c.ChecksumCRC32C = obj.checksum.value
		case "CRC64NVME":
			c.ChecksumCRC64NVME = obj.checksum.value
		case "SHA1":
			c.ChecksumSHA1 = obj.checksum.value
		case "SHA256":
			c.ChecksumSHA256 = obj.checksum.value
		}
		out.Checksum = c
	}
	if want["ObjectParts"] && len(obj.partSizes) > 0 {
		marker, _ := strconv.Atoi(req.Header.Get("x-amz-part-number-marker"))
		limit, err := strconv.Atoi(req.Header.Get("x-amz-max-parts"))
		if err != nil || limit <= 0 || limit > 1000 {
			limit = 1000
		}
		p := &parts{PartsCount: len(obj.partSizes), PartNumberMarker: marker, MaxParts: limit}
		for i := marker; i < len(obj.partSizes) && len(p.Part) < limit; i++ {
			pt := part{PartNumber: i + 1, Size: obj.partSizes[i]}
			if i < len(obj.partChecksums) {
				pt.setChecksum(obj.checksum.algorithm, obj.partChecksums[i])
			}
			p.Part = append(p.Part, pt)
			p.NextPartNumberMarker = i + 1
		}
		p.IsTruncated = p.NextPartNumberMarker < len(obj.partSizes)
		out.ObjectParts = p
	}
	setObjectHeaders(w.Header(), obj)
	w.Header().Del("ETag")
	return writeXML(w, out)
}

// attributesPart is one part in a GetObjectAttributes reply.
type attributesPart struct {
	ChecksumCRC32  string `xml:",omitempty"`
	ChecksumCRC32C string `xml:",omitempty"`
	ChecksumSHA1   string `xml:",omitempty"`
	ChecksumSHA256 string `xml:",omitempty"`
	PartNumber     int
	Size           int64
}

func (p *attributesPart) setChecksum(algorithm, value string) {
	switch algorithm {
	case "CRC32":
		p.ChecksumCRC32 = value
	case "CRC32C":
		p.ChecksumCRC32C = value
	case "SHA1":
		p.ChecksumSHA1 = value
	case "SHA256":
		p.ChecksumSHA256 = value
	}
}

// PutMultipartWith stores the concatenation of parts as bucket/key, as a
// completed multipart upload would (ETag "md5-of-part-md5s-N", parts
// listed by GetObjectAttributes), bypassing HTTP, and returns its ETag.
func (s *Server) PutMultipartWith(bucket, key string, parts [][]byte, opts PutOptions) (etag string, err error) {
	if len(parts) == 0 {
		return "", fmt.Errorf("s3server: a multipart object needs parts")
	}
	etagHash := md5.New()
	sizes := make([]int64, len(parts))
	for i, p := range parts {
		sum := md5.Sum(p)
		etagHash.Write(sum[:])
		sizes[i] = int64(len(p))
	}
	if opts.Composite {
		newSum := checksumAlgorithms[opts.Checksum]
		if newSum == nil || opts.Checksum == "CRC64NVME" {
			return "", fmt.Errorf("s3server: no composite %q checksum: want CRC32, CRC32C, SHA1 or SHA256", opts.Checksum)
		}
		outer := newSum()
		partSums := make([]string, len(parts))
		for i, p := range parts {
			h := newSum()
			h.Write(p)
			raw := h.Sum(nil)
			outer.Write(raw)
			partSums[i] = base64.StdEncoding.EncodeToString(raw)
		}
		composite := checksumSpec{algorithm: opts.Checksum, composite: true,
			value: base64.StdEncoding.EncodeToString(outer.Sum(nil)) + "-" + strconv.Itoa(len(parts))}
		return s.putDirectWith(bucket, key, bytes.NewReader(bytes.Join(parts, nil)), PutOptions{NoChecksum: true, SSEKMS: opts.SSEKMS}, func(obj *object) {
			obj.partSizes = sizes
			obj.partChecksums = partSums
			obj.checksum = composite
			obj.etag = `"` + hex.EncodeToString(etagHash.Sum(nil)) + "-" + strconv.Itoa(len(parts)) + `"`
		})
	}
	return s.putDirectWith(bucket, key, bytes.NewReader(bytes.Join(parts, nil)), opts, func(obj *object) {
		obj.partSizes = sizes
		obj.etag = `"` + hex.EncodeToString(etagHash.Sum(nil)) + "-" + strconv.Itoa(len(parts)) + `"`
	})
}
