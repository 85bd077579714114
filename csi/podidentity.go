package csi

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// Pod identity: a volume with a roleArn reads S3 as the pod that mounts
// it. The CSIDriver's tokenRequests make kubelet hand each publish the
// pod's service account token for the plugin's audience; the plugin
// writes it to a file of the volume's own and starts the mount with the
// SDK's web-identity settings, so the SDK exchanges the token for the
// role's credentials (STS AssumeRoleWithWebIdentity) and rereads the file
// when they run out. requiresRepublish brings each refreshed token, which
// replaces the file; the mount is left alone.

// serviceAccountTokensKey is where kubelet puts the pod's tokens in the
// volume context: {"<audience>": {"token": ..., "expirationTimestamp": ...}}.
const serviceAccountTokensKey = kubernetesPrefix + "serviceAccount.tokens"

// podUIDKey is the pod's UID, with podInfoOnMount.
const podUIDKey = kubernetesPrefix + "pod.uid"

// DefaultTokenAudience is the audience STS expects in the tokens it
// accepts, and the one the CSIDriver's tokenRequests ask for.
const DefaultTokenAudience = "sts.amazonaws.com"

// roleARNPattern is an IAM role ARN in any partition.
var roleARNPattern = regexp.MustCompile(`^arn:aws[a-z-]*:iam::[0-9]{12}:role/[\w+=,.@/-]{1,512}$`)

// podToken is the pod's service account token for audience, from the
// volume context. Errors never quote a token.
func podToken(attrs map[string]string, audience string) (string, error) {
	if audience == "" {
		return "", fmt.Errorf("volume attribute %q needs pod identity, which this plugin has turned off (--token-audience is empty)", attrRoleARN)
	}
	raw, ok := attrs[serviceAccountTokensKey]
	if !ok || raw == "" {
		return "", fmt.Errorf("volume attribute %q needs the pod's service account token, and kubelet passed none: the CSIDriver %s needs tokenRequests with audience %q (and requiresRepublish: true)",
			attrRoleARN, DriverName, audience)
	}
	var tokens map[string]struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal([]byte(raw), &tokens); err != nil {
		return "", fmt.Errorf("reading the pod's service account tokens: not the JSON kubelet writes")
	}
	t, ok := tokens[audience]
	if !ok || t.Token == "" {
		have := make([]string, 0, len(tokens))
		for a := range tokens {
			have = append(have, a)
		}
		return "", fmt.Errorf("kubelet passed no service account token for audience %q (only %q): the CSIDriver's tokenRequests must ask for it",
			audience, have)
	}
	return t.Token, nil
}

// roleSessionName names the pod's session in CloudTrail: its UID when
// kubelet gave it (podInfoOnMount), else the volume id, in STS's
// alphabet and length.
func roleSessionName(attrs map[string]string, volumeID string) string {
	id := attrs[podUIDKey]
	if id == "" {
		id = volumeID
	}
	id = strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("+=,.@_-", r) {
			return r
		}
		return '-'
	}, id)
	return ("modelfs-" + id)[:min(64, len("modelfs-")+len(id))]
}

// webIdentityEnv is what a pod-identity volume's mount process gets: the
// SDK's web-identity settings, which name the token file, never the
// token.
func webIdentityEnv(roleARN, tokenFile, session string) []string {
	return []string{
		"AWS_ROLE_ARN=" + roleARN,
		"AWS_WEB_IDENTITY_TOKEN_FILE=" + tokenFile,
		"AWS_ROLE_SESSION_NAME=" + session,
	}
}

// tokenPath is where target's mount reads its pod's token.
func (m *mounter) tokenPath(target string) string {
	return filepath.Join(m.dir, m.key(target)+".token")
}

// writeToken replaces target's token file atomically, readable by the
// plugin's user only: the SDK may read it at any moment, and must never
// see half a token.
func (m *mounter) writeToken(target, token string) error {
	f, err := os.CreateTemp(m.dir, m.key(target)+".token-*")
	if err != nil {
		return fmt.Errorf("writing the pod's token: %w", err)
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			os.Remove(tmp)
		}
	}()
	// CreateTemp makes it 0600; said again so that no umask or change to
	// CreateTemp can widen it.
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return fmt.Errorf("writing the pod's token: %w", err)
	}
	if _, err := f.WriteString(token); err != nil {
		f.Close()
		return fmt.Errorf("writing the pod's token: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing the pod's token: %w", err)
	}
	if err := os.Rename(tmp, m.tokenPath(target)); err != nil {
		return fmt.Errorf("writing the pod's token: %w", err)
	}
	ok = true
	return nil
}
