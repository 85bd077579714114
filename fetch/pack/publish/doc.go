// Package publish writes and checks stores of packs: it packs a model
// directory into a local directory or an S3 prefix (Pack), and reads a
// store back through the pack layer to check every file's sha256 (Verify).
//
// It is the writing side of package pack, kept apart so that the pack
// format and its Source, which every mount links, do not carry an
// uploader: objects are written with the AWS SDK directly, under a
// temporary name (local) or as a multipart upload (S3), so nothing is
// visible at a key until it is whole.
package publish
