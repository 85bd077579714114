package csi

import (
	"slices"
	"testing"
)

func TestMountEnvWithoutNodeIdentity(t *testing.T) {
	environ := []string{
		"PATH=/bin", "AWS_REGION=eu-west-1", "AWS_ACCESS_KEY_ID=node", "AWS_SECRET_ACCESS_KEY=node-secret",
		"AWS_SESSION_TOKEN=t", "AWS_ROLE_ARN=arn", "AWS_WEB_IDENTITY_TOKEN_FILE=/var/run/token", "AWS_PROFILE=p",
		"AWS_CONFIG_FILE=/root/.aws/config", "AWS_CONTAINER_CREDENTIALS_FULL_URI=http://169.254.170.23/v1",
		"AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE=/x", "AWS_EC2_METADATA_DISABLED=false", "HF_TOKEN=hf_node",
		"HF_TOKEN_PATH=/root/token", "HF_ENDPOINT=https://mirror.example", "GOOGLE_APPLICATION_CREDENTIALS=/root/sa.json",
		"CLOUDSDK_CONFIG=/root/gcloud", "MODELFS_CACHE_SIZE=1",
	}
	got := mountEnv(environ, false, []string{"AWS_ACCESS_KEY_ID=vol"})
	want := []string{"PATH=/bin", "AWS_REGION=eu-west-1", "HF_ENDPOINT=https://mirror.example", "AWS_CONFIG_FILE=/dev/null",
		"AWS_SHARED_CREDENTIALS_FILE=/dev/null", "AWS_EC2_METADATA_DISABLED=true", "HF_TOKEN_PATH=/dev/null", "GOOGLE_APPLICATION_CREDENTIALS=/dev/null", "AWS_ACCESS_KEY_ID=vol"}
	if !slices.Equal(got, want) {
		t.Fatalf("mount env\n got %q\nwant %q", got, want)
	}
	// With the node's identity, the AWS chain is left as the plugin has it.
	got = mountEnv(environ, true, nil)
	if !slices.Equal(got, environ[:len(environ)-1]) {
		t.Fatalf("mount env with the node identity: %q", got)
	}
}
