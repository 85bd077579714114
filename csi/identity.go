package csi

import (
	"os"
	"strings"
)

// awsSetting reports whether name is one of the AWS_* variables a mount
// without the node's identity keeps: where and how to reach S3, never who
// to be. Everything else under AWS_ (keys, session tokens, role ARN, web
// identity token file, profile, shared config and credentials files,
// container credential URIs and tokens, metadata endpoints) can lend the
// node's identity and is dropped.
func awsSetting(name string) bool {
	switch name {
	case "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_CA_BUNDLE", "AWS_USE_FIPS_ENDPOINT", "AWS_USE_DUALSTACK_ENDPOINT",
		// Where a pod-identity volume's web-identity exchange goes (a
		// regional or VPC endpoint of STS).
		"AWS_ENDPOINT_URL_STS", "AWS_STS_REGIONAL_ENDPOINTS":
		return true
	}
	return false
}

// noIdentityEnv closes the SDK's other ways to an identity: shared files
// in the plugin's home and the instance metadata service.
func noIdentityEnv() []string {
	return []string{
		"AWS_CONFIG_FILE=" + os.DevNull,
		"AWS_SHARED_CREDENTIALS_FILE=" + os.DevNull,
		"AWS_EC2_METADATA_DISABLED=true",
		// Nor the plugin's Hugging Face login.
		"HF_TOKEN_PATH=" + os.DevNull,
		// Nor Google's: a credentials file that is not one stops the
		// search before gcloud's login or the metadata server (Workload
		// Identity). A volume's own key, added after, replaces it.
		"GOOGLE_APPLICATION_CREDENTIALS=" + os.DevNull,
	}
}

// mountEnv is the environment of a mount process: the plugin's own (from
// environ), without inherited modelfs settings, plus extra (the volume's
// secrets and settings). With nodeIdentity false the mount gets none of
// the plugin's cloud identity: the volume brings its own or goes
// anonymous.
func mountEnv(environ []string, nodeIdentity bool, extra []string) []string {
	env := make([]string, 0, len(environ)+4+len(extra))
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(name, "MODELFS_"):
		case !nodeIdentity && strings.HasPrefix(name, "AWS_") && !awsSetting(name):
		case !nodeIdentity && (name == "HF_TOKEN" || name == "HF_TOKEN_PATH"):
		case !nodeIdentity && strings.HasPrefix(name, "AZURE_"): // keys, SAS, client secrets, workload identity
		case !nodeIdentity && (name == "GOOGLE_APPLICATION_CREDENTIALS" || name == "CLOUDSDK_CONFIG"):
		default:
			env = append(env, kv)
		}
	}
	if !nodeIdentity {
		env = append(env, noIdentityEnv()...)
	}
	return append(env, extra...)
}

// hasS3Keys reports whether a volume's secrets sign S3 requests.
func hasS3Keys(secrets map[string]string) bool {
	return secrets[secretAccessKeyID] != "" && secrets[secretSecretAccessKey] != ""
}
