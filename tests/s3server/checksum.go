package s3server

import (
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"hash"
	"hash/crc32"
	"hash/crc64"
	"net/http"
	"strings"
)

// Additional checksums (x-amz-checksum-*) as S3 supports them. The SDK sends
// one with every PutObject/UploadPart (CRC32 by default): as a header over
// plain HTTP, as an aws-chunked trailer over HTTPS. S3 verifies it, stores it
// and returns it from GET/HEAD when asked with x-amz-checksum-mode: ENABLED,
// which lets the SDK validate what it downloads. This server does the same.

// defaultChecksum is what S3 computes and stores for an upload that
// declares no checksum.
const defaultChecksum = "CRC64NVME"

// crc64NVME is the reversed NVMe polynomial, as hash/crc64 wants it.
const crc64NVME = 0x9a6c9329ac4bc9b5

var (
	castagnoli     = crc32.MakeTable(crc32.Castagnoli)
	crc64NVMETable = crc64.MakeTable(crc64NVME)
)

// checksumAlgorithms maps the upper-case algorithm names S3 uses to hash
// constructors.
var checksumAlgorithms = map[string]func() hash.Hash{
	"CRC32":     func() hash.Hash { return crc32.NewIEEE() },
	"CRC32C":    func() hash.Hash { return crc32.New(castagnoli) },
	"CRC64NVME": func() hash.Hash { return crc64.New(crc64NVMETable) },
	"SHA1":      sha1.New,
	"SHA256":    sha256.New,
}

// checksumHeader is the header (and trailer) name for an algorithm.
func checksumHeader(algorithm string) string {
	return "x-amz-checksum-" + strings.ToLower(algorithm)
}

// checksumSpec is the checksum a client declared for an upload.
type checksumSpec struct {
	algorithm string // "" when the client declared none
	value     string // base64; "" when it arrives as a trailer
	trailer   bool
	// composite marks the checksum of a multipart object computed over
	// its parts' checksums; value then ends in "-N".
	composite bool
}

// checksumType is the x-amz-checksum-type of the checksum.
func (c checksumSpec) checksumType() string {
	if c.composite {
		return "COMPOSITE"
	}
	return "FULL_OBJECT"
}

// requestChecksum works out which checksum the client declared, from the
// x-amz-checksum-<alg> headers or from x-amz-trailer.
func requestChecksum(r *http.Request) (checksumSpec, *apiError) {
	var spec checksumSpec
	for name := range checksumAlgorithms {
		v := r.Header.Get(checksumHeader(name))
		if v == "" {
			continue
		}
		if spec.algorithm != "" {
			return spec, errInvalidRequest.withMessage("Expecting a single x-amz-checksum- header. Multiple checksum Types are not allowed.")
		}
		spec = checksumSpec{algorithm: name, value: v}
	}
	if t := r.Header.Get("x-amz-trailer"); t != "" {
		name, ok := strings.CutPrefix(strings.ToLower(strings.TrimSpace(t)), "x-amz-checksum-")
		alg := strings.ToUpper(name)
		if !ok || checksumAlgorithms[alg] == nil || spec.algorithm != "" {
			return spec, errInvalidRequest.withMessage("The value specified in the x-amz-trailer header is not supported")
		}
		spec = checksumSpec{algorithm: alg, trailer: true}
	}
	if spec.value != "" && !validChecksumValue(spec.algorithm, spec.value) {
		return spec, errInvalidRequest.withMessage("Value for " + checksumHeader(spec.algorithm) + " header is invalid.")
	}
	return spec, nil
}

func validChecksumValue(algorithm, value string) bool {
	raw, err := base64.StdEncoding.DecodeString(value)
	return err == nil && len(raw) == checksumAlgorithms[algorithm]().Size()
}

func checksumMismatch(algorithm string) *apiError {
	return errBadDigest.withMessage("The " + algorithm + " you specified did not match the calculated checksum.")
}
