// Package s3server is an in-process S3 server for tests, demos and
// benchmarks. It speaks the real S3 REST protocol (path-style addressing),
// verifies AWS Signature Version 4 like S3 does, and is meant to be
// indistinguishable from S3 to a client such as aws-sdk-go-v2 for the
// operations it implements:
//
//   - buckets: CreateBucket, HeadBucket, DeleteBucket, ListBuckets,
//     GetBucketLocation, GetBucketVersioning;
//   - objects: PutObject (plain and aws-chunked bodies, with checksums),
//     GetObject and HeadObject (ranges, conditional requests, versions,
//     partNumber), DeleteObject;
//   - ListObjectsV2 and ListObjects;
//   - multipart uploads: Create, UploadPart, Complete, Abort, keeping the
//     checksum Create asked for (x-amz-checksum-algorithm and -type): a
//     composite one ("...-N") by default for CRC32, CRC32C, SHA1 and
//     SHA256, a full-object one where asked and allowed, else CRC64NVME;
//   - STS AssumeRoleWithWebIdentity (POST / with a form body), for tokens a
//     test trusts (TrustWebIdentity); the temporary credentials it issues
//     sign S3 requests with their session token.
//
// Anything else is answered with S3's NotImplemented error rather than
// being silently misinterpreted.
//
// Object bytes live in files under Options.Dir, so objects of many GiB are
// served with sendfile and never held in memory; the index of buckets and
// objects is in memory. Tests can seed data directly (CreateBucket,
// PutObject, PutObjectFromFile), count requests (Stats, GetsFor) and inject
// faults (SetHook).
package s3server
