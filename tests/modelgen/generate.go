package modelgen

import (
	"cmp"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"math/bits"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"sync"
)

// Options controls Generate.
type Options struct {
	// TotalBytes is the approximate total size of the weights; the hidden
	// size, layer count and (for tiny models) vocabulary are scaled to hit
	// it within a few percent. Must be positive. The smallest model is
	// about 300 KB.
	TotalBytes int64
	// Shards is the number of safetensors files; 0 means about one per GiB
	// (at least one).
	Shards int
	// Layers is the number of decoder layers; 0 means 32 when the size
	// allows a realistic width, fewer for small models.
	Layers int
	// Seed selects the weight values (and tokenizer); the output is a pure
	// function of Options.
	Seed int64
}

// Model describes what Generate wrote.
type Model struct {
	// Files are all files written, as paths relative to the directory, sorted.
	Files []string
	// Tensors are in header order within each shard, shards in order; this is
	// what ParseSafetensors returns for each shard, with File set.
	Tensors []Tensor
	// TotalBytes is the exact size of all tensor data (index.json total_size).
	TotalBytes int64
	Config     Config
}

// ShardName returns the Hugging Face name of shard i (0-based) of n.
func ShardName(i, n int) string {
	return fmt.Sprintf("model-%05d-of-%05d.safetensors", i+1, n)
}

// chunkSize is both the write size and the unit of PRNG streams: each chunk
// of each tensor is generated independently, which is what lets workers
// fill chunks in any order and still produce identical bytes.
const chunkSize = 4 << 20

// Generate writes a model into dir (created if needed; existing files of the
// same names are replaced) and describes it.
func Generate(dir string, opts Options) (*Model, error) {
	cfg, err := plan(opts.TotalBytes, opts.Layers)
	if err != nil {
		return nil, err
	}
	specs := cfg.tensorSpecs()
	nShards := opts.Shards
	switch {
	case nShards < 0:
		return nil, fmt.Errorf("modelgen: Shards must be >= 0, got %d", nShards)
	case nShards == 0:
		nShards = int(max((cfg.WeightBytes()+(1<<30)/2)>>30, 1))
	}
	if nShards > len(specs) {
		return nil, fmt.Errorf("modelgen: %d shards requested but the model has only %d tensors", nShards, len(specs))
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}

	// Lay out every shard: data in state-dict order, header keys sorted.
	sizes := make([]int64, len(specs))
	for i, t := range specs {
		sizes[i] = numElems(t.Shape) * bf16Size
	}
	shardOf := assignShards(sizes, nShards)
	type shard struct {
		name    string
		tensors []Tensor // state-dict order, absolute offsets
		idx     []int    // index of each tensor in specs, for seeding
		prefix  []byte   // length + JSON header
		size    int64
	}
	shards := make([]shard, nShards)
	for i, t := range specs {
		s := &shards[shardOf[i]]
		var off int64
		if n := len(s.tensors); n > 0 {
			off = (s.tensors[n-1].End + 7) &^ 7
		}
		t.Begin, t.End = off, off+sizes[i]
		s.tensors = append(s.tensors, t)
		s.idx = append(s.idx, i)
	}
	model := &Model{Config: cfg}
	for k := range shards {
		s := &shards[k]
		s.name = ShardName(k, nShards)
		s.prefix = encodeHeader(s.tensors, map[string]string{"format": "pt"})
		base := int64(len(s.prefix))
		for j := range s.tensors {
			s.tensors[j].File = s.name
			s.tensors[j].Begin += base
			s.tensors[j].End += base
		}
		s.size = s.tensors[len(s.tensors)-1].End
		sorted := append([]Tensor(nil), s.tensors...)
		sort.Slice(sorted, func(a, b int) bool { return sorted[a].Name < sorted[b].Name })
		model.Tensors = append(model.Tensors, sorted...)
		model.Files = append(model.Files, s.name)
	}

	// Create the shards with their headers, then fill the data in parallel
	// with positioned writes.
	files := make([]*os.File, nShards)
	defer func() {
		for _, f := range files {
			if f != nil {
				f.Close()
			}
		}
	}()
	vals := tables(opts.Seed)
	var jobs []fillJob
	for k, s := range shards {
		f, err := os.Create(filepath.Join(dir, s.name))
		if err != nil {
			return nil, err
		}
		files[k] = f
		if _, err := f.Write(s.prefix); err != nil {
			return nil, err
		}
		// Sizing the file up front keeps any alignment gaps zeroed and lets
		// chunks be written in any order.
		if err := f.Truncate(s.size); err != nil {
			return nil, err
		}
		for j, t := range s.tensors {
			table := &vals.weights
			if len(t.Shape) == 1 {
				table = &vals.norms
			}
			for off := t.Begin; off < t.End; off += chunkSize {
				jobs = append(jobs, fillJob{
					f: f, off: off, n: min(chunkSize, t.End-off), table: table,
					seed: mix(uint64(opts.Seed), uint64(s.idx[j]), uint64(off-t.Begin)/chunkSize),
				})
			}
		}
	}
	if err := runJobs(jobs); err != nil {
		return nil, err
	}
	for k, f := range files {
		files[k] = nil
		if err := f.Close(); err != nil {
			return nil, err
		}
	}
	for _, n := range sizes {
		model.TotalBytes += n
	}

	meta, err := writeMetadata(dir, cfg, model, opts.Seed)
	if err != nil {
		return nil, err
	}
	model.Files = append(model.Files, meta...)
	sort.Strings(model.Files)
	return model, nil
}

// fillJob is one chunk of one tensor.
type fillJob struct {
	f     *os.File
	off   int64
	n     int64
	seed  uint64
	table *[1 << 16]uint16
}

// runJobs fills and writes chunks on all CPUs; after the first error the
// remaining jobs are skipped.
func runJobs(jobs []fillJob) error {
	ch := make(chan fillJob)
	var (
		mu       sync.Mutex
		firstErr error
		wg       sync.WaitGroup
	)
	workers := min(runtime.GOMAXPROCS(0), len(jobs))
	for range workers {
		wg.Go(func() {
			buf := make([]byte, chunkSize)
			for j := range ch {
				mu.Lock()
				failed := firstErr != nil
				mu.Unlock()
				if failed {
					continue
				}
				b := buf[:j.n]
				fill(b, j.table, j.seed)
				if _, err := j.f.WriteAt(b, j.off); err != nil {
					mu.Lock()
					firstErr = cmp.Or(firstErr, err)
					mu.Unlock()
				}
			}
		})
	}
	for _, j := range jobs {
		ch <- j
	}
	close(ch)
	wg.Wait()
	return firstErr
}

// fill writes bf16 values drawn from table into b. Each 64-bit PRNG output
// supplies four 16-bit table indices, so the cost is one multiply and four
// loads per 8 bytes: a few GB/s per core, versus ~100 MB/s for calling
// NormFloat64 per element.
func fill(b []byte, table *[1 << 16]uint16, seed uint64) {
	s := seed
	i := 0
	for ; i+8 <= len(b); i += 8 {
		r := wyrand(&s)
		v := uint64(table[uint16(r)]) | uint64(table[uint16(r>>16)])<<16 |
			uint64(table[uint16(r>>32)])<<32 | uint64(table[uint16(r>>48)])<<48
		binary.LittleEndian.PutUint64(b[i:], v)
	}
	if i < len(b) { // tail; unreachable for the shapes we generate
		var tail [8]byte
		r := wyrand(&s)
		for k := range 4 {
			binary.LittleEndian.PutUint16(tail[2*k:], table[uint16(r>>(16*k))])
		}
		copy(b[i:], tail[:])
	}
}

// wyrand is a tiny, fast PRNG with good statistical quality; inlined here
// (rather than math/rand/v2's interface) to keep the fill loop tight.
func wyrand(s *uint64) uint64 {
	*s += 0xa0761d6478bd642f
	hi, lo := bits.Mul64(*s, *s^0xe7037ed1a0b428db)
	return hi ^ lo
}

// mix derives a well-spread seed from several integers (splitmix64 finaliser
// applied in sequence), so neighbouring tensors/chunks get unrelated streams.
func mix(vals ...uint64) uint64 {
	h := uint64(0x9e3779b97f4a7c15)
	for _, v := range vals {
		h ^= v
		h += 0x9e3779b97f4a7c15
		h = (h ^ h>>30) * 0xbf58476d1ce4e5b9
		h = (h ^ h>>27) * 0x94d049bb133111eb
		h ^= h >> 31
	}
	return h
}

// valueTables holds 64 Ki precomputed bf16 samples: N(0, 0.02) for weight
// matrices (the usual init std, and close to trained Llama weights) and
// 1 + N(0, 0.02) for RMSNorm weights, which start at 1.
type valueTables struct {
	weights, norms [1 << 16]uint16
}

var (
	tablesMu    sync.Mutex
	tablesCache = map[int64]*valueTables{}
)

// tables returns the (cached) value tables for a seed.
func tables(seed int64) *valueTables {
	tablesMu.Lock()
	defer tablesMu.Unlock()
	if t, ok := tablesCache[seed]; ok {
		return t
	}
	t := new(valueTables)
	rng := rand.New(rand.NewPCG(uint64(seed), 0x6d6f64656c67656e))
	for i := range t.weights {
		x := rng.NormFloat64() * 0.02
		t.weights[i] = toBF16(float32(x))
		t.norms[i] = toBF16(float32(1 + x))
	}
	tablesCache[seed] = t
	return t
}

// toBF16 converts to bfloat16 by rounding the float32 to nearest-even on
// its top 16 bits, as torch does.
func toBF16(f float32) uint16 {
	b := math.Float32bits(f)
	b += 0x7fff + (b>>16)&1
	return uint16(b >> 16)
}

// FromBF16 widens a bfloat16 to float32 (exact).
func FromBF16(v uint16) float32 { return math.Float32frombits(uint32(v) << 16) }

// writeMetadata writes the index, config and tokenizer files and returns
// their names.
func writeMetadata(dir string, cfg Config, m *Model, seed int64) ([]string, error) {
	weightMap := make(map[string]string, len(m.Tensors))
	for _, t := range m.Tensors {
		weightMap[t.Name] = t.File
	}
	files := map[string]any{
		"model.safetensors.index.json": map[string]any{
			"metadata":   map[string]any{"total_size": m.TotalBytes},
			"weight_map": weightMap,
		},
		"config.json": map[string]any{
			"architectures":           []string{"LlamaForCausalLM"},
			"attention_bias":          false,
			"attention_dropout":       0.0,
			"bos_token_id":            1,
			"eos_token_id":            2,
			"hidden_act":              "silu",
			"hidden_size":             cfg.Hidden,
			"initializer_range":       0.02,
			"intermediate_size":       cfg.Intermediate,
			"max_position_embeddings": 4096,
			"model_type":              "llama",
			"num_attention_heads":     cfg.Heads,
			"num_hidden_layers":       cfg.Layers,
			"num_key_value_heads":     cfg.KVHeads,
			"pretraining_tp":          1,
			"rms_norm_eps":            1e-05,
			"rope_scaling":            nil,
			"rope_theta":              10000.0,
			"tie_word_embeddings":     false,
			"torch_dtype":             "bfloat16",
			"transformers_version":    "4.40.0",
			"use_cache":               true,
			"vocab_size":              cfg.Vocab,
		},
		"generation_config.json": map[string]any{
			"bos_token_id":         1,
			"eos_token_id":         2,
			"do_sample":            true,
			"max_length":           4096,
			"temperature":          0.6,
			"top_p":                0.9,
			"transformers_version": "4.40.0",
		},
		"tokenizer_config.json": map[string]any{
			"add_bos_token":                true,
			"add_eos_token":                false,
			"bos_token":                    "<s>",
			"clean_up_tokenization_spaces": false,
			"eos_token":                    "</s>",
			"legacy":                       false,
			"model_max_length":             4096,
			"pad_token":                    nil,
			"sp_model_kwargs":              map[string]any{},
			"tokenizer_class":              "LlamaTokenizer",
			"unk_token":                    "<unk>",
		},
	}
	var names []string
	for name, v := range files {
		data, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(dir, name), append(data, '\n'), 0o644); err != nil {
			return nil, err
		}
		names = append(names, name)
	}
	if err := os.WriteFile(filepath.Join(dir, "tokenizer.json"), tokenizerJSON(cfg.Vocab, seed), 0o644); err != nil {
		return nil, err
	}
	return append(names, "tokenizer.json"), nil
}
