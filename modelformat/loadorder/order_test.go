package loadorder

import (
	"slices"
	"testing"
)

// Each family lists tensor names in header order (safetensors writers
// sort names, so "layers.10" comes before "layers.2") and, by hand, the
// order a loader needs them in.
func TestOrder(t *testing.T) {
	tests := []struct {
		family string
		names  []string
		want   []string
	}{
		{
			family: "Llama HF",
			names: []string{
				"lm_head.weight",
				"model.embed_tokens.weight",
				"model.layers.0.input_layernorm.weight",
				"model.layers.0.mlp.down_proj.weight",
				"model.layers.1.input_layernorm.weight",
				"model.layers.10.input_layernorm.weight",
				"model.layers.2.input_layernorm.weight",
				"model.layers.2.post_attention_layernorm.weight",
				"model.layers.0.self_attn.q_proj.weight",
				"model.norm.weight",
				"model.rotary_emb.inv_freq",
			},
			want: []string{
				"model.embed_tokens.weight",
				"model.layers.0.input_layernorm.weight",
				"model.layers.0.mlp.down_proj.weight",
				"model.layers.0.self_attn.q_proj.weight",
				"model.layers.1.input_layernorm.weight",
				"model.layers.2.input_layernorm.weight",
				"model.layers.2.post_attention_layernorm.weight",
				"model.layers.10.input_layernorm.weight",
				"model.rotary_emb.inv_freq",
				"model.norm.weight",
				"lm_head.weight",
			},
		},
		{
			family: "GPT-2 (h.N, as the gpt2 checkpoint names them)",
			names: []string{
				"h.0.attn.c_attn.weight",
				"h.1.mlp.c_fc.weight",
				"h.11.ln_2.weight",
				"h.0.ln_1.weight",
				"ln_f.bias",
				"ln_f.weight",
				"wpe.weight",
				"wte.weight",
			},
			want: []string{
				"wpe.weight",
				"wte.weight",
				"h.0.attn.c_attn.weight",
				"h.0.ln_1.weight",
				"h.1.mlp.c_fc.weight",
				"h.11.ln_2.weight",
				"ln_f.bias",
				"ln_f.weight",
			},
		},
		{
			family: "GPT-2 (transformer.h.N)",
			names: []string{
				"lm_head.weight",
				"transformer.h.1.attn.c_proj.weight",
				"transformer.h.0.attn.c_proj.weight",
				"transformer.ln_f.weight",
				"transformer.wte.weight",
				"transformer.wpe.weight",
			},
			want: []string{
				"transformer.wte.weight",
				"transformer.wpe.weight",
				"transformer.h.0.attn.c_proj.weight",
				"transformer.h.1.attn.c_proj.weight",
				"transformer.ln_f.weight",
				"lm_head.weight",
			},
		},
		{
			family: "GGUF blk.N",
			names: []string{
				"output.weight",
				"rope_freqs.weight",
				"blk.1.attn_q.weight",
				"blk.0.attn_q.weight",
				"token_embd.weight",
				"blk.0.ffn_down.weight",
				"output_norm.weight",
				"blk.1.ffn_down.weight",
			},
			want: []string{
				"token_embd.weight",
				"blk.0.attn_q.weight",
				"blk.0.ffn_down.weight",
				"blk.1.attn_q.weight",
				"blk.1.ffn_down.weight",
				"rope_freqs.weight",
				"output_norm.weight",
				"output.weight",
			},
		},
		{
			family: "BERT encoder.layer.N",
			names: []string{
				"bert.embeddings.LayerNorm.weight",
				"bert.embeddings.word_embeddings.weight",
				"bert.encoder.layer.0.attention.output.dense.weight",
				"bert.encoder.layer.1.output.dense.weight",
				"bert.encoder.layer.10.output.LayerNorm.weight",
				"bert.encoder.layer.2.attention.self.query.weight",
				"bert.pooler.dense.weight",
				"cls.predictions.bias",
			},
			want: []string{
				"bert.embeddings.LayerNorm.weight",
				"bert.embeddings.word_embeddings.weight",
				"bert.encoder.layer.0.attention.output.dense.weight",
				"bert.encoder.layer.1.output.dense.weight",
				"bert.encoder.layer.2.attention.self.query.weight",
				"bert.encoder.layer.10.output.LayerNorm.weight",
				"bert.pooler.dense.weight",
				"cls.predictions.bias",
			},
		},
		{
			family: "T5 encoder.block.N / decoder.block.N",
			names: []string{
				"decoder.block.0.layer.0.SelfAttention.q.weight",
				"decoder.block.1.layer.2.DenseReluDense.wo.weight",
				"decoder.final_layer_norm.weight",
				"encoder.block.0.layer.1.DenseReluDense.wi.weight",
				"encoder.block.1.layer.0.SelfAttention.k.weight",
				"encoder.block.0.layer.0.SelfAttention.q.weight",
				"encoder.final_layer_norm.weight",
				"lm_head.weight",
				"shared.weight",
			},
			want: []string{
				"shared.weight",
				"encoder.block.0.layer.1.DenseReluDense.wi.weight",
				"encoder.block.0.layer.0.SelfAttention.q.weight",
				"encoder.block.1.layer.0.SelfAttention.k.weight",
				"decoder.block.0.layer.0.SelfAttention.q.weight",
				"decoder.block.1.layer.2.DenseReluDense.wo.weight",
				"decoder.final_layer_norm.weight",
				"encoder.final_layer_norm.weight",
				"lm_head.weight",
			},
		},
		{
			family: "BART model.encoder.layers.N / model.decoder.layers.N",
			names: []string{
				"model.decoder.embed_positions.weight",
				"model.decoder.layers.0.fc1.weight",
				"model.decoder.layers.1.fc1.weight",
				"model.decoder.layernorm_embedding.weight",
				"model.encoder.embed_positions.weight",
				"model.encoder.layers.1.fc1.weight",
				"model.encoder.layers.0.fc1.weight",
				"model.shared.weight",
			},
			want: []string{
				"model.decoder.embed_positions.weight",
				"model.encoder.embed_positions.weight",
				"model.shared.weight",
				"model.encoder.layers.0.fc1.weight",
				"model.encoder.layers.1.fc1.weight",
				"model.decoder.layers.0.fc1.weight",
				"model.decoder.layers.1.fc1.weight",
				"model.decoder.layernorm_embedding.weight",
			},
		},
		{
			family: "blocks.N (RWKV / Mamba style)",
			names: []string{
				"blocks.0.att.key.weight",
				"blocks.1.ffn.value.weight",
				"blocks.10.ln1.weight",
				"blocks.2.norm.weight",
				"emb.weight",
				"head.weight",
				"ln_out.weight",
			},
			want: []string{
				"emb.weight",
				"blocks.0.att.key.weight",
				"blocks.1.ffn.value.weight",
				"blocks.2.norm.weight",
				"blocks.10.ln1.weight",
				"ln_out.weight",
				"head.weight",
			},
		},
		{
			family: "Mamba HF backbone.layers.N",
			names: []string{
				"backbone.embeddings.weight",
				"backbone.layers.1.mixer.A_log",
				"backbone.layers.0.norm.weight",
				"backbone.norm_f.weight",
				"lm_head.weight",
			},
			want: []string{
				"backbone.embeddings.weight",
				"backbone.layers.0.norm.weight",
				"backbone.layers.1.mixer.A_log",
				"backbone.norm_f.weight",
				"lm_head.weight",
			},
		},
		{
			family: "vision tower (encoder) before language model; stacks not interleaved",
			names: []string{
				"model.language_model.layers.0.mlp.weight",
				"model.language_model.layers.1.mlp.weight",
				"model.mtp.layers.0.weight",
				"model.vision_tower.encoder.layers.1.weight",
				"model.vision_tower.encoder.layers.0.weight",
			},
			want: []string{
				"model.vision_tower.encoder.layers.0.weight",
				"model.vision_tower.encoder.layers.1.weight",
				"model.language_model.layers.0.mlp.weight",
				"model.language_model.layers.1.mlp.weight",
				"model.mtp.layers.0.weight",
			},
		},
		{
			family: "not layers: signed or huge indices, no container",
			names: []string{
				"x.layers.-1.w",
				"x.layers.99999999999999999999.w",
				"model.experts.3.w",
				"model.layers.0.w",
			},
			want: []string{
				"model.layers.0.w",
				"x.layers.-1.w",
				"x.layers.99999999999999999999.w",
				"model.experts.3.w",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.family, func(t *testing.T) {
			order := Order(tt.names)
			got := make([]string, len(order))
			for i, k := range order {
				got[i] = tt.names[k]
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("order:\n got %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestOrderEmpty(t *testing.T) {
	if got := Order(nil); len(got) != 0 {
		t.Fatalf("Order(nil) = %v", got)
	}
}
