package main

import (
	"context"
	"log/slog"

	"github.com/modelfs/modelfs/fetch"
	"github.com/modelfs/modelfs/fetch/pack"
)

// wrapSource puts the layers that change how a source's objects read in
// front of it: packs (modelfs pack) are shown as the files they hold. The
// layer is always there: on a source without packs it lists and reads
// through unchanged.
func wrapSource(ctx context.Context, src fetch.Source, log *slog.Logger) (fetch.Source, error) {
	p, err := pack.NewSource(src, pack.Options{Logger: log})
	if err != nil {
		return nil, err
	}
	return p, nil
}
