package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/modelfs/modelfs/fs"
	"github.com/modelfs/modelfs/mount"
)

func statsCommand() *cli.Command {
	return &cli.Command{
		Name:      "stats",
		Usage:     "show a running mount's cache state, per file and in total",
		ArgsUsage: "MOUNTPOINT",
		Description: `Reads the mount's hidden ` + fs.StatsName + ` file, a JSON snapshot taken
when it is opened, so it works wherever the mount is visible (a container
given the mount as a volume included). Per file: how much is cached (RAM
or disk), fetched from the source, and covered by the prefetch plan; then
the cache's totals. --json prints the snapshot itself.`,
		Flags:  []cli.Flag{&cli.BoolFlag{Name: "json", Usage: "print the JSON snapshot, for scripts"}},
		Action: runStats,
	}
}

func runStats(c *cli.Context) error {
	if c.NArg() != 1 {
		return usagef("stats: want one argument, MOUNTPOINT (got %d)", c.NArg())
	}
	mp := c.Args().Get(0)
	raw, st, err := readStats(mp)
	if err != nil {
		return err
	}
	if c.Bool("json") {
		_, err := os.Stdout.Write(raw)
		return err
	}
	return printStats(os.Stdout, st)
}

// readStats reads and decodes a mount's stats file.
func readStats(mp string) ([]byte, *mount.Snapshot, error) {
	notOurs := fmt.Errorf("stats: %s is not a modelfs mount (no %s at its root)", mp, fs.StatsName)
	st, err := os.Stat(mp)
	switch {
	case errors.Is(err, syscall.ENOTCONN):
		return nil, nil, fmt.Errorf("stats: %s is a stale mount (transport endpoint is not connected)", mp)
	case errors.Is(err, os.ErrNotExist):
		return nil, nil, fmt.Errorf("stats: %s does not exist", mp)
	case err != nil:
		return nil, nil, fmt.Errorf("stats: %w", err)
	case !st.IsDir():
		return nil, nil, fmt.Errorf("stats: %s is not a directory", mp)
	}
	// Only a FUSE mount can be ours: a stray file of that name elsewhere
	// is not read.
	var sfs unix.Statfs_t
	if err := unix.Statfs(mp, &sfs); err != nil || sfs.Type != unix.FUSE_SUPER_MAGIC {
		return nil, nil, notOurs
	}
	f, err := os.Open(filepath.Join(mp, fs.StatsName))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil, notOurs
	} else if err != nil {
		return nil, nil, fmt.Errorf("stats: %w", err)
	}
	defer f.Close()
	raw, err := io.ReadAll(io.LimitReader(f, 256<<20))
	if err != nil {
		return nil, nil, fmt.Errorf("stats: reading %s: %w", f.Name(), err)
	}
	var ms mount.Snapshot
	if err := json.Unmarshal(raw, &ms); err != nil || ms.Format != mount.StatsFormat {
		return nil, nil, notOurs
	}
	return raw, &ms, nil
}

// printStats writes the snapshot as a table, then the totals.
func printStats(out io.Writer, st *mount.Snapshot) error {
	fmt.Fprintf(out, "%s  up %s  block size %s  prefetch %s\n\n", st.Source,
		st.GeneratedAt.Sub(st.StartedAt).Round(time.Second), formatSize(st.BlockSize), st.Prefetch)
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "FILE\tSIZE\tCACHED\tRAM\tDISK\tFETCHED\tPREFETCH PLAN\tVERIFY")
	for _, f := range st.Files {
		fmt.Fprintf(w, "%s\t%s\t%.1f%%\t%s\t%s\t%s\t%s\t%s\n", f.Path, formatSize(f.Size), f.CachedPercent,
			formatSize(f.RAMBytes), formatSize(f.DiskBytes), formatSize(f.FetchedBytes), planText(f.Prefetch), f.Verify)
	}
	total := func(name string, t mount.FileTotals) {
		fmt.Fprintf(w, "%s (%d files)\t%s\t%.1f%%\t\t\t%s\t%s\t\n", name, t.Files, formatSize(t.Size), t.CachedPercent,
			formatSize(t.FetchedBytes), planText(t.Prefetch))
	}
	for _, m := range st.Models {
		total("model "+m.Name, m.FileTotals)
	}
	total("TOTAL", st.Totals)
	if err := w.Flush(); err != nil {
		return err
	}
	c := st.Cache
	fmt.Fprintf(out, "\ncache  RAM %s of %s; disk %s of %s\n", formatSize(c.RAMBytes), formatSize(c.RAMCapacity),
		formatSize(c.DiskBytes), formatSize(c.DiskCapacity))
	fmt.Fprintf(out, "       RAM hits %d, misses %d, evictions %d; disk hits %d, misses %d, evictions %d, corrupt %d\n",
		c.Hits, c.Misses, c.Evictions, c.DiskHits, c.DiskMisses, c.DiskEvictions, c.DiskCorrupt)
	fmt.Fprintf(out, "       fetched %s in %d loads (%d failed); prefetched %s, used %s, unused %s\n",
		formatSize(c.FetchedBytes), c.Loads, c.LoadErrors, formatSize(c.PrefetchBytes), formatSize(c.PrefetchUsedBytes), formatSize(c.PrefetchUnusedBytes))
	if st.SharedCache != "" {
		fmt.Fprintf(out, "shared %s: hits %d (%s), misses %d, damaged %d, errors %d, bypassed %d\n",
			st.SharedCache, c.SharedHits, formatSize(c.SharedHitBytes), c.SharedMisses, c.SharedDamaged, c.SharedErrors, c.SharedBypassed)
		fmt.Fprintf(out, "       wrote %d (%s), dropped %d, failed %d; claims won %d, lost %d, timed out %d, stale %d\n",
			c.SharedWrites, formatSize(c.SharedWriteBytes), c.SharedWriteDrops, c.SharedWriteErrors,
			c.SharedClaimsWon, c.SharedClaimsLost, c.SharedClaimTimeouts, c.SharedClaimsStale)
	}
	fmt.Fprintf(out, "verify %d files verified against their store's checksum, %d unverified (no usable checksum), %d failed\n",
		c.VerifiedFiles, c.UnverifiedFiles, c.VerifyFailures)
	_, err := fmt.Fprintf(out, "fuse   %d reads, %s, %d errors (page cache and passthrough reads not counted)\n",
		st.FUSE.Reads, formatSize(st.FUSE.ReadBytes), st.FUSE.ReadErrors)
	return err
}

// planText is "done of planned", or "-" without a plan.
func planText(p *mount.PlanProgress) string {
	if p == nil {
		return "-"
	}
	return formatSize(p.DoneBytes) + " of " + formatSize(p.PlannedBytes)
}
