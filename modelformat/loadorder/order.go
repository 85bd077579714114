package loadorder

import (
	"cmp"
	"slices"
	"strconv"
	"strings"
)

// Phases of a model in the order a loader that builds it front to back
// (embeddings, layers, head) needs its tensors.
const (
	phaseEmbed = iota
	phaseLayer
	phaseOther
	phaseFinalNorm
	phaseHead
)

// Stacks of layers: an encoder runs before the decoder it feeds.
const (
	stackEncoder = iota
	stackPlain
	stackDecoder
)

// Name segments (between dots) that mark each part. Whole segments are
// compared, not substrings, so "post_attention_layernorm" is not "norm".
var (
	// layerContainers hold numbered layers: "<container>.<N>.".
	layerContainers = set("layers", "layer", "h", "blk", "block", "blocks")
	embedSegments   = set("embed_tokens", "wte", "wpe", "token_embd", "token_embd_norm",
		"position_embd", "token_types", "word_embeddings", "tok_embeddings",
		"embeddings", "embedding", "embed_positions", "embed_in", "emb", "shared")
	finalNormSegments = set("norm", "ln_f", "output_norm", "final_layernorm",
		"final_layer_norm", "norm_f", "final_norm", "ln_out")
	headSegments = set("lm_head", "embed_out")
)

func set(s ...string) map[string]bool {
	m := make(map[string]bool, len(s))
	for _, k := range s {
		m[k] = true
	}
	return m
}

// orderKey sorts one tensor name. For layers, prefix ranks the layer
// container ("model.layers") by first appearance so that two stacks of the
// same kind (a vision tower and a language model) are not interleaved.
type orderKey struct {
	phase, stack, prefix, layer int
}

func (a orderKey) compare(b orderKey) int {
	if c := cmp.Compare(a.phase, b.phase); c != 0 {
		return c
	}
	if c := cmp.Compare(a.stack, b.stack); c != 0 {
		return c
	}
	if c := cmp.Compare(a.prefix, b.prefix); c != 0 {
		return c
	}
	return cmp.Compare(a.layer, b.layer)
}

// Order returns the indices of names in the order a loader needs the
// tensors: embeddings; then layers by index, encoder stacks before plain
// ones before decoder stacks; then everything else; then the final norm;
// then the output head. Names that tie keep their order in names, which is
// header order.
func Order(names []string) []int {
	prefixes := map[string]int{}
	keys := make([]orderKey, len(names))
	for i, n := range names {
		keys[i] = classify(n, prefixes)
	}
	idx := make([]int, len(names))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int { return keys[a].compare(keys[b]) })
	return idx
}

// classify walks name's segments in place: splitting it would allocate a
// slice per name, which for a header of many short segments is many
// times the header's size.
func classify(name string, prefixes map[string]int) orderKey {
	stack := stackPlain
	var head, embed, norm bool
	for pos, rest := 0, name; ; {
		seg, after, more := strings.Cut(rest, ".")
		// The first "<container>.<N>" wins: in "encoder.block.3.layer.1"
		// the layer is block 3; "layer.1" is a sublayer inside it.
		if more && layerContainers[seg] {
			next, _, _ := strings.Cut(after, ".")
			if n, ok := layerIndex(next); ok {
				p := name[:pos+len(seg)]
				rank, seen := prefixes[p]
				if !seen {
					rank = len(prefixes)
					prefixes[p] = rank
				}
				return orderKey{phase: phaseLayer, stack: stack, prefix: rank, layer: n}
			}
		}
		switch seg {
		case "encoder", "enc": // "enc" is llama.cpp's T5 prefix
			stack = stackEncoder
		case "decoder", "dec":
			stack = stackDecoder
		}
		// GGUF's head is "output.weight"; a leading "head" is RWKV's and
		// timm's.
		head = head || (pos == 0 && (seg == "output" || seg == "head")) || headSegments[seg]
		embed = embed || embedSegments[seg]
		norm = norm || finalNormSegments[seg]
		if !more {
			break
		}
		pos += len(seg) + 1
		rest = after
	}
	switch {
	case head:
		return orderKey{phase: phaseHead}
	case embed:
		return orderKey{phase: phaseEmbed}
	case norm:
		return orderKey{phase: phaseFinalNorm}
	}
	return orderKey{phase: phaseOther}
}

// layerIndex parses a layer number: plain decimal digits only, so that
// strconv's signs are not accepted and nothing overflows.
func layerIndex(s string) (int, bool) {
	if s == "" || len(s) > 9 {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.Atoi(s)
	return n, err == nil
}
