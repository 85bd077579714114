// Package e2e tests modelfs end to end: the real binary mounts through
// FUSE, remote storage is the S3-protocol server of tests/s3server on
// loopback, and everything is read back with ordinary system calls and
// compared with sha256 against the source.
//
// Tests that need /dev/fuse skip with a reason when it is not usable.
package e2e
