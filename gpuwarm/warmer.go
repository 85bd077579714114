package gpuwarm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/modelfs/modelfs/modelformat/loadorder"
)

// Options configure a Warmer; zero values take the defaults.
type Options struct {
	// Model is the model directory, usually a modelfs mount.
	Model string
	// NVML is the GPU library (NewNVML in production). nil, or one whose
	// Init fails with ErrNoDriver, skips the GPU checks unless RequireGPU.
	NVML              NVML
	RequireGPU        bool
	EnablePersistence bool
	// TensorParallel is how many GPUs share the tensors: the first
	// TensorParallel GPUs are checked (default 1).
	TensorParallel int
	// GPUMemFraction is the part of each GPU's free memory the tensors
	// may take (default 0.9).
	GPUMemFraction float64
	// PinBytes is how much of the load order to lock in memory: 0 none,
	// PinAll all of it.
	PinBytes int64
	// Profile is a recorded load profile giving the order to pin in; ""
	// uses the layer order from the model's headers.
	Profile string
	// ReadyFile, if set, is written (atomically, with the report) once
	// ready.
	ReadyFile string
	// Warmup, if set, warms an inference server up before ready.
	Warmup *WarmupOptions
	// RequireVerified refuses readiness unless every model file is
	// verified against its store's checksum by the modelfs mount serving
	// it; without it only a file that failed its check does.
	RequireVerified bool
	Log             *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.TensorParallel == 0 {
		o.TensorParallel = 1
	}
	if o.GPUMemFraction == 0 {
		o.GPUMemFraction = 0.9
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return o
}

// Report is what a Warmer did, printed as one JSON object when ready.
type Report struct {
	Ready bool   `json:"ready"`
	Model string `json:"model"`
	// GPU is the inventory; nil when there is no driver (NoGPU says so).
	GPU         *Inventory    `json:"gpu,omitempty"`
	NoGPU       string        `json:"no_gpu,omitempty"`
	TensorBytes int64         `json:"tensor_bytes"`
	Fit         *Fit          `json:"fit,omitempty"`
	Pin         *PinReport    `json:"pin,omitempty"`
	Warmup      []ShapeResult `json:"warmup,omitempty"`
	// Verify is where the files stand against their store's checksums.
	Verify *VerifyReport `json:"verify,omitempty"`
	// PhasesMS is each phase's duration in milliseconds: nvml_init,
	// inventory, plan, pin and warmup, those that ran.
	PhasesMS map[string]float64 `json:"phases_ms"`
}

// Warmer runs the checks and holds the pins. Run it once; Handler may
// serve from before Run until after Close.
type Warmer struct {
	opts   Options
	log    *slog.Logger
	pinner *pinner
	now    func() time.Time
	// healthEvery is the health poll interval of the warm-up.
	healthEvery time.Duration

	reg *prometheus.Registry
	m   *metrics

	ran     atomic.Bool
	phase   atomic.Pointer[string]
	ready   atomic.Bool
	readyCh chan struct{}
	pinned  atomic.Int64

	mu         sync.Mutex
	lib        NVML // initialised, until Close
	inv        *Inventory
	pins       *pinSet
	wroteReady bool
}

// New returns a Warmer that has done nothing yet.
func New(opts Options) *Warmer {
	opts = opts.withDefaults()
	w := &Warmer{
		opts:        opts,
		log:         opts.Log,
		pinner:      newPinner(),
		now:         time.Now,
		healthEvery: time.Second,
		reg:         prometheus.NewRegistry(),
		readyCh:     make(chan struct{}),
	}
	w.setPhase("starting")
	w.m = newMetrics(w.reg, w)
	return w
}

func (w *Warmer) setPhase(p string) { w.phase.Store(&p) }

// Ready is closed once Run has made everything ready.
func (w *Warmer) Ready() <-chan struct{} { return w.readyCh }

// Run does the work: GPU checks, plan, fit check, pin, warm-up; then
// reports ready. On error the Warmer stays not ready; Close releases what
// Run got.
func (w *Warmer) Run(ctx context.Context) (*Report, error) {
	if w.ran.Swap(true) {
		return nil, errors.New("gpuwarm: Run called twice")
	}
	rep, err := w.run(ctx)
	if err != nil {
		w.setPhase("failed: " + err.Error())
		return rep, err
	}
	return rep, nil
}

func (w *Warmer) run(ctx context.Context) (*Report, error) {
	o := w.opts
	rep := &Report{Model: o.Model, PhasesMS: map[string]float64{}}
	if o.Warmup != nil {
		if _, err := o.Warmup.withDefaults(); err != nil {
			return rep, err
		}
	}
	timed := func(phase string, fn func() error) error {
		w.setPhase(phase)
		t0 := time.Now()
		err := fn()
		d := time.Since(t0)
		rep.PhasesMS[phase] = float64(d.Microseconds()) / 1000
		w.m.phase.WithLabelValues(phase).Set(d.Seconds())
		return err
	}

	// GPU checks.
	var lib NVML
	var noGPU error // why there are no GPU checks
	err := timed("nvml_init", func() error {
		if o.NVML == nil {
			noGPU = errors.New("no NVML")
			return nil
		}
		err := o.NVML.Init()
		switch {
		case err == nil:
			lib = o.NVML
		case errors.Is(err, ErrNoDriver):
			noGPU = err
		default:
			return fmt.Errorf("NVML: %w", err)
		}
		return nil
	})
	if err != nil {
		return rep, err
	}
	if lib != nil {
		w.mu.Lock()
		w.lib = lib
		w.mu.Unlock()
		err = timed("inventory", func() error {
			inv, err := takeInventory(lib, o.EnablePersistence, w.log)
			if err != nil {
				return fmt.Errorf("GPU inventory: %w", err)
			}
			w.mu.Lock()
			w.inv = inv
			w.mu.Unlock()
			rep.GPU = inv
			w.m.gpus.Set(float64(len(inv.GPUs)))
			if len(inv.GPUs) == 0 {
				noGPU = errors.New("NVML reports no GPUs")
			}
			return checkHealth(inv, o.TensorParallel)
		})
		if err != nil {
			return rep, err
		}
	}
	if noGPU != nil {
		rep.NoGPU = noGPU.Error()
		if o.RequireGPU {
			return rep, fmt.Errorf("a GPU is required: %w", noGPU)
		}
		w.log.Warn(rep.NoGPU + ": skipping the GPU checks")
	}

	// Plan and fit.
	var files []loadorder.File
	var plan []loadorder.Range
	from := "layer order"
	err = timed("plan", func() error {
		var err error
		if files, err = modelFiles(o.Model); err != nil {
			return err
		}
		layer, perr := loadorder.Plan(files, loadorder.PlanOptions{})
		if perr != nil {
			w.log.Warn("some model files could not be planned; their tensors are not counted", "err", perr)
		}
		rep.TensorBytes = tensorBytes(layer)
		w.m.tensorBytes.Set(float64(rep.TensorBytes))
		if rep.TensorBytes == 0 {
			w.log.Warn("no safetensors or GGUF tensors found", "model", o.Model)
		}
		plan = layer
		if o.Profile != "" && o.PinBytes != 0 {
			prof, dropped, err := profilePlan(o.Profile, files)
			switch {
			case err != nil:
				w.log.Warn("profile not used: pinning in layer order", "err", err)
			case len(prof) == 0:
				w.log.Warn("profile names none of the model's files: pinning in layer order", "profile", o.Profile)
			default:
				if dropped > 0 {
					w.log.Info("profile entries for missing files ignored", "ignored", dropped)
				}
				plan, from = prof, "profile "+o.Profile
			}
		}
		if rep.GPU != nil && len(rep.GPU.GPUs) > 0 {
			rep.Fit, err = checkFit(rep.GPU, rep.TensorBytes, o.TensorParallel, o.GPUMemFraction)
			return err
		}
		return nil
	})
	if err != nil {
		return rep, err
	}

	// Pin.
	if o.PinBytes != 0 {
		err = timed("pin", func() error {
			sizes := make(map[string]int64, len(files))
			for _, f := range files {
				sizes[f.Path] = f.Size
			}
			pins, pr, err := w.pinner.pin(ctx, o.Model, plan, sizes, o.PinBytes, &w.pinned, w.log)
			if pr != nil {
				pr.From = from
			}
			rep.Pin = pr
			if err != nil {
				w.pinned.Store(0) // pin released what it had locked
				return err
			}
			w.mu.Lock()
			w.pins = pins
			w.mu.Unlock()
			w.log.Info("pinned", "bytes", formatBytes(pr.Bytes), "files", pr.Files, "from", from,
				"took", time.Duration(pr.Millis*float64(time.Millisecond)).Round(100*time.Microsecond),
				"rate", formatBytes(pr.BytesPerSec)+"/s", "memlock", pr.Memlock)
			return nil
		})
		if err != nil {
			return rep, err
		}
	}

	// Warm up.
	if o.Warmup != nil {
		err = timed("warmup", func() error {
			res, err := w.warmup(ctx, *o.Warmup)
			rep.Warmup = res
			return err
		})
		if err != nil {
			return rep, fmt.Errorf("warm-up: %w", err)
		}
	}
	if err := ctx.Err(); err != nil {
		return rep, err
	}
	// After pinning and warm-up, which may have read files whole: a file
	// known damaged never makes the model ready.
	err = timed("verify", func() error {
		var err error
		rep.Verify, err = checkVerified(o.Model, o.RequireVerified)
		if rep.Verify != nil && !rep.Verify.Verifiable {
			w.log.Warn(rep.Verify.Note)
		}
		return err
	})
	if err != nil {
		return rep, err
	}

	rep.Ready = true
	if o.ReadyFile != "" {
		if err := writeReadyFile(o.ReadyFile, rep); err != nil {
			rep.Ready = false
			return rep, err
		}
		w.mu.Lock()
		w.wroteReady = true
		w.mu.Unlock()
	}
	w.setPhase("ready")
	w.m.ready.Set(1)
	w.ready.Store(true)
	close(w.readyCh)
	return rep, nil
}

// checkHealth fails when a GPU the model would use has a memory problem.
func checkHealth(inv *Inventory, tp int) error {
	var errs []error
	for _, g := range inv.GPUs[:min(tp, len(inv.GPUs))] {
		for _, p := range g.Health.Problems {
			errs = append(errs, fmt.Errorf("GPU %d (%s, %s) unhealthy: %s", g.Index, g.Name, g.UUID, p))
		}
	}
	return errors.Join(errs...)
}

// writeReadyFile writes rep to path through a temporary file and a rename,
// so that a reader never sees it half written.
func writeReadyFile(path string, rep *Report) error {
	data, err := json.Marshal(rep)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("ready file: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(append(data, '\n'))
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("ready file %s: %w", path, err)
	}
	return nil
}

// Unready turns /readyz back to 503 and removes the ready file, before a
// shutdown lets the pins go.
func (w *Warmer) Unready() {
	w.ready.Store(false)
	w.m.ready.Set(0)
	w.setPhase("shutting down")
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.wroteReady {
		if err := os.Remove(w.opts.ReadyFile); err != nil && !errors.Is(err, os.ErrNotExist) {
			w.log.Warn("could not remove the ready file", "err", err)
		}
		w.wroteReady = false
	}
}

// Close unpins and shuts NVML down. The handler keeps serving, not ready
// if Unready was called.
func (w *Warmer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	err := w.pins.release()
	w.pins = nil
	w.pinned.Store(0)
	if w.lib != nil {
		if serr := w.lib.Shutdown(); serr != nil {
			err = errors.Join(err, fmt.Errorf("NVML shutdown: %w", serr))
		}
		w.lib = nil
	}
	return err
}

// WriteJSON writes v as one line of JSON.
func WriteJSON(out io.Writer, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = out.Write(append(data, '\n'))
	return err
}
