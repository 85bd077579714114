package modelgen

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strconv"
)

// maxMerges caps the merge list so tokenizer.json stays a few hundred KiB
// even with the full vocabulary; loaders read it whole, so its size matters
// for startup benchmarks, but its content does not.
const maxMerges = 4000

// tokenizerJSON returns a Llama-style (SentencePiece BPE with byte
// fallback) tokenizer.json with exactly vocab tokens. The pieces are made-up
// syllables: plausible to the eye and to a JSON parser, not a real language.
func tokenizerJSON(vocab int, seed int64) []byte {
	rng := rand.New(rand.NewPCG(uint64(seed), 0x746f6b656e697a65))
	tokens := []string{"<unk>", "<s>", "</s>"}
	for b := 0; b < 256 && len(tokens) < vocab; b++ {
		tokens = append(tokens, fmt.Sprintf("<0x%02X>", b))
	}
	const consonants, vowels = "bcdfghjklmnprstvwz", "aeiou"
	seen := make(map[string]bool, vocab)
	var merges [][2]string
	for len(tokens) < vocab {
		var parts []string
		for range 1 + rng.IntN(3) {
			s := string(consonants[rng.IntN(len(consonants))]) + string(vowels[rng.IntN(len(vowels))])
			if rng.IntN(3) == 0 {
				s += string(consonants[rng.IntN(len(consonants))])
			}
			parts = append(parts, s)
		}
		if rng.IntN(2) == 0 {
			parts[0] = "▁" + parts[0] // SentencePiece's word-start marker
		}
		var tok string
		for _, p := range parts {
			tok += p
		}
		if seen[tok] {
			continue
		}
		seen[tok] = true
		tokens = append(tokens, tok)
		if len(parts) > 1 && len(merges) < maxMerges {
			left := parts[0]
			for _, p := range parts[1 : len(parts)-1] {
				left += p
			}
			merges = append(merges, [2]string{left, parts[len(parts)-1]})
		}
	}

	// Written by hand rather than with encoding/json so the vocab stays in
	// id order, as in real files. No token contains characters that need
	// escaping, and encoding/json would rewrite <s> as \u003cs\u003e. The
	// long lists get one entry per line without indentation to save space.
	var b bytes.Buffer
	b.WriteString(`{
  "version": "1.0",
  "truncation": null,
  "padding": null,
  "added_tokens": [`)
	for i, s := range tokens[:3] {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `
    {"id": %d, "content": "%s", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}`, i, s)
	}
	b.WriteString(`
  ],
  "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "▁"}, {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
  "pre_tokenizer": null,
  "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}], "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "<s>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}], "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
  "decoder": {"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": "▁"}, "content": " "}, {"type": "ByteFallback"}, {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
  "model": {
    "type": "BPE",
    "dropout": null,
    "unk_token": "<unk>",
    "continuing_subword_prefix": null,
    "end_of_word_suffix": null,
    "fuse_unk": true,
    "byte_fallback": true,
    "ignore_merges": false,
    "vocab": {`)
	for i, s := range tokens {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString("\n\"" + s + "\": " + strconv.Itoa(i))
	}
	b.WriteString("\n    },\n    \"merges\": [")
	for i, m := range merges {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString("\n\"" + m[0] + " " + m[1] + "\"")
	}
	b.WriteString("\n    ]\n  }\n}\n")
	return b.Bytes()
}
