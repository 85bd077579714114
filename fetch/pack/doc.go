// Package pack stores model files compressed so that any byte range can
// still be read without the rest: the pack format, its encoder, and a
// fetch.Source that shows a store of packs as the original files.
//
// # Format (version 1; docs/pack-format.md has every byte)
//
// The pack of a file "x" is one object, "x.mfpack":
//
//	header   16 bytes: magic "MFPACK\r\n", version, flags (0)
//	frames   each covering a fixed span of the original (default 4 MiB,
//	         the last one shorter), independently decodable
//	index    frame span, original size and sha256, then per frame its
//	         packed length, codec and the xxhash64 of its packed bytes
//	trailer  32 bytes: index length, index xxhash64, version, flags,
//	         magic
//
// Frames start right after the header and follow one another, so the
// index stores lengths, not offsets; a reader reads the trailer and index
// with one ranged read of the object's last 64 KiB, checks that frames,
// index and trailer add up to the object's size, and from then on maps
// any range of the original to the frames covering it: one ranged read
// fetches them, each frame's xxhash64 is checked before it is decoded,
// and a frame that fails is an error wrapping ErrCorrupt, never wrong
// bytes. The version is in the header and the trailer: a reader refuses
// any version but its own, by name, so a future change cannot be misread.
//
// # Codecs
//
// A frame is raw (it did not shrink), one zstd frame, or split:
//
//   - The encoder is told (DetectLayout) which ranges of the file are
//     16-bit floats: the bf16 and fp16 tensors of a safetensors or GGUF
//     file, found with modelformat's parsers. In a split frame
//     those runs are byte-grouped: all high bytes (sign and exponent,
//     with fp16 2 mantissa bits) in one stream, all low bytes (mantissa)
//     in another. The other bytes (headers, f32 norms, padding) form a
//     plain stream.
//   - The high stream is Huffman-coded with huff0 in 128 KiB blocks, each
//     with its own table. The low stream is coded the same way, which in
//     practice stores it raw (huff0 gives up at once on bytes that are
//     near uniform). The plain stream is zstd-coded, or Huffman-coded when
//     that is smaller.
//   - Frames with no 16-bit floats are zstd-coded; when zstd gains less
//     than an eighth they are also tried as a split frame of one plain,
//     Huffman-coded stream, which gains ~7 % on f32 and int8 tensors where
//     zstd's fast levels leave literals uncoded.
//
// huff0 rather than zstd for the high bytes, measured on modelgen's bf16
// N(0, 0.02) weights (BenchmarkHighBytes, per CPU second): huff0 stores
// them in 0.34 of their size and decodes ~720 MB of them per second; zstd
// (fastest and default levels) in 0.41–0.43 and at ~240 MB/s. In bytes
// that are nearly independent draws zstd finds short, useless matches and
// spends its time and bits on them, while order-0 entropy coding is all
// there is to gain. With the low bytes raw a shard packs to 0.67 of its
// size and decodes at ~740 MB/s per core (BenchmarkDecode), against 0.71
// with zstd for the high bytes, and 1.00 for zstd on the interleaved bytes
// at its default level (0.78 at its better-compression level, still well
// short of grouping).
//
// # Reading
//
// NewSource wraps a source: List replaces each "x.mfpack" by "x" with the
// original's size, a version derived from the pack's own (so a new pack is
// a new version, and the block cache keeps nothing of the old one) and the
// original's sha256 as its checksum (so warm verifies whole files against
// it); it reads the indexes a few at a time. ReadAt decodes. When both
// "x" and "x.mfpack" are there, "x" is shown, with a warning.
//
// The block cache above the source stores decoded blocks. Its default
// 8 MiB block is two frames of the default 4 MiB span: block reads cover
// whole frames, which are decoded straight into the block's buffer. Reads
// that cover part of a frame (smaller or unaligned blocks, or Reader
// callers) go through a small cache of decoded frames that also makes
// concurrent readers of one frame decode it once.
//
// The per-frame xxhash64 detects damage, not malice: anyone who can write
// the pack can write a matching index. The original's sha256 in the index
// is what `modelfs warm` and `modelfs pack --verify` check whole files
// against.
package pack
