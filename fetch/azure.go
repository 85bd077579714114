package fetch

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
)

// azureHostSuffix is the public cloud's blob service host suffix: an
// https URL on it is read as an az:// source.
const azureHostSuffix = ".blob.core.windows.net"

// Caps on what the SDK reads of replies into memory (it reads error
// replies and listing pages whole): real error documents are under 1 KiB,
// real pages of 5000 blobs a few MiB.
const (
	azErrorBodyMax = 64 << 10
	azListBodyMax  = 16 << 20
)

// AzureOptions configure an Azure Blob Storage source.
type AzureOptions struct {
	// Account is the storage account; Container and Prefix what the
	// mount shows ("" prefix = the whole container).
	Account, Container, Prefix string
	// Endpoint is the account's blob service URL, for emulators, sovereign
	// clouds and private endpoints (Azurite:
	// http://127.0.0.1:10000/devstoreaccount1); "" is
	// https://ACCOUNT.blob.core.windows.net. An emulator address without a
	// path gets /ACCOUNT, as emulators address accounts by path.
	Endpoint string
	// AccountKey (base64) signs requests with the account's shared key.
	AccountKey string
	// SAS is a shared access signature's query string ("sv=...&sig=...").
	SAS string
	// Anonymous sends unsigned requests, for public containers.
	Anonymous bool
	// Credential signs requests with Entra ID tokens. With no key, SAS or
	// credential given, Getenv's AZURE_STORAGE_KEY or
	// AZURE_STORAGE_SAS_TOKEN is used, else DefaultAzureCredential
	// (environment, workload identity, managed identity).
	Credential azcore.TokenCredential
	// Getenv reads the environment (nil: os.Getenv).
	Getenv func(string) string
	Client *http.Client
	Net    *NetPolicy
	Retry  RetryOptions

	// sdkRetry, set by NewAzureClient, has the SDK retry requests.
	sdkRetry *policy.RetryOptions
}

// Azure is a Source over one container and prefix of a storage account.
// Where the account keeps blob versions, every blob is pinned to the
// version it was listed with (its VersionId) and reads name it, so a blob
// replaced under a mount still reads as it was while that version exists.
// Otherwise a blob is pinned to the ETag it was listed with; reads carry
// it as If-Match, so a replaced blob fails its reads with ErrChanged
// rather than mixing contents.
type Azure struct {
	client    *container.Client
	account   string
	container string
	prefix    string // as the user gave it
	// endpoint is the service URL as configured, "" for the public
	// cloud's; it holds no secret (Endpoint may not carry a query).
	endpoint string
	// root is what keys are relative to: the prefix as a directory, or
	// the parent of a prefix that names one blob. List settles it.
	root  string
	retry RetryOptions
	// noVersions is set once the account refused to list versions.
	noVersions atomic.Bool
}

var _ Source = (*Azure)(nil)

// NewAzure checks opts and builds the client; it makes no request.
func NewAzure(opts AzureOptions) (*Azure, error) {
	client, service, err := azureClient(opts)
	if err != nil {
		return nil, err
	}
	prefix := strings.TrimPrefix(opts.Prefix, "/")
	root := prefix
	if root != "" && !strings.HasSuffix(root, "/") {
		root += "/"
	}
	ep := ""
	if opts.Endpoint != "" {
		ep = service
	}
	return &Azure{client: client, account: opts.Account, container: opts.Container, prefix: prefix, endpoint: ep, root: root, retry: opts.Retry}, nil
}

// NewAzureClient builds a client of opts' container with its
// credentials, endpoint and network policy, as the source reads with, for
// writers of the container (pack publishing). Unlike the source's, its
// requests are retried by the SDK, up to Retry.MaxAttempts tries (0: the
// default), each bounded by Retry.AttemptTimeout: an upload has no range
// to resume, and the SDK rewinds a request's body to send it again.
// Prefix is not used.
func NewAzureClient(opts AzureOptions) (*container.Client, error) {
	r := opts.Retry.withDefaults()
	retries := int32(r.MaxAttempts - 1)
	if retries == 0 {
		retries = -1 // the SDK's 0 is its default of 3
	}
	opts.sdkRetry = &policy.RetryOptions{
		MaxRetries: retries, TryTimeout: r.AttemptTimeout,
		RetryDelay: r.BaseDelay, MaxRetryDelay: r.MaxDelay,
	}
	client, _, err := azureClient(opts)
	return client, err
}

// azureClient checks opts and builds the container's client, returning
// it with the account's blob service URL.
func azureClient(opts AzureOptions) (*container.Client, string, error) {
	if err := checkAzureAccount(opts.Account); err != nil {
		return nil, "", fmt.Errorf("fetch: Azure source: %w", err)
	}
	if err := checkAzureContainer(opts.Container); err != nil {
		return nil, "", fmt.Errorf("fetch: Azure source: %w", err)
	}
	service := "https://" + opts.Account + azureHostSuffix
	if opts.Endpoint != "" {
		u, err := url.Parse(strings.TrimRight(opts.Endpoint, "/"))
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
			return nil, "", errors.New("fetch: Azure source: endpoint must be an http(s) URL without credentials or query (a SAS goes in AZURE_STORAGE_SAS_TOKEN)")
		}
		if u.Path == "" && isAddressHost(u.Hostname()) {
			u.Path = "/" + opts.Account
		}
		service = u.String()
	}
	getenv := opts.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	key, sas := opts.AccountKey, opts.SAS
	if key == "" && sas == "" && opts.Credential == nil && !opts.Anonymous {
		key, sas = strings.TrimSpace(getenv("AZURE_STORAGE_KEY")), strings.TrimSpace(getenv("AZURE_STORAGE_SAS_TOKEN"))
	}
	if key != "" && sas != "" {
		return nil, "", errors.New("fetch: Azure source: both an account key and a SAS are set (AZURE_STORAGE_KEY, AZURE_STORAGE_SAS_TOKEN): set one")
	}
	hc := opts.Client
	if hc == nil {
		hc = defaultHTTPClient(opts.Net)
		hc.Transport.(*http.Transport).DisableCompression = true // weights do not compress
	}
	// The source's retries are its own, so that short bodies and stalls
	// share the budget of 5xx replies, as on the other sources.
	retry := policy.RetryOptions{MaxRetries: -1}
	if opts.sdkRetry != nil {
		retry = *opts.sdkRetry
	}
	copts := &container.ClientOptions{ClientOptions: azcore.ClientOptions{
		Transport: azTransport{c: hc},
		Retry:     retry,
		Telemetry: policy.TelemetryOptions{ApplicationID: "modelfs"},
	}}
	containerURL := service + "/" + url.PathEscape(opts.Container)
	var client *container.Client
	var err error
	switch {
	case opts.Anonymous:
		client, err = container.NewClientWithNoCredential(containerURL, copts)
	case key != "":
		cred, kerr := container.NewSharedKeyCredential(opts.Account, key)
		if kerr != nil {
			// The SDK's message may quote the key.
			return nil, "", errors.New("fetch: Azure source: the account key is not valid base64")
		}
		client, err = container.NewClientWithSharedKeyCredential(containerURL, cred, copts)
	case sas != "":
		q, err := checkSAS(sas)
		if err != nil {
			return nil, "", fmt.Errorf("fetch: Azure source: %w", err)
		}
		client, err = container.NewClientWithNoCredential(containerURL+"?"+q, copts)
		if err != nil {
			return nil, "", errors.New("fetch: Azure source: building the client with the SAS failed")
		}
	default:
		cred := opts.Credential
		if cred == nil {
			// Its own requests (managed identity, Entra ID) are not the
			// store's: like the AWS chain's, they are not bound by the
			// network policy, which is for the store's connections.
			cred, err = azidentity.NewDefaultAzureCredential(nil)
			if err != nil {
				return nil, "", fmt.Errorf("fetch: Azure source: %w: no Azure credentials: set AZURE_STORAGE_KEY or AZURE_STORAGE_SAS_TOKEN, "+
					"or configure workload identity, managed identity or AZURE_CLIENT_ID/AZURE_TENANT_ID/AZURE_CLIENT_SECRET: %v", ErrAccess, err)
			}
		}
		client, err = container.NewClient(containerURL, azTokenProbe{inner: cred}, copts)
	}
	if err != nil {
		return nil, "", fmt.Errorf("fetch: Azure source: building the client: %w", err)
	}
	return client, service, nil
}

// isAddressHost reports whether a URL host is an IP address or localhost,
// where an emulator serves accounts by path.
func isAddressHost(h string) bool {
	if h == "localhost" {
		return true
	}
	_, err := netip.ParseAddr(h)
	return err == nil
}

// checkSAS checks a SAS token's form and returns it without a leading
// '?'. Its content is never quoted back.
func checkSAS(sas string) (string, error) {
	sas = strings.TrimPrefix(strings.TrimSpace(sas), "?")
	if strings.ContainsFunc(sas, func(r rune) bool { return r < 0x21 || r == 0x7f || r == '#' }) {
		return "", errors.New("the SAS token contains spaces or control characters")
	}
	q, err := url.ParseQuery(sas)
	if err != nil || q.Get("sig") == "" {
		return "", errors.New("the SAS token is not a query string with a signature (sv=...&sig=...)")
	}
	return sas, nil
}

// String is az://account/container[/prefix], and the endpoint when it is
// not the public cloud's.
func (a *Azure) String() string {
	s := "az://" + a.account + "/" + a.container
	if a.prefix != "" {
		s += "/" + a.prefix
	}
	if a.endpoint != "" {
		s += " (" + a.endpoint + ")"
	}
	return s
}

// ID is the service URL (which names the account), the container and the
// prefix as given; no credential, so a key and a SAS of the same account
// share cached bytes, which each proves access to before serving them.
func (a *Azure) ID() string {
	ep := a.endpoint
	if ep == "" {
		ep = "https://" + a.account + azureHostSuffix
	}
	return "az+" + ep + "/" + a.container + "/" + a.prefix
}

// List lists every blob under the prefix. A prefix that names a single
// blob yields that blob alone.
func (a *Azure) List(ctx context.Context) ([]Object, error) {
	return listUnder(ctx, a, &a.root, a.prefix, "blobs", a.listPrefix, a.props)
}

func (a *Azure) listPrefix(ctx context.Context, dir string) ([]Object, error) {
	var objs []Object
	var marker *string
	for {
		var page container.ListBlobsFlatResponse
		err := a.retry.do(ctx, OpList, 0, "list "+a.String(), func(ctx context.Context) error {
			// A pager per page, so a failed page is asked again from
			// the same marker.
			// With versions: the listing then names each blob's
			// current version, where the account keeps them.
			versions := !a.noVersions.Load()
			p := a.client.NewListBlobsFlatPager(&container.ListBlobsFlatOptions{
				Prefix: &dir, Marker: marker, Include: container.ListBlobsInclude{Metadata: true, Versions: versions},
			})
			var err error
			page, err = p.NextPage(ctx)
			if versions && isBadRequest(err) {
				// Accounts with a hierarchical namespace keep no
				// versions and refuse to list them: ETags pin there.
				a.noVersions.Store(true)
				p = a.client.NewListBlobsFlatPager(&container.ListBlobsFlatOptions{
					Prefix: &dir, Marker: marker, Include: container.ListBlobsInclude{Metadata: true},
				})
				page, err = p.NextPage(ctx)
			}
			return a.mapError(err)
		})
		if err != nil {
			return nil, err
		}
		if page.Segment != nil {
			for _, b := range page.Segment.BlobItems {
				if obj, ok := azureListed(b, dir); ok {
					objs = append(objs, obj)
				}
			}
		}
		if len(objs) > MaxListedObjects {
			return nil, fmt.Errorf("%s: more than %d blobs under this prefix; mount one model's prefix", a, MaxListedObjects)
		}
		if page.NextMarker == nil || *page.NextMarker == "" {
			return objs, nil
		}
		marker = page.NextMarker
	}
}

// azureListed is a listed blob as an Object, or false for what is no
// file: directory markers, hierarchical-namespace folders, and versions
// that are not the current one.
func azureListed(b *container.BlobItem, dir string) (Object, bool) {
	if b == nil || b.Name == nil {
		return Object{}, false
	}
	if b.VersionID != nil && (b.IsCurrentVersion == nil || !*b.IsCurrentVersion) {
		return Object{}, false // an earlier version, or one of a deleted blob
	}
	key := strings.TrimPrefix(*b.Name, dir)
	if key == "" || strings.HasSuffix(key, "/") {
		return Object{}, false
	}
	for k, v := range b.Metadata {
		if strings.EqualFold(k, "hdi_isfolder") && v != nil && strings.EqualFold(*v, "true") {
			return Object{}, false
		}
	}
	obj := Object{Key: key, Size: -1} // no size is unknown, which Usable refuses
	if b.VersionID != nil {
		obj.VersionID = *b.VersionID
	}
	if p := b.Properties; p != nil {
		if p.ContentLength != nil {
			obj.Size = *p.ContentLength
		}
		if p.LastModified != nil {
			obj.ModTime = *p.LastModified
		}
		if p.ETag != nil {
			obj.ETag = quoteETag(string(*p.ETag))
		}
		obj.Checksum = md5Checksum(p.ContentMD5)
	}
	return obj, true
}

// isBadRequest reports whether err is the store's 400 reply.
func isBadRequest(err error) bool {
	var re *azcore.ResponseError
	return errors.As(err, &re) && re.StatusCode == http.StatusBadRequest
}

// quoteETag gives an ETag in its header form: the listing's come without
// quotes, the headers' with.
func quoteETag(e string) string {
	if e == "" || strings.HasPrefix(e, "W/") {
		return e
	}
	return `"` + strings.Trim(e, `"`) + `"`
}

// md5Checksum is the Content-MD5 the store keeps for a blob (set by the
// uploader; Put Blob computes it for single-shot uploads), or none.
func md5Checksum(sum []byte) Checksum {
	if len(sum) != 16 {
		return Checksum{}
	}
	return Checksum{Algorithm: "MD5", Value: base64.StdEncoding.EncodeToString(sum)}
}

// Stat returns the current version of key (relative to the prefix).
func (a *Azure) Stat(ctx context.Context, key string) (Object, error) {
	obj, err := a.props(ctx, a.root+key)
	obj.Key = key
	return obj, err
}

func (a *Azure) props(ctx context.Context, full string) (Object, error) {
	var out blob.GetPropertiesResponse
	err := a.retry.do(ctx, OpStat, 0, "stat "+full, func(ctx context.Context) error {
		var err error
		out, err = a.client.NewBlobClient(full).GetProperties(ctx, nil)
		return a.mapError(err)
	})
	if err != nil {
		return Object{}, err
	}
	obj := Object{Key: full, Size: -1, Checksum: md5Checksum(out.ContentMD5)}
	if out.VersionID != nil && (out.IsCurrentVersion == nil || *out.IsCurrentVersion) {
		obj.VersionID = *out.VersionID
	}
	if out.ContentLength != nil {
		obj.Size = *out.ContentLength
	}
	if out.LastModified != nil {
		obj.ModTime = *out.LastModified
	}
	if out.ETag != nil {
		obj.ETag = quoteETag(string(*out.ETag))
	}
	return obj, nil
}

// ReadAt is one ranged GET of the pinned version (VersionId, else
// If-Match on the ETag), retried within the budget.
func (a *Azure) ReadAt(ctx context.Context, obj Object, p []byte, off int64) (int, error) {
	n, atEnd, err := clipRead(obj, len(p), off)
	if err != nil {
		return 0, err
	}
	p = p[:n]
	if err := checkPinned(obj); err != nil || obj.ETag == "" && obj.VersionID == "" {
		return 0, fmt.Errorf("read %s: %w", obj.Key, ErrUnpinned)
	}
	full := a.root + obj.Key
	end := off + int64(n)
	what := fmt.Sprintf("read %s [%d, %d)", full, off, end)
	bc := a.client.NewBlobClient(full)
	opts := &blob.DownloadStreamOptions{Range: blob.HTTPRange{Offset: off, Count: int64(n)}}
	if obj.VersionID != "" {
		// A version never changes: naming it is the pin, and it reads
		// the same after the blob is replaced.
		if bc, err = bc.WithVersionID(obj.VersionID); err != nil {
			return 0, fmt.Errorf("read %s: %w", obj.Key, err)
		}
	} else {
		etag := azcore.ETag(obj.ETag)
		opts.AccessConditions = &blob.AccessConditions{ModifiedAccessConditions: &blob.ModifiedAccessConditions{IfMatch: &etag}}
	}
	return readRetried(ctx, a.retry, what, n, atEnd, func(ctx context.Context) error {
		out, err := bc.DownloadStream(ctx, opts)
		if err != nil {
			err = a.mapError(err)
			if obj.VersionID != "" && errors.Is(err, ErrNotFound) {
				return fmt.Errorf("%w: version %s no longer exists", ErrChanged, obj.VersionID)
			}
			return err
		}
		defer drainHTTP(out.Body)
		switch {
		case obj.VersionID != "":
			if out.VersionID != nil && *out.VersionID != obj.VersionID {
				return fmt.Errorf("%w: version %s, pinned %s", ErrChanged, *out.VersionID, obj.VersionID)
			}
		case out.ETag != nil && !sameTag(string(*out.ETag), obj.ETag):
			return fmt.Errorf("%w: ETag %s, pinned %s", ErrChanged, *out.ETag, obj.ETag)
		}
		if out.ContentRange == nil {
			// A 200 with the whole blob: the range was ignored.
			return transient(fmt.Errorf("no Content-Range in the reply to a range request"), 0)
		}
		if err := checkContentRange(*out.ContentRange, off, end, obj.Size); err != nil {
			return err
		}
		if out.ContentLength != nil && *out.ContentLength != int64(n) {
			return transient(fmt.Errorf("Content-Length %d for the %d bytes asked for", *out.ContentLength, n), 0)
		}
		if _, err := io.ReadFull(out.Body, p); err != nil {
			return transient(fmt.Errorf("reading body: %w", shortBody(err)), 0)
		}
		return nil
	})
}

// mapError turns SDK errors into the package's sentinels and marks the
// transient ones. It quotes the store's error code and status, never the
// SDK's message, which holds the request and the reply's body.
func (a *Azure) mapError(err error) error {
	if err == nil {
		return nil
	}
	var credErr *azureCredentialError
	if errors.As(err, &credErr) {
		return credErr
	}
	var re *azcore.ResponseError
	if !errors.As(err, &re) {
		return err // transport errors: url.Error is already dropped
	}
	code, status := re.ErrorCode, re.StatusCode
	base := fmt.Errorf("HTTP %d %s", status, code)
	switch {
	case code == "ContainerNotFound":
		return fmt.Errorf("%w: container %q of account %q does not exist", ErrNotFound, a.container, a.account)
	case code == "BlobNotFound" || status == http.StatusNotFound:
		return fmt.Errorf("%w (%w)", ErrNotFound, base)
	case status == http.StatusForbidden || status == http.StatusUnauthorized || strings.HasPrefix(code, "Authentication") ||
		strings.HasPrefix(code, "Authorization") || code == "InsufficientAccountPermissions" || code == "AccountIsDisabled":
		return fmt.Errorf("%w: %s: the store refused the credentials (%w): check the account key, SAS or role assignment", ErrAccess, a, base)
	case code == "ConditionNotMet" || status == http.StatusPreconditionFailed || status == http.StatusRequestedRangeNotSatisfiable:
		return fmt.Errorf("%w (%w)", ErrChanged, base)
	case code == "ServerBusy" || code == "OperationTimedOut" || code == "InternalError" ||
		status == http.StatusTooManyRequests || status >= 500:
		var after time.Duration
		if re.RawResponse != nil {
			if secs, err := strconv.Atoi(re.RawResponse.Header.Get("Retry-After")); err == nil && secs > 0 {
				after = time.Duration(secs) * time.Second
			}
		}
		return transient(base, after)
	}
	return base
}

// azTransport sends the SDK's requests. It drops the url.Error wrapper,
// whose message quotes the URL and so a SAS, and caps the replies the
// SDK reads whole.
type azTransport struct{ c *http.Client }

func (t azTransport) Do(req *http.Request) (*http.Response, error) {
	resp, err := t.c.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, err
	}
	switch {
	case resp.StatusCode/100 != 2:
		resp.Body = &cappedBody{r: io.LimitReader(resp.Body, azErrorBodyMax+1), c: resp.Body, max: azErrorBodyMax, what: "error reply"}
	case req.URL.Query().Get("comp") == "list":
		resp.Body = &cappedBody{r: io.LimitReader(resp.Body, azListBodyMax+1), c: resp.Body, max: azListBodyMax, what: "listing page"}
	}
	return resp, nil
}

// azTokenProbe marks a failure to get a token, so that it is told apart
// from the store's answers.
type azTokenProbe struct{ inner azcore.TokenCredential }

func (p azTokenProbe) GetToken(ctx context.Context, opts policy.TokenRequestOptions) (azcore.AccessToken, error) {
	tok, err := p.inner.GetToken(ctx, opts)
	if err != nil {
		return tok, &azureCredentialError{err: err}
	}
	return tok, nil
}

// azureCredentialError is a failure to get an Entra ID token; no request
// reached the store. It is ErrAccess whatever the cause, so it is never an
// outage a saved listing may stand in for (Unreachable): the mount has not
// shown it may read the source. One that failed on the network is still
// retried.
type azureCredentialError struct{ err error }

func (e *azureCredentialError) Error() string {
	return "getting Azure credentials: " + e.err.Error()
}

func (e *azureCredentialError) Unwrap() []error {
	var ne net.Error
	if errors.As(e.err, &ne) {
		return []error{ErrAccess, &retryableError{err: e.err}}
	}
	return []error{ErrAccess, e.err}
}

// parseAzureLocation parses what follows az://: account/container[/prefix].
func parseAzureLocation(rest string) (Location, error) {
	account, path, _ := strings.Cut(rest, "/")
	return azureLocation(account, path)
}

// azureURLLocation reads https://ACCOUNT.blob.core.windows.net/container[/prefix],
// or false for any other URL.
func azureURLLocation(u *url.URL) (Location, bool, error) {
	host := strings.ToLower(u.Hostname())
	account, ok := strings.CutSuffix(host, azureHostSuffix)
	if !ok || strings.ToLower(u.Scheme) != "https" {
		return Location{}, false, nil
	}
	if u.User != nil || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" {
		return Location{}, true, errors.New("an Azure blob URL may not carry credentials or a query: put a SAS in AZURE_STORAGE_SAS_TOKEN")
	}
	if p := u.Port(); p != "" && p != "443" {
		return Location{}, true, fmt.Errorf("an Azure blob URL on port %s", p)
	}
	loc, err := azureLocation(account, strings.TrimPrefix(u.Path, "/"))
	return loc, true, err
}

func azureLocation(account, path string) (Location, error) {
	container, prefix, _ := strings.Cut(path, "/")
	if err := checkAzureAccount(account); err != nil {
		return Location{}, fmt.Errorf("%w: want az://account/container[/prefix]", err)
	}
	if err := checkAzureContainer(container); err != nil {
		return Location{}, fmt.Errorf("%w: want az://account/container[/prefix]", err)
	}
	for _, seg := range strings.Split(strings.TrimSuffix(prefix, "/"), "/") {
		if seg == ".." || seg == "." {
			return Location{}, fmt.Errorf("prefix contains a %q segment", seg)
		}
	}
	return Location{Scheme: "az", Account: account, Bucket: container, Prefix: prefix}, nil
}

// checkAzureAccount applies storage account naming rules: 3 to 24
// lower-case letters and digits.
func checkAzureAccount(a string) error {
	if a == "" {
		return errors.New("storage account name is empty")
	}
	if len(a) < 3 || len(a) > 24 || strings.ContainsFunc(a, func(r rune) bool { return !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9') }) {
		return fmt.Errorf("storage account name %q: want 3 to 24 lower-case letters and digits", a)
	}
	return nil
}

// checkAzureContainer applies container naming rules: 3 to 63 lower-case
// letters, digits and single hyphens, starting and ending with a letter
// or digit; or $root or $web.
func checkAzureContainer(c string) error {
	if c == "$root" || c == "$web" {
		return nil
	}
	if c == "" {
		return errors.New("container name is empty")
	}
	bad := len(c) < 3 || len(c) > 63 || c[0] == '-' || c[len(c)-1] == '-' || strings.Contains(c, "--") ||
		strings.ContainsFunc(c, func(r rune) bool { return !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') })
	if bad {
		return fmt.Errorf("container name %q: want 3 to 63 lower-case letters, digits and single hyphens", c)
	}
	return nil
}
