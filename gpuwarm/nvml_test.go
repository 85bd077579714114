//go:build cgo

package gpuwarm

import (
	"context"
	"errors"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxh100"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxh200"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
)

// gpuState is what a mock device's health and persistence calls answer.
type gpuState struct {
	persistence    nvml.EnableState
	persistenceErr nvml.Return // for both get and set
	setErr         nvml.Return // for set only
	setCalls       int
	remapPending   bool
	eccUncorrected uint64
}

// readyServer gives the simulated server's devices the calls gpuwarm makes
// beyond what go-nvml's server sets up (memory free, persistence, health),
// with free bytes free on each. Hopper GPUs remap rows; page retirement is
// not supported there.
func readyServer(t *testing.T, s *server.Server, free uint64) []*gpuState {
	t.Helper()
	var states []*gpuState
	for _, d := range s.Devices {
		dev := d.(*server.Device)
		dev.MemoryInfo.Free = free
		dev.MemoryInfo.Used = dev.MemoryInfo.Total - free
		st := &gpuState{persistence: nvml.FEATURE_DISABLED}
		states = append(states, st)
		dev.GetPersistenceModeFunc = func() (nvml.EnableState, nvml.Return) {
			if st.persistenceErr != nvml.SUCCESS {
				return 0, st.persistenceErr
			}
			return st.persistence, nvml.SUCCESS
		}
		dev.SetPersistenceModeFunc = func(m nvml.EnableState) nvml.Return {
			st.setCalls++
			if st.persistenceErr != nvml.SUCCESS {
				return st.persistenceErr
			}
			if st.setErr != nvml.SUCCESS {
				return st.setErr
			}
			st.persistence = m
			return nvml.SUCCESS
		}
		dev.GetTotalEccErrorsFunc = func(nvml.MemoryErrorType, nvml.EccCounterType) (uint64, nvml.Return) {
			return st.eccUncorrected, nvml.SUCCESS
		}
		dev.GetRetiredPagesFunc = func(nvml.PageRetirementCause) ([]uint64, nvml.Return) {
			return nil, nvml.ERROR_NOT_SUPPORTED
		}
		dev.GetRemappedRowsFunc = func() (int, int, bool, bool, nvml.Return) {
			return 0, 0, st.remapPending, false, nvml.SUCCESS
		}
	}
	return states
}

func TestInventoryH100(t *testing.T) {
	s := dgxh100.New()
	readyServer(t, s, 70<<30)
	lib := WrapNVML(s)
	if err := lib.Init(); err != nil {
		t.Fatal(err)
	}
	inv, err := takeInventory(lib, false, discard)
	if err != nil {
		t.Fatal(err)
	}
	if inv.DriverVersion != "550.54.15" || inv.CUDADriverVersion != "12.4" {
		t.Errorf("driver %q, CUDA %q; want 550.54.15, 12.4", inv.DriverVersion, inv.CUDADriverVersion)
	}
	if len(inv.GPUs) != 8 {
		t.Fatalf("%d GPUs, want 8", len(inv.GPUs))
	}
	uuids := map[string]bool{}
	for i, g := range inv.GPUs {
		if g.Index != i || g.Name != "NVIDIA H100 80GB HBM3" || !strings.HasPrefix(g.UUID, "GPU-") {
			t.Errorf("GPU %d: %+v", i, g)
		}
		uuids[g.UUID] = true
		if g.MemoryTotal != 80<<30 || g.MemoryFree != 70<<30 || g.MemoryUsed != 10<<30 {
			t.Errorf("GPU %d memory %d/%d/%d", i, g.MemoryTotal, g.MemoryFree, g.MemoryUsed)
		}
		if g.Persistence != "disabled" || g.PersistenceChange != "" {
			t.Errorf("GPU %d persistence %q/%q", i, g.Persistence, g.PersistenceChange)
		}
		h := g.Health
		if h.ECCUncorrected == nil || *h.ECCUncorrected != 0 || h.RetiredPages != nil ||
			h.Unavailable["retired_pages"] != "not supported" || h.RemappedRowsPending == nil || len(h.Problems) != 0 {
			t.Errorf("GPU %d health %+v", i, h)
		}
	}
	if len(uuids) != 8 {
		t.Errorf("UUIDs not distinct: %v", uuids)
	}
}

func TestInventoryH200(t *testing.T) {
	s := dgxh200.New()
	readyServer(t, s, 100<<30)
	lib := WrapNVML(s)
	lib.Init()
	inv, err := takeInventory(lib, false, discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(inv.GPUs) != 8 || !strings.Contains(inv.GPUs[0].Name, "H200") || inv.GPUs[0].MemoryTotal < 140<<30 {
		t.Errorf("H200 inventory: %d GPUs, first %+v", len(inv.GPUs), inv.GPUs[0])
	}
}

func TestInventoryDeviceError(t *testing.T) {
	s := dgxh100.New()
	readyServer(t, s, 1<<30)
	s.Devices[3].(*server.Device).GetMemoryInfoFunc = func() (nvml.Memory, nvml.Return) {
		return nvml.Memory{}, nvml.ERROR_GPU_IS_LOST
	}
	_, err := takeInventory(WrapNVML(s), false, discard)
	if err == nil || !strings.Contains(err.Error(), "GPU 3: memory") {
		t.Fatalf("error %v, want one naming GPU 3's memory", err)
	}
}

func TestEnablePersistence(t *testing.T) {
	s := dgxh100.NewWithGPUs(dgxh100.NewDevice(0).Config, dgxh100.NewDevice(1).Config, dgxh100.NewDevice(2).Config, dgxh100.NewDevice(3).Config)
	st := readyServer(t, s, 1<<30)
	st[1].setErr = nvml.ERROR_NO_PERMISSION
	st[2].persistenceErr = nvml.ERROR_NOT_SUPPORTED
	st[3].persistence = nvml.FEATURE_ENABLED
	inv, err := takeInventory(WrapNVML(s), true, discard)
	if err != nil {
		t.Fatal(err)
	}
	want := []struct{ mode, change string }{
		{"enabled", "enabled"},
		{"disabled", "not permitted"},
		{"not supported", "not supported"},
		{"enabled", "already enabled"},
	}
	for i, w := range want {
		if g := inv.GPUs[i]; g.Persistence != w.mode || g.PersistenceChange != w.change {
			t.Errorf("GPU %d: persistence %q, change %q; want %q, %q", i, g.Persistence, g.PersistenceChange, w.mode, w.change)
		}
	}
	if st[0].persistence != nvml.FEATURE_ENABLED || st[3].setCalls != 0 {
		t.Errorf("GPU 0 mode %v, GPU 3 set %d times", st[0].persistence, st[3].setCalls)
	}
}

// runWith runs a Warmer over a generated model with opts (Model set).
func runWith(t *testing.T, opts Options) (*Warmer, *Report, error) {
	t.Helper()
	if opts.Model == "" {
		opts.Model = t.TempDir()
		testModel(t, opts.Model, layeredModel)
	}
	opts.Log = discard
	w := New(opts)
	t.Cleanup(func() { w.Close() })
	rep, err := w.Run(context.Background())
	return w, rep, err
}

func TestRunNoDriver(t *testing.T) {
	for _, ret := range []nvml.Return{nvml.ERROR_LIBRARY_NOT_FOUND, nvml.ERROR_DRIVER_NOT_LOADED} {
		s := dgxh100.New()
		s.InitFunc = func() nvml.Return { return ret }
		// Without --require-gpu: one warning, and pinning still happens.
		ready := filepath.Join(t.TempDir(), "ready")
		w, rep, err := runWith(t, Options{NVML: WrapNVML(s), PinBytes: PinAll, ReadyFile: ready})
		if err != nil {
			t.Fatalf("%v: %v", ret, err)
		}
		if !strings.Contains(rep.NoGPU, "no NVIDIA driver") || rep.GPU != nil || rep.Fit != nil {
			t.Errorf("%v: report %+v", ret, rep)
		}
		if rep.Pin == nil || rep.Pin.Bytes == 0 || !rep.Ready || !w.ready.Load() {
			t.Errorf("%v: not pinned and ready without a GPU: %+v", ret, rep)
		}
		if _, err := os.Stat(ready); err != nil {
			t.Errorf("ready file: %v", err)
		}

		// With it: fatal, not ready, no ready file.
		ready = filepath.Join(t.TempDir(), "ready")
		w, rep, err = runWith(t, Options{NVML: WrapNVML(s), PinBytes: PinAll, ReadyFile: ready, RequireGPU: true})
		if !errors.Is(err, ErrNoDriver) || !strings.Contains(err.Error(), "a GPU is required: no NVIDIA driver") {
			t.Errorf("%v with RequireGPU: error %v", ret, err)
		}
		if rep.Ready || w.ready.Load() || rep.Pin != nil {
			t.Errorf("%v with RequireGPU: went on: %+v", ret, rep)
		}
		if _, err := os.Stat(ready); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("ready file written on failure: %v", err)
		}
	}
}

func TestRunNVMLBroken(t *testing.T) {
	s := dgxh100.New()
	s.InitFunc = func() nvml.Return { return nvml.ERROR_LIB_RM_VERSION_MISMATCH }
	_, _, err := runWith(t, Options{NVML: WrapNVML(s)})
	if err == nil || errors.Is(err, ErrNoDriver) {
		t.Fatalf("error %v, want a fatal NVML error", err)
	}
}

func TestRunNoGPUs(t *testing.T) {
	s := dgxh100.NewWithGPUs()
	_, rep, err := runWith(t, Options{NVML: WrapNVML(s)})
	if err != nil || rep.NoGPU != "NVML reports no GPUs" {
		t.Fatalf("no GPUs: %v, %+v", err, rep)
	}
	_, _, err = runWith(t, Options{NVML: WrapNVML(s), RequireGPU: true})
	if err == nil || !strings.Contains(err.Error(), "no GPUs") {
		t.Fatalf("no GPUs with RequireGPU: %v", err)
	}
}

func TestRunFit(t *testing.T) {
	const tensors = 5 * tensorPages * 4096
	if os.Getpagesize() != 4096 {
		t.Skip("numbers assume 4 KiB pages")
	}
	cases := []struct {
		name     string
		free     uint64
		tp       int
		fraction float64
		wantErr  []string
	}{
		{name: "fits", free: 100 << 20, tp: 1},
		{name: "short", free: 1 << 20, tp: 1, wantErr: []string{
			"model does not fit: 1.2 MiB of tensors (1310720 bytes) / tensor-parallel 1 = 1.2 MiB (1310720 bytes) per GPU",
			"GPU 0 (NVIDIA H100 80GB HBM3, GPU-", "has 1.0 MiB free x 0.9 = 921.6 KiB usable (943718 bytes)"}},
		{name: "split over two", free: 1 << 20, tp: 2},
		{name: "fraction", free: 2 << 20, tp: 1, fraction: 0.5, wantErr: []string{"x 0.5 = 1.0 MiB usable (1048576 bytes)"}},
		{name: "too few GPUs", free: 100 << 20, tp: 9, wantErr: []string{"tensor-parallel 9 needs 9 GPUs, 8 found"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := dgxh100.New()
			readyServer(t, s, c.free)
			_, rep, err := runWith(t, Options{NVML: WrapNVML(s), TensorParallel: c.tp, GPUMemFraction: c.fraction})
			if rep.TensorBytes != tensors {
				t.Errorf("tensor bytes %d, want %d", rep.TensorBytes, tensors)
			}
			if c.wantErr == nil {
				if err != nil || !rep.Fit.Fits || len(rep.Fit.GPUs) != c.tp || rep.Fit.PerGPUBytes != (tensors+int64(c.tp)-1)/int64(c.tp) {
					t.Fatalf("fit: %v, %+v", err, rep.Fit)
				}
				return
			}
			if !errors.Is(err, ErrDoesNotFit) || rep.Ready {
				t.Fatalf("error %v, want ErrDoesNotFit", err)
			}
			for _, w := range c.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestRunUnhealthyGPU(t *testing.T) {
	s := dgxh100.New()
	st := readyServer(t, s, 10<<30)
	st[1].remapPending = true
	if _, _, err := runWith(t, Options{NVML: WrapNVML(s)}); err != nil {
		t.Fatalf("a problem on an unused GPU failed the run: %v", err)
	}
	_, rep, err := runWith(t, Options{NVML: WrapNVML(s), TensorParallel: 2})
	if err == nil || !strings.Contains(err.Error(), "GPU 1") || !strings.Contains(err.Error(), "row remapping is pending") {
		t.Fatalf("error %v, want GPU 1's pending remap", err)
	}
	if rep.GPU == nil || len(rep.GPU.GPUs[1].Health.Problems) != 1 {
		t.Errorf("report lacks the problem: %+v", rep.GPU)
	}
	st[1].remapPending = false
	st[0].eccUncorrected = 2
	if _, _, err := runWith(t, Options{NVML: WrapNVML(s)}); err == nil || !strings.Contains(err.Error(), "2 uncorrected ECC errors") {
		t.Fatalf("error %v, want the ECC errors", err)
	}
}

func TestMetricsGPUMemory(t *testing.T) {
	s := dgxh100.New()
	readyServer(t, s, 100<<20)
	w, rep, err := runWith(t, Options{NVML: WrapNVML(s), PinBytes: PinAll})
	if err != nil {
		t.Fatal(err)
	}
	uuid := rep.GPU.GPUs[0].UUID
	m := scrape(t, w)
	for _, want := range []string{
		"modelfs_gpuwarm_gpus 8",
		`modelfs_gpuwarm_gpu_memory_free_bytes{gpu="0",uuid="` + uuid + `"} 1.048576e+08`,
		"modelfs_gpuwarm_ready 1",
		"modelfs_gpuwarm_tensor_bytes 1.31072e+06",
		`modelfs_gpuwarm_phase_duration_seconds{phase="inventory"}`,
		`modelfs_gpuwarm_phase_duration_seconds{phase="pin"}`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %q:\n%s", want, m)
		}
	}
	// Free memory is read at scrape time: the server's allocations show.
	s.Devices[0].(*server.Device).MemoryInfo.Free = 5 << 20
	if m := scrape(t, w); !strings.Contains(m, `modelfs_gpuwarm_gpu_memory_free_bytes{gpu="0",uuid="`+uuid+`"} 5.24288e+06`) {
		t.Errorf("free memory not refreshed:\n%s", m)
	}
	// After Close, NVML is shut down and not called.
	w.Close()
	if m := scrape(t, w); strings.Contains(m, "gpu_memory_free_bytes{") {
		t.Errorf("GPU memory reported after Close")
	}
}

// TestReadinessWaitsForGPUChecks: 503 while NVML is still being asked,
// then while pinning, 200 after.
func TestReadinessWaitsForGPUChecks(t *testing.T) {
	s := dgxh100.New()
	readyServer(t, s, 10<<30)
	counting, proceed := make(chan struct{}), make(chan struct{})
	s.DeviceGetCountFunc = func() (int, nvml.Return) {
		close(counting)
		<-proceed
		return len(s.Devices), nvml.SUCCESS
	}
	dir := t.TempDir()
	testModel(t, dir, layeredModel)
	w := New(Options{Model: dir, NVML: WrapNVML(s), PinBytes: PinAll, Log: discard})
	defer w.Close()
	entered, release := holdPins(w)
	srv := httptest.NewServer(w.Handler())
	defer srv.Close()
	done := make(chan error, 1)
	go func() { _, err := w.Run(context.Background()); done <- err }()

	<-counting
	if code, body := get(t, srv.URL+"/readyz"); code != 503 || body != "not ready: inventory\n" {
		t.Errorf("/readyz during inventory: %d %q", code, body)
	}
	close(proceed)
	<-entered
	if code, body := get(t, srv.URL+"/readyz"); code != 503 || body != "not ready: pin\n" {
		t.Errorf("/readyz while pinning: %d %q", code, body)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if code, _ := get(t, srv.URL+"/readyz"); code != 200 {
		t.Errorf("/readyz when ready: %d", code)
	}
}
