// Package modeldir opens a local model directory as a modelformat.Tree,
// the one walk the mount's local source, pack and gpuwarm share: the
// directory through an os.Root, and, when it is a Hugging Face cache
// snapshot (<repo>/snapshots/<rev>/), the repository's blobs/ through a
// second one. Both roots refuse, at the system level, any path that would
// leave them, so a tree changing while it is read cannot lead elsewhere.
package modeldir
