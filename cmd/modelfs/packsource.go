package main

import (
	"context"
	"log/slog"

	"github.com/modelfs/modelfs/fetch"
)

// wrapSource puts the layers that change how a source's objects read in
// front of it.
func wrapSource(ctx context.Context, src fetch.Source, log *slog.Logger) (fetch.Source, error) {
	return src, nil
}
