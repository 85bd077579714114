// Package mountinfo tells whether a path is a mount point, from the
// kernel's mount table, and unmounts a FUSE mount whoever serves it (or
// nobody: a stale mount). It knows nothing of go-fuse, so the CSI plugin
// can watch and remove its volumes' mounts without linking the
// filesystem.
package mountinfo
