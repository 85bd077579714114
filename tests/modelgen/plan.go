package modelgen

import (
	"fmt"
	"math"
)

// Config is the architecture Generate chose; it is what config.json says.
type Config struct {
	Hidden       int // hidden_size
	Intermediate int // intermediate_size
	Layers       int // num_hidden_layers
	Heads        int // num_attention_heads
	KVHeads      int // num_key_value_heads (GQA: a quarter of Heads)
	Vocab        int // vocab_size
}

const (
	fullVocab = 32000
	bf16Size  = 2
)

// intermediateSize follows Llama's MLP ratio (11008/4096 = 2.6875 = 43/16),
// rounded to a multiple of 256 as model configs do.
func intermediateSize(h int) int {
	i := (h*43/16 + 128) / 256 * 256
	return max(i, 256)
}

func newConfig(h, layers, vocab int) Config {
	// Pick the largest head size that leaves the head count divisible by 4,
	// so that KVHeads*headDim == h/4 exactly.
	headDim := 16
	for _, d := range []int{128, 64, 32} {
		if h%(4*d) == 0 {
			headDim = d
			break
		}
	}
	return Config{
		Hidden:       h,
		Intermediate: intermediateSize(h),
		Layers:       layers,
		Heads:        h / headDim,
		KVHeads:      h / headDim / 4,
		Vocab:        vocab,
	}
}

// layerParams is the parameter count of one decoder layer.
func (c Config) layerParams() int64 {
	h, kv, in := int64(c.Hidden), int64(c.Hidden/4), int64(c.Intermediate)
	return 2*h*h + 2*kv*h + 3*in*h + 2*h
}

// embedBytes is the size of embed_tokens plus lm_head.
func (c Config) embedBytes() int64 { return 2 * int64(c.Vocab) * int64(c.Hidden) * bf16Size }

// layersBytes is the size of all decoder layers plus the final norm.
func (c Config) layersBytes() int64 {
	return (int64(c.Layers)*c.layerParams() + int64(c.Hidden)) * bf16Size
}

// WeightBytes is the total size of the model's tensors.
func (c Config) WeightBytes() int64 { return c.embedBytes() + c.layersBytes() }

func relErr(got, want int64) float64 { return math.Abs(float64(got-want)) / float64(want) }

// closestHidden returns the multiple of 64 (the granularity that keeps every
// tensor size a multiple of 8 bytes) for which size(h) is closest to target.
// size must be increasing in h.
func closestHidden(target int64, size func(h int) int64) int {
	best := 64
	for h := 64; h <= 1<<16; h += 64 {
		if relErr(size(h), target) < relErr(size(best), target) {
			best = h
		}
		if size(h) > target {
			break
		}
	}
	return best
}

// plan picks an architecture whose weights total about target bytes.
// Realistic models keep the full 32000-token vocabulary and a hidden size
// of at least 32 per layer (Llama-7B has 128), so it first tries that with
// as many layers as fit. Models too small for a 32000-token embedding to be
// a minor part get a smaller vocabulary instead, sized so the embeddings are
// roughly a quarter of the model.
func plan(target int64, layers int) (Config, error) {
	if target <= 0 {
		return Config{}, fmt.Errorf("modelgen: TotalBytes must be positive, got %d", target)
	}
	if layers < 0 || layers == 1 {
		return Config{}, fmt.Errorf("modelgen: Layers must be 0 (auto) or >= 2, got %d", layers)
	}
	candidates := []int{32, 24, 16, 12, 8, 6, 4, 2}
	if layers > 0 {
		candidates = []int{layers}
	}
	minHidden := func(l int) int {
		if layers > 0 {
			return 64 // the caller chose the depth; honour it
		}
		return 32 * l
	}
	const tolerance = 0.05

	for _, l := range candidates {
		h := closestHidden(target, func(h int) int64 { return newConfig(h, l, fullVocab).WeightBytes() })
		c := newConfig(h, l, fullVocab)
		if h >= minHidden(l) && relErr(c.WeightBytes(), target) <= tolerance &&
			float64(c.embedBytes()) <= 0.35*float64(c.WeightBytes()) {
			return c, nil
		}
	}

	var best Config
	for _, l := range candidates {
		h := closestHidden(target*3/4, func(h int) int64 { return newConfig(h, l, 0).layersBytes() })
		if h < minHidden(l) {
			continue
		}
		c := newConfig(h, l, 0)
		v := (target - c.layersBytes()) / (2 * int64(h) * bf16Size)
		c.Vocab = int(min(max((v+32)/64*64, 256), fullVocab))
		if best.Hidden == 0 || relErr(c.WeightBytes(), target) < relErr(best.WeightBytes(), target) {
			best = c
		}
		if relErr(c.WeightBytes(), target) <= tolerance {
			break
		}
	}
	if best.Hidden == 0 {
		// Nothing met the minimum width: target is below the smallest
		// model, so return that (about 300 KB).
		best = newConfig(64, candidates[len(candidates)-1], 256)
	}
	return best, nil
}

// tensorSpecs lists the model's tensors in state-dict order, which is the
// order Hugging Face shards and writes them.
func (c Config) tensorSpecs() []Tensor {
	h, kv, in, v := int64(c.Hidden), int64(c.Hidden/4), int64(c.Intermediate), int64(c.Vocab)
	t := func(name string, shape ...int64) Tensor {
		return Tensor{Name: name, DType: "BF16", Shape: shape}
	}
	out := []Tensor{t("model.embed_tokens.weight", v, h)}
	for i := 0; i < c.Layers; i++ {
		p := fmt.Sprintf("model.layers.%d.", i)
		out = append(out,
			t(p+"self_attn.q_proj.weight", h, h),
			t(p+"self_attn.k_proj.weight", kv, h),
			t(p+"self_attn.v_proj.weight", kv, h),
			t(p+"self_attn.o_proj.weight", h, h),
			t(p+"mlp.gate_proj.weight", in, h),
			t(p+"mlp.up_proj.weight", in, h),
			t(p+"mlp.down_proj.weight", h, in),
			t(p+"input_layernorm.weight", h),
			t(p+"post_attention_layernorm.weight", h),
		)
	}
	return append(out, t("model.norm.weight", h), t("lm_head.weight", v, h))
}

func numElems(shape []int64) int64 {
	n := int64(1)
	for _, d := range shape {
		n *= d
	}
	return n
}

// assignShards splits tensors (in order) into n contiguous runs of roughly
// equal byte size, returning the shard index of each tensor. A tensor goes
// to the shard its midpoint falls in; the clamps keep the sequence
// non-decreasing without skipping a shard and leave enough tensors for the
// remaining shards, so no shard is empty.
func assignShards(sizes []int64, n int) []int {
	var total int64
	for _, s := range sizes {
		total += s
	}
	out := make([]int, len(sizes))
	var cum int64
	prev := 0
	for i, s := range sizes {
		mid := float64(cum) + float64(s)/2
		k := int(mid * float64(n) / float64(total))
		k = max(k, prev, n-(len(sizes)-i))
		k = min(k, prev+1, n-1)
		if i == 0 {
			k = 0
		}
		out[i] = k
		prev = k
		cum += s
	}
	return out
}
