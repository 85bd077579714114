package gpuwarm

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

// EnvVar is an environment variable recommended for the inference server.
type EnvVar struct {
	Name    string `json:"name"`
	Value   string `json:"value"`
	Comment string `json:"comment"`
}

// ServerEnv is the environment an inference server on this node should
// start with.
func ServerEnv() []EnvVar {
	return []EnvVar{
		{"CUDA_MODULE_LOADING", "LAZY",
			"load CUDA kernels when first used, not all at context creation: faster start, less GPU memory (default from CUDA 12.2; explicit for older runtimes)"},
		{"CUDA_DEVICE_ORDER", "PCI_BUS_ID",
			"number GPUs like NVML and nvidia-smi do, so the GPUs gpuwarm checked are the ones CUDA calls 0..N-1"},
		{"PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True",
			"let PyTorch's allocator grow segments instead of fragmenting, so the memory the fit check saw stays usable"},
		{"HF_HUB_OFFLINE", "1",
			"the weights are local (a modelfs mount): do not call the Hugging Face Hub at start"},
	}
}

// WriteEnv writes vars as shell export lines, each after its comment
// ("shell"), or as a JSON array of {name, value, comment} ("json").
func WriteEnv(w io.Writer, vars []EnvVar, format string) error {
	switch format {
	case "json":
		data, err := json.MarshalIndent(vars, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "%s\n", data)
		return err
	case "shell":
		for _, v := range vars {
			if _, err := fmt.Fprintf(w, "# %s\nexport %s=%s\n", v.Comment, v.Name, shellQuote(v.Value)); err != nil {
				return err
			}
		}
		return nil
	}
	return fmt.Errorf("environment format %q: want shell or json", format)
}

// shellQuote quotes s for a POSIX shell unless it needs none.
func shellQuote(s string) string {
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.' || c == ':' || c == '/' || c == ',' || c == '=') {
			return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
		}
	}
	return s
}
