package fetch

import (
	"errors"
	"fmt"
)

// CheckApplies refuses the S3-named settings (opts' Region, Profile,
// Endpoint and NoSignRequest, which the command line's --region,
// --aws-profile, --endpoint and --no-sign-request fill whatever the
// source) where none of locs has a use for them, so that a flag is never
// ignored in silence. Each error names the flag. A manifest's models
// share the flags, each taking those that fit it, so for several
// locations only a flag that fits none of them is reported.
func CheckApplies(locs []Location, opts S3Options) error {
	fits := func(schemes ...string) bool {
		for _, l := range locs {
			for _, s := range schemes {
				if l.Scheme == s {
					return true
				}
			}
		}
		return len(locs) == 0
	}
	// where names the sources a flag does not fit.
	where, why := "and none of the manifest's models is one", ""
	if len(locs) == 1 {
		where = "not " + locs[0].Scheme + "://"
		switch locs[0].Scheme {
		case "gs":
			why = ": Cloud Storage's JSON API serves buckets of every location at one endpoint"
		case "az":
			why = ": an Azure storage account's endpoint names its region"
		}
	}
	var errs []error
	if opts.Region != "" && !fits("s3") {
		errs = append(errs, fmt.Errorf("--region applies to s3:// sources, %s%s", where, why))
	}
	if opts.Profile != "" && !fits("s3") {
		errs = append(errs, fmt.Errorf("--aws-profile applies to s3:// sources, %s", where))
	}
	if opts.Endpoint != "" && !fits("s3", "gs", "az") {
		hint := ""
		if fits("hf") {
			hint = ": name a Hugging Face Hub mirror with --hf-endpoint (HF_ENDPOINT)"
		}
		errs = append(errs, fmt.Errorf("--endpoint applies to s3://, gs:// and az:// sources, %s%s", where, hint))
	}
	if opts.NoSignRequest && !fits("s3", "gs", "az") {
		errs = append(errs, fmt.Errorf("--no-sign-request applies to s3://, gs:// and az:// sources, %s: "+
			"https:// and hf:// sources send a token only when one is set", where))
	}
	if len(errs) == 0 {
		return nil
	}
	// One line, as the command line reports errors.
	msg := errs[0].Error()
	for _, e := range errs[1:] {
		msg += "; " + e.Error()
	}
	return errors.New(msg)
}
