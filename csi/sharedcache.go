package csi

import (
	"errors"
	"fmt"
	"os"

	"github.com/modelfs/modelfs/fetch"
	"github.com/modelfs/modelfs/mount/config"
)

// validateSharedCache checks the plugin's shared cache settings once, at
// start, so that no volume's mount is the first to find them wrong.
func validateSharedCache(o Options) error {
	if o.SharedCache == "" {
		if o.SharedCacheEndpoint != "" || o.SharedCacheRegion != "" || o.SharedCacheProfile != "" || o.SharedCacheCredentialsFile != "" {
			return errors.New("--shared-cache-endpoint, --shared-cache-region, --shared-cache-profile and --shared-cache-credentials-file need --shared-cache")
		}
		return nil
	}
	loc, err := fetch.ParseLocation(o.SharedCache)
	if err != nil || loc.Scheme != "s3" || loc.Bucket == "" {
		return fmt.Errorf("--shared-cache %q: want s3://bucket/prefix", o.SharedCache)
	}
	if f := o.SharedCacheCredentialsFile; f != "" {
		if _, err := os.Stat(f); err != nil {
			return fmt.Errorf("--shared-cache-credentials-file: %w", err)
		}
	}
	return nil
}

// sharedCacheFor reports whether a volume's mount reads through the
// plugin's shared cache: every volume's, when the store has keys of its
// own; otherwise only those whose mount runs with the node's identity,
// as the store is then read with the plugin's credentials.
func sharedCacheFor(o *Options, nodeIdentity bool) bool {
	return o.SharedCache != "" && (o.SharedCacheCredentialsFile != "" || nodeIdentity)
}

// withSharedCache adds the plugin's shared cache to cfg where
// sharedCacheFor allows it.
func withSharedCache(cfg *config.Config, o *Options, nodeIdentity bool) {
	if !sharedCacheFor(o, nodeIdentity) {
		return
	}
	cfg.SharedCache, cfg.SharedCacheEndpoint = o.SharedCache, o.SharedCacheEndpoint
	cfg.SharedCacheRegion, cfg.SharedCacheProfile = o.SharedCacheRegion, o.SharedCacheProfile
	cfg.SharedCacheCredentialsFile = o.SharedCacheCredentialsFile
}
