// Command s3server runs the S3-compatible test server (package
// tests/s3server) as a standalone process, for demos and benchmarks.
//
//	s3server -addr 127.0.0.1:9000 -dir /tmp/s3 -access-key AK -secret-key SK -bucket models
//
// Once it accepts connections it prints exactly one line to stdout,
//
//	s3server listening on http://127.0.0.1:9000
//
// and it serves until SIGINT or SIGTERM, then exits 0. Objects are kept as
// files under -dir, but the index is in memory: a restarted server starts
// empty. Without -dir a temporary directory is used and removed on exit.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/modelfs/modelfs/tests/s3server"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "s3server:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		addr       = flag.String("addr", "127.0.0.1:9000", "`host:port` to listen on (port 0 picks a free one)")
		dir        = flag.String("dir", "", "`directory` for object data (default: a temporary directory, removed on exit)")
		accessKey  = flag.String("access-key", "", "SigV4 access key ID the server accepts")
		secretKey  = flag.String("secret-key", "", "SigV4 secret access key")
		region     = flag.String("region", "us-east-1", "region clients must sign for")
		anonymous  = flag.Bool("anonymous", false, "accept unsigned requests (a public bucket, for --no-sign-request)")
		versioning = flag.Bool("versioning", false, "enable object versioning")
		buckets    []string
	)
	flag.Func("bucket", "create bucket `name` at start (repeatable, or comma-separated)", func(v string) error {
		for b := range strings.SplitSeq(v, ",") {
			if b = strings.TrimSpace(b); b != "" {
				buckets = append(buckets, b)
			}
		}
		return nil
	})
	flag.Parse()
	if flag.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %q", flag.Args())
	}

	if *dir == "" {
		tmp, err := os.MkdirTemp("", "s3server-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		*dir = tmp
	}
	srv, err := s3server.New(s3server.Options{
		Dir:            *dir,
		AccessKey:      *accessKey,
		SecretKey:      *secretKey,
		Region:         *region,
		AllowAnonymous: *anonymous,
		Versioning:     *versioning,
	})
	if err != nil {
		return err
	}
	for _, b := range buckets {
		if err := srv.CreateBucket(b); err != nil {
			return fmt.Errorf("creating bucket %q: %w", b, err)
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := srv.Start(*addr); err != nil {
		return err
	}
	// The listener is open, so clients can connect as soon as they read this.
	fmt.Printf("s3server listening on %s\n", srv.URL())
	<-ctx.Done()
	return srv.Close()
}
