package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
)

// sample is one timed pass of a scenario or baseline.
type sample struct {
	Seconds float64 `json:"seconds"`
	Bytes   int64   `json:"bytes"`
	// MountCPU is the mount process's user+system CPU during this pass, from
	// /proc/PID/stat deltas (the pass's share of what its rusage reports at
	// exit); -1 for baselines, which have no mount.
	MountCPU float64 `json:"mount_cpu_s"`
	// MountCPUExit is the mount process's rusage at exit (cold and warm
	// passes together, plus mounting and unmounting); on cold samples only.
	MountCPUExit float64 `json:"mount_cpu_at_exit_s,omitempty"`
	// MountPeakRSS is the mount process's VmHWM just before it was stopped,
	// in bytes (peak over its whole life, so the same for cold and warm).
	MountPeakRSS int64 `json:"mount_peak_rss_bytes,omitempty"`
	// ReaderCPU is this process's CPU during the pass: the reader through
	// the mount, or the SDK client of a baseline.
	ReaderCPU float64 `json:"reader_cpu_s"`
	// ServerCPU is the S3 server process's (the link proxy's included).
	ServerCPU float64 `json:"server_cpu_s"`
	// S3Gets and S3Bytes are what the server served during the pass.
	S3Gets  int64 `json:"s3_gets"`
	S3Bytes int64 `json:"s3_bytes"`
	// S3Life, on the first sample of a modelfs or peer mount (cold,
	// remount), is what the server served from before the mount started
	// until it had stopped, less the S3Bytes of the mount's later passes
	// (a warm pass): the pass and the prefetch still running when the
	// reader had its bytes, which S3Bytes misses. The table shows it
	// where it is set.
	S3Life *s3Count `json:"s3_life,omitempty"`
	// Mount is the mount's own account from its unmount summary line
	// (fuse_reads, fuse_read_bytes, loads, disk_hits, ...), over
	// its whole life: on a cold sample the cold and warm passes, on a
	// remount sample the remount pass (spot checks have mounts of their
	// own).
	Mount map[string]int64 `json:"mount_summary,omitempty"`
	// CacheBytes and CacheResident are, on a remount sample, the bytes the
	// files in the mount's --cache-dir hold (allocated: its data files are
	// sparse) and how many of them were in the page cache when the remount
	// pass started.
	CacheBytes    int64 `json:"cache_dir_bytes,omitempty"`
	CacheResident int64 `json:"cache_dir_resident_bytes,omitempty"`
	// Header holds the header latencies of a ttft pass.
	Header *headerTimes `json:"header,omitempty"`
}

// s3Count is what the S3 server served.
type s3Count struct {
	Gets  int64 `json:"gets"`
	Bytes int64 `json:"bytes"`
}

// s3 is what the table shows of s's requests: over the mount's life
// where that was taken, else during the pass.
func (s sample) s3() s3Count {
	if s.S3Life != nil {
		return *s.S3Life
	}
	return s3Count{Gets: s.S3Gets, Bytes: s.S3Bytes}
}

// series is every sample of one row of the table.
type series struct {
	Name  string
	Phase string // "baseline", "cold", "warm" or "remount"
	// Peer names the other filesystem the row measures (s3fs, rclone-full,
	// ...); "" for modelfs and the baselines.
	Peer    string
	Samples []sample
	// RawRef names the raw-get baseline of the same objects ("" for none).
	RawRef string
	// LocalRef names the baseline of the same reads on a local copy in the
	// page cache (warm and remount rows; "" for local-read).
	LocalRef string
	// FirstBytes marks a latency scenario (ttft): it is compared with the
	// whole of download-then-read, since a loader fed by a download has
	// its first tensor only after the download is complete.
	FirstBytes bool
}

// stat is the median, min and max of a set of runs.
type stat struct {
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
}

// MarshalJSON writes NaN (no data) as null, which encoding/json refuses.
func (s stat) MarshalJSON() ([]byte, error) {
	f := func(x float64) any {
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return nil
		}
		return x
	}
	return json.Marshal(map[string]any{"median": f(s.Median), "min": f(s.Min), "max": f(s.Max)})
}

// summarize returns the median (mean of the middle two for an even count),
// min and max of xs; all NaN for none.
func summarize(xs []float64) stat {
	if len(xs) == 0 {
		return stat{math.NaN(), math.NaN(), math.NaN()}
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	mid := len(s) / 2
	med := s[mid]
	if len(s)%2 == 0 {
		med = (s[mid-1] + s[mid]) / 2
	}
	return stat{Median: med, Min: s[0], Max: s[len(s)-1]}
}

// mbps is decimal megabytes per second, as network links are quoted.
func mbps(bytes int64, seconds float64) float64 {
	if seconds <= 0 {
		return math.NaN()
	}
	return float64(bytes) / seconds / 1e6
}

// cpuPerGiB is CPU seconds spent per GiB moved (1 core fully busy while
// moving 1 GiB/s is 1.0).
func cpuPerGiB(cpuSeconds float64, bytes int64) float64 {
	if bytes <= 0 {
		return math.NaN()
	}
	return cpuSeconds / (float64(bytes) / (1 << 30))
}

// row is one line of the table: a series reduced to medians and ratios.
type row struct {
	Name  string `json:"name"`
	Phase string `json:"phase"`
	Peer  string `json:"peer,omitempty"`
	Bytes int64  `json:"bytes"`
	Runs  int    `json:"runs"`
	// Seconds and MBps are the median, min and max over runs. MBps min and
	// max come from the slowest and fastest run.
	Seconds stat `json:"seconds"`
	MBps    stat `json:"mb_per_s"`
	// VsRaw is throughput over raw-get's on the same objects (higher is
	// better; the cold targets are 0.9 sequential, 0.8 and 0.6 mmap).
	VsRaw *float64 `json:"throughput_vs_raw_get,omitempty"`
	// VsDownload is this row's time over download-then-read's time for the
	// same number of bytes (lower is better; the target is 0.6).
	VsDownload *float64 `json:"time_vs_download_then_read,omitempty"`
	// VsLocal is throughput over that of the same reads of a local copy
	// in the page cache, the baseline LocalRef (warm and remount rows; the
	// target, for remount, is 0.95).
	VsLocal  *float64 `json:"throughput_vs_local_read,omitempty"`
	LocalRef string   `json:"local_ref,omitempty"`
	// VsBestPeer is, on a modelfs row, its throughput over that of the
	// fastest peer in the same scenario and pass, BestPeer (higher is
	// better; for ttft, the peer's time over modelfs's).
	VsBestPeer *float64 `json:"throughput_vs_best_peer,omitempty"`
	BestPeer   string   `json:"best_peer,omitempty"`
	// MountCPUPerGiB is the mount process's CPU seconds per GiB read.
	MountCPUPerGiB *stat `json:"mount_cpu_s_per_gib,omitempty"`
	// ReaderCPUPerGiB and ServerCPUPerGiB are the reader's (or baseline
	// client's) and the S3 server's.
	ReaderCPUPerGiB stat `json:"reader_cpu_s_per_gib"`
	ServerCPUPerGiB stat `json:"server_cpu_s_per_gib"`
	// MountPeakRSS is the largest peak RSS over runs, in bytes.
	MountPeakRSS int64 `json:"mount_peak_rss_bytes,omitempty"`
	// ReadAmp is S3 bytes served (sample.s3) over bytes read (median):
	// above 1 is over-fetch, below 1 is bytes served from the mount's
	// caches.
	ReadAmp *float64 `json:"s3_bytes_per_byte_read"`
	// S3Gets is the GETs the server saw (sample.s3).
	S3Gets stat `json:"s3_gets"`
	// FuseReads is the fuse_reads of the mount's summary line (see
	// sample.Mount for what it spans), and FuseReadAvgKiB its
	// fuse_read_bytes over fuse_reads, all runs together; absent on rows
	// whose samples carry no summary.
	FuseReads      *stat    `json:"fuse_reads,omitempty"`
	FuseReadAvgKiB *float64 `json:"fuse_read_avg_kib,omitempty"`
	// HeaderFirstByte and HeaderParsed are the ttft passes' seconds from
	// opening the shard to the header's first byte and to it parsed.
	HeaderFirstByte *stat    `json:"header_first_byte_s,omitempty"`
	HeaderParsed    *stat    `json:"header_parsed_s,omitempty"`
	Samples         []sample `json:"samples"`
}

func ptr(f float64) *float64 {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return nil
	}
	return &f
}

// reduce turns one series into a row without the ratios.
func reduce(s series) row {
	r := row{Name: s.Name, Phase: s.Phase, Peer: s.Peer, Runs: len(s.Samples), Samples: s.Samples}
	var secs, mb, mcpu, rcpu, scpu, amp, gets, freads, hfirst, hparsed []float64
	var fbytes int64
	for _, x := range s.Samples {
		gets = append(gets, float64(x.s3().Gets))
		if n, ok := x.Mount["fuse_reads"]; ok {
			freads = append(freads, float64(n))
			fbytes += x.Mount["fuse_read_bytes"]
		}
		if h := x.Header; h != nil {
			hfirst, hparsed = append(hfirst, h.FirstByte), append(hparsed, h.Parsed)
		}
		r.Bytes = x.Bytes
		secs = append(secs, x.Seconds)
		mb = append(mb, mbps(x.Bytes, x.Seconds))
		rcpu = append(rcpu, cpuPerGiB(x.ReaderCPU, x.Bytes))
		scpu = append(scpu, cpuPerGiB(x.ServerCPU, x.Bytes))
		if x.MountCPU >= 0 {
			mcpu = append(mcpu, cpuPerGiB(x.MountCPU, x.Bytes))
		}
		r.MountPeakRSS = max(r.MountPeakRSS, x.MountPeakRSS)
		if x.Bytes > 0 {
			amp = append(amp, float64(x.s3().Bytes)/float64(x.Bytes))
		}
	}
	r.Seconds, r.MBps = summarize(secs), summarize(mb)
	r.ReaderCPUPerGiB, r.ServerCPUPerGiB = summarize(rcpu), summarize(scpu)
	if len(mcpu) > 0 {
		m := summarize(mcpu)
		r.MountCPUPerGiB = &m
	}
	if len(hfirst) > 0 {
		f, p := summarize(hfirst), summarize(hparsed)
		r.HeaderFirstByte, r.HeaderParsed = &f, &p
	}
	r.ReadAmp = ptr(summarize(amp).Median)
	r.S3Gets = summarize(gets)
	if len(freads) > 0 {
		f := summarize(freads)
		r.FuseReads = &f
		var n float64
		for _, x := range freads {
			n += x
		}
		r.FuseReadAvgKiB = ptr(float64(fbytes) / n / 1024) // nil for no reads
	}
	return r
}

// buildRows reduces every series and fills in the ratios to the baselines
// (ratios of medians). Baselines that were not run leave their ratio out.
func buildRows(all []series) []row {
	rows := make([]row, len(all))
	byName := map[string]*row{}
	// best is the fastest peer row of each scenario and pass.
	best := map[[2]string]*row{}
	for i, s := range all {
		rows[i] = reduce(s)
		if s.Phase == "baseline" {
			byName[s.Name] = &rows[i]
		}
		if k := [2]string{s.Name, s.Phase}; s.Peer != "" && !math.IsNaN(rows[i].MBps.Median) &&
			(best[k] == nil || rows[i].MBps.Median > best[k].MBps.Median) {
			best[k] = &rows[i]
		}
	}
	for i, s := range all {
		if p := best[[2]string{s.Name, s.Phase}]; s.Peer == "" && s.Phase != "baseline" && p != nil {
			rows[i].VsBestPeer = ptr(rows[i].MBps.Median / p.MBps.Median)
			rows[i].BestPeer = p.Peer
		}
	}
	for i, s := range all {
		r := &rows[i]
		switch s.Phase {
		case "cold":
			if raw := byName[s.RawRef]; raw != nil {
				r.VsRaw = ptr(r.MBps.Median / raw.MBps.Median)
			}
			if dl := byName["download-then-read"]; dl != nil {
				if s.FirstBytes {
					r.VsDownload = ptr(r.Seconds.Median / dl.Seconds.Median)
				} else {
					// Same bytes: the time ratio is the inverse throughput ratio.
					r.VsDownload = ptr(dl.MBps.Median / r.MBps.Median)
				}
			}
		case "warm", "remount":
			ref := s.LocalRef
			if ref == "" {
				ref = "local-read"
			}
			if loc := byName[ref]; loc != nil {
				r.VsLocal = ptr(r.MBps.Median / loc.MBps.Median)
				r.LocalRef = ref
			}
		}
	}
	return rows
}

// writeTable prints rows as a markdown table.
func writeTable(w io.Writer, rows []row) {
	fmt.Fprintln(w, "| scenario | pass | MiB | time s (min–max) | MB/s (min–max) | × raw-get | time ÷ download-then-read | × local-read | × best peer | mount CPU s/GiB | server CPU s/GiB | reader CPU s/GiB | mount peak RSS MiB | S3 bytes ÷ read | S3 GETs | mount FUSE reads (avg KiB) |")
	fmt.Fprintln(w, "|---|---|---:|---|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|")
	for _, r := range rows {
		mcpu, rss, freads, peer := "—", "—", "—", "—"
		if r.MountCPUPerGiB != nil {
			mcpu = fmt.Sprintf("%.2f", r.MountCPUPerGiB.Median)
		}
		if r.MountPeakRSS > 0 {
			rss = fmt.Sprintf("%.0f", float64(r.MountPeakRSS)/(1<<20))
		}
		if r.FuseReads != nil {
			freads = fmt.Sprintf("%.0f", r.FuseReads.Median)
			if r.FuseReadAvgKiB != nil {
				freads += fmt.Sprintf(" (%.0f)", *r.FuseReadAvgKiB)
			}
		}
		if r.VsBestPeer != nil {
			peer = fmt.Sprintf("%.2f (%s)", *r.VsBestPeer, r.BestPeer)
		}
		fmt.Fprintf(w, "| %s | %s | %.0f | %s (%s–%s) | %s (%s–%s) | %s | %s | %s | %s | %s | %.2f | %.2f | %s | %s | %.0f | %s |\n",
			r.label(), r.Phase, float64(r.Bytes)/(1<<20),
			fmtSecs(r.Seconds.Median), fmtSecs(r.Seconds.Min), fmtSecs(r.Seconds.Max),
			fmtRate(r.MBps.Median), fmtRate(r.MBps.Min), fmtRate(r.MBps.Max),
			fmtRatio(r.VsRaw), fmtRatio(r.VsDownload), fmtRatio(r.VsLocal), peer,
			mcpu, r.ServerCPUPerGiB.Median, r.ReaderCPUPerGiB.Median, rss, fmtRatio(r.ReadAmp),
			r.S3Gets.Median, freads)
	}
}

// writeHeaderTable prints the header latencies of the rows that have them
// (ttft), in milliseconds: on a cold row, what a loader's first reads wait
// on a fresh mount, where prefetch starts at the same time.
func writeHeaderTable(w io.Writer, rows []row) {
	header := false
	for _, r := range rows {
		if r.HeaderFirstByte == nil {
			continue
		}
		if !header {
			fmt.Fprintln(w, "\n| scenario | pass | header first byte ms (min–max) | header parsed ms (min–max) |")
			fmt.Fprintln(w, "|---|---|---|---|")
			header = true
		}
		f, p := r.HeaderFirstByte, r.HeaderParsed
		fmt.Fprintf(w, "| %s | %s | %.1f (%.1f–%.1f) | %.1f (%.1f–%.1f) |\n", r.label(), r.Phase,
			f.Median*1000, f.Min*1000, f.Max*1000, p.Median*1000, p.Min*1000, p.Max*1000)
	}
}

// label is the row's scenario, with the peer it measures if any.
func (r row) label() string {
	if r.Peer != "" {
		return r.Name + " · " + r.Peer
	}
	return r.Name
}

func fmtSecs(s float64) string {
	if s < 0.1 {
		return fmt.Sprintf("%.4f", s)
	}
	return fmt.Sprintf("%.2f", s)
}

func fmtRate(r float64) string { return fmt.Sprintf("%.0f", r) }

func fmtRatio(p *float64) string {
	if p == nil {
		return "—"
	}
	return fmt.Sprintf("%.2f", *p)
}

// report is what --json writes.
type report struct {
	Machine  machineInfo       `json:"machine"`
	Command  string            `json:"command"`
	Flags    map[string]string `json:"flags"`
	Model    modelReport       `json:"model"`
	Packed   *packedModel      `json:"packed,omitempty"` // for pack-* scenarios
	Started  string            `json:"started"`
	Duration float64           `json:"duration_s"`
	Rows     []row             `json:"rows"`
}

type modelReport struct {
	Dir        string      `json:"dir"`
	TotalBytes int64       `json:"total_bytes"`
	Files      []modelFile `json:"files"`
}

func writeJSON(path string, rep report) error {
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding results: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("writing results: %w", err)
	}
	return nil
}
