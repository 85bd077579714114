package s3server

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/xml"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// The server also answers STS's AssumeRoleWithWebIdentity (POST / with a
// form body, which no S3 operation uses), as a web-identity provider such
// as Kubernetes' projected service account tokens meets it: a token the
// test trusts for a role is exchanged for temporary credentials, which the
// S3 side then accepts along with their session token. Point a client at
// it with AWS_ENDPOINT_URL_STS.

// stsDuration is how long temporary credentials last (STS's default).
const stsDuration = time.Hour

// tempCredentials are credentials AssumeRoleWithWebIdentity issued.
type tempCredentials struct {
	secret, sessionToken string
	expires              time.Time
}

// TrustWebIdentity makes AssumeRoleWithWebIdentity accept token for
// roleARN, alongside any token trusted before.
func (s *Server) TrustWebIdentity(roleARN, token string) {
	s.stsMu.Lock()
	defer s.stsMu.Unlock()
	if s.webIdentities == nil {
		s.webIdentities = map[string]string{}
	}
	s.webIdentities[token] = roleARN
}

// AssumedRoles counts the credentials AssumeRoleWithWebIdentity issued.
func (s *Server) AssumedRoles() int {
	s.stsMu.Lock()
	defer s.stsMu.Unlock()
	return s.assumed
}

// isSTS reports whether r is an STS Query API call rather than S3's.
func isSTS(r *http.Request) bool {
	return r.Method == http.MethodPost && r.URL.Path == "/" && r.Header.Get("Authorization") == "" &&
		strings.HasPrefix(r.Header.Get("Content-Type"), "application/x-www-form-urlencoded")
}

// stsError is STS's error document (not S3's).
type stsError struct {
	status     int
	kind, code string
	message    string
}

func (s *Server) writeSTSError(w http.ResponseWriter, e stsError) {
	type errorResponse struct {
		XMLName xml.Name `xml:"https://sts.amazonaws.com/doc/2011-06-15/ ErrorResponse"`
		Error   struct {
			Type    string
			Code    string
			Message string
		}
		RequestID string `xml:"RequestId"`
	}
	var doc errorResponse
	doc.Error.Type, doc.Error.Code, doc.Error.Message = e.kind, e.code, e.message
	doc.RequestID = w.Header().Get("x-amz-request-id")
	body, _ := xml.Marshal(doc)
	w.Header().Set("Content-Type", "text/xml")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(e.status)
	_, _ = w.Write(body)
}

// serveSTS answers AssumeRoleWithWebIdentity as STS documents it.
func (s *Server) serveSTS(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		s.writeSTSError(w, stsError{http.StatusBadRequest, "Sender", "MalformedInput", "The request body is not a valid form."})
		return
	}
	f := r.PostForm
	if f.Get("Action") != "AssumeRoleWithWebIdentity" {
		s.writeSTSError(w, stsError{http.StatusBadRequest, "Sender", "InvalidAction", "Could not find operation " + f.Get("Action") + " for version " + f.Get("Version")})
		return
	}
	if f.Get("Version") != "2011-06-15" {
		s.writeSTSError(w, stsError{http.StatusBadRequest, "Sender", "InvalidParameterValue", "Unsupported version " + f.Get("Version")})
		return
	}
	role, session, token := f.Get("RoleArn"), f.Get("RoleSessionName"), f.Get("WebIdentityToken")
	for name, v := range map[string]string{"RoleArn": role, "RoleSessionName": session, "WebIdentityToken": token} {
		if v == "" {
			s.writeSTSError(w, stsError{http.StatusBadRequest, "Sender", "ValidationError", "1 validation error detected: Value null at '" + name + "' failed to satisfy constraint: Member must not be null"})
			return
		}
	}
	if len(session) < 2 || len(session) > 64 || strings.ContainsFunc(session, func(c rune) bool {
		return !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("+=,.@_-", c))
	}) {
		s.writeSTSError(w, stsError{http.StatusBadRequest, "Sender", "ValidationError", "1 validation error detected: Value at 'roleSessionName' failed to satisfy constraint: Member must satisfy regular expression pattern: [\\w+=,.@-]*"})
		return
	}
	s.stsMu.Lock()
	trusted, known := s.webIdentities[token]
	s.stsMu.Unlock()
	if !known {
		s.writeSTSError(w, stsError{http.StatusBadRequest, "Sender", "InvalidIdentityToken", "The web identity token that was passed could not be validated by AWS. Get a new identity token from the identity provider and then retry the request."})
		return
	}
	if trusted != role {
		s.writeSTSError(w, stsError{http.StatusForbidden, "Sender", "AccessDenied", "Not authorized to perform sts:AssumeRoleWithWebIdentity"})
		return
	}
	if d := f.Get("DurationSeconds"); d != "" {
		if n, err := strconv.Atoi(d); err != nil || n < 900 || n > 43200 {
			s.writeSTSError(w, stsError{http.StatusBadRequest, "Sender", "ValidationError", "DurationSeconds must be between 900 and 43200"})
			return
		}
	}
	creds := tempCredentials{secret: randomString(30), sessionToken: randomString(96), expires: s.now().Add(stsDuration).UTC().Truncate(time.Second)}
	keyID := "ASIA" + strings.ToUpper(hex.EncodeToString(randomBytes(8)))
	s.stsMu.Lock()
	if s.temporary == nil {
		s.temporary = map[string]tempCredentials{}
	}
	s.temporary[keyID] = creds
	s.assumed++
	s.stsMu.Unlock()

	roleName := role[strings.LastIndex(role, "/")+1:]
	account := "123456789012"
	if parts := strings.Split(role, ":"); len(parts) >= 5 && parts[4] != "" {
		account = parts[4]
	}
	type result struct {
		XMLName xml.Name `xml:"https://sts.amazonaws.com/doc/2011-06-15/ AssumeRoleWithWebIdentityResponse"`
		Result  struct {
			SubjectFromWebIdentityToken string
			Audience                    string
			AssumedRoleUser             struct {
				Arn           string
				AssumedRoleID string `xml:"AssumedRoleId"`
			}
			Credentials struct {
				AccessKeyID     string `xml:"AccessKeyId"`
				SecretAccessKey string
				SessionToken    string
				Expiration      string
			}
			Provider string
		} `xml:"AssumeRoleWithWebIdentityResult"`
		Metadata struct {
			RequestID string `xml:"RequestId"`
		} `xml:"ResponseMetadata"`
	}
	var doc result
	doc.Result.SubjectFromWebIdentityToken = "system:serviceaccount:test:model-reader"
	doc.Result.Audience = "sts.amazonaws.com"
	doc.Result.AssumedRoleUser.Arn = "arn:aws:sts::" + account + ":assumed-role/" + roleName + "/" + session
	doc.Result.AssumedRoleUser.AssumedRoleID = "AROA" + strings.ToUpper(hex.EncodeToString(randomBytes(8))) + ":" + session
	doc.Result.Credentials.AccessKeyID = keyID
	doc.Result.Credentials.SecretAccessKey = creds.secret
	doc.Result.Credentials.SessionToken = creds.sessionToken
	doc.Result.Credentials.Expiration = creds.expires.Format(time.RFC3339)
	doc.Result.Provider = "oidc.test"
	doc.Metadata.RequestID = w.Header().Get("x-amz-request-id")
	body, _ := xml.Marshal(doc)
	w.Header().Set("Content-Type", "text/xml")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	_, _ = w.Write(body)
}

// knownKey reports whether accessKey is the server's or one STS issued.
func (s *Server) knownKey(accessKey string) bool {
	if s.opts.AccessKey != "" && accessKey == s.opts.AccessKey {
		return true
	}
	s.stsMu.Lock()
	defer s.stsMu.Unlock()
	_, ok := s.temporary[accessKey]
	return ok
}

// secretFor is the secret key that signs for accessKey: the server's own,
// or temporary credentials', which also need their session token
// (X-Amz-Security-Token, as a header or, presigned, in the query) and must
// not have expired.
func (s *Server) secretFor(accessKey string, r *http.Request, q url.Values) (string, *apiError) {
	if s.opts.AccessKey != "" && accessKey == s.opts.AccessKey {
		return s.opts.SecretKey, nil
	}
	s.stsMu.Lock()
	creds, ok := s.temporary[accessKey]
	s.stsMu.Unlock()
	if !ok {
		return "", errInvalidAccessKeyID.with("AWSAccessKeyId", accessKey)
	}
	token := r.Header.Get("X-Amz-Security-Token")
	if token == "" {
		token = q.Get("X-Amz-Security-Token")
	}
	if token != creds.sessionToken {
		return "", errInvalidToken
	}
	if !s.now().Before(creds.expires) {
		return "", errExpiredToken
	}
	return creds.secret, nil
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

func randomString(n int) string {
	return base64.RawURLEncoding.EncodeToString(randomBytes(n))[:n]
}
