package main

import (
	"encoding/json"
	"math"
	"strings"
	"testing"
)

func near(t *testing.T, what string, got, want float64) {
	t.Helper()
	if math.Abs(got-want) > 1e-9*math.Max(1, math.Abs(want)) {
		t.Errorf("%s = %.12g, want %.12g", what, got, want)
	}
}

func TestSummarize(t *testing.T) {
	for _, c := range []struct {
		in            []float64
		med, min, max float64
	}{
		{[]float64{3}, 3, 3, 3},
		{[]float64{5, 1, 3}, 3, 1, 5},
		{[]float64{4, 1, 3, 2}, 2.5, 1, 4},
		{[]float64{2, 2, 9, 2, 1}, 2, 1, 9},
	} {
		s := summarize(c.in)
		near(t, "median", s.Median, c.med)
		near(t, "min", s.Min, c.min)
		near(t, "max", s.Max, c.max)
	}
	if s := summarize(nil); !math.IsNaN(s.Median) {
		t.Errorf("summarize(nil) = %v, want NaN", s)
	}
	in := []float64{3, 1, 2}
	summarize(in)
	if in[0] != 3 {
		t.Error("summarize sorted its argument in place")
	}
}

func TestUnits(t *testing.T) {
	near(t, "mbps", mbps(2e9, 2), 1000)
	near(t, "mbps", mbps(1<<30, 1), 1073.741824)
	if !math.IsNaN(mbps(1, 0)) {
		t.Error("mbps with zero time is not NaN")
	}
	near(t, "cpuPerGiB", cpuPerGiB(1.5, 3<<30), 0.5)
	near(t, "cpuPerGiB", cpuPerGiB(1, 1e9), 1.073741824)
}

// TestBuildRows checks every derived number against hand arithmetic.
func TestBuildRows(t *testing.T) {
	base := func(name string, secs ...float64) series {
		s := series{Name: name, Phase: "baseline"}
		for _, x := range secs {
			s.Samples = append(s.Samples, sample{Seconds: x, Bytes: 1e9, MountCPU: -1, ReaderCPU: x / 2, ServerCPU: 0.25, S3Bytes: 1e9})
		}
		return s
	}
	seqCold := series{Name: "seq", Phase: "cold", RawRef: "raw-get", Samples: []sample{
		{Seconds: 2, Bytes: 1e9, MountCPU: 1.0, MountCPUExit: 1.2, MountPeakRSS: 100 << 20, S3Bytes: 1.0e9},
		{Seconds: 2.5, Bytes: 1e9, MountCPU: 2.0, MountPeakRSS: 300 << 20, S3Bytes: 1.1e9},
		{Seconds: 3, Bytes: 1e9, MountCPU: 1.5, MountPeakRSS: 200 << 20, S3Bytes: 1.2e9},
	}}
	seqCold.Samples[0].Mount = map[string]int64{"fuse_reads": 1000, "fuse_read_bytes": 1000 << 20}
	seqCold.Samples[1].Mount = map[string]int64{"fuse_reads": 3000, "fuse_read_bytes": 1000 << 20}
	seqCold.Samples[2].Mount = map[string]int64{"fuse_reads": 2000, "fuse_read_bytes": 1000 << 20}
	for i := range seqCold.Samples {
		seqCold.Samples[i].S3Gets = int64(120 + i)
	}
	seqWarm := series{Name: "seq", Phase: "warm", LocalRef: "local-read", Samples: []sample{
		{Seconds: 0.2, Bytes: 1e9}, {Seconds: 0.25, Bytes: 1e9}, {Seconds: 0.2, Bytes: 1e9},
	}}
	// A remount compared with its own local reads, served by passthrough.
	mmapRemount := series{Name: "mmap-header", Phase: "remount", LocalRef: "local-mmap-header", Samples: []sample{
		{Seconds: 0.05, Bytes: 1e9, MountCPU: 0, Mount: map[string]int64{"fuse_reads": 0, "fuse_read_bytes": 0}},
		{Seconds: 0.04, Bytes: 1e9, MountCPU: 0, Mount: map[string]int64{"fuse_reads": 0, "fuse_read_bytes": 0}},
	}}
	ttft := series{Name: "ttft", Phase: "cold", FirstBytes: true, Samples: []sample{
		{Seconds: 0.09, Bytes: 1e7}, {Seconds: 0.1, Bytes: 1e7}, {Seconds: 0.11, Bytes: 1e7},
	}}
	rows := buildRows([]series{
		base("raw-get", 1, 2, 1.25),           // MB/s 1000, 500, 800
		base("download-then-read", 4, 5, 4.5), // MB/s 250, 200, 222.2
		base("local-read", 0.1, 0.2, 0.125),   // MB/s 10000, 5000, 8000
		base("local-mmap-header", 0.02, 0.03), // MB/s 50000, 33333.3
		seqCold, seqWarm, ttft, mmapRemount,
	})
	if len(rows) != 8 {
		t.Fatalf("%d rows", len(rows))
	}
	raw, dl, cold, warm, tt, rem := rows[0], rows[1], rows[4], rows[5], rows[6], rows[7]

	near(t, "raw seconds median", raw.Seconds.Median, 1.25)
	near(t, "raw MB/s median", raw.MBps.Median, 800)
	near(t, "raw MB/s min", raw.MBps.Min, 500)
	near(t, "raw MB/s max", raw.MBps.Max, 1000)
	near(t, "raw reader CPU/GiB", raw.ReaderCPUPerGiB.Median, 0.625*1.073741824)
	near(t, "raw server CPU/GiB", raw.ServerCPUPerGiB.Median, 0.25*1.073741824)
	if raw.VsRaw != nil || raw.VsDownload != nil || raw.VsLocal != nil || raw.MountCPUPerGiB != nil {
		t.Errorf("baseline row has ratios or mount CPU: %+v", raw)
	}
	near(t, "download MB/s", dl.MBps.Median, 1e9/4.5/1e6)

	near(t, "seq cold MB/s", cold.MBps.Median, 400)
	if cold.VsRaw == nil || cold.VsDownload == nil || cold.VsLocal != nil {
		t.Fatalf("seq cold ratios: %+v", cold)
	}
	near(t, "seq cold × raw-get", *cold.VsRaw, 0.5)
	near(t, "seq cold time ÷ download", *cold.VsDownload, 2.5/4.5)
	near(t, "seq cold mount CPU/GiB", cold.MountCPUPerGiB.Median, 1.5*1.073741824)
	near(t, "seq cold mount CPU/GiB max", cold.MountCPUPerGiB.Max, 2.0*1.073741824)
	if cold.MountPeakRSS != 300<<20 {
		t.Errorf("peak RSS %d, want the largest of the runs", cold.MountPeakRSS)
	}
	near(t, "seq cold read amplification", *cold.ReadAmp, 1.1)
	near(t, "seq cold GETs", cold.S3Gets.Median, 121)
	if cold.FuseReads == nil || cold.FuseReadAvgKiB == nil {
		t.Fatalf("seq cold has no FUSE reads: %+v", cold)
	}
	near(t, "seq cold FUSE reads", cold.FuseReads.Median, 2000)
	near(t, "seq cold FUSE read size", *cold.FuseReadAvgKiB, 3000*1024/6000.0) // 3000 MiB in 6000 reads
	if warm.FuseReads != nil {
		t.Errorf("warm row has FUSE reads of its own: %+v", warm.FuseReads)
	}

	if warm.VsLocal == nil || warm.VsRaw != nil || warm.VsDownload != nil {
		t.Fatalf("seq warm ratios: %+v", warm)
	}
	near(t, "seq warm × local-read", *warm.VsLocal, 5000.0/8000)

	// The remount row: × its own local reads (median 41666.7 MB/s), not
	// local-read's; no FUSE reads, hence no average size.
	if rem.VsLocal == nil || rem.LocalRef != "local-mmap-header" || rem.VsRaw != nil {
		t.Fatalf("remount ratios: %+v", rem)
	}
	near(t, "remount MB/s", rem.MBps.Median, 22500)
	near(t, "remount × local-mmap-header", *rem.VsLocal, 22500/((50000+1e9/0.03/1e6)/2))
	if rem.FuseReads == nil || rem.FuseReads.Median != 0 || rem.FuseReadAvgKiB != nil {
		t.Errorf("remount FUSE reads: %+v, avg %v", rem.FuseReads, rem.FuseReadAvgKiB)
	}

	// ttft compares with the whole download: 0.1 s against 4.5 s.
	if tt.VsRaw != nil || tt.VsDownload == nil {
		t.Fatalf("ttft ratios: %+v", tt)
	}
	near(t, "ttft time ÷ download", *tt.VsDownload, 0.1/4.5)

	var b strings.Builder
	writeTable(&b, rows)
	for _, want := range []string{
		"| seq | cold | 954 | 2.50 (2.00–3.00) | 400 (333–500) | 0.50 | 0.56 | — | — | 1.61 | 0.00 | 0.00 | 300 | 1.10 | 121 | 2000 (512) |\n",
		"| seq | warm | 954 | 0.20 (0.20–0.25) | 5000 (4000–5000) | — | — | 0.62 | — | 0.00 | 0.00 | 0.00 | — | 0.00 | 0 | — |\n",
		"| mmap-header | remount | 954 | 0.0450 (0.0400–0.0500) | 22500 (20000–25000) | — | — | 0.54 | — | 0.00 | 0.00 | 0.00 | — | 0.00 | 0 | 0 |\n",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("table lacks\n%s\ngot\n%s", want, b.String())
		}
	}
	if _, err := json.Marshal(rows); err != nil {
		t.Errorf("rows do not encode: %v", err)
	}
}

func TestEmptyStatEncodes(t *testing.T) {
	b, err := json.Marshal(summarize(nil))
	if err != nil || string(b) != `{"max":null,"median":null,"min":null}` {
		t.Errorf("got %s, %v", b, err)
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"2GiB": 2 << 30, "512MiB": 512 << 20, "1.5g": 3 << 29, "4096": 4096, "8GB": 8e9} {
		got, err := parseSize(in)
		if err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "x", "-1GiB", "2 parsecs"} {
		if _, err := parseSize(bad); err == nil {
			t.Errorf("parseSize(%q) succeeded", bad)
		}
	}
}

func TestPickList(t *testing.T) {
	got, err := pickList("ttft, seq", allScenarios, "--scenarios")
	if err != nil || strings.Join(got, ",") != "seq,ttft" {
		t.Errorf("got %v, %v; want the known order", got, err)
	}
	if _, err := pickList("seq,nope", allScenarios, "--scenarios"); err == nil {
		t.Error("unknown scenario accepted")
	}
	if got, _ := pickList("all", allScenarios, "--scenarios"); len(got) != len(allScenarios) {
		t.Errorf("all = %v", got)
	}
}

// The header latencies of ttft passes reach their row and a table of
// their own, in milliseconds; other rows have none.
func TestHeaderTimesAreReported(t *testing.T) {
	ttft := series{Name: "ttft", Phase: "cold", FirstBytes: true}
	for _, h := range []headerTimes{{0.010, 0.030}, {0.002, 0.020}, {0.004, 0.050}} {
		ttft.Samples = append(ttft.Samples, sample{Seconds: 1, Bytes: 1, MountCPU: -1, Header: &h})
	}
	seq := series{Name: "seq", Phase: "cold", Samples: []sample{{Seconds: 1, Bytes: 1, MountCPU: -1}}}
	rows := buildRows([]series{seq, ttft})
	if rows[0].HeaderFirstByte != nil {
		t.Fatalf("seq has header times: %+v", rows[0].HeaderFirstByte)
	}
	if f := rows[1].HeaderFirstByte; f == nil || f.Median != 0.004 || f.Min != 0.002 || f.Max != 0.010 {
		t.Fatalf("ttft header first byte %+v, want median 0.004 of 0.002–0.010", f)
	}
	var b strings.Builder
	writeHeaderTable(&b, rows)
	if want := "| ttft | cold | 4.0 (2.0–10.0) | 30.0 (20.0–50.0) |"; !strings.Contains(b.String(), want) {
		t.Fatalf("header table:\n%s\nwant a line %q", b.String(), want)
	}
}

// A modelfs row is compared with the fastest peer of its scenario and
// pass; peer rows, other passes and other scenarios are not, and a peer
// row still gets its own raw-get ratio.
func TestBestPeer(t *testing.T) {
	one := func(name, phase, peer, raw string, secs float64) series {
		return series{Name: name, Phase: phase, Peer: peer, RawRef: raw,
			Samples: []sample{{Seconds: secs, Bytes: 1e9, MountCPU: 0.5}}}
	}
	all := []series{
		{Name: "raw-get", Phase: "baseline", Samples: []sample{{Seconds: 1, Bytes: 1e9, MountCPU: -1}}},
		one("seq", "cold", "", "raw-get", 2),       // 500 MB/s
		one("seq", "warm", "", "", 0.5),            // 2000 MB/s
		one("ttft", "cold", "", "", 0.1),           // no peer ran it
		one("seq", "cold", "s3fs", "raw-get", 8),   // 125 MB/s
		one("seq", "cold", "rclone", "raw-get", 4), // 250 MB/s: the best
		one("seq", "warm", "s3fs", "", 1),          // 1000 MB/s
	}
	rows := buildRows(all)
	cold, warm, ttft, s3fs := rows[1], rows[2], rows[3], rows[4]
	if cold.VsBestPeer == nil || cold.BestPeer != "rclone" {
		t.Fatalf("seq cold: best peer %q, ratio %v", cold.BestPeer, cold.VsBestPeer)
	}
	near(t, "seq cold × best peer", *cold.VsBestPeer, 2)
	if warm.VsBestPeer == nil || warm.BestPeer != "s3fs" {
		t.Fatalf("seq warm: best peer %q, ratio %v", warm.BestPeer, warm.VsBestPeer)
	}
	near(t, "seq warm × best peer", *warm.VsBestPeer, 2)
	if ttft.VsBestPeer != nil || s3fs.VsBestPeer != nil {
		t.Errorf("ratios where no peer compares: ttft %v, s3fs row %v", ttft.VsBestPeer, s3fs.VsBestPeer)
	}
	if s3fs.VsRaw == nil {
		t.Fatal("peer row has no raw-get ratio")
	}
	near(t, "s3fs × raw-get", *s3fs.VsRaw, 0.125)
	var b strings.Builder
	writeTable(&b, rows)
	for _, want := range []string{"| seq | cold | 954 | 2.00 (2.00–2.00) | 500 (500–500) | 0.50 | — | — | 2.00 (rclone) |", "| seq · rclone | cold | 954 |"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, b.String())
		}
	}
}

func TestFreshTouchCost(t *testing.T) {
	for _, huge := range []bool{false, true} {
		cost, err := freshTouchCost(huge)
		if err != nil {
			t.Fatal(err)
		}
		// Faulting in 64 MiB takes some CPU anywhere, and well under a
		// minute per GiB everywhere.
		if !(cost > 0 && cost < 60) {
			t.Errorf("first touch (huge pages %v): %v CPU-s/GiB", huge, cost)
		}
	}
}

// A sample's S3 counts are its mount's life where that was taken, else
// its pass's.
func TestSampleS3PrefersTheMountsLife(t *testing.T) {
	pass := sample{S3Gets: 3, S3Bytes: 300}
	if got := pass.s3(); got != (s3Count{Gets: 3, Bytes: 300}) {
		t.Errorf("without a life: %+v", got)
	}
	pass.S3Life = &s3Count{Gets: 5, Bytes: 700}
	if got := pass.s3(); got != (s3Count{Gets: 5, Bytes: 700}) {
		t.Errorf("with a life: %+v", got)
	}
	r := reduce(series{Name: "ttft", Phase: "cold", Samples: []sample{{Seconds: 1, Bytes: 100, MountCPU: -1, S3Bytes: 150, S3Life: &s3Count{Gets: 2, Bytes: 250}}}})
	if r.ReadAmp == nil || *r.ReadAmp != 2.5 || r.S3Gets.Median != 2 {
		t.Errorf("row from a sample with a life: amp %v, GETs %+v; want 2.5 and 2", r.ReadAmp, r.S3Gets)
	}
}
