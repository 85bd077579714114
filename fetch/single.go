package fetch

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// listUnder is the List of the object stores: the objects under *root,
// or, when there are none and prefix names an object itself
// (s3://bucket/model.gguf), that object alone, with *root moved to its
// directory so that its key is its base name. noun names the objects in
// the error for an empty prefix ("objects", "blobs").
func listUnder(ctx context.Context, src fmt.Stringer, root *string, prefix, noun string,
	list func(ctx context.Context, dir string) ([]Object, error),
	stat func(ctx context.Context, key string) (Object, error),
) ([]Object, error) {
	objs, err := list(ctx, *root)
	if err != nil {
		return nil, err
	}
	if len(objs) == 0 && prefix != "" && !strings.HasSuffix(prefix, "/") {
		obj, err := stat(ctx, prefix)
		if err == nil {
			*root = prefix[:strings.LastIndex(prefix, "/")+1]
			obj.Key = strings.TrimPrefix(prefix, *root)
			return []Object{obj}, nil
		}
		if !errors.Is(err, ErrNotFound) {
			return nil, err
		}
	}
	if len(objs) == 0 {
		return nil, fmt.Errorf("%s: %w: no %s under this prefix", src, ErrNotFound, noun)
	}
	return objs, nil
}
