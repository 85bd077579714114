package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/modelfs/modelfs/blockcache"
)

func cacheCommand() *cli.Command {
	dirFlag := &cli.StringFlag{Name: "cache-dir", Required: true, Usage: "the disk cache directory", EnvVars: []string{"MODELFS_CACHE_DIR"}}
	return &cli.Command{
		Name:  "cache",
		Usage: "inspect and trim a disk cache directory (safe while mounts use it)",
		Subcommands: []*cli.Command{
			{
				Name:  "ls",
				Usage: "list cached objects: completeness, bytes, last use",
				Flags: []cli.Flag{dirFlag, &cli.BoolFlag{Name: "json", Usage: "machine-readable output"}},
				Action: func(c *cli.Context) error {
					log, err := newLogger(c)
					if err != nil {
						return err
					}
					objs, err := blockcache.ListDisk(c.String("cache-dir"), log)
					if err != nil {
						return err
					}
					if c.Bool("json") {
						return printJSON(objs)
					}
					w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
					fmt.Fprintln(w, "OBJECT\tVERSION\tCACHED\tSIZE\tON DISK\tLAST USE")
					for _, o := range objs {
						fmt.Fprintf(w, "%s\t%s\t%.1f%%\t%s\t%s\t%s\n", o.Name, shortVersion(o.Version), percent(o.CachedBytes, o.Size),
							formatSize(o.Size), formatSize(o.DiskBytes), o.LastUse.Local().Format(time.DateTime))
					}
					return w.Flush()
				},
			},
			{
				Name:  "du",
				Usage: "total bytes cached",
				Flags: []cli.Flag{dirFlag},
				Action: func(c *cli.Context) error {
					log, err := newLogger(c)
					if err != nil {
						return err
					}
					objs, err := blockcache.ListDisk(c.String("cache-dir"), log)
					if err != nil {
						return err
					}
					var cached, disk int64
					for _, o := range objs {
						cached += o.CachedBytes
						disk += o.DiskBytes
					}
					fmt.Printf("%s cached in %d objects, %s on disk\n", formatSize(cached), len(objs), formatSize(disk))
					return nil
				},
			},
			{
				Name:  "gc",
				Usage: "evict least recently used blocks until the cache fits --size",
				Flags: []cli.Flag{dirFlag, &cli.StringFlag{Name: "size", Required: true, Usage: "target size, e.g. 50GiB"}},
				Action: func(c *cli.Context) error {
					size, err := parseSize(c.String("size"), "--size")
					if err != nil {
						return err
					}
					log, err := newLogger(c)
					if err != nil {
						return err
					}
					left, err := blockcache.GC(c.String("cache-dir"), log, size)
					if err != nil {
						return err
					}
					fmt.Printf("%s cached after gc\n", formatSize(left))
					return nil
				},
			},
			{
				Name:      "drop",
				Usage:     "remove cached objects by name (or --all); objects in use through passthrough are kept",
				ArgsUsage: "[OBJECT...]",
				Flags:     []cli.Flag{dirFlag, &cli.BoolFlag{Name: "all", Usage: "drop every object"}},
				Action: func(c *cli.Context) error {
					names := map[string]bool{}
					for _, n := range c.Args().Slice() {
						names[n] = true
					}
					if len(names) == 0 && !c.Bool("all") {
						return usagef("cache drop: name objects to drop, or pass --all")
					}
					log, err := newLogger(c)
					if err != nil {
						return err
					}
					dropped, err := blockcache.Drop(c.String("cache-dir"), log, func(o blockcache.CachedObject) bool {
						return c.Bool("all") || names[o.Name]
					})
					for _, o := range dropped {
						fmt.Printf("dropped %s (%s)\n", o.Name, formatSize(o.CachedBytes))
					}
					if err == nil && len(dropped) == 0 {
						err = fmt.Errorf("cache drop: nothing dropped (no such object, or in use)")
					}
					return err
				},
			},
		},
	}
}

func percent(part, whole int64) float64 {
	if whole == 0 {
		return 100
	}
	return 100 * float64(part) / float64(whole)
}

// shortVersion trims long ETags for the table.
func shortVersion(v string) string {
	v = strings.Trim(strings.TrimPrefix(strings.TrimPrefix(v, "e:"), "v:"), `"`)
	if len(v) > 14 {
		return v[:12] + ".."
	}
	return v
}

func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
