package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/modelfs/modelfs/internal/units"
)

// serve uploads the model, prints the commands to try it by hand, and
// keeps the server running until SIGINT or SIGTERM. The server takes
// uploads too, with the same credentials, for trying other models.
func serve(modelfsBin, dir, addr string, size int64) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	s, err := prepare(ctx, dir, addr, size)
	if errors.Is(err, syscall.EADDRINUSE) {
		return fmt.Errorf("%w; choose another address, e.g. make serve SERVEFLAGS=\"-addr 127.0.0.1:9100\"", err)
	}
	if err != nil {
		return err
	}
	defer s.srv.Close()
	mnt := filepath.Join(dir, "llama")
	url := s.srv.URL()
	fmt.Print(serveInstructions(modelfsBin, url, s.source, mnt, filepath.Join(dir, "cache"), len(s.files), s.total))
	<-ctx.Done()
	// A mount still up would fail its uncached reads from now on.
	step("stopping the S3 server; unmount what still uses it: %s unmount %s", modelfsBin, mnt)
	return nil
}

// serveInstructions are the commands to paste into another terminal, in
// order; tests/e2e runs them as printed.
func serveInstructions(modelfsBin, url, source, mnt, cacheDir string, files int, total int64) string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	p("==> serving %s: %d files, %s, at %s until Ctrl-C", source, files, units.FormatSize(total), url)
	p("")
	p("Try it from another terminal in this directory. Credentials for the local server:")
	p("  export AWS_ACCESS_KEY_ID=%s AWS_SECRET_ACCESS_KEY=%s AWS_REGION=%s", accessKey, secretKey, region)
	p("Mount in the background (the mountpoint must exist); 'ready:' says it is up:")
	p("  mkdir -p %s", mnt)
	p("  %s mount --endpoint %s %s %s &", modelfsBin, url, source, mnt)
	p("Read it, and see what is cached:")
	p("  sha256sum %s/*.safetensors", mnt)
	p("  %s stats %s", modelfsBin, mnt)
	p("Unmount:")
	p("  %s unmount %s", modelfsBin, mnt)
	p("Fill a disk cache ahead of a mount (then mount with --cache-dir %s):", cacheDir)
	p("  %s warm --endpoint %s --cache-dir %s %s", modelfsBin, url, cacheDir, source)
	p("Upload a model of your own, e.g. with the AWS CLI, and mount it the same way:")
	p("  aws --endpoint-url %s s3 cp --recursive ./my-model s3://%s/my-model/", url, bucket)
	p("")
	return b.String()
}
