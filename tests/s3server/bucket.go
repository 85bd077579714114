package s3server

import (
	"encoding/base64"
	"encoding/xml"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
)

const s3Namespace = "http://s3.amazonaws.com/doc/2006-03-01/"

type owner struct {
	ID          string
	DisplayName string
}

// The single account this server knows.
var serverOwner = owner{ID: "75aa57f09aa0c8caeab4f8c24e99d10f8e7faeebf76c078efc7c6caea54ba06a", DisplayName: "s3server"}

func (s *Server) listBuckets(w http.ResponseWriter, req *request) *apiError {
	type bucketXML struct {
		Name         string
		CreationDate string
		BucketRegion string
	}
	type result struct {
		XMLName           xml.Name    `xml:"ListAllMyBucketsResult"`
		Xmlns             string      `xml:"xmlns,attr"`
		Owner             owner       `xml:"Owner"`
		Buckets           []bucketXML `xml:"Buckets>Bucket"`
		ContinuationToken string      `xml:",omitempty"`
		Prefix            string      `xml:",omitempty"`
	}
	maxBuckets := 10000
	if v := req.query.Get("max-buckets"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 10000 {
			return errInvalidArgument.withMessage("max-buckets must be an integer between 1 and 10000").with("ArgumentName", "max-buckets")
		}
		maxBuckets = n
	}
	prefix, after := req.query.Get("prefix"), req.query.Get("continuation-token")
	res := result{Xmlns: s3Namespace, Owner: serverOwner, Prefix: prefix, Buckets: []bucketXML{}}
	for _, b := range s.store.listBuckets() {
		if !strings.HasPrefix(b.name, prefix) || b.name <= after {
			continue
		}
		if len(res.Buckets) == maxBuckets {
			res.ContinuationToken = res.Buckets[len(res.Buckets)-1].Name
			break
		}
		res.Buckets = append(res.Buckets, bucketXML{b.name, lastModifiedXML(b.created), s.opts.Region})
	}
	return writeXML(w, res)
}

func (s *Server) createBucket(w http.ResponseWriter, req *request) *apiError {
	var conf struct {
		LocationConstraint string
	}
	if _, err := readXML(req, &conf); err != nil {
		return err
	}
	// A bucket can only be created in the region the server serves. (Being
	// lenient, a missing constraint is accepted for any region.)
	if lc := conf.LocationConstraint; lc != "" && lc != s.opts.Region {
		return errIllegalLocation.withMessage("The " + lc + " location constraint is incompatible for the region specific endpoint this request was sent to.")
	}
	if err := s.store.createBucket(req.bucket, s.clock()); err != nil {
		return err
	}
	w.Header().Set("Location", "/"+req.bucket)
	w.WriteHeader(http.StatusOK)
	return nil
}

func (s *Server) headBucket(w http.ResponseWriter, req *request) *apiError {
	if err := s.store.bucketExists(req.bucket); err != nil {
		return err
	}
	w.Header().Set("x-amz-bucket-region", s.opts.Region)
	w.Header().Set("x-amz-access-point-alias", "false")
	w.WriteHeader(http.StatusOK)
	return nil
}

func (s *Server) deleteBucket(w http.ResponseWriter, req *request) *apiError {
	if err := s.store.deleteBucket(req.bucket); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) getBucketLocation(w http.ResponseWriter, req *request) *apiError {
	if err := s.store.bucketExists(req.bucket); err != nil {
		return err
	}
	region := s.opts.Region
	if region == "us-east-1" {
		region = "" // S3's historical encoding of us-east-1
	}
	return writeXML(w, struct {
		XMLName xml.Name `xml:"LocationConstraint"`
		Xmlns   string   `xml:"xmlns,attr"`
		Region  string   `xml:",chardata"`
	}{Xmlns: s3Namespace, Region: region})
}

func (s *Server) getBucketVersioning(w http.ResponseWriter, req *request) *apiError {
	if err := s.store.bucketExists(req.bucket); err != nil {
		return err
	}
	status := ""
	if s.opts.Versioning {
		status = "Enabled"
	}
	return writeXML(w, struct {
		XMLName xml.Name `xml:"VersioningConfiguration"`
		Xmlns   string   `xml:"xmlns,attr"`
		Status  string   `xml:",omitempty"`
	}{Xmlns: s3Namespace, Status: status})
}

// listParams selects a page of a listing.
type listParams struct {
	prefix, delimiter string
	marker            string // list keys strictly after this
	maxKeys           int
}

// listPage is one page of a listing. next is the last key or common prefix
// returned: the marker of the following page when truncated.
type listPage struct {
	objects   []*object
	prefixes  []string
	truncated bool
	next      string
}

// list returns a page of the bucket's keys, in byte order, rolling keys that
// contain the delimiter after the prefix up into common prefixes. Keys and
// common prefixes both count towards maxKeys.
func (st *store) list(bucketName string, p listParams) (listPage, *apiError) {
	st.mu.RLock()
	defer st.mu.RUnlock()
	b := st.buckets[bucketName]
	if b == nil {
		return listPage{}, errNoSuchBucket.with("BucketName", bucketName)
	}
	var page listPage
	if p.maxKeys == 0 {
		return page, nil
	}
	i, _ := slices.BinarySearch(b.keys, p.prefix)
	if p.marker != "" {
		j, found := slices.BinarySearch(b.keys, p.marker)
		if found {
			j++
		}
		i = max(i, j)
	}
	for ; i < len(b.keys); i++ {
		key := b.keys[i]
		if !strings.HasPrefix(key, p.prefix) {
			break // sorted: no later key has the prefix either
		}
		item, isPrefix := key, false
		if p.delimiter != "" {
			if j := strings.Index(key[len(p.prefix):], p.delimiter); j >= 0 {
				item, isPrefix = key[:len(p.prefix)+j+len(p.delimiter)], true
				// The keys under a common prefix are contiguous: skip to
				// the last of them.
				i = sort.Search(len(b.keys), func(k int) bool {
					return b.keys[k] > item && !strings.HasPrefix(b.keys[k], item)
				}) - 1
				if item == p.marker {
					continue // returned on the previous page
				}
			}
		}
		if len(page.objects)+len(page.prefixes) == p.maxKeys {
			page.truncated = true
			break
		}
		if isPrefix {
			page.prefixes = append(page.prefixes, item)
		} else {
			page.objects = append(page.objects, b.current(key))
		}
		page.next = item
	}
	return page, nil
}

type listEntry struct {
	Key               string
	LastModified      string
	ETag              string
	ChecksumAlgorithm string `xml:",omitempty"`
	ChecksumType      string `xml:",omitempty"`
	Size              int64
	Owner             *owner `xml:",omitempty"`
	StorageClass      string
}

type commonPrefix struct {
	Prefix string
}

// listObjects serves ListObjectsV2 (version 2) and ListObjects (version 1).
func (s *Server) listObjects(w http.ResponseWriter, req *request, version int) *apiError {
	s.stats.lists.Add(1)
	q := req.query
	p := listParams{prefix: q.Get("prefix"), delimiter: q.Get("delimiter"), maxKeys: 1000}
	if v := q.Get("max-keys"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return errInvalidArgument.withMessage("Provided max-keys not an integer or within integer range").with("ArgumentName", "max-keys").with("ArgumentValue", v)
		}
		p.maxKeys = min(n, 1000)
	}
	encodingType := q.Get("encoding-type")
	if encodingType != "" && encodingType != "url" {
		return errInvalidArgument.withMessage("Invalid Encoding Method specified in Request").with("ArgumentName", "encoding-type").with("ArgumentValue", encodingType)
	}
	// With encoding-type=url, S3 URL-encodes every key-like value so that
	// keys with characters XML cannot carry survive the trip.
	enc := func(s string) string {
		if encodingType == "url" {
			return url.QueryEscape(s)
		}
		return s
	}

	token := q.Get("continuation-token")
	if version == 2 {
		p.marker = q.Get("start-after")
		if q.Has("continuation-token") {
			// The token is opaque to clients; here it encodes the last item
			// of the previous page.
			m, err := base64.RawURLEncoding.DecodeString(token)
			if err != nil || token == "" {
				return errInvalidArgument.withMessage("The continuation token provided is incorrect").with("ArgumentName", "continuation-token")
			}
			p.marker = max(p.marker, string(m))
		}
	} else {
		p.marker = q.Get("marker")
	}
	page, err := s.store.list(req.bucket, p)
	if err != nil {
		return err
	}

	contents := make([]listEntry, 0, len(page.objects))
	for _, o := range page.objects {
		e := listEntry{
			Key:          enc(o.key),
			LastModified: lastModifiedXML(o.modTime),
			ETag:         o.etag,
			Size:         o.size,
			StorageClass: "STANDARD",
		}
		if o.checksum.algorithm != "" {
			e.ChecksumAlgorithm, e.ChecksumType = o.checksum.algorithm, o.checksum.checksumType()
		}
		if version == 1 || q.Get("fetch-owner") == "true" {
			e.Owner = &serverOwner
		}
		contents = append(contents, e)
	}
	prefixes := make([]commonPrefix, 0, len(page.prefixes))
	for _, cp := range page.prefixes {
		prefixes = append(prefixes, commonPrefix{enc(cp)})
	}

	if version == 1 {
		res := struct {
			XMLName        xml.Name `xml:"ListBucketResult"`
			Xmlns          string   `xml:"xmlns,attr"`
			Name           string
			Prefix         string
			Marker         string
			NextMarker     string `xml:",omitempty"`
			MaxKeys        int
			Delimiter      string `xml:",omitempty"`
			EncodingType   string `xml:",omitempty"`
			IsTruncated    bool
			Contents       []listEntry
			CommonPrefixes []commonPrefix
		}{
			Xmlns: s3Namespace, Name: req.bucket, Prefix: enc(p.prefix), Marker: enc(p.marker),
			MaxKeys: p.maxKeys, Delimiter: enc(p.delimiter), EncodingType: encodingType,
			IsTruncated: page.truncated, Contents: contents, CommonPrefixes: prefixes,
		}
		// S3 only returns NextMarker with a delimiter; otherwise clients use
		// the last key.
		if page.truncated && p.delimiter != "" {
			res.NextMarker = enc(page.next)
		}
		return writeXML(w, res)
	}

	res := struct {
		XMLName               xml.Name `xml:"ListBucketResult"`
		Xmlns                 string   `xml:"xmlns,attr"`
		Name                  string
		Prefix                string
		Delimiter             string `xml:",omitempty"`
		MaxKeys               int
		EncodingType          string `xml:",omitempty"`
		KeyCount              int
		IsTruncated           bool
		ContinuationToken     string `xml:",omitempty"`
		NextContinuationToken string `xml:",omitempty"`
		StartAfter            string `xml:",omitempty"`
		Contents              []listEntry
		CommonPrefixes        []commonPrefix
	}{
		Xmlns: s3Namespace, Name: req.bucket, Prefix: enc(p.prefix), Delimiter: enc(p.delimiter),
		MaxKeys: p.maxKeys, EncodingType: encodingType, KeyCount: len(contents) + len(prefixes),
		IsTruncated: page.truncated, ContinuationToken: token, StartAfter: enc(q.Get("start-after")),
		Contents: contents, CommonPrefixes: prefixes,
	}
	if page.truncated {
		res.NextContinuationToken = base64.RawURLEncoding.EncodeToString([]byte(page.next))
	}
	return writeXML(w, res)
}
