package csi

import (
	"errors"
	"fmt"

	"github.com/modelfs/modelfs/fetch"
	"github.com/modelfs/modelfs/mount/config"
)

// validateSharedCache checks the plugin's shared cache settings once, at
// start, so that no volume's mount is the first to find them wrong.
func validateSharedCache(o Options) error {
	if o.SharedCache == "" {
		if o.SharedCacheEndpoint != "" || o.SharedCacheRegion != "" || o.SharedCacheProfile != "" {
			return errors.New("--shared-cache-endpoint, --shared-cache-region and --shared-cache-profile need --shared-cache")
		}
		return nil
	}
	loc, err := fetch.ParseLocation(o.SharedCache)
	if err != nil || loc.Scheme != "s3" || loc.Bucket == "" {
		return fmt.Errorf("--shared-cache %q: want s3://bucket/prefix", o.SharedCache)
	}
	return nil
}

// withSharedCache adds the plugin's shared cache to cfg for a volume
// whose mount runs with the node's identity: the store is read with the
// plugin's credentials, which only such a mount has.
func withSharedCache(cfg *config.Config, o *Options, nodeIdentity bool) {
	if o.SharedCache == "" || !nodeIdentity {
		return
	}
	cfg.SharedCache, cfg.SharedCacheEndpoint = o.SharedCache, o.SharedCacheEndpoint
	cfg.SharedCacheRegion, cfg.SharedCacheProfile = o.SharedCacheRegion, o.SharedCacheProfile
}
