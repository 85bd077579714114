// Package publish writes and checks stores of packs: it packs a model
// directory into a local directory, an S3 prefix, an Azure container's
// prefix or a Cloud Storage prefix (Pack), and reads a store back through
// the pack layer to check every file's sha256 (Verify).
//
// It is the writing side of package pack, kept apart so that the pack
// format and its Source, which every mount links, do not carry an
// uploader: objects are written with the AWS and Azure SDKs directly, or
// the Cloud Storage upload calls of fetch's GCS client. Nothing is
// visible at a key until it is whole: a temporary name renamed into
// place (local), a multipart upload (S3), staged blocks committed as a
// list (Azure), a resumable upload (Cloud Storage); each buffers a
// bounded number of parts, whatever the object's size.
package publish
